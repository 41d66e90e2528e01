"""``yoloxpai make-dataset shapes --out DIR``: write a synthetic COCO-format dataset (see ``model.data.shapes``)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options."""
    parser.add_argument("kind", choices=["shapes"], help="which synthetic dataset to write")
    parser.add_argument("--out", required=True, help="output directory (annotations/, train/, val/)")
    parser.add_argument("--train", type=int, default=2000, help="number of training images (default 2000)")
    parser.add_argument("--val", type=int, default=200, help="number of validation images (default 200)")
    parser.add_argument("--img-size", type=int, default=320, help="long image side in pixels (default 320)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same dataset (default 0)")


def run(args: argparse.Namespace) -> int:
    """Write the dataset and print where it went."""
    import sys
    import time

    from model.data.shapes import make_shapes_dataset

    start_s = time.perf_counter()
    try:
        out = make_shapes_dataset(args.out, train=args.train, val=args.val, img_size=args.img_size, seed=args.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    elapsed_s = time.perf_counter() - start_s
    print(f"wrote {args.train} train + {args.val} val images to {out} in {elapsed_s:.1f} s")
    return 0
