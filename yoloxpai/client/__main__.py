"""``python -m yoloxpai.client``: detect objects in an image, or stream a video file / camera, and draw them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2

from yoloxpai.client import GrpcClient, RestClient, draw_detections, stream_video

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m yoloxpai.client", description=__doc__)
    parser.add_argument("source", help="an image file, a video file, or a camera index (0)")
    protocol = parser.add_mutually_exclusive_group()
    protocol.add_argument("--rest", metavar="URL", help="REST base URL (default for images: http://localhost:8000)")
    protocol.add_argument("--grpc", metavar="HOST:PORT", help="gRPC target (videos always use gRPC streaming)")
    parser.add_argument("--api-key", help="API key, if the server requires one")
    parser.add_argument("--model", default=None, help="model name (default: the server's default model)")
    parser.add_argument("--score-threshold", type=float, default=None)
    parser.add_argument("--out", type=Path, help="write the annotated image / video here")
    parser.add_argument("--show", action="store_true", help="display the annotated video")
    parser.add_argument("--max-frames", type=int, default=None, help="stop a video after this many frames")
    args = parser.parse_args(argv)

    is_video = args.source.isdigit() or Path(args.source).suffix.lower() in VIDEO_SUFFIXES
    if is_video:
        with GrpcClient(args.grpc or "localhost:8001", api_key=args.api_key) as client:
            n = 0
            for _, result in stream_video(
                client, args.source, out=args.out, show=args.show, max_frames=args.max_frames,
                model=args.model or "", score_threshold=args.score_threshold,
            ):  # fmt: skip
                n += 1
                status = result.error or f"{len(result.detections)} detections"
                print(f"frame {result.frame_id}: {status} ({result.timing_ms.get('total', 0):.1f} ms)")
            print(f"{n} frames", file=sys.stderr)
        return 0

    if args.grpc:
        with GrpcClient(args.grpc, api_key=args.api_key) as client:
            result = client.detect(Path(args.source), model=args.model or "", score_threshold=args.score_threshold)
    else:
        with RestClient(args.rest or "http://localhost:8000", api_key=args.api_key) as client:
            result = client.detect(Path(args.source), model=args.model, score_threshold=args.score_threshold)
    print(json.dumps({"model": result.model, "detections": [d.__dict__ for d in result.detections]}, indent=1))
    if args.out is not None:
        image = cv2.imread(args.source)
        cv2.imwrite(str(args.out), draw_detections(image, result.detections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
