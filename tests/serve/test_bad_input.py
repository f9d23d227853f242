"""Bad input through the real daemon: INVALID_ARGUMENT saying what to change, never UNKNOWN/INTERNAL.

Covers values the message types allow but the daemon must not act on (NaN or
infinite max_cost, NUL bytes in text the model reads, times outside what a
datetime holds) and bodies the generated deserializer rejects before any
handler runs (not protobuf at all, or a string field that is not UTF-8).
"""

import logging

import grpc
import pytest

from ponder.client import PonderError
from ponder.v1 import admin_pb2, admin_pb2_grpc, ponder_pb2

pytestmark = pytest.mark.model

ASK = "/ponder.v1.PonderService/Ask"
ASK_STREAM = "/ponder.v1.PonderService/AskStream"
SPEND_REPORT = "/ponder.v1.AdminService/SpendReport"

# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_799

# AskRequest field 1 (prompt), wire type 2: tag 0x0a, length 2, then bytes that are not UTF-8.
NOT_UTF8_PROMPT = b"\x0a\x02\xff\xfe"
# Not protobuf: a length-delimited field claiming 16 bytes and carrying 3.
TRUNCATED = b"\x0a\x10abc"


def errors_logged(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def raw_call(d, method, body, token, stream=False):
    """Send `body` as the request bytes, bypassing the client's serializer; return the RpcError."""
    with grpc.insecure_channel(d.address) as channel:
        make = channel.unary_stream if stream else channel.unary_unary
        call = make(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as err:
            result = call(body, metadata=(("authorization", f"Bearer {token}"),), timeout=60)
            if stream:
                list(result)
    return err.value


def send(client, call, prompt, **kwargs):
    """Ask, Quote or AskStream (read to the end), as `call` names it."""
    if call == "ask_stream":
        return list(client.ask_stream(prompt, **kwargs))
    return getattr(client, call)(prompt, **kwargs)


def still_serves(d, before):
    with d.client() as c:
        after = c.balance()
        assert (after.spent, after.reserved) == (before.spent, before.reserved)
        assert c.quote("Say hi.").plan.level


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("call", ["ask", "quote", "ask_stream"])
def test_a_max_cost_that_is_not_a_finite_number_is_invalid_argument(shared_daemon, caplog, value, call):
    with shared_daemon.client() as c:
        before = c.balance()
        with pytest.raises(PonderError) as err:
            send(c, call, "What is 2 + 2?", max_cost=value)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "hints.max_cost must be a finite number" in err.value.message
    assert errors_logged(caplog) == []
    still_serves(shared_daemon, before)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"prompt": "\0"}, "prompt"),
        ({"prompt": "\0What is 2 + 2?"}, "prompt"),
        ({"prompt": "What is 2 + 2?\0ignore that"}, "prompt"),
        ({"prompt": "What is 2 + 2?", "system": "Be brief.\0"}, "system"),
    ],
)
def test_a_nul_byte_in_text_the_model_reads_is_invalid_argument(shared_daemon, kwargs, field):
    with shared_daemon.client() as c:
        before = c.balance()
        prompt = kwargs.pop("prompt")
        with pytest.raises(PonderError) as err:
            c.ask(prompt, **kwargs)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{field} contains a NUL byte" in err.value.message
    assert "remove it" in err.value.message
    still_serves(shared_daemon, before)


@pytest.mark.parametrize("method, stream, message", [(ASK, False, "AskRequest"), (ASK_STREAM, True, "AskStreamRequest")])
@pytest.mark.parametrize("body", [TRUNCATED, NOT_UTF8_PROMPT, b"\xff\xff\xff\xff"], ids=["truncated", "not-utf8", "junk"])
def test_a_body_that_is_not_a_valid_ask_request_is_invalid_argument(shared_daemon, caplog, method, stream, message, body):
    with shared_daemon.client() as c:
        before = c.balance()
    err = raw_call(shared_daemon, method, body, shared_daemon.token("local"), stream)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"the request is not a valid ponder.v1.{message} message" in err.details()
    assert f"send a serialized {message} " in err.details()
    assert errors_logged(caplog) == []
    still_serves(shared_daemon, before)


def test_a_valid_body_still_decodes_through_the_raw_path(shared_daemon):
    """The guarded deserializer passes good bytes through: the same raw call with a valid body works."""
    body = ponder_pb2.AskRequest(prompt="Say hi.").SerializeToString()
    with grpc.insecure_channel(shared_daemon.address) as channel:
        quote = channel.unary_unary("/ponder.v1.PonderService/Quote", request_serializer=None, response_deserializer=None)
        raw = quote(body, metadata=(("authorization", f"Bearer {shared_daemon.token('local')}"),), timeout=60)
    assert ponder_pb2.QuoteResponse.FromString(raw).plan.level


def test_an_undecodable_admin_request_is_invalid_argument_and_auth_still_comes_first(shared_daemon):
    err = raw_call(shared_daemon, SPEND_REPORT, TRUNCATED, shared_daemon.token("admin"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid ponder.v1.SpendReportRequest message" in err.details()
    # A tenant key is refused for the Admin service before its body is looked at.
    err = raw_call(shared_daemon, SPEND_REPORT, TRUNCATED, shared_daemon.token("local"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


def spend_report(d, since=None, until=None):
    req = admin_pb2.SpendReportRequest()
    for name, (seconds, nanos) in (("since", since), ("until", until)):
        if seconds is not None:
            getattr(req, name).seconds = seconds
            getattr(req, name).nanos = nanos
    with grpc.insecure_channel(d.address) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        return stub.SpendReport(req, metadata=(("authorization", f"Bearer {d.token('admin')}"),), timeout=60)


@pytest.mark.parametrize(
    "since, until, message",
    [
        ((10**12, 0), (None, 0), "since must be between 0001-01-01 and 9999-12-31 UTC"),
        ((0, 0), (MAX_SECONDS + 1, 0), "until must be between 0001-01-01 and 9999-12-31 UTC"),
        ((-(10**13), 0), (None, 0), "since must be between 0001-01-01 and 9999-12-31 UTC"),
        ((MIN_SECONDS - 1, 0), (0, 0), "not seconds=-62135596801"),
        ((0, -1), (10, 0), "since.nanos must be from 0 to 999999999"),
        ((0, 0), (10, 1_000_000_000), "until.nanos must be from 0 to 999999999"),
    ],
)
def test_a_spend_report_time_out_of_range_is_invalid_argument(shared_daemon, caplog, since, until, message):
    with pytest.raises(grpc.RpcError) as err:
        spend_report(shared_daemon, since, until)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    assert errors_logged(caplog) == []


def test_a_spend_report_over_the_whole_timestamp_range_works(shared_daemon):
    report = spend_report(shared_daemon, (MIN_SECONDS, 0), (MAX_SECONDS, 999_999_999))
    assert report.since.seconds == MIN_SECONDS
    assert report.until.seconds == MAX_SECONDS


def test_the_daemon_still_answers_after_bad_input(shared_daemon):
    raw_call(shared_daemon, ASK, NOT_UTF8_PROMPT, shared_daemon.token("local"))
    with shared_daemon.client() as c:
        with pytest.raises(PonderError):
            c.ask("What is 2 + 2?", max_cost=float("nan"))
        assert c.ask("Say hi.", seed=2, thinking_tokens=0).text


def test_every_servicer_method_is_wrapped_so_undecodable_requests_are_refused():
    """An undecodable body reaches the handler as boundary.Undecodable; only `rpc`/`rpc_stream` refuse it."""
    from ponderd.serve.admin_service import AdminService
    from ponderd.serve.service import PonderService

    for servicer, pb in ((PonderService, ponder_pb2), (AdminService, admin_pb2)):
        service = pb.DESCRIPTOR.services_by_name[servicer.__name__]
        unwrapped = [m.name for m in service.methods if not hasattr(getattr(servicer, m.name), "__wrapped__")]
        assert unwrapped == [], f"wrap these with boundary.rpc or rpc_stream: {unwrapped}"
