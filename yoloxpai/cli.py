"""The ``yoloxpai`` command: a thin dispatcher over per-command modules.

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and keeps heavy imports (torch,
onnxruntime, grpc) inside ``run`` so ``yoloxpai serve`` never imports training code and ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from yoloxpai import __version__

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("model.cli.info", "print parameters (M) and GFLOPs of a preset"),
    "make-dataset": ("model.cli.make_dataset", "write a synthetic COCO-format dataset"),
    "train": ("model.cli.train", "train a preset on COCO-format data"),
    "eval": ("model.cli.evaluate", "evaluate a checkpoint (COCO mAP)"),
    "export": ("model.cli.export", "export a checkpoint to a serving bundle"),
    "predict": ("model.cli.predict", "run a bundle on images and draw the detections"),
    "serve": ("service.cli", "serve bundles over REST and gRPC"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; with ``only`` set, import just that command's module."""
    parser = argparse.ArgumentParser(prog="yoloxpai", description="YOLOX / YOLOX-PAI: train, export, serve.")
    parser.add_argument("--version", action="version", version=f"yoloxpai {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # an extra is not installed: keep the other commands usable
            sub.add_parser(name, help=f"{help_text} (unavailable: {exc})")
            continue
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    argv = sys.argv[1:] if argv is None else argv
    only = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        if args.command:  # the command's module failed to import
            parser.error(f"command {args.command!r} is unavailable: install the matching extra")
        parser.print_help()
        return 2
    return int(run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
