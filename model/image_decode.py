"""Decoding a JPEG for the letterbox at 1/2, 1/4 or 1/8 resolution when the letterbox would discard that much.

The letterbox scales an image by ``r = min(H_in/H, W_in/W)``. When ``r <= 1/k`` (k = 8, 4 or 2, the largest that
holds), libjpeg can decode at 1/k directly (DCT scaling: OpenCV's ``IMREAD_REDUCED_COLOR_k``), skipping most of
the inverse-DCT and colour work, and the reduced image is still at least as large as what the letterbox keeps.
Reduced pixel ``i`` covers original pixels ``[k*i, k*i + k)`` (libjpeg makes ``ceil(W/k)`` columns), so boxes map
back by ``k`` exactly: against the original the letterbox scale is ``r_k / k`` (``r_k`` that of the reduced image)
and boxes are clipped to the original size. Only JPEG: OpenCV decodes other formats in full and then resizes, which
saves nothing. EXIF orientation is applied in both paths, so the original size is the header's, swapped when the
decoded image came out rotated.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cv2
import numpy as np

from model.letterbox import letterbox_scale

JPEG_SCALINGS = (8, 4, 2)  # largest first
_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
# JPEG start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RSTn, SOI: no length field


def is_jpeg(data: bytes) -> bool:
    """The JPEG magic bytes."""
    return data[:3] == b"\xff\xd8\xff"


def jpeg_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from a JPEG's frame header, without decoding; ``ValueError`` saying what is wrong."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ValueError("corrupt JPEG: marker expected")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        (length,) = struct.unpack_from(">H", data, i + 2)
        if marker in _JPEG_SOF:
            if i + 9 > n:
                break
            height, width = struct.unpack_from(">HH", data, i + 5)
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            raise ValueError("corrupt JPEG: no frame header before the scan")
        i += 2 + length
    raise ValueError("truncated JPEG: no frame header")


def jpeg_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) of a JPEG, from its APP1 segment's first IFD; 1 (as stored) when it has none or
    it cannot be read. OpenCV applies it when decoding; nvJPEG does not, so the device path applies it itself."""
    i, n = 2, len(data)
    while i + 4 <= n and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        if marker == 0xDA:  # the scan: no more headers (libjpeg, and so OpenCV, reads APP segments until here)
            return 1
        (length,) = struct.unpack_from(">H", data, i + 2)
        if marker == 0xE1 and data[i + 4 : i + 10] == b"Exif\x00\x00":
            return _tiff_orientation(data[i + 10 : i + 2 + length])
        i += 2 + length
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    # A TIFF header (byte order, 42, offset of IFD0), then IFD0: a count and 12-byte entries (tag, type, count,
    # value); orientation is tag 0x0112, one SHORT stored in the value's first two bytes.
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    for entry in range(ifd + 2, min(ifd + 2 + 12 * count, len(tiff) - 11), 12):
        tag, kind = struct.unpack_from(order + "HH", tiff, entry)
        if tag == 0x0112:
            (value,) = struct.unpack_from(order + "H", tiff, entry + 8)
            return value if kind == 3 and 1 <= value <= 8 else 1
    return 1


def jpeg_reduction(image_hw: tuple[int, int], input_hw: tuple[int, int]) -> int:
    """The largest ``k`` in ``JPEG_SCALINGS`` with ``letterbox_scale * k <= 1``, else 1 (decode in full)."""
    r = letterbox_scale(image_hw, input_hw)
    return next((k for k in JPEG_SCALINGS if r * k <= 1.0), 1)


@dataclass(frozen=True)
class Decoded:
    """A decoded image and how it relates to the full-resolution one.

    Args:
        image: uint8 [h, w, 3] BGR, EXIF orientation applied.
        original_hw: (height, width) of the full-resolution image, orientation applied.
        reduction: ``k``: each pixel of ``image`` stands for ``k x k`` original pixels (1: full resolution).
    """

    image: np.ndarray
    original_hw: tuple[int, int]
    reduction: int = 1

    @classmethod
    def full(cls, image: np.ndarray) -> Decoded:
        """An image at full resolution: its own size is the original."""
        return cls(image, (int(image.shape[0]), int(image.shape[1])))

    def scale_to_original(self, r: float) -> float:
        """A letterbox scale of ``image`` as a scale of the original (network pixels per original pixel)."""
        return r / self.reduction


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def decode_full(data: bytes) -> Decoded | None:
    """Decode any format OpenCV reads at full resolution (BGR, EXIF orientation applied); ``None`` when it cannot."""
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    return None if image is None else Decoded.full(image)


def decode_jpeg_for_input(data: bytes, header_hw: tuple[int, int], input_hw: tuple[int, int]) -> Decoded | None:
    """Decode a JPEG (header size ``header_hw``, before orientation) at the reduction its letterbox into
    ``input_hw`` allows; ``None`` when OpenCV cannot decode it."""
    k = jpeg_reduction(header_hw, input_hw)
    if k == 1:
        return decode_full(data)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _REDUCED_FLAGS[k])
    if image is None:
        return None
    h, w = header_hw
    shape = (int(image.shape[0]), int(image.shape[1]))
    if shape == (_ceil_div(h, k), _ceil_div(w, k)):
        return Decoded(image, (h, w), k)
    if shape == (_ceil_div(w, k), _ceil_div(h, k)):  # EXIF rotated it a quarter turn
        return Decoded(image, (w, h), k)
    # A decoder that scaled differently: the mapping by k would not be exact, so decode in full.
    return decode_full(data)
