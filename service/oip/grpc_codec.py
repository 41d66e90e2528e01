"""``inference.ModelInferRequest`` / ``ModelInferResponse`` <-> the wire-neutral request and result.

Inputs are read from ``raw_input_contents`` (one entry per input, as tritonclient sends them) or, when that is
empty, from the typed ``contents`` fields. Outputs always travel in ``raw_output_contents``: tritonclient decodes
only those (typed output contents would reach it empty). Imports nothing from ``model``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from service.errors import InvalidTensor
from service.oip.detector_io import InferRequest, check_input
from service.oip.serving import InferResult
from service.oip.tensors import (
    BYTES,
    InputTensor,
    TensorData,
    check_datatype,
    check_shape,
    from_binary,
    from_json,
    to_binary,
)
from service.pb.inference import grpc_service_pb2 as pb

# Typed contents: which InferTensorContents field carries each datatype (8/16-bit values ride in 32-bit fields).
_TYPED_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    BYTES: "bytes_contents",
}


def parameters(entries: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """A parameter map as plain Python values."""
    out = {}
    for key, parameter in entries.items():
        which = parameter.WhichOneof("parameter_choice")
        out[key] = getattr(parameter, which) if which else None
    return out


def _typed(name: str, datatype: str, shape: tuple[int, ...], contents: pb.InferTensorContents) -> TensorData:
    field = _TYPED_FIELD.get(datatype)
    if field is None:
        raise InvalidTensor(f"input '{name}': {datatype} has no typed contents; send raw_input_contents")
    values = getattr(contents, field)
    if datatype == BYTES:
        if len(values) != math.prod(shape):
            raise InvalidTensor(f"input '{name}': {len(values)} elements for shape {list(shape)}")
        return tuple(values)
    return from_json(name, datatype, shape, list(values))  # the same count and range checks as JSON data


def decode_request(request: pb.ModelInferRequest, max_images: int) -> InferRequest:
    """Protobuf request -> wire-neutral request (contract checks, batch size included, before any data is
    decoded)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidTensor(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    inputs = []
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        datatype = check_datatype(name, tensor.datatype)
        shape = check_shape(name, list(tensor.shape))
        check_input(request.model_name, name, datatype, shape, max_images)
        if raw:
            if tensor.HasField("contents") and tensor.contents.ByteSize():
                raise InvalidTensor(f"input '{name}': send raw_input_contents or typed contents, not both")
            data = from_binary(name, datatype, shape, raw[index])
        else:
            data = _typed(name, datatype, shape, tensor.contents)
        inputs.append(InputTensor(name, datatype, shape, data, parameters(tensor.parameters)))
    return InferRequest(
        model=request.model_name,
        version=request.model_version,
        id=request.id,
        inputs=tuple(inputs),
        parameters=parameters(request.parameters),
        outputs=tuple(output.name for output in request.outputs),
    )


def encode_response(result: InferResult) -> pb.ModelInferResponse:
    """Wire-neutral result -> protobuf response with raw output contents."""
    response = pb.ModelInferResponse(model_name=result.model, model_version=result.version, id=result.id)
    for tensor in result.outputs:
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        response.raw_output_contents.append(to_binary(tensor))
    return response


def from_dict(values: dict[str, Any], message: Message) -> Message:
    """Fill ``message`` from one of ``descriptions``' Triton-shaped dicts (same field names)."""
    return json_format.ParseDict(values, message)
