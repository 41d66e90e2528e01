"""Header sniffing and decoding: sizes read before decode, real bad inputs refused with the right error."""

from __future__ import annotations

import struct
import time
import zlib

import cv2
import numpy as np
import pytest

from service.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from service.imaging import EncodedImage, RawImage, check_media_type, decode_image, header_size, load_image

IMAGE = (np.arange(30 * 50 * 3) % 251).astype(np.uint8).reshape(30, 50, 3)


def encode(ext: str, image: np.ndarray = IMAGE, params: tuple = ()) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return buf.tobytes()


def png_header(width: int, height: int) -> bytes:
    """A PNG signature + IHDR claiming ``width x height`` and nothing else (what a decompression bomb starts with)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


@pytest.mark.parametrize(
    "ext, params",
    [(".jpg", ()), (".png", ()), (".bmp", ()), (".webp", ()), (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101))],
    ids=["jpeg", "png", "bmp", "webp-lossy", "webp-lossless"],
)
def test_header_size_matches_the_decoded_size(ext, params):
    data = encode(ext, params=params)
    fmt, width, height = header_size(data)
    assert (width, height) == (50, 30)
    image = decode_image(data, max_image_pixels=10_000)
    assert image.shape == (30, 50, 3) and image.dtype == np.uint8
    assert fmt in ext or (fmt == "jpeg" and ext == ".jpg")


def test_a_huge_png_header_is_refused_before_any_allocation():
    t0 = time.perf_counter()
    with pytest.raises(PayloadTooLarge, match="50000x50000"):
        decode_image(png_header(50_000, 50_000), max_image_pixels=40_000_000)
    assert time.perf_counter() - t0 < 0.05


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"hello, I am text", "not a JPEG"),
        (encode(".jpg")[: len(encode(".jpg")) // 2], "JPEG"),
        (encode(".png")[:-40], "PNG"),
        (encode(".webp")[:-10], "WebP"),
        (encode(".bmp")[:200], "BMP"),
        (png_header(0, 10), "no pixels"),
    ],
    ids=["empty", "text", "truncated-jpeg", "truncated-png", "truncated-webp", "truncated-bmp", "zero-width"],
)
def test_bad_bytes_are_invalid_images(data, message):
    with pytest.raises(InvalidImage, match=message):
        decode_image(data, max_image_pixels=10_000)


def test_media_types():
    assert check_media_type("image/png; charset=binary") == "image/png"
    assert check_media_type(None) == ""
    assert check_media_type("application/octet-stream") == "application/octet-stream"
    for bad in ("text/plain", "image/gif", "application/x-www-form-urlencoded"):
        with pytest.raises(UnsupportedMediaType):
            check_media_type(bad)


def test_raw_pixels():
    decoded, order = load_image(RawImage(IMAGE.tobytes(), 50, 30, "rgb"), 10_000, input_hw=(8, 8))
    assert order == "rgb" and np.array_equal(decoded.image, IMAGE)
    assert decoded.original_hw == (30, 50) and decoded.reduction == 1  # raw pixels are never reduced
    with pytest.raises(InvalidImage, match="needs 4500 bytes"):
        load_image(RawImage(IMAGE.tobytes()[:-3], 50, 30), 10_000)
    with pytest.raises(PayloadTooLarge):
        load_image(RawImage(b"", 50_000, 50_000), 40_000_000)
    with pytest.raises(UnsupportedMediaType):
        load_image(EncodedImage(encode(".png"), "text/plain"), 10_000)
