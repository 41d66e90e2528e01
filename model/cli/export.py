"""``yoloxpai export``: a checkpoint -> a serving bundle (preprocess, model with decode + NMS, meta.json).

``--out DIR`` writes one bundle directory; ``--repository REPO --name M`` publishes the bundle as the next version
of model ``M`` in a model repository (``REPO/M/<version>``, written beside it in a hidden temporary directory,
flushed and renamed: a server polling the repository sees the whole new version or nothing).
"""

from __future__ import annotations

import argparse

from model.cli.weights_flags import add_calibration_flag
from model.export.int8_openvino import DEFAULT_CALIBRATION_COUNT


def _formats(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's flags."""
    parser.add_argument(
        "--weights", required=True, help="checkpoint: ours, official Megvii .pth, EasyCV, .safetensors, or Megvii .onnx"
    )
    parser.add_argument("--arch", help="preset, only for checkpoints that do not record it (Megvii, EasyCV, ONNX)")
    add_calibration_flag(parser)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="bundle directory to write")
    where.add_argument(
        "--repository",
        help="model repository to publish into as a new version, REPO/NAME/<next version> (needs --name)",
    )
    parser.add_argument(
        "--format",
        dest="formats",
        action="extend",
        type=_formats,
        help="torchscript|onnx|openvino|tensorrt; repeat or comma-separate for several (default: onnx)",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "fp16", "bf16", "int8"],
        help="for the formats that support it (others stay fp32): fp16 torchscript/openvino/tensorrt, bf16 openvino, "
        "int8 openvino (NNCF post-training quantisation, needs --calibration-data)",
    )
    parser.add_argument(
        "--calibration-data",
        help="int8: a folder of real images (or a COCO folder) the quantiser calibrates activation ranges on",
    )
    parser.add_argument(
        "--calibration-count",
        type=int,
        default=DEFAULT_CALIBRATION_COUNT,
        help="int8: how many of the calibration images to use, the first sorted by path (default %(default)s)",
    )
    parser.add_argument("--max-batch", type=int, default=32, help="largest batch the model accepts (dynamic 1..N)")
    parser.add_argument("--img-size", nargs=2, type=int, metavar=("H", "W"), help="input size (multiples of 32)")
    parser.add_argument("--score-threshold", type=float, default=0.05, help="baked minimum score (obj x cls)")
    parser.add_argument("--default-score-threshold", type=float, default=0.25, help="requests' default")
    parser.add_argument("--iou-threshold", type=float, default=0.65)
    parser.add_argument("--max-detections", type=int, default=100, help="K, detections per image")
    parser.add_argument("--class-agnostic", action="store_true", help="NMS across classes")
    parser.add_argument("--pre-nms-topk", type=int, default=1000, help="candidates per image entering NMS")
    parser.add_argument("--name", help="model name when served (default: the preset)")
    parser.add_argument(
        "--model-version", help="version recorded in the bundle (default 1; with --repository: the next free number)"
    )
    parser.add_argument(
        "--openvino-reads-onnx",
        action="store_true",
        help="with --format onnx,openvino: the OpenVINO artifact is the ONNX file (compiled at load) instead of IR "
        "files, so the bundle carries one copy of the weights (e.g. fp32 for ONNX Runtime and bf16 for OpenVINO)",
    )
    parser.add_argument("--build-engine", action="store_true", help="TensorRT: build the engine now (GPU needed)")
    parser.add_argument("--no-parity-check", action="store_true", help="skip comparing backends with eager PyTorch")
    parser.add_argument(
        "--eval-data",
        help="COCO-format folder (val split): measure every artifact's AP50:95 against the eager fp32 model and refuse "
        "a reduced-precision artifact that loses more than its gate (bf16/fp16 0.5, int8 1.0 AP points)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing bundle directory; with --eval-data, publish even if an artifact misses its gate",
    )


def run(args: argparse.Namespace) -> int:
    """Export and print the bundle summary with the parity report."""
    from model.export.bundle import ExportOptions, export_bundle, repository_target
    from model.export.e2e import NmsSettings

    try:
        out, version = args.out, args.model_version or "1"
        if args.repository is not None:
            if not args.name:
                raise ValueError("--repository needs --name: the model the new version belongs to")
            number = int(args.model_version) if args.model_version else None
            target, chosen = repository_target(args.repository, args.name, number)
            out, version = str(target), str(chosen)
        options = ExportOptions(
            formats=tuple(dict.fromkeys(args.formats or ["onnx"])),
            precision=args.precision,
            max_batch=args.max_batch,
            input_hw=tuple(args.img_size) if args.img_size else None,
            nms=NmsSettings(
                args.score_threshold, args.iou_threshold, args.max_detections, args.class_agnostic, args.pre_nms_topk
            ),
            default_score_threshold=args.default_score_threshold,
            name=args.name,
            version=version,
            parity_check=not args.no_parity_check,
            build_engine=args.build_engine,
            eval_data=args.eval_data,
            openvino_reads_onnx=args.openvino_reads_onnx,
            publish_failed_accuracy=args.force,
            calibration_data=args.calibration_data,
            calibration_count=args.calibration_count,
        )
        meta, reports = export_bundle(args.weights, out, options, arch=args.arch, overwrite=args.force,
                                      calibration_images=args.calibration_images)  # fmt: skip
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as exc:
        print(f"export failed: {exc}")
        return 1
    print(f"wrote bundle {out}: {meta.name} v{meta.version} ({meta.arch}, {meta.num_classes} classes)")
    print(f"  input {meta.input_hw[0]}x{meta.input_hw[1]} {meta.convention.name}, batch 1..{meta.max_batch}")
    for fmt, artifact in meta.models.items():
        print(f"  {fmt:<12} {artifact.file:<16} {artifact.precision}")
    records = {fmt: a.extra["accuracy"] for fmt, a in meta.models.items() if "accuracy" in a.extra}
    if records:
        from model.export.accuracy_gate import AccuracyRecord, format_records

        print(format_records({fmt: AccuracyRecord(**r) for fmt, r in records.items()}))
    for backend, report in reports.items():
        status = "ok" if report.ok() else "FAILED"
        print(
            f"  parity {backend:<12} {status}: max box diff {report.max_box_diff_px:.4f} px, "
            f"max score diff {report.max_score_diff:.2e}, count mismatches {report.count_mismatches}"
        )
    return 0
