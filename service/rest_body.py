"""``/v1`` detect requests off the wire: the query options (:class:`DetectQuery`) and the body, which is the raw
image (``image/*`` or unlabelled), multipart field(s) ``image``, or JSON ``{"images": [{"b64": ...}], ...}``.
Framework-free (the Starlette multipart parser aside). Imports nothing from ``model``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.engine import DetectOptions
from service.errors import InvalidImage, InvalidOption
from service.http_io import off_loop
from service.imaging import EncodedImage, check_media_type
from service.schemas import DetectJSONRequest


@dataclass(frozen=True)
class DetectQuery:
    """The four query options of a detect route, typed (FastAPI's ``Query`` or the router's plain parse)."""

    score_threshold: float | None = None
    max_detections: int | None = None
    classes: tuple[str, ...] | None = None  # ids or names, split on commas
    timeout_ms: float | None = None

    @property
    def options(self) -> DetectOptions:
        """The engine's options (a JSON body may still override them)."""
        return DetectOptions(self.score_threshold, self.max_detections, self.classes)


def split_classes(values: list[str] | None) -> tuple[str, ...] | None:
    """``classes`` query values (repeated, comma-separated) -> the class ids or names to keep; ``None``: all."""
    return tuple(c.strip() for raw in values or () for c in raw.split(",") if c.strip()) or None


def validation_message(errors: list[Mapping]) -> str:
    """pydantic / FastAPI validation errors as one line: ``field: message; ...``."""
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def _b64_image(value: str, index: int) -> EncodedImage:
    if value.startswith("data:"):  # tolerate data URLs: data:image/png;base64,....
        value = value.partition(",")[2]
    try:
        return EncodedImage(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage(f"images[{index}].b64 is not valid base64: {exc}") from None


def parse_json_body(body: bytes, options: DetectOptions, max_images: int) -> tuple[list[EncodedImage], DetectOptions]:
    """``{"images": [{"b64": ...}], "score_threshold"?, "max_detections"?, "classes"?}`` -> images, options."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: also a >4300-digit integer
        raise InvalidOption(f"body is not valid JSON: {str(exc)[:200]}") from None
    images_field = data.get("images") if isinstance(data, dict) else None
    if isinstance(images_field, list) and len(images_field) > max_images:  # before validating a million entries
        raise InvalidOption(f"{len(images_field)} images in one request; the limit is {max_images}")
    try:
        parsed = DetectJSONRequest.model_validate(data)
    except ValidationError as exc:
        raise InvalidOption(validation_message(exc.errors())) from None
    images = [_b64_image(item.b64, i) for i, item in enumerate(parsed.images)]
    # Options in the JSON body win over the query string.
    options = DetectOptions(
        score_threshold=options.score_threshold if parsed.score_threshold is None else parsed.score_threshold,
        max_detections=options.max_detections if parsed.max_detections is None else parsed.max_detections,
        classes=options.classes if parsed.classes is None else tuple(parsed.classes),
    )
    return images, options


async def parse_multipart(headers: Headers, body: bytes, max_images: int) -> list[EncodedImage]:
    """Every ``image`` part of a multipart body (files or fields), in order."""

    async def stream():
        yield body

    parser = MultiPartParser(headers, stream(), max_files=max_images, max_fields=max_images, max_part_size=len(body))
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidImage(f"invalid multipart body: {exc.message}") from None
    images = []
    try:
        for value in form.getlist("image"):
            if isinstance(value, UploadFile):
                media_type = check_media_type(value.content_type)
                images.append(EncodedImage(await value.read(), media_type))
            else:
                raise InvalidImage("multipart field `image` must be a file part")
    finally:
        await form.close()
    if not images:
        raise InvalidImage("multipart body has no `image` part")
    return images


async def parse_detect_body(
    headers: Headers, body: bytes, options: DetectOptions, max_images: int
) -> tuple[list[EncodedImage], DetectOptions]:
    """Dispatch on ``Content-Type``: JSON, multipart, or the raw image; at most ``max_images`` images."""
    content_type = headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if not body:
        raise InvalidImage("empty body: send an image")
    if media_type == "application/json":
        images, options = await off_loop(len(body), parse_json_body, body, options, max_images)
    elif media_type == "multipart/form-data":
        images = await parse_multipart(headers, body, max_images)
    else:
        images = [EncodedImage(body, check_media_type(content_type))]
    if len(images) > max_images:
        raise InvalidOption(f"{len(images)} images in one request; the limit is {max_images}")
    return images, options
