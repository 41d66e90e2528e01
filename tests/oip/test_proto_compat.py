"""Our ``inference`` protos against Triton's, as installed with tritonclient: every message, field and RPC we
declare must exist there under the same name, number, type and cardinality (the wire format), and both sets of
generated modules load in one process (ours live in a private descriptor pool)."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from tritonclient.grpc import model_config_pb2 as triton_config
from tritonclient.grpc import service_pb2 as triton_service

from service.pb.inference import grpc_service_pb2 as ours_service
from service.pb.inference import model_config_pb2 as ours_config


def _type_name(field: FieldDescriptor) -> str:
    if field.message_type is not None:
        return field.message_type.full_name
    if field.enum_type is not None:
        return field.enum_type.full_name
    return str(field.type)


def _compare_enum(ours: EnumDescriptor, theirs: EnumDescriptor) -> None:
    for value in ours.values:
        assert value.name in theirs.values_by_name, f"{ours.full_name}.{value.name} is not in Triton's enum"
        assert theirs.values_by_name[value.name].number == value.number, f"{ours.full_name}.{value.name}"


def _compare_message(ours: Descriptor, theirs: Descriptor) -> int:
    assert ours.full_name == theirs.full_name
    checked = 0
    for field in ours.fields:
        where = f"{ours.full_name}.{field.name}"
        assert field.name in theirs.fields_by_name, f"{where} is not a Triton field"
        other = theirs.fields_by_name[field.name]
        assert (field.number, field.type, field.is_repeated) == (other.number, other.type, other.is_repeated), where
        assert _type_name(field) == _type_name(other), where
        if field.containing_oneof is not None:
            assert other.containing_oneof is not None and field.containing_oneof.name == other.containing_oneof.name
        checked += 1
    for nested in ours.nested_types:
        checked += _compare_message(nested, theirs.nested_types_by_name[nested.name])
    for enum in ours.enum_types:
        _compare_enum(enum, theirs.enum_types_by_name[enum.name])
    return checked


@pytest.mark.parametrize(
    ("ours", "theirs"), [(ours_service, triton_service), (ours_config, triton_config)], ids=["service", "config"]
)
def test_every_message_field_matches_tritons_wire_format(ours, theirs):
    checked = 0
    for name, message in ours.DESCRIPTOR.message_types_by_name.items():
        checked += _compare_message(message, theirs.DESCRIPTOR.message_types_by_name[name])
    for name, enum in ours.DESCRIPTOR.enum_types_by_name.items():
        _compare_enum(enum, theirs.DESCRIPTOR.enum_types_by_name[name])
    assert checked > 20


def test_every_rpc_matches_tritons_signature():
    ours = ours_service.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = triton_service.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours.full_name == theirs.full_name == "inference.GRPCInferenceService"
    assert len(ours.methods) == 12
    for method in ours.methods:
        other = theirs.methods_by_name[method.name]
        assert method.input_type.full_name == other.input_type.full_name, method.name
        assert method.output_type.full_name == other.output_type.full_name, method.name
        assert (method.client_streaming, method.server_streaming) == (other.client_streaming, other.server_streaming)


def test_messages_cross_the_wire_between_both_code_bases():
    request = triton_service.ModelInferRequest(model_name="m", id="7", raw_input_contents=[b"\x01\x00\x00\x00x"])
    request.parameters["priority"].uint64_param = 3
    tensor = request.inputs.add(name="IMAGE", datatype="BYTES", shape=[1])
    tensor.parameters["channel_order"].string_param = "rgb"
    ours = ours_service.ModelInferRequest.FromString(request.SerializeToString())
    assert (ours.model_name, ours.id, ours.parameters["priority"].uint64_param) == ("m", "7", 3)
    assert ours.inputs[0].parameters["channel_order"].string_param == "rgb"
    assert ours.DESCRIPTOR.file.pool is not triton_service.DESCRIPTOR.pool
