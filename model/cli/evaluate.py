"""``yoloxpai eval``: COCO box mAP of a checkpoint on a dataset split (the 12 COCO numbers + per-class AP).

Examples::

    yoloxpai eval --weights runs/s/best.pt --data data/coco
    yoloxpai eval --weights yolox_s.pth --arch yolox-s --data data/coco/annotations/instances_val2017.json
    torchrun --nproc-per-node 8 -m yoloxpai.cli eval --weights runs/s/best.pt --data data/coco

Training checkpoints are evaluated with their EMA weights. Model label ``i`` is the dataset's ``i``-th category in
sorted category-id order (the COCO convention of the official weights).
"""

from __future__ import annotations

import argparse
import json
import sys

from model.cli.weights_flags import add_calibration_flag


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's flags."""
    add = parser.add_argument
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="checkpoint: ours (.pt / .safetensors), official Megvii or EasyCV")
    source.add_argument("--bundle", help="an exported bundle, run through its runtime (see --backend)")
    add("--backend", default="auto", help="bundle runtime: auto | onnxruntime | openvino | torchscript | tensorrt")
    add("--data", required=True, help="dataset directory or COCO json")
    add("--split", default="val", choices=("train", "val"))
    add("--arch", help="preset, needed when the checkpoint does not record it (official weights)")
    add("--img-size", type=int, nargs="+", metavar="PX", help="S or H W (default: the checkpoint's)")
    add("-b", "--batch-size", type=int, default=8)
    add("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    add("--workers", type=int, default=2)
    add("--conf", type=float, default=0.001, help="score threshold (obj x cls)")
    add("--nms", type=float, default=0.65, help="class-aware NMS IoU")
    add("--max-det", type=int, default=100)
    add("--amp", action="store_true", help="fp16 inference on CUDA")
    add("--json", metavar="PATH", help="also write the metrics and per-class AP as JSON")
    add_calibration_flag(parser)


def write_json(path: str, result) -> None:
    """The metrics and per-class AP as JSON."""
    per_class = [{"name": n, "AP50:95": ap, "AP50": ap50} for n, ap, ap50 in result.per_class]
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"metrics": result.metrics(), "per_class": per_class}, f, indent=2)


def run_bundle(args: argparse.Namespace) -> int:
    """Evaluate an exported bundle through the Predictor (the serving path)."""
    from model.artifacts import BundleError
    from model.data.coco import CocoDetection
    from model.data.errors import DatasetError
    from model.data.layout import resolve_split
    from model.evaluate import format_result
    from model.evaluate_bundle import evaluate_bundle
    from model.predictor import Predictor

    device = "cpu" if args.device == "auto" else args.device
    try:
        predictor = Predictor.from_bundle(args.bundle, backend=args.backend, device=device, spin=True)
        ann_file, image_dir = resolve_split(args.data, args.split)
        result = evaluate_bundle(predictor, CocoDetection(ann_file, image_dir), str(ann_file), args.batch_size)
    except (BundleError, DatasetError, ValueError, RuntimeError) as exc:
        print(f"yoloxpai eval: error: {exc}", file=sys.stderr)
        return 2
    meta = predictor.meta
    print(f"bundle {args.bundle} ({meta.arch}) via {predictor.backend} {predictor.precision} on {device}, "
          f"{meta.input_hw[0]}x{meta.input_hw[1]}, baked score >= {meta.thresholds.score_threshold}, "
          f"K = {meta.thresholds.max_detections}, on {ann_file}")  # fmt: skip
    print(format_result(result))
    if args.json:
        write_json(args.json, result)
    return 0


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the tables; non-zero exit on bad input."""
    import dataclasses

    if args.bundle:
        return run_bundle(args)

    from model.checkpoint import CheckpointError, load_model
    from model.data.coco import CocoDetection
    from model.data.errors import DatasetError
    from model.data.layout import resolve_split
    from model.data.loader import build_eval_loader
    from model.distributed import init_distributed, shutdown_distributed
    from model.evaluate import evaluate, format_result

    try:
        model, info = load_model(args.weights, arch=args.arch, calibration_images=args.calibration_images)
        ann_file, image_dir = resolve_split(args.data, args.split)
        coco = CocoDetection(ann_file, image_dir)
    except (CheckpointError, DatasetError, ValueError) as exc:
        print(f"yoloxpai eval: error: {exc}", file=sys.stderr)
        return 2
    if coco.num_classes != info.config.num_classes:
        print(f"yoloxpai eval: error: the model has {info.config.num_classes} classes, {ann_file} has "
              f"{coco.num_classes}", file=sys.stderr)  # fmt: skip
        return 2
    if tuple(coco.class_names) != tuple(info.class_names):
        print("note: class names differ between checkpoint and dataset; matching by position", file=sys.stderr)
    cfg = info.config
    if args.img_size:
        cfg = dataclasses.replace(cfg, input_hw=(args.img_size[0], args.img_size[-1]))
    ctx = init_distributed(args.device)
    try:
        model.to(ctx.device)
        loader = build_eval_loader(coco, cfg.input_hw, args.batch_size, args.workers, distributed=ctx.distributed,
                                   rank=ctx.rank, world_size=ctx.world_size)  # fmt: skip
        result = evaluate(model, loader, ann_file, cfg.convention, coco.cat_ids, coco.class_names, ctx=ctx,
                          score_threshold=args.conf, nms_iou=args.nms, max_detections=args.max_det,
                          amp=args.amp)  # fmt: skip
    finally:
        shutdown_distributed()
    if ctx.is_main:
        print(f"{cfg.name} ({info.source} weights of {args.weights}) on {ann_file} at "
              f"{cfg.input_hw[0]}x{cfg.input_hw[1]}")  # fmt: skip
        print(format_result(result))
        if args.json:
            write_json(args.json, result)
    return 0
