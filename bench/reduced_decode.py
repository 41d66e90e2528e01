"""Reduced-resolution JPEG decode: time saved per image size, and what it does to COCO accuracy.

    python bench/reduced_decode.py                       # default model (416), coco-tiny at 1x and 3x
    python bench/reduced_decode.py --bundle DIR --scales 1,2,4 --json decode.json

Table 1: decode + letterbox (the service's per-image work before inference) of one JPEG at 640x480, 1920x1080 and
3840x2160 (a coco-tiny photo resized, quality 90), full decode vs the reduced one the model's input allows,
median of ``--repeats`` runs, OpenCV's own threads as the server leaves them. Table 2: AP50:95 / AP50 of the
bundle on coco-tiny through ``Predictor.predict(jpeg bytes)`` with and without reduced decode, at the photos' own
size and enlarged (``--scales``: each photo resized by s, bicubic, re-encoded at quality 95, boxes scaled by s);
at 416 the photos' own size (~640x480) never qualifies, so the enlarged sets are where the two paths differ.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bench.machine import describe  # noqa: E402
from model.artifacts import default_bundle_dir  # noqa: E402
from model.evaluate import score_detections  # noqa: E402
from model.evaluate_bundle import coco_records  # noqa: E402
from model.image_decode import jpeg_reduction, jpeg_size  # noqa: E402
from model.letterbox import preprocess_image  # noqa: E402
from model.predictor import Predictor, load_image  # noqa: E402

COCO_TINY = REPO.parent / "shared" / "data" / "coco-tiny"
SIZES_WH = ((640, 480), (1920, 1080), (3840, 2160))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", help="bundle directory (default: the embedded COCO model)")
    p.add_argument("--data", default=str(COCO_TINY), help="COCO-format folder with annotations/ and val2017/")
    p.add_argument("--scales", default="1,3", help="comma-separated enlargements of the photos for the AP table")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--json", help="write the results here")
    return p.parse_args(argv)


def decode_ms(data: bytes, input_hw: tuple[int, int], convention, reduced: bool, repeats: int) -> float:
    """Median ms of decode + letterbox + normalisation of ``data``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        decoded, order = load_image(data, "bgr", input_hw if reduced else None)
        preprocess_image(decoded.image, input_hw, convention, order)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def decode_table(photo: np.ndarray, predictor: Predictor, repeats: int) -> list[dict]:
    """Table 1 rows."""
    meta = predictor.meta
    rows = []
    for w, h in SIZES_WH:
        data = cv2.imencode(".jpg", cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA),
                            [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()  # fmt: skip
        full = decode_ms(data, meta.input_hw, meta.convention, False, repeats)
        reduced = decode_ms(data, meta.input_hw, meta.convention, True, repeats)
        rows.append({"size": f"{w}x{h}", "kib": len(data) // 1024, "k": jpeg_reduction((h, w), meta.input_hw),
                     "full_ms": round(full, 2), "reduced_ms": round(reduced, 2),
                     "speedup": round(full / reduced, 2)})  # fmt: skip
    return rows


def scaled_set(data_dir: Path, scale: float, out: Path) -> tuple[Path, list[tuple[int, bytes]]]:
    """(annotation file, [(image id, JPEG bytes)]) of the set enlarged by ``scale`` (the originals at 1)."""
    ann = json.loads((data_dir / "annotations" / "instances_val2017.json").read_text())
    images = []
    for info in ann["images"]:
        path = data_dir / "val2017" / info["file_name"]
        if scale == 1:
            images.append((info["id"], path.read_bytes()))
            continue
        photo = cv2.resize(cv2.imread(str(path)), None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        images.append((info["id"], cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()))
        info["height"], info["width"] = photo.shape[:2]
    for a in ann["annotations"]:
        a["bbox"] = [v * scale for v in a["bbox"]]
        a["area"] = a["area"] * scale * scale
    ann_file = out / f"instances_x{scale:g}.json"
    ann_file.write_text(json.dumps(ann))
    return ann_file, images


def ap_row(predictor: Predictor, ann_file: Path, images: list, reduced: bool) -> tuple[float, float]:
    """(AP50:95, AP50) of the bundle on ``images`` scored against ``ann_file``."""
    ann = json.loads(ann_file.read_text())
    cat_ids = tuple(sorted(c["id"] for c in ann["categories"]))
    names = tuple(c["name"] for c in sorted(ann["categories"], key=lambda c: c["id"]))
    t = predictor.meta.thresholds
    detections = []
    for image_id, data in images:
        det = predictor.predict(data, score_threshold=t.score_threshold, max_detections=t.max_detections,
                                reduced_decode=reduced)[0]  # fmt: skip
        detections += coco_records(image_id, cat_ids, det.boxes_xyxy, det.scores, det.class_ids)
    result = score_detections(ann_file, detections, cat_ids, names)
    return result.ap50_95, result.ap50


def main(argv: list[str] | None = None) -> int:
    """Print both tables (and write them as JSON)."""
    args = parse_args(argv)
    bundle = Path(args.bundle) if args.bundle else default_bundle_dir()
    predictor = Predictor.from_bundle(bundle, backend="onnxruntime", device="cpu")
    data_dir = Path(args.data)
    print(describe())
    print(f"bundle {predictor.meta.name}, input {predictor.meta.input_hw[1]}x{predictor.meta.input_hw[0]}, "
          f"onnxruntime\n")  # fmt: skip
    photo = cv2.imread(str(sorted((data_dir / "val2017").glob("*.jpg"))[0]))
    decode_rows = decode_table(photo, predictor, args.repeats)
    print(f"{'JPEG':>10} {'KiB':>5} {'k':>2} {'full ms':>8} {'reduced ms':>10} {'speedup':>8}")
    for r in decode_rows:
        print(f"{r['size']:>10} {r['kib']:>5} {r['k']:>2} {r['full_ms']:>8.2f} {r['reduced_ms']:>10.2f} "
              f"{r['speedup']:>7.2f}x")  # fmt: skip
    ap_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in (float(s) for s in args.scales.split(",")):
            ann_file, images = scaled_set(data_dir, scale, Path(tmp))
            full = ap_row(predictor, ann_file, images, reduced=False)
            reduced = ap_row(predictor, ann_file, images, reduced=True)
            k = sorted({jpeg_reduction(jpeg_size(d)[::-1], predictor.meta.input_hw) for _, d in images})
            ap_rows.append({"scale": scale, "images": len(images), "reductions": k,
                            "full_ap": round(full[0], 4), "full_ap50": round(full[1], 4),
                            "reduced_ap": round(reduced[0], 4), "reduced_ap50": round(reduced[1], 4),
                            "delta_ap_points": round((reduced[0] - full[0]) * 100, 2)})  # fmt: skip
    print(f"\n{'set':>12} {'k used':>8} {'AP full':>8} {'AP reduced':>10} {'delta (AP points)':>18} "
          f"{'AP50 full':>9} {'AP50 reduced':>12}")  # fmt: skip
    for r in ap_rows:
        print(f"{'coco-tiny x' + format(r['scale'], 'g'):>12} {','.join(map(str, r['reductions'])):>8} "
              f"{r['full_ap']:>8.4f} {r['reduced_ap']:>10.4f} {r['delta_ap_points']:>+18.2f} {r['full_ap50']:>9.4f} "
              f"{r['reduced_ap50']:>12.4f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": describe(), "decode": decode_rows, "ap": ap_rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
