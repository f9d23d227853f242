"""Server reflection answers under both protocol names a tool may ask: grpc.reflection.v1 and v1alpha."""

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

PATHS = {
    "v1": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "v1alpha": "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
}


def reflect(address: str, path: str, *requests: reflection_pb2.ServerReflectionRequest) -> list:
    """A reflection client speaking the protocol at `path` (v1's messages are v1alpha's, field for field)."""
    with grpc.insecure_channel(address) as ch:
        call = ch.stream_stream(
            path,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        return list(call(iter(requests), timeout=30))


@pytest.mark.parametrize("version", sorted(PATHS))
def test_reflection_lists_services_and_describes_the_api(shared_daemon, version):
    listed, described = reflect(
        shared_daemon.address,
        PATHS[version],
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="ponder.v1.PonderService"),
    )
    names = {s.name for s in listed.list_services_response.service}
    assert names >= {
        "ponder.v1.PonderService", "ponder.v1.AdminService", "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
    }
    files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in described.file_descriptor_response.file_descriptor_proto]
    ponder = next(f for f in files if f.name == "ponder/v1/ponder.proto")
    service = next(s for s in ponder.service if s.name == "PonderService")
    assert {m.name for m in service.method} == {"Ask", "AskStream", "Quote", "GetBalance", "Feedback"}
    assert next(m for m in service.method if m.name == "AskStream").output_type == ".ponder.v1.AskStreamResponse"


@pytest.mark.parametrize("version", sorted(PATHS))
def test_reflection_needs_no_key_and_says_when_a_symbol_is_unknown(shared_daemon, version):
    (reply,) = reflect(
        shared_daemon.address, PATHS[version], reflection_pb2.ServerReflectionRequest(file_containing_symbol="ponder.v1.Nope")
    )
    assert reply.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
