"""Image inputs: media-type checks, header sniffing (size before decode) and OpenCV decoding.

Owns the two wire-neutral image inputs (:class:`EncodedImage`, :class:`RawImage`) and turns either into a
``uint8 [H, W, 3]`` array. Dimensions are read from the file header first, so a 50000 x 50000 PNG is refused with
``PayloadTooLarge`` before any pixel memory is allocated. Given the model's input size, a JPEG the letterbox would
shrink by 2x or more is decoded at 1/2, 1/4 or 1/8 (``model.image_decode``, shared with the Predictor). Functions
here are blocking (the engine runs them in the decode thread pool).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np

from model.image_decode import Decoded, decode_full, decode_jpeg_for_input, is_jpeg, jpeg_size
from service.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType

ImageFormat = Literal["jpeg", "png", "webp", "bmp"]
ChannelOrder = Literal["bgr", "rgb"]

# Content types a raw body (or a multipart part) may declare; octet-stream / none -> sniff the bytes.
IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/jpg", "image/png", "image/webp", "image/bmp", "image/x-ms-bmp"})
SNIFFED_MEDIA_TYPES = frozenset({"", "application/octet-stream"})


@dataclass(frozen=True)
class EncodedImage:
    """A compressed image as sent by the client; ``media_type`` is the declared type (may be empty)."""

    data: bytes
    media_type: str = ""


@dataclass(frozen=True)
class RawImage:
    """Raw interleaved uint8 pixels, ``height * width * 3`` bytes in ``channel_order``."""

    pixels: bytes
    width: int
    height: int
    channel_order: ChannelOrder = "bgr"


ImageInput = EncodedImage | RawImage


def image_bytes(image: ImageInput) -> int:
    """The bytes an admitted image holds while it waits (the engine's byte budget)."""
    return len(image.data) if isinstance(image, EncodedImage) else len(image.pixels)


def check_media_type(content_type: str | None) -> str:
    """Normalise a ``Content-Type`` and refuse types that cannot be images (``UnsupportedMediaType``)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type in IMAGE_MEDIA_TYPES or media_type in SNIFFED_MEDIA_TYPES:
        return media_type
    raise UnsupportedMediaType(
        f"unsupported media type {media_type!r}: send image/jpeg, image/png, image/webp or image/bmp"
    )


def sniff_format(data: bytes) -> ImageFormat | None:
    """The image format from the magic bytes, or None."""
    if is_jpeg(data):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"BM"):
        return "bmp"
    return None


def _jpeg_size(data: bytes) -> tuple[int, int]:
    try:
        return jpeg_size(data)
    except ValueError as exc:
        raise InvalidImage(str(exc)) from None


def _webp_size(data: bytes) -> tuple[int, int]:
    if len(data) < 30:
        raise InvalidImage("truncated WebP header")
    (riff_size,) = struct.unpack_from("<I", data, 4)
    if riff_size + 8 > len(data):
        raise InvalidImage("truncated WebP: the RIFF size exceeds the data")
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the 3-byte start code
        w, h = struct.unpack_from("<HH", data, 26)
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":  # lossless: (w-1, h-1) packed in 14-bit fields
        (bits,) = struct.unpack_from("<I", data, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit (w-1, h-1)
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    raise InvalidImage(f"unsupported WebP chunk {chunk!r}")


def _bmp_size(data: bytes) -> tuple[int, int]:
    if len(data) < 26:
        raise InvalidImage("truncated BMP header")
    (dib_size,) = struct.unpack_from("<I", data, 14)
    if dib_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        w, h = struct.unpack_from("<HH", data, 18)
    else:  # BITMAPINFOHEADER and later: signed 32-bit, negative height = top-down rows
        w, h = struct.unpack_from("<ii", data, 18)
    return w, abs(h)


def _png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise InvalidImage("truncated or corrupt PNG header")
    w, h = struct.unpack_from(">II", data, 16)
    return w, h


_SIZE_READERS = {"jpeg": _jpeg_size, "png": _png_size, "webp": _webp_size, "bmp": _bmp_size}


def header_size(data: bytes) -> tuple[ImageFormat, int, int]:
    """``(format, width, height)`` read from the header, without decoding pixels."""
    if not data:
        raise InvalidImage("empty image")
    fmt = sniff_format(data)
    if fmt is None:
        raise InvalidImage("not a JPEG, PNG, WebP or BMP image")
    width, height = _SIZE_READERS[fmt](data)
    return fmt, width, height


def check_pixels(width: int, height: int, max_image_pixels: int) -> None:
    """Refuse empty images (``InvalidImage``) and images above the pixel limit (``PayloadTooLarge``)."""
    if width <= 0 or height <= 0:
        raise InvalidImage(f"image has no pixels ({width}x{height})")
    if width * height > max_image_pixels:
        raise PayloadTooLarge(f"image of {width}x{height} pixels exceeds the limit of {max_image_pixels} pixels")


def checked_header(data: bytes, max_image_pixels: int) -> tuple[ImageFormat, int, int]:
    """The format and size from the header, refused (size limit, truncated JPEG) before any pixel is decoded."""
    fmt, width, height = header_size(data)
    check_pixels(width, height, max_image_pixels)
    # OpenCV 4.x fills a truncated JPEG with grey instead of failing: the end-of-image marker must follow the scan.
    if fmt == "jpeg" and data.rfind(b"\xff\xd9") < data.find(b"\xff\xda"):
        raise InvalidImage("truncated JPEG: no end-of-image marker")
    return fmt, width, height


def decode_image(data: bytes, max_image_pixels: int) -> np.ndarray:
    """Encoded bytes -> uint8 [H, W, 3] BGR at full resolution; header size checked before decoding."""
    return decode_for_input(data, max_image_pixels, None).image


def decode_for_input(data: bytes, max_image_pixels: int, input_hw: tuple[int, int] | None) -> Decoded:
    """Encoded bytes -> ``Decoded`` BGR: a JPEG at the reduction its letterbox into ``input_hw`` allows (``None``:
    full resolution), anything else in full; header size checked before decoding."""
    fmt, width, height = checked_header(data, max_image_pixels)
    if fmt == "jpeg" and input_hw is not None:
        decoded = decode_jpeg_for_input(data, (height, width), input_hw)
    else:
        decoded = decode_full(data)
    if decoded is None or decoded.image.ndim != 3 or decoded.image.shape[2] != 3:
        raise InvalidImage(f"could not decode the {fmt.upper()} image (corrupt or truncated)")
    return decoded


def raw_to_array(raw: RawImage, max_image_pixels: int) -> np.ndarray:
    """Raw pixels -> uint8 [H, W, 3] view in ``raw.channel_order``, after checking size and length."""
    if raw.channel_order not in ("bgr", "rgb"):
        raise InvalidImage(f"channel order must be bgr or rgb, got {raw.channel_order!r}")
    check_pixels(raw.width, raw.height, max_image_pixels)
    expected = raw.width * raw.height * 3
    if len(raw.pixels) != expected:
        raise InvalidImage(f"raw image of {raw.width}x{raw.height}x3 needs {expected} bytes, got {len(raw.pixels)}")
    return np.frombuffer(raw.pixels, dtype=np.uint8).reshape(raw.height, raw.width, 3)


def load_image(
    image: ImageInput, max_image_pixels: int, input_hw: tuple[int, int] | None = None
) -> tuple[Decoded, ChannelOrder]:
    """Either input kind -> ``(Decoded, channel order)``; with ``input_hw`` a large JPEG decodes reduced (raw
    pixels never are). Blocking: call from a worker thread."""
    if isinstance(image, RawImage):
        array = raw_to_array(image, max_image_pixels)
        return Decoded.full(array), image.channel_order
    check_media_type(image.media_type)
    return decode_for_input(image.data, max_image_pixels, input_hw), "bgr"
