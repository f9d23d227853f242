"""The chat-completions body -> AskRequest translation (fast: no daemon, no model)."""

from __future__ import annotations

import pytest

from ponder.v1 import ponder_pb2
from ponderd.errors import InvalidRequest
from ponderd.http import chat
from ponderd.http.errors import BadParameter, UnknownModel
from ponderd.request import validate

USER = [{"role": "user", "content": "Hi"}]


def parse(body, key=""):
    return chat.parse(body, ["default", "reasoner"], {"low": "direct", "medium": "careful", "high": "thorough"}.get, key)


def test_the_fields_map_onto_the_ask_request():
    c = parse({
        "model": "reasoner", "seed": 42, "max_completion_tokens": 30, "reasoning_effort": "medium", "temperature": 0.7,
        "user": "u-1", "n": 1, "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "ponder": {"severity": "high", "max_cost": 0.5, "check": {"number": 4}, "explain": True, "samples": 3},
    }, key="k1")
    r = c.request
    assert (c.model, c.stream, c.include_usage) == ("reasoner", True, True)
    assert [(m.role, m.content) for m in r.messages] == [("system", "Be brief."), ("user", "Hi")]
    assert (r.seed, r.hints.answer_tokens, r.hints.level, r.hints.samples) == (42, 30, "careful", 3)
    assert r.hints.severity_floor == ponder_pb2.SEVERITY_HIGH and r.hints.max_cost == 0.5
    assert r.check.number == 4 and r.explain and r.idempotency_key == "k1"
    assert r.HasField("temperature") and r.temperature == 0.7 and not r.HasField("top_p")


def test_temperature_and_top_p_are_carried_and_absent_means_the_models():
    r = parse({"model": "default", "messages": USER, "temperature": 0, "top_p": 0.5}).request
    assert (r.temperature, r.top_p) == (0.0, 0.5)
    r = parse({"model": "default", "messages": USER, "temperature": None}).request
    assert not r.HasField("temperature") and not r.HasField("top_p")


def test_n_asks_for_choices_and_the_reply_has_the_voted_answer_then_the_other_samples():
    assert parse({"model": "default", "messages": USER, "n": 3}).request.choices == 3
    assert parse({"model": "default", "messages": USER}).n == 1
    r = ponder_pb2.AskResponse(text="B!", voted_text="B!", samples=[
        ponder_pb2.Sample(index=0, text="A", finish_reason="stop"), ponder_pb2.Sample(index=1, text="B!", finish_reason="stop"),
        ponder_pb2.Sample(index=2, text="B!", finish_reason="stop"), ponder_pb2.Sample(index=3, text="C", finish_reason="length"),
    ])
    # Choice 0 is the vote's sample (the first with its text); the others follow in sample order, each once.
    assert chat.choices(r, 4) == [("B!", "stop"), ("A", "stop"), ("B!", "stop"), ("C", "length")]
    assert chat.choices(r, 2) == [("B!", "stop"), ("A", "stop")]
    assert chat.choices(r) == [("B!", "stop")]
    assert [c["index"] for c in chat.completion(r, "m", 3)["choices"]] == [0, 1, 2]


def test_stop_is_a_string_or_a_list_of_strings():
    assert list(parse({"model": "default", "messages": USER, "stop": "\n"}).request.stop) == ["\n"]
    assert list(parse({"model": "default", "messages": USER, "stop": ["END", "###", "a", "b"]}).request.stop) == ["END", "###", "a", "b"]
    assert list(parse({"model": "default", "messages": USER, "stop": []}).request.stop) == []


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"temperature": 2.01}, "temperature"), ({"temperature": float("nan")}, "temperature"), ({"top_p": 0.0}, "top_p"),
        ({"stop": ["a"] * 5}, "stop"), ({"stop": ["x", ""]}, "stop"),
    ],
)
def test_one_sampling_rule_for_both_transports(fields, field):
    """validate.sampling is the rule: gRPC's to_input and the HTTP parse both apply it, naming the field."""
    for cls in (ponder_pb2.AskRequest, ponder_pb2.AskStreamRequest):
        with pytest.raises(InvalidRequest) as err:
            validate.ask_request(cls(prompt="Hi", **fields))
        assert err.value.field == field and field in err.value.message
    body = {k: (list(v) if isinstance(v, list) else v) for k, v in fields.items()}
    with pytest.raises(BadParameter) as http_err:
        parse({"model": "default", "messages": USER, **body})
    assert http_err.value.param == field and http_err.value.message == err.value.message
    validate.ask_request(ponder_pb2.AskRequest(prompt="Hi", temperature=0, top_p=1, stop=["a", "b", "c", "d"]))


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"n": 0}, "n"), ({"n": 2.5}, "n"), ({"n": "2"}, "n"), ({"n": 2, "stream": True}, "n"), ({"temperature": -0.1}, "temperature"), ({"temperature": 2.5}, "temperature"),
        ({"temperature": "hot"}, "temperature"), ({"temperature": 10**400}, "temperature"), ({"top_p": 0}, "top_p"), ({"top_p": 1.5}, "top_p"),
        ({"stop": ""}, "stop"), ({"stop": ["a", ""]}, "stop"), ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": 5}, "stop"), ({"stop": ["a", 1]}, "stop"), ({"stop": {"a": 1}}, "stop"),
        ({"logprobs": True}, "logprobs"), ({"tools": [{"type": "function"}]}, "tools"), ({"functions": []}, "functions"),
        ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": "9"}, "max_tokens"), ({"max_tokens": 5, "max_completion_tokens": 6}, "max_tokens"),
        ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"), ({"reasoning_effort": "max"}, "reasoning_effort"),
        ({"stream": "yes"}, "stream"), ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"ponder": {"budget": 1}}, "ponder.budget"), ({"ponder": []}, "ponder"), ({"ponder": {"max_cost": "1"}}, "ponder.max_cost"),
        ({"ponder": {"check": {"exact": 1}}}, "ponder.check"), ({"ponder": {"level": "brief"}, "reasoning_effort": "low"}, "reasoning_effort"),
        ({"messages": "Hi"}, "messages"), ({"messages": []}, "messages"), ({"messages": ["Hi"]}, "messages[0]"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}, "messages[0].tool_calls"),
        ({"user": 5}, "user"),
    ],
)
def test_what_cannot_be_honoured_is_refused_by_name(extra, param):
    with pytest.raises(BadParameter) as err:
        parse({"model": "default", "messages": USER, **extra})
    assert err.value.param == param and param.split("[")[0].split(".")[0] in err.value.message


def test_a_body_that_is_not_an_object_and_an_unknown_model():
    with pytest.raises(BadParameter):
        parse([1, 2])
    with pytest.raises(UnknownModel):
        parse({"model": "gpt-4o", "messages": USER})
    assert parse({"messages": USER}).model == "default"  # absent: the policy routes


def test_documented_no_ops_are_accepted():
    parse({"model": "default", "messages": USER, "user": "x", "metadata": {"a": "b"}, "store": False, "logprobs": False,
           "frequency_penalty": 0, "presence_penalty": 0.0, "tools": [], "response_format": {"type": "text"}, "stop": None})


def test_a_conversation_is_system_turns_then_turns_ending_with_the_users():
    req = ponder_pb2.AskRequest(messages=[
        ponder_pb2.ChatMessage(role="system", content="S1"), ponder_pb2.ChatMessage(role="system", content="S2"),
        ponder_pb2.ChatMessage(role="user", content="A"), ponder_pb2.ChatMessage(role="assistant", content="B"),
        ponder_pb2.ChatMessage(role="user", content="C"),
    ])
    assert validate.conversation(req) == ("S1\n\nS2", (("user", "A"), ("assistant", "B")), "C")
    assert validate.conversation(ponder_pb2.AskRequest(prompt="P", system="S")) == ("S", (), "P")
    for bad in (
        [ponder_pb2.ChatMessage(role="user", content="A"), ponder_pb2.ChatMessage(role="assistant", content="B")],
        [ponder_pb2.ChatMessage(role="user", content="A"), ponder_pb2.ChatMessage(role="system", content="S")],
        [ponder_pb2.ChatMessage(role="robot", content="A")],
        [ponder_pb2.ChatMessage(role="user", content="  ")],
        [ponder_pb2.ChatMessage(role="user", content="A\0")],
    ):
        with pytest.raises(InvalidRequest):
            validate.ask_request(ponder_pb2.AskRequest(messages=bad))
    with pytest.raises(InvalidRequest, match="not both"):
        validate.ask_request(ponder_pb2.AskRequest(prompt="P", messages=[ponder_pb2.ChatMessage(role="user", content="A")]))


def test_usage_counts_forced_tokens_as_prompt_and_thinking_as_reasoning():
    r = ponder_pb2.AskResponse(usage=ponder_pb2.Usage(prompt_tokens=10, forced_tokens=4, thinking_tokens=7, answer_tokens=5))
    assert chat.usage(r) == {
        "prompt_tokens": 14, "completion_tokens": 12, "total_tokens": 26, "completion_tokens_details": {"reasoning_tokens": 7},
    }
