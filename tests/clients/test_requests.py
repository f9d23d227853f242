"""The Python client's request building: sampler settings travel only when given, and never on a Quote."""

from ponder.client import ask_request
from ponder.v1 import ponder_pb2


def test_temperature_and_top_p_are_set_only_when_given():
    r = ask_request(ponder_pb2.AskRequest, "Hi", temperature=0.0, top_p=0.5)
    assert r.HasField("temperature") and r.temperature == 0.0 and r.top_p == 0.5
    r = ask_request(ponder_pb2.AskStreamRequest, "Hi")
    assert not r.HasField("temperature") and not r.HasField("top_p")


def test_a_quote_carries_no_sampler_settings():
    q = ask_request(ponder_pb2.QuoteRequest, "Hi", temperature=1.0)
    assert type(q) is ponder_pb2.QuoteRequest and q.prompt == "Hi"
    assert {"temperature", "top_p"} & set(q.DESCRIPTOR.fields_by_name) == set()


def test_stop_is_sent_as_a_list_and_only_when_given():
    assert list(ask_request(ponder_pb2.AskRequest, "Hi", stop="\n").stop) == ["\n"]
    assert list(ask_request(ponder_pb2.AskStreamRequest, "Hi", stop=("END", "###")).stop) == ["END", "###"]
    assert list(ask_request(ponder_pb2.AskRequest, "Hi").stop) == []
    assert "stop" not in ask_request(ponder_pb2.QuoteRequest, "Hi", stop="x").DESCRIPTOR.fields_by_name


def test_choices_travel_only_when_given():
    assert ask_request(ponder_pb2.AskRequest, "Hi", choices=3).choices == 3
    assert ask_request(ponder_pb2.AskStreamRequest, "Hi").choices == 0
