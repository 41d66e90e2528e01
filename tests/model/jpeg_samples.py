"""JPEG test images: structured pixels that show a shifted block grid or a wrong turn, and an EXIF orientation tag."""

from __future__ import annotations

import struct

import cv2
import numpy as np


def structured_image(height: int, width: int) -> np.ndarray:
    """Smooth gradients with large flat shapes: JPEG keeps it well, and a shifted block grid would show."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], axis=-1).astype(np.uint8)
    for i in range(6):
        x0, y0 = 37 + i * width // 7, 23 + i * height // 9
        cv2.rectangle(image, (x0, y0), (x0 + width // 9, y0 + height // 6), (40 * i % 255, 200, 255 - 30 * i), -1)
    return image


def jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def with_exif_orientation(data: bytes, orientation: int) -> bytes:
    """``data`` with an APP1 EXIF segment holding only the orientation tag."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + ifd
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]
