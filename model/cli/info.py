"""``yoloxpai info NAME [--input-size H W]``: parameters (M) and GFLOPs of a preset."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's flags."""
    parser.add_argument("name", nargs="?", help="preset name (omit to list all presets)")
    parser.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"), help="default: the preset's")
    parser.add_argument("--num-classes", type=int, default=80)


def format_gflops(gflops: float) -> str:
    """Published precision: two decimals below 10 GFLOPs, one above (1.08, 26.8)."""
    return f"{gflops:.2f}" if gflops < 10 else f"{gflops:.1f}"


def run(args: argparse.Namespace) -> int:
    """Print the table for one preset, or for all when no name is given."""
    from model.complexity import measure
    from model.config import VARIANTS
    from model.yolox import build_model

    names = [args.name] if args.name else list(VARIANTS)
    if args.name and args.name not in VARIANTS:
        print(f"unknown preset {args.name!r}; choose from: {', '.join(VARIANTS)}")
        return 2
    header = f"{'preset':<24} {'input':>9} {'params M':>9} {'fused M':>8} {'deploy M':>9} {'GFLOPs':>8}  convention"
    print(header)
    print("-" * len(header))
    for name in names:
        cfg = VARIANTS[name]
        hw = tuple(args.input_size) if args.input_size else cfg.input_hw
        if hw[0] % 32 or hw[1] % 32:
            print(f"input size must be multiples of 32, got {hw}")
            return 2
        c = measure(build_model(name, num_classes=args.num_classes), hw)
        print(
            f"{name:<24} {hw[0]:>4}x{hw[1]:<4} {c.params_m:>9.2f} {c.params_repvgg_fused_m:>8.2f} "
            f"{c.params_deploy_m:>9.2f} {format_gflops(c.gflops):>8}  {cfg.convention.name}"
        )
    print("\nparams M: training form; fused M: RepVGG merged (BN kept); deploy M: all BN folded.")
    print("GFLOPs: 2 x (conv MACs + 2 x BN elements), the YOLOX README convention.")
    return 0
