"""The flag every command that reads ``--weights`` shares for released ONNX weights."""

from __future__ import annotations

import argparse


def add_calibration_flag(parser: argparse.ArgumentParser, default_note: str = "") -> None:
    """``--calibration-images DIR``: images whose statistics un-fold the BatchNorms of ``.onnx`` weights."""
    parser.add_argument(
        "--calibration-images",
        metavar="DIR",
        help="for .onnx weights: images whose statistics un-fold the BatchNorms (default: "
        + (default_note or "the photos shipped in model/assets/photos")
        + ")",
    )
