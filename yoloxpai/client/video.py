"""Streaming the frames of a video file or camera (OpenCV) through ``DetectStream`` and drawing the results."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from yoloxpai.client.draw import draw_detections
from yoloxpai.client.grpc_client import GrpcClient
from yoloxpai.client.results import ImageDetections


def open_source(source: str | int) -> cv2.VideoCapture:
    """A capture for a file path, a URL, or a camera index ("0" = the first camera)."""
    if isinstance(source, str) and source.isdigit():
        source = int(source)
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise OSError(f"cannot open video source {source!r}")
    return capture


def read_frames(capture: cv2.VideoCapture, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """BGR frames until the source ends (or ``max_frames``)."""
    count = 0
    while max_frames is None or count < max_frames:
        ok, frame = capture.read()
        if not ok:
            return
        count += 1
        yield frame


def stream_video(
    client: GrpcClient,
    source: str | int,
    *,
    out: str | Path | None = None,
    show: bool = False,
    max_frames: int | None = None,
    **options,
) -> Iterator[tuple[np.ndarray, ImageDetections]]:
    """Stream ``source`` through the server; yields ``(annotated frame, result)`` in order.

    Frames are kept client-side until their result arrives (the server's stream window bounds how many), then
    drawn; ``out`` writes an annotated video (mp4v), ``show`` opens a window (press q to stop).
    """
    capture = open_source(source)
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    pending: deque[np.ndarray] = deque()
    lock = threading.Lock()

    def frames() -> Iterator[np.ndarray]:
        for frame in read_frames(capture, max_frames):
            with lock:
                pending.append(frame)
            yield frame

    writer = None
    try:
        for result in client.stream(frames(), **options):
            with lock:
                frame = pending.popleft()
            annotated = draw_detections(frame, result.detections)
            if out is not None:
                if writer is None:
                    h, w = annotated.shape[:2]
                    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                writer.write(annotated)
            if show:
                cv2.imshow("yoloxpai", annotated)
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    return
            yield annotated, result
    finally:
        capture.release()
        if writer is not None:
            writer.release()
        if show:
            cv2.destroyAllWindows()
