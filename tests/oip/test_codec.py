"""The OIP codecs without a server: BYTES framing, JSON and binary tensors, the REST body split, compressed
bodies (bounded), and the detector contract's output padding."""

from __future__ import annotations

import gzip
import json
import zlib

import numpy as np
import pytest

from service.engine import DetectOptions, DetectResult
from service.errors import InvalidOption, InvalidTensor, PayloadTooLarge, UnsupportedMediaType
from service.oip.detector_io import InferRequest, detections_per_image, to_detect_call, to_outputs
from service.oip.http_codec import decode_request, decompress, split_body
from service.oip.tensors import InputTensor, OutputTensor, from_binary, from_json, join_bytes, split_bytes, to_binary


def test_bytes_elements_round_trip_and_bad_framing_is_refused():
    items = [b"", b"a", b"\x00" * 300]
    packed = join_bytes(items)
    assert packed[:4] == b"\x00\x00\x00\x00" and packed[4:8] == b"\x01\x00\x00\x00"  # little-endian lengths
    assert split_bytes("t", packed, 3) == tuple(items)
    for bad, count in ((packed[:-1], 3), (packed + b"\x01", 3), (packed, 2), (packed, 4)):
        with pytest.raises(InvalidTensor):
            split_bytes("t", bad, count)


def test_numeric_tensors_check_size_and_range():
    values = np.arange(6, dtype="<f4")
    assert from_binary("t", "FP32", (2, 3), values.tobytes()).tolist() == values.tolist()
    with pytest.raises(InvalidTensor, match="expected 24"):
        from_binary("t", "FP32", (2, 3), values.tobytes()[:-1])
    assert from_json("t", "UINT8", (2, 2), [[0, 1], [2, 255]]).dtype == np.uint8
    for data, datatype in (([0, 256], "UINT8"), ([-1, 0], "UINT8"), ([1.5, 2], "INT32"), (["a", "b"], "FP32")):
        with pytest.raises(InvalidTensor):
            from_json("t", datatype, (2,), data)
    with pytest.raises(InvalidTensor):
        from_json("t", "INT32", (2, 2), [[1, 2], [3]])  # ragged
    assert from_json("t", "BYTES", (2, 1), [["x"], ["y"]]) == ("x", "y")
    out = OutputTensor("o", "INT32", (2,), np.array([1, -1], np.int32))
    assert to_binary(out) == b"\x01\x00\x00\x00\xff\xff\xff\xff"


def test_split_body_follows_the_header_length():
    head = json.dumps({"inputs": []}).encode()
    header, binary = split_body(head + b"tail", str(len(head)))
    assert header == {"inputs": []} and bytes(binary) == b"tail"
    assert split_body(head, None)[0] == {"inputs": []}
    for length in ("-1", "1e3", str(len(head) + 5), "0", " "):
        with pytest.raises((InvalidTensor, InvalidOption)):
            split_body(head + b"tail", length)
    with pytest.raises(InvalidOption):
        split_body(b"[1, 2]", None)  # not an object


def test_binary_outputs_follow_the_request_and_output_parameters():
    image = {"name": "IMAGE", "datatype": "BYTES", "shape": [1], "data": ["aGk="]}
    header = {
        "inputs": [image],
        "outputs": [{"name": "scores", "parameters": {"binary_data": True}}, {"name": "boxes"}],
    }
    request, binary = decode_request(header, memoryview(b""), "m", "", max_images=4)
    assert request.outputs == ("scores", "boxes") and binary == {"scores"}
    _, binary = decode_request(
        {"inputs": [image], "parameters": {"binary_data_output": True}}, memoryview(b""), "m", "", max_images=4
    )
    assert binary == {"num_dets", "boxes", "scores", "classes", "class_names"}


def test_compressed_bodies_are_bounded():
    body = b"x" * 5000
    assert decompress(gzip.compress(body), "gzip", 5000) == body
    assert decompress(zlib.compress(body), "deflate", 5000) == body
    with pytest.raises(PayloadTooLarge):
        decompress(gzip.compress(b"\x00" * 1_000_000), "gzip", 5000)  # a small bomb
    with pytest.raises(InvalidOption, match="truncated"):
        decompress(gzip.compress(body)[:-12], "gzip", 5000)
    with pytest.raises(UnsupportedMediaType):
        decompress(body, "br", 5000)


def test_outputs_are_padded_to_k_and_the_contract_is_checked():
    result = DetectResult(
        model="m",
        model_version="1",
        width=10,
        height=10,
        boxes_xyxy=np.array([[1, 2, 3, 4]], np.float32),
        scores=np.array([0.5], np.float32),
        class_ids=np.array([2], np.int32),
        class_names=("c",),
    )
    outputs = {t.name: t for t in to_outputs([result, result], 3, ("num_dets", "boxes", "classes", "class_names"))}
    assert outputs["num_dets"].data.tolist() == [1, 1] and outputs["boxes"].shape == (2, 3, 4)
    assert outputs["classes"].data.tolist() == [[2, -1, -1]] * 2
    assert outputs["class_names"].data.tolist() == [[b"c", b"", b""]] * 2
    assert detections_per_image(DetectOptions(max_detections=5), 20) == 5
    assert detections_per_image(DetectOptions(), 20) == 20
    tensor = InputTensor("IMAGE", "BYTES", (1,), (b"x",))
    call = to_detect_call(InferRequest("m", "", "", (tensor,), {"timeout": 2500, "classes": "a, 1"}), 4)
    assert call.timeout_s == 0.0025 and call.options.classes == ("a", "1") and call.priority == 0
    for parameters in ({"score_threshold": "high"}, {"max_detections": 1.5}, {"priority": True}, {"timeout": -1}):
        with pytest.raises(InvalidOption):
            to_detect_call(InferRequest("m", "", "", (tensor,), parameters), 4)
    with pytest.raises(InvalidTensor, match="more than once"):
        to_detect_call(InferRequest("m", "", "", (tensor,), {}, ("boxes", "boxes")), 4)
