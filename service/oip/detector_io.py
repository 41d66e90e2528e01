"""The detector's tensor contract on the Open Inference Protocol, and its translation to and from the engine.

Inputs (exactly one per request; B = images in the request, at most ``max_images_per_request``):

* ``IMAGE`` BYTES ``[B]`` (``[B, 1]`` accepted): encoded JPEG/PNG/WebP/BMP files, any sizes in one request.
  In a JSON tensor each element is the file's base64 text (JSON strings cannot carry raw bytes).
* ``IMAGE_RAW`` UINT8 ``[B, H, W, 3]``: decoded pixels, channel order from the ``channel_order`` parameter
  (request or tensor parameter, ``bgr`` by default, as ``yoloxpai.v1``).

Outputs (K = the request's ``max_detections``, else the model's; rows from ``num_dets[b]`` on are padding):
``num_dets`` INT32 ``[B]``; ``boxes`` FP32 ``[B, K, 4]`` xyxy in original-image pixels (pad 0); ``scores`` FP32
``[B, K]`` (pad 0); ``classes`` INT32 ``[B, K]`` (pad -1); ``class_names`` BYTES ``[B, K]`` (pad empty).

Request parameters: ``score_threshold``, ``max_detections``, ``classes`` (comma-separated ids or names),
``channel_order``, ``priority`` (Triton: 1 most urgent, 0 default), ``timeout`` (microseconds; can only lower the
server's timeout; 0 = none given). Others are ignored, as Triton ignores parameters a model does not use.
Imports nothing from ``model``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.engine import DetectOptions, DetectResult
from service.errors import InvalidImage, InvalidOption, InvalidTensor
from service.imaging import EncodedImage, ImageInput, RawImage
from service.oip.tensors import BYTES, InputTensor, OutputTensor


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the contract: its metadata shape (batch first, -1 = any size) and its Triton config entry."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    config_dims: tuple[int, ...]  # without the batch dimension, as Triton's config states it
    config_reshape: tuple[int, ...] | None = None  # () = one value per batch item
    optional: bool = False
    nhwc: bool = False


IMAGE = TensorSpec("IMAGE", BYTES, (-1,), (1,), config_reshape=(), optional=True)
IMAGE_RAW = TensorSpec("IMAGE_RAW", "UINT8", (-1, -1, -1, 3), (-1, -1, 3), optional=True, nhwc=True)
INPUTS = (IMAGE, IMAGE_RAW)
OUTPUTS = (
    TensorSpec("num_dets", "INT32", (-1,), (1,), config_reshape=()),
    TensorSpec("boxes", "FP32", (-1, -1, 4), (-1, 4)),
    TensorSpec("scores", "FP32", (-1, -1), (-1,)),
    TensorSpec("classes", "INT32", (-1, -1), (-1,)),
    TensorSpec("class_names", BYTES, (-1, -1), (-1,)),
)
OUTPUT_NAMES = tuple(spec.name for spec in OUTPUTS)
_INPUTS_BY_NAME = {spec.name: spec for spec in INPUTS}
_CHANNEL_ORDERS = ("bgr", "rgb")


@dataclass(frozen=True)
class InferRequest:
    """A decoded inference request, whichever transport it came by."""

    model: str
    version: str
    id: str
    inputs: tuple[InputTensor, ...]
    parameters: Mapping[str, Any]
    outputs: tuple[str, ...] = ()  # requested output names; empty = all


@dataclass(frozen=True)
class DetectCall:
    """What to ask the engine for one inference request, and which outputs to send back."""

    images: list[ImageInput]
    options: DetectOptions
    priority: int
    timeout_s: float | None
    outputs: tuple[str, ...]


def check_input(model: str, name: str, datatype: str, shape: tuple[int, ...], max_images: int) -> None:
    """Refuse an input the contract does not have, or more than ``max_images`` images, before its data is
    decoded (Triton's wording)."""
    spec = _INPUTS_BY_NAME.get(name)
    if spec is None:
        raise InvalidTensor(f"unexpected inference input '{name}' for model '{model}': send IMAGE or IMAGE_RAW")
    if datatype != spec.datatype:
        raise InvalidTensor(
            f"inference input '{name}' data-type is '{datatype}', but model '{model}' expects '{spec.datatype}'"
        )
    if spec is IMAGE:
        ok = len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)
    else:
        ok = len(shape) == 4 and shape[3] == 3 and shape[1] > 0 and shape[2] > 0
    if not ok or shape[0] < 1:
        expected = "[B] or [B, 1]" if spec is IMAGE else "[B, H, W, 3]"
        raise InvalidTensor(
            f"unexpected shape for input '{name}' for model '{model}'. Expected {expected}, got {list(shape)}"
        )
    if shape[0] > max_images:
        raise InvalidTensor(f"inference request batch-size must be <= {max_images} for '{model}'")


def _number(parameters: Mapping[str, Any], key: str) -> float | None:
    value = parameters.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOption(f"parameter '{key}' must be a number, got {value!r}")
    return float(value)


def _integer(parameters: Mapping[str, Any], key: str) -> int | None:
    value = parameters.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidOption(f"parameter '{key}' must be an integer >= 0, got {value!r}")
    return value


def _text(parameters: Mapping[str, Any], key: str) -> str | None:
    value = parameters.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidOption(f"parameter '{key}' must be a string, got {value!r}")
    return value


def _options(parameters: Mapping[str, Any]) -> DetectOptions:
    classes = _text(parameters, "classes")
    return DetectOptions(
        score_threshold=_number(parameters, "score_threshold"),
        max_detections=_integer(parameters, "max_detections"),
        classes=(tuple(c.strip() for c in classes.split(",") if c.strip()) or None) if classes else None,
    )


def _encoded_images(tensor: InputTensor) -> list[ImageInput]:
    images: list[ImageInput] = []
    for index, item in enumerate(tensor.data):
        if isinstance(item, str):  # a JSON tensor: base64 text
            try:
                item = base64.b64decode(item, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidImage(f"IMAGE[{index}] in a JSON tensor must be base64 text of an image file") from None
        images.append(EncodedImage(item))
    return images


def _raw_images(tensor: InputTensor, parameters: Mapping[str, Any]) -> list[RawImage]:
    order = _text(tensor.parameters, "channel_order") or _text(parameters, "channel_order") or "bgr"
    if order.lower() not in _CHANNEL_ORDERS:
        raise InvalidOption(f"parameter 'channel_order' must be bgr or rgb, got {order!r}")
    batch, height, width, _ = tensor.shape
    pixels = np.asarray(tensor.data, np.uint8).reshape(batch, height * width * 3)  # [B, H*W*3]
    return [RawImage(row.tobytes(), width, height, order.lower()) for row in pixels]  # type: ignore[arg-type]


def to_detect_call(request: InferRequest, max_images: int) -> DetectCall:
    """Check the request against the contract and turn it into engine arguments."""
    names = [tensor.name for tensor in request.inputs]
    if len(names) != 1:
        got = ", ".join(names) or "none"
        raise InvalidTensor(f"expected 1 input (IMAGE or IMAGE_RAW) for model '{request.model}', got {got}")
    tensor = request.inputs[0]
    batch = tensor.shape[0]
    if batch > max_images:
        raise InvalidTensor(f"inference request batch-size must be <= {max_images} for '{request.model}'")
    images = _encoded_images(tensor) if tensor.name == IMAGE.name else _raw_images(tensor, request.parameters)
    unknown = [name for name in request.outputs if name not in OUTPUT_NAMES]
    if unknown:
        raise InvalidTensor(f"unexpected inference output '{unknown[0]}' for model '{request.model}'")
    if len(set(request.outputs)) != len(request.outputs):
        raise InvalidTensor("an output is requested more than once")
    timeout_us = _integer(request.parameters, "timeout")
    return DetectCall(
        images=images,
        options=_options(request.parameters),
        priority=_integer(request.parameters, "priority") or 0,
        timeout_s=timeout_us / 1e6 if timeout_us else None,
        outputs=request.outputs or OUTPUT_NAMES,
    )


def to_outputs(results: Sequence[DetectResult], k: int, names: Sequence[str]) -> list[OutputTensor]:
    """Engine results -> the requested output tensors, padded to ``k`` detections per image."""
    b = len(results)
    num_dets = np.zeros(b, np.int32)  # [B]
    boxes = np.zeros((b, k, 4), np.float32)  # [B, K, 4]
    scores = np.zeros((b, k), np.float32)  # [B, K]
    classes = np.full((b, k), -1, np.int32)  # [B, K]
    class_names = np.full((b, k), b"", object)  # [B, K]
    for i, result in enumerate(results):
        n = min(len(result.scores), k)
        num_dets[i] = n
        boxes[i, :n] = result.boxes_xyxy[:n]
        scores[i, :n] = result.scores[:n]
        classes[i, :n] = result.class_ids[:n]
        class_names[i, :n] = [name.encode() for name in result.class_names[:n]]
    arrays = {"num_dets": num_dets, "boxes": boxes, "scores": scores, "classes": classes, "class_names": class_names}
    specs = {spec.name: spec for spec in OUTPUTS}
    return [OutputTensor(name, specs[name].datatype, arrays[name].shape, arrays[name]) for name in names]


def detections_per_image(options: DetectOptions, model_max: int) -> int:
    """K: the request's ``max_detections`` if given, else the model's (the request cannot raise it)."""
    return min(options.max_detections or model_max, model_max) if model_max > 0 else 0
