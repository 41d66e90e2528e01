"""REST framing of the Open Inference Protocol: the JSON inference header, Triton's binary tensor extension for
requests and responses, and gzip/deflate request bodies.

Request: with ``Inference-Header-Content-Length: N`` the body is N bytes of JSON header followed by the binary
sections of the inputs that declare ``parameters.binary_data_size``, in input order; without it the whole body is
JSON. Response: outputs asked for in binary (``outputs[].parameters.binary_data``, else the request parameter
``binary_data_output``) follow the JSON header, whose length is sent in the same header; the rest are JSON ``data``.
Raw binary requests (``Inference-Header-Content-Length: 0``) are not supported. Imports nothing from ``model``.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any

from service.errors import InvalidOption, InvalidTensor, PayloadTooLarge, UnsupportedMediaType
from service.oip.detector_io import OUTPUT_NAMES, InferRequest, check_input
from service.oip.serving import InferResult
from service.oip.tensors import InputTensor, check_datatype, check_shape, from_binary, from_json, to_binary, to_json

HEADER_LENGTH = "Inference-Header-Content-Length"
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}  # deflate = zlib-wrapped, as HTTP means it


def decompress(body: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """Undo ``Content-Encoding: gzip|deflate``, refusing output beyond ``max_bytes`` (no decompression bombs)."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in _WBITS:
        raise UnsupportedMediaType(f"unsupported Content-Encoding {encoding!r}: send gzip, deflate or none")
    inflater = zlib.decompressobj(_WBITS[encoding])
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise InvalidOption(f"the body is not valid {encoding} data: {exc}") from None
    if len(out) > max_bytes:
        raise PayloadTooLarge(f"the decompressed body exceeds the limit of {max_bytes} bytes")
    if not inflater.eof:
        raise InvalidOption(f"the {encoding} body is truncated")
    return out


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], memoryview]:
    """The JSON inference header (a dict) and the binary section after it."""
    size = len(body)
    if header_length is None:
        split = size
    else:
        text = header_length.strip()
        if not text.isdigit() or int(text) > size:
            raise InvalidTensor(f"{HEADER_LENGTH} must be an integer in [1, {size}] (the body size), got {text!r}")
        split = int(text)
        if split == 0:
            raise InvalidTensor(f"raw binary requests ({HEADER_LENGTH}: 0) are not supported: send a JSON header")
    try:
        header = json.loads(body[:split])
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: also a >4300-digit integer
        raise InvalidOption(f"failed to parse the request JSON buffer: {exc}") from None
    if not isinstance(header, dict):
        raise InvalidOption("the inference request JSON must be an object")
    return header, memoryview(body)[split:]


def _dict(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidOption(f"{what} must be a JSON object")
    return value


def request_id(header: Mapping[str, Any]) -> str:
    """The request's ``id`` (echoed in the answer and in error messages)."""
    value = header.get("id", "")
    if not isinstance(value, str):
        raise InvalidOption("'id' must be a string")
    return value


def decode_request(
    header: Mapping[str, Any], binary: memoryview, model: str, version: str, max_images: int
) -> tuple[InferRequest, frozenset[str]]:
    """Header + binary section -> the request and the names of the outputs to send in binary form (contract
    checks, batch size included, before any data is decoded)."""
    parameters = _dict(header.get("parameters"), "'parameters'")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list):
        raise InvalidTensor("'inputs' must be a list of tensors")
    inputs, offset = [], 0
    for raw in raw_inputs:
        raw = _dict(raw, "each input")
        name = raw.get("name")
        if not isinstance(name, str):
            raise InvalidTensor("every input needs a 'name'")
        datatype = check_datatype(name, raw.get("datatype"))
        if not isinstance(raw.get("shape"), list):
            raise InvalidTensor(f"input '{name}' needs a 'shape' list")
        shape = check_shape(name, raw["shape"])
        check_input(model, name, datatype, shape, max_images)
        tensor_parameters = _dict(raw.get("parameters"), f"parameters of input '{name}'")
        size = tensor_parameters.get("binary_data_size")
        if size is None:
            if "data" not in raw:
                raise InvalidTensor(f"input '{name}' has neither 'data' nor parameters.binary_data_size")
            data = from_json(name, datatype, shape, raw["data"])
        else:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidTensor(f"input '{name}': binary_data_size {size!r} does not fit the binary data")
            data = from_binary(name, datatype, shape, binary[offset : offset + size])
            offset += size
        inputs.append(InputTensor(name, datatype, shape, data, dict(tensor_parameters)))
    if offset != len(binary):
        raise InvalidTensor(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    names, binary_outputs = _requested_outputs(header.get("outputs"), parameters.get("binary_data_output"))
    request = InferRequest(model, version, request_id(header), tuple(inputs), parameters, names)
    return request, binary_outputs


def _requested_outputs(raw_outputs: Any, binary_default: Any) -> tuple[tuple[str, ...], frozenset[str]]:
    if binary_default is not None and not isinstance(binary_default, bool):
        raise InvalidOption("parameter 'binary_data_output' must be a boolean")
    if raw_outputs is None:
        return (), frozenset(OUTPUT_NAMES) if binary_default else frozenset()
    if not isinstance(raw_outputs, list):
        raise InvalidTensor("'outputs' must be a list")
    names, binary = [], set()
    for raw in raw_outputs:
        raw = _dict(raw, "each requested output")
        name = raw.get("name")
        if not isinstance(name, str):
            raise InvalidTensor("every requested output needs a 'name'")
        output_parameters = _dict(raw.get("parameters"), f"parameters of output '{name}'")
        if output_parameters.get("classification"):
            raise InvalidTensor("the classification extension is not supported")
        if output_parameters.get("binary_data", bool(binary_default)):
            binary.add(name)
        names.append(name)
    return tuple(names), frozenset(binary)


def encode_response(result: InferResult, binary_outputs: frozenset[str]) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers (``Inference-Header-Content-Length`` when binary outputs follow)."""
    entries, sections = [], []
    for tensor in result.outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if tensor.name in binary_outputs:
            section = to_binary(tensor)
            entry["parameters"] = {"binary_data_size": len(section)}
            sections.append(section)
        else:
            entry["data"] = to_json(tensor)
        entries.append(entry)
    header: dict[str, Any] = {"model_name": result.model, "model_version": result.version}
    if result.id:
        header["id"] = result.id
    header["outputs"] = entries
    head = json.dumps(header, separators=(",", ":")).encode()
    if not sections:
        return head, {"content-type": "application/json"}
    headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
    return head + b"".join(sections), headers
