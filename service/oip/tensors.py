"""Tensors as the Open Inference Protocol carries them: datatypes, shapes, the binary form and the JSON form.

Binary form (Triton's binary tensor extension and gRPC ``raw_*_contents``): little-endian, row-major; a BYTES
element is a 4-byte little-endian length followed by that many bytes. JSON form: a flat or nested list in row-major
order; a BYTES element is a JSON string. Wire-neutral: both transports decode into :class:`InputTensor` and encode
:class:`OutputTensor` with these functions. Raises ``InvalidTensor`` with the tensor's name. Imports nothing from
``model``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.errors import InvalidTensor

BYTES = "BYTES"
# Fixed-size datatypes and their little-endian numpy dtypes (BF16 has no numpy type: not accepted).
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPES = frozenset({*DTYPES, BYTES})
_LENGTH = struct.Struct("<I")

TensorData = np.ndarray | tuple[bytes | str, ...]


@dataclass(frozen=True)
class InputTensor:
    """A decoded request tensor.

    ``data`` is a flat numpy array of the datatype's dtype, or for BYTES a tuple of elements: ``bytes`` when they
    came in binary form, ``str`` when they came as JSON text (the consumer decides what the text means).
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: TensorData
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputTensor:
    """A response tensor: ``data`` has ``shape``; BYTES data is an object array of ``bytes``."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


def check_shape(name: str, shape: Sequence[Any]) -> tuple[int, ...]:
    """A shape of non-negative integers (``InvalidTensor`` otherwise)."""
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidTensor(f"input '{name}' has an invalid shape {list(shape)}: dimensions must be integers >= 0")
    return tuple(shape)


def check_datatype(name: str, datatype: Any) -> str:
    """A datatype this codec knows."""
    if datatype not in DATATYPES:
        raise InvalidTensor(f"input '{name}' has an unknown datatype {datatype!r}")
    return datatype


def split_bytes(name: str, buffer: bytes | memoryview, count: int) -> tuple[bytes, ...]:
    """The ``count`` length-prefixed BYTES elements of ``buffer`` (which must hold exactly those)."""
    view = memoryview(buffer)
    items: list[bytes] = []
    offset, end = 0, len(view)
    while offset < end:
        if offset + _LENGTH.size > end or len(items) == count:
            raise InvalidTensor(f"input '{name}': BYTES data does not hold {count} length-prefixed elements")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += _LENGTH.size
        if offset + length > end:
            raise InvalidTensor(f"input '{name}': a BYTES element of {length} bytes runs past the end of the data")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if len(items) != count:
        raise InvalidTensor(f"input '{name}': expected {count} BYTES elements, got {len(items)}")
    return tuple(items)


def join_bytes(items: Sequence[bytes]) -> bytes:
    """BYTES elements in binary form: each prefixed by its uint32 little-endian length."""
    return b"".join(part for item in items for part in (_LENGTH.pack(len(item)), item))


def from_binary(name: str, datatype: str, shape: tuple[int, ...], buffer: bytes | memoryview) -> TensorData:
    """Decode a tensor's binary form (a request's binary section or gRPC raw contents)."""
    count = math.prod(shape)
    if datatype == BYTES:
        return split_bytes(name, buffer, count)
    dtype = DTYPES[datatype]
    if len(buffer) != count * dtype.itemsize:
        raise InvalidTensor(
            f"input '{name}': {len(buffer)} bytes of {datatype} data for shape {list(shape)}, "
            f"expected {count * dtype.itemsize}"
        )
    return np.frombuffer(buffer, dtype)


def _flatten_text(name: str, data: Any) -> tuple[str, ...]:
    out: list[str] = []
    stack = [data]
    while stack:  # iterative, in row-major order: deep nesting cannot exhaust the Python stack
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, str):
            out.append(item)
        else:
            raise InvalidTensor(f"input '{name}': BYTES data in JSON must be strings, got {type(item).__name__}")
    return tuple(out)


def from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> TensorData:
    """Decode a tensor's JSON ``data`` (flat or nested, row-major), checking the element count and value range."""
    count = math.prod(shape)
    if datatype == BYTES:
        items = _flatten_text(name, data if isinstance(data, list) else [data])
        if len(items) != count:
            raise InvalidTensor(f"input '{name}': {len(items)} elements for shape {list(shape)}, expected {count}")
        return items
    dtype = DTYPES[datatype]
    try:
        values = np.asarray(data).reshape(-1)
    except (ValueError, TypeError, OverflowError):  # ragged nesting, huge integers
        raise InvalidTensor(f"input '{name}': JSON data is not a regular array of numbers") from None
    if values.size != count:
        raise InvalidTensor(f"input '{name}': {values.size} elements for shape {list(shape)}, expected {count}")
    kind = values.dtype.kind if values.size else dtype.kind
    accepted = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}[dtype.kind]
    if kind not in accepted:
        raise InvalidTensor(f"input '{name}': JSON values do not fit datatype {datatype}")
    if dtype.kind in "iu" and values.size:
        info = np.iinfo(dtype)
        if values.min() < info.min or values.max() > info.max:
            raise InvalidTensor(f"input '{name}': values outside the range of {datatype}")
    return values.astype(dtype)


def to_binary(tensor: OutputTensor) -> bytes:
    """A response tensor's binary form."""
    if tensor.datatype == BYTES:
        return join_bytes(tensor.data.reshape(-1).tolist())
    return np.ascontiguousarray(tensor.data, dtype=DTYPES[tensor.datatype]).tobytes()


def to_json(tensor: OutputTensor) -> list[Any]:
    """A response tensor's JSON ``data``: flat, row-major (BYTES as UTF-8 text)."""
    flat = tensor.data.reshape(-1).tolist()
    if tensor.datatype == BYTES:
        return [item.decode("utf-8", "replace") for item in flat]
    return flat
