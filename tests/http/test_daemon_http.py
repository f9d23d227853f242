"""The OpenAI-compatible HTTP API through the real `openai` SDK, against a real daemon (gRPC beside it) and the real model."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import sqlite3
import uuid

import grpc
import openai
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import REPO, DaemonThread, counted, eventually, make_settings, scrape
from ponder.v1 import ponder_pb2, ponder_pb2_grpc

pytestmark = pytest.mark.model

PROMPT = "Name a colour."


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory):
    daemon = DaemonThread(make_settings(tmp_path_factory.mktemp("state"), http={"listen": "127.0.0.1:0"})).start()
    yield daemon
    daemon.stop()


def base_url(d: DaemonThread) -> str:
    return f"{d.server.http.address}/v1"


def client(d: DaemonThread, token: str | None = None, **options) -> openai.OpenAI:
    options = {"max_retries": 0, "timeout": 120, **options}
    return openai.OpenAI(base_url=base_url(d), api_key=token or d.token("local"), **options)


def raw(d: DaemonThread, method: str, path: str, content: bytes = b"", headers: dict[str, str] | None = None):
    """(status, headers, body) of one plain HTTP request (no SDK in between)."""
    conn = http.client.HTTPConnection("127.0.0.1", d.server.http.port, timeout=120)
    try:
        conn.request(method, path, body=content or None, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def auth(d: DaemonThread) -> dict[str, str]:
    return {"authorization": f"Bearer {d.token('local')}"}


def spend_rows(d: DaemonThread, tenant: str = "local") -> list[tuple[str, str, int]]:
    with sqlite3.connect(d.settings.database) as conn:
        return conn.execute("SELECT request_id, status, cost_micros FROM spend WHERE tenant = ? ORDER BY rowid", (tenant,)).fetchall()


def new_tenant(d: DaemonThread, name: str, budget: float) -> str:
    with d.admin() as admin:
        return admin.create_tenant(name, budget, "day").token


def test_a_plain_completion_answers_with_usage_and_the_ponder_object(d):
    before = len(spend_rows(d))
    r = client(d).chat.completions.create(model="default", messages=[{"role": "user", "content": PROMPT}], seed=7)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content and r.choices[0].finish_reason in ("stop", "length")
    ponder = r.model_extra["ponder"]
    assert r.id == f"chatcmpl-{ponder['request_id']}"
    # docs/json.md's rules, as the request takes them: "high", not "SEVERITY_HIGH"; integers as numbers.
    assert ponder["plan"]["level"] and ponder["assessment"]["severity"] in ("low", "medium", "high")
    assert isinstance(ponder["usage"]["thinking_tokens"], int) and isinstance(ponder["plan"]["answer_tokens"], int)
    assert ponder["cost"] > 0 and ponder["balance"]["tenant"] == "local"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.completion_tokens_details.reasoning_tokens == ponder["usage"]["thinking_tokens"]
    rows = spend_rows(d)[before:]
    assert [(rid, status) for rid, status, _ in rows] == [(ponder["request_id"], "ok")]
    assert rows[0][2] == round(ponder["cost"] * 1e6)


def test_http_and_grpc_give_the_same_plan_and_charge_for_the_same_request(d):
    messages = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "What colour is the sky?"}]
    r = client(d).chat.completions.create(model="default", messages=messages, seed=11, max_tokens=8)
    ponder = r.model_extra["ponder"]
    with grpc.insecure_channel(d.address) as channel:
        stub = ponder_pb2_grpc.PonderServiceStub(channel)
        request = ponder_pb2.AskRequest(
            messages=[ponder_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in messages],
            seed=11, hints=ponder_pb2.Hints(answer_tokens=8),
        )
        g = stub.Ask(request, metadata=(("authorization", f"Bearer {d.token('local')}"),), timeout=120)
    assert g.plan.level == ponder["plan"]["level"] and g.plan.answer_tokens == ponder["plan"]["answer_tokens"] <= 8
    assert g.text == r.choices[0].message.content
    assert g.cost == pytest.approx(ponder["cost"])
    costs = {rid: cost for rid, _, cost in spend_rows(d)}
    assert costs[g.request_id] == costs[ponder["request_id"]] == round(g.cost * 1e6)


def test_a_streamed_completion_ends_with_usage_and_done(d):
    before = len(spend_rows(d))
    stream = client(d).chat.completions.create(
        model="default", messages=[{"role": "user", "content": PROMPT}], seed=7, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and text
    ponder = finals[0].model_extra["ponder"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert {c.id for c in chunks} == {f"chatcmpl-{ponder['request_id']}"}
    assert [(rid, status) for rid, status, _ in spend_rows(d)[before:]] == [(ponder["request_id"], "ok")]
    # The same request, plain: the same text for the same seed.
    plain = client(d).chat.completions.create(model="default", messages=[{"role": "user", "content": PROMPT}], seed=7)
    assert plain.choices[0].message.content == text


def test_the_raw_stream_is_server_sent_events_ending_with_done(d):
    body = {"model": "default", "messages": [{"role": "user", "content": PROMPT}], "stream": True, "seed": 3}
    status, headers, content = raw(
        d, "POST", "/v1/chat/completions", json.dumps(body).encode(), {"content-type": "application/json", **auth(d)},
    )
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    lines = [line for line in content.decode().split("\n") if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["object"] == "chat.completion.chunk"


def test_the_async_client_answers_and_streams(d):
    async def main():
        async with openai.AsyncOpenAI(base_url=base_url(d), api_key=d.token("local"), max_retries=0, timeout=120) as c:
            r = await c.chat.completions.create(model="default", messages=[{"role": "user", "content": PROMPT}])
            stream = await c.chat.completions.create(model="default", messages=[{"role": "user", "content": PROMPT}], stream=True)
            chunks = [chunk async for chunk in stream]
        return r, chunks

    r, chunks = asyncio.run(main())
    assert r.choices[0].message.content
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_models_lists_default_and_health_agrees_with_grpc(d):
    models = client(d).models.list()
    assert [m.id for m in models.data][0] == "default"
    with grpc.insecure_channel(d.address) as channel:
        grpc_status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=30).status
    assert grpc_status == health_pb2.HealthCheckResponse.SERVING
    for path in ("/healthz", "/readyz"):
        status, _, content = raw(d, "GET", path)
        assert status == 200 and json.loads(content)["status"] == "SERVING"


def test_a_bad_key_is_an_authentication_error(d):
    before = len(spend_rows(d))
    with pytest.raises(openai.AuthenticationError) as err:
        client(d, "pnd_nope_nope").chat.completions.create(model="default", messages=[{"role": "user", "content": PROMPT}])
    assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
    assert err.value.response.headers["x-request-id"] == err.value.body["request_id"]
    status, _, body = raw(d, "GET", "/v1/models")  # no key at all
    assert status == 401 and "Authorization: Bearer" in json.loads(body)["error"]["message"]
    assert len(spend_rows(d)) == before


def test_an_admin_key_and_a_refused_hint_are_permission_errors(d):
    with pytest.raises(openai.PermissionDeniedError):
        client(d, d.token("admin")).chat.completions.create(model="default", messages=[{"role": "user", "content": PROMPT}])
    token = new_tenant(d, "plain", 100.0)  # the small policy's defaults allow no level hint
    with pytest.raises(openai.PermissionDeniedError) as err:
        client(d, token).chat.completions.create(
            model="default", messages=[{"role": "user", "content": PROMPT}], reasoning_effort="high",
        )
    assert "level" in err.value.message


def test_an_exhausted_budget_is_a_rate_limit_error_with_insufficient_quota(d):
    token = new_tenant(d, "tiny", 0.01)
    with pytest.raises(openai.RateLimitError) as err:
        client(d, token, max_retries=2).chat.completions.create(model="default", messages=[{"role": "user", "content": PROMPT}])
    assert err.value.status_code == 429 and err.value.code == "insufficient_quota"
    assert err.value.response.headers["x-should-retry"] == "false"
    # One refusal: the SDK did not retry what cannot succeed.
    assert [(status, cost) for _, status, cost in spend_rows(d, "tiny")] == [("refused", 0)]


def test_a_budget_driven_to_exhaustion_through_the_sdk_matches_the_ledger(d):
    token = new_tenant(d, "drained", 0.3)
    c = client(d, token)
    charged = 0.0
    with pytest.raises(openai.RateLimitError):
        for _ in range(50):
            r = c.chat.completions.create(model="default", messages=[{"role": "user", "content": PROMPT}], max_tokens=16)
            charged += r.model_extra["ponder"]["cost"]
    rows = spend_rows(d, "drained")
    assert rows[-1][1] == "refused" and all(status == "ok" for _, status, _ in rows[:-1])
    assert sum(cost for _, _, cost in rows) == pytest.approx(charged * 1e6, abs=len(rows))
    assert sum(cost for _, _, cost in rows) <= 300_000


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "default", "messages": []}, "messages"),
        ({"model": "default", "messages": [{"role": "user", "content": PROMPT}], "frobnicate": 1}, "frobnicate"),
        ({"model": "default", "messages": [{"role": "user", "content": PROMPT}], "n": 0}, "n"),
        ({"model": "default", "messages": [{"role": "user", "content": PROMPT}], "n": 9}, "n"),  # over max_samples
        ({"model": "default", "messages": [{"role": "user", "content": PROMPT}], "temperature": 3.0}, "temperature"),
        ({"model": "default", "messages": [{"role": "user", "content": PROMPT}], "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": "default", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": -1}, "max_tokens"),
        ({"model": "default", "messages": [{"role": "tool", "content": PROMPT}]}, "messages[0].role"),
        ({"model": "default", "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"model": "default", "messages": [{"role": "user", "content": PROMPT}], "ponder": {"severity": "dire"}}, "ponder.severity"),
    ],
)
def test_bad_parameters_are_bad_request_errors_naming_the_parameter(d, body, param):
    before = len(spend_rows(d))
    extra = {k: v for k, v in body.items() if k not in ("model", "messages")}
    with pytest.raises(openai.BadRequestError) as err:
        client(d).chat.completions.create(model=body["model"], messages=body["messages"], extra_body=extra)
    assert err.value.param == param and err.value.status_code == 400
    assert len(spend_rows(d)) == before


def test_an_unknown_model_is_not_found(d):
    with pytest.raises(openai.NotFoundError) as err:
        client(d).chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": PROMPT}])
    assert err.value.code == "model_not_found" and err.value.param == "model"


@pytest.mark.parametrize(
    "content, headers",
    [
        (b'{"model": "default", "messages": [', {"content-type": "application/json"}),
        (b'{"model": "default"}', {"content-type": "text/plain"}),
        (b'{"model": "\xff"}', {"content-type": "application/json"}),
        (b"[" * 100_000, {"content-type": "application/json"}),
        (b" " * (10 * 1024 * 1024), {"content-type": "application/json"}),
        (json.dumps({"model": "default", "messages": [{"role": "user", "content": "hi"}] * 1000}).encode(),
         {"content-type": "application/json"}),
    ],
    ids=["truncated", "content-type", "not-utf8", "deep", "10MB", "1000-messages"],
)
def test_raw_bad_bodies_are_clear_4xx_and_charge_nothing(d, content, headers):
    before = len(spend_rows(d))
    status, got, body = raw(d, "POST", "/v1/chat/completions", content, {**auth(d), **headers})
    assert status == 400, body
    error = json.loads(body)["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    assert got["x-request-id"] == error["request_id"]
    assert len(spend_rows(d)) == before
    assert raw(d, "GET", "/readyz")[0] == 200


def test_an_idempotency_key_replays_with_one_charge_shared_with_grpc(d):
    key = str(uuid.uuid4())
    messages = [{"role": "user", "content": PROMPT}]
    c = client(d)
    first = c.chat.completions.with_raw_response.create(
        model="default", messages=messages, seed=5, extra_headers={"Idempotency-Key": key},
    )
    again = c.chat.completions.with_raw_response.create(
        model="default", messages=messages, seed=5, extra_headers={"Idempotency-Key": key},
    )
    a, b = first.parse(), again.parse()
    assert again.headers["x-ponder-replayed"] == "true" and b.model_extra["ponder"]["replayed"]
    assert a.choices[0].message.content == b.choices[0].message.content and a.id == b.id
    # The same key and request on gRPC: the stored answer again.
    with grpc.insecure_channel(d.address) as channel:
        stub = ponder_pb2_grpc.PonderServiceStub(channel)
        request = ponder_pb2.AskRequest(messages=[ponder_pb2.ChatMessage(role="user", content=PROMPT)], seed=5, idempotency_key=key)
        g = stub.Ask(request, metadata=(("authorization", f"Bearer {d.token('local')}"),), timeout=120)
    assert g.replayed and g.request_id == a.model_extra["ponder"]["request_id"]
    assert [rid for rid, _, _ in spend_rows(d)].count(g.request_id) == 1
    # Streamed, the same key replays the stored answer as one content chunk, charged nothing more.
    stream = c.chat.completions.create(
        model="default", messages=messages, seed=5, stream=True, extra_headers={"Idempotency-Key": key},
    )
    chunks = list(stream)
    assert "".join(x.choices[0].delta.content or "" for x in chunks if x.choices) == a.choices[0].message.content
    assert [rid for rid, _, _ in spend_rows(d)].count(g.request_id) == 1
    # The same key with another request is refused.
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="default", messages=[{"role": "user", "content": "Other."}], extra_headers={"Idempotency-Key": key})


def test_temperature_zero_is_greedy_on_both_transports_and_out_of_range_is_refused(d):
    messages = [{"role": "user", "content": "Name a colour."}]
    sdk = client(d)
    answers = {
        sdk.chat.completions.create(
            model="default", messages=messages, seed=seed, max_tokens=6, temperature=0, extra_body={"ponder": {"level": "direct"}},
        ).choices[0].message.content
        for seed in (1, 2, 3)
    }
    assert len(answers) == 1  # greedy: the seed no longer matters
    hot = {
        sdk.chat.completions.create(
            model="default", messages=messages, seed=seed, max_tokens=6, temperature=2, top_p=1,
            extra_body={"ponder": {"level": "direct"}},
        ).choices[0].message.content
        for seed in (1, 2, 3, 4, 5)
    }
    assert len(hot) > 1  # the temperature reached the sampler: seeds differ again
    metadata = (("authorization", f"Bearer {d.token('local')}"),)
    with grpc.insecure_channel(d.address) as channel:
        stub = ponder_pb2_grpc.PonderServiceStub(channel)
        g = stub.Ask(
            ponder_pb2.AskRequest(
                messages=[ponder_pb2.ChatMessage(role="user", content="Name a colour.")], seed=9, temperature=0,
                hints=ponder_pb2.Hints(level="direct", answer_tokens=6),
            ),
            metadata=metadata, timeout=120,
        )
        assert {g.text} == answers
        before = len(spend_rows(d))
        for field, value in (("temperature", 2.5), ("top_p", 0.0)):
            with pytest.raises(grpc.RpcError) as err:
                stub.Ask(ponder_pb2.AskRequest(prompt="Hi", **{field: value}), metadata=metadata, timeout=120)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in err.value.details()
        assert len(spend_rows(d)) == before


STOP_ASK = {"messages": [{"role": "user", "content": "Describe the sea in one sentence."}], "seed": 5, "temperature": 0,
            "max_tokens": 16, "ponder": {"level": "direct"}}


def sdk_ask(d, **extra):
    body = {**STOP_ASK, **extra}
    return client(d).chat.completions.create(
        model="default", messages=body.pop("messages"), extra_body={"ponder": body.pop("ponder")}, **body,
    )


def stop_word(text: str) -> tuple[str, str]:
    """A stop string from the middle of a greedy answer, and that answer cut before its first occurrence."""
    words = text.split()
    assert len(words) >= 3, text
    word = words[2]
    return word, text[: text.find(word)].strip()


def test_stop_cuts_the_answer_on_http_plain_and_streamed_charging_only_what_ran(d):
    full = sdk_ask(d)
    word, cut = stop_word(full.choices[0].message.content)
    before = len(spend_rows(d))
    r = sdk_ask(d, stop=[word, "@@never@@"])
    assert r.choices[0].message.content == cut and r.choices[0].finish_reason == "stop"
    # Fewer answer tokens ran than without the stop string, and only those were charged.
    assert r.usage.completion_tokens < full.usage.completion_tokens
    assert r.model_extra["ponder"]["cost"] < full.model_extra["ponder"]["cost"]
    rows = spend_rows(d)[before:]
    assert [(rid, status, cost) for rid, status, cost in rows] == [
        (r.model_extra["ponder"]["request_id"], "ok", round(r.model_extra["ponder"]["cost"] * 1e6))
    ]
    body = {**STOP_ASK, "stop": word}
    chunks = list(client(d).chat.completions.create(
        model="default", messages=body.pop("messages"), extra_body={"ponder": body.pop("ponder")}, stream=True, **body,
    ))
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    # No chunk carried any part of the stop string: what streamed is the cut answer, nothing more.
    assert "".join(deltas).strip() == cut
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


def test_grpc_and_http_give_the_same_text_and_charge_with_stop_and_seed_and_the_stream_never_sends_it(d):
    word, cut = stop_word(sdk_ask(d).choices[0].message.content)
    r = sdk_ask(d, stop=word)
    metadata = (("authorization", f"Bearer {d.token('local')}"),)
    fields = dict(
        messages=[ponder_pb2.ChatMessage(role="user", content=STOP_ASK["messages"][0]["content"])], seed=5, temperature=0,
        hints=ponder_pb2.Hints(level="direct", answer_tokens=16), stop=[word],
    )
    with grpc.insecure_channel(d.address) as channel:
        stub = ponder_pb2_grpc.PonderServiceStub(channel)
        g = stub.Ask(ponder_pb2.AskRequest(**fields), metadata=metadata, timeout=120)
        events = list(stub.AskStream(ponder_pb2.AskStreamRequest(**fields), metadata=metadata, timeout=120))
    assert g.text == r.choices[0].message.content == cut
    assert [s.finish_reason for s in g.samples] == ["stop"]
    assert g.cost == pytest.approx(r.model_extra["ponder"]["cost"])
    costs = {rid: cost for rid, _, cost in spend_rows(d)}
    assert costs[g.request_id] == costs[r.model_extra["ponder"]["request_id"]]
    answer = "".join(e.delta.text for e in events if e.HasField("delta") and e.delta.phase == ponder_pb2.TextDelta.PHASE_ANSWER)
    assert word not in answer and answer.strip() == cut
    assert events[-1].result.text == cut and events[-1].result.cost == pytest.approx(g.cost)


def test_the_python_client_sends_stop_and_choices(d):
    word, cut = stop_word(sdk_ask(d).choices[0].message.content)
    with d.client() as c:
        r = c.ask("Describe the sea in one sentence.", seed=5, temperature=0, stop=word, level="direct", idempotency_key="")
        assert r.text == cut and [s.finish_reason for s in r.samples] == ["stop"]
        events = list(c.ask_stream("Describe the sea in one sentence.", seed=5, temperature=0, stop=[word], level="direct"))
        assert events[-1].result.text == cut
        many = c.ask("Is the sea blue? Answer yes or no.", seed=21, choices=3, level="direct")
        assert many.plan.samples == 3 and many.usage.samples_stopped == 0 and len(many.samples) == 3


def test_a_voted_answer_is_voted_over_samples_each_cut_by_stop(d):
    metadata = (("authorization", f"Bearer {d.token('local')}"),)
    with grpc.insecure_channel(d.address) as channel:
        g = ponder_pb2_grpc.PonderServiceStub(channel).Ask(
            ponder_pb2.AskRequest(prompt="Name three colours.", seed=3, stop=[" "], hints=ponder_pb2.Hints(samples=3, level="direct")),
            metadata=metadata, timeout=120,
        )
    assert g.plan.samples == 3 and len(g.samples) >= 1
    # Every sample's answer ended at its first space (or sooner): each is one word, and so is what was voted on.
    assert all(" " not in s.text for s in g.samples) and " " not in g.text
    assert sum(v.count for v in g.votes) == sum(1 for s in g.samples if s.finish_reason in ("stop", "length"))
    assert {v.answer for v in g.votes} <= {s.answer for s in g.samples}


@pytest.mark.parametrize(
    "extra, param",
    [({"stop": ""}, "stop"), ({"stop": ["x", ""]}, "stop"), ({"stop": ["1", "2", "3", "4", "5"]}, "stop"), ({"stop": 5}, "stop"),
     ({"stop": [None]}, "stop"), ({"temperature": "warm"}, "temperature"), ({"top_p": 2}, "top_p"),
     ({"n": 0}, "n"), ({"n": 9}, "n"), ({"n": 2, "stream": True}, "n"), ({"n": 3, "ponder": {"samples": 2}}, "n")],
)
def test_raw_bad_sampling_and_n_values_are_400s_naming_the_parameter_and_charge_nothing(d, extra, param):
    before = len(spend_rows(d))
    content = json.dumps({"model": "default", "messages": [{"role": "user", "content": PROMPT}], **extra}).encode()
    status, _, body = raw(d, "POST", "/v1/chat/completions", content, {**auth(d), "content-type": "application/json"})
    error = json.loads(body)["error"]
    assert (status, error["param"], error["type"]) == (400, param, "invalid_request_error") and param in error["message"]
    assert len(spend_rows(d)) == before


def test_grpc_refuses_bad_stop_strings_naming_the_field(d):
    metadata = (("authorization", f"Bearer {d.token('local')}"),)
    before = len(spend_rows(d))
    with grpc.insecure_channel(d.address) as channel:
        stub = ponder_pb2_grpc.PonderServiceStub(channel)
        for stop in (["a"] * 5, ["ok", ""]):
            with pytest.raises(grpc.RpcError) as err:
                stub.Ask(ponder_pb2.AskRequest(prompt="Hi", stop=stop), metadata=metadata, timeout=120)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "stop" in err.value.details()
            with pytest.raises(grpc.RpcError) as err:
                list(stub.AskStream(ponder_pb2.AskStreamRequest(prompt="Hi", stop=stop), metadata=metadata, timeout=120))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "stop" in err.value.details()
    assert len(spend_rows(d)) == before


def test_n_gives_the_voted_answer_then_the_other_samples_each_run_to_its_end_same_on_grpc(d):
    before = len(spend_rows(d))
    r = client(d).chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Is the sea blue? Answer yes or no."}], n=3, seed=21,
        max_tokens=8, extra_body={"ponder": {"level": "direct"}},
    )
    ponder = r.model_extra["ponder"]
    assert [c.index for c in r.choices] == [0, 1, 2] and all(c.message.content for c in r.choices)
    assert ponder["plan"]["samples"] == 3
    # Every sample ran to its end (none stopped by the vote), and the charge is what they ran.
    assert (ponder["usage"]["samples_run"], ponder["usage"]["samples_stopped"]) == (3, 0)
    rows = spend_rows(d)[before:]
    assert [(rid, status, cost) for rid, status, cost in rows] == [(ponder["request_id"], "ok", round(ponder["cost"] * 1e6))]
    metadata = (("authorization", f"Bearer {d.token('local')}"),)
    with grpc.insecure_channel(d.address) as channel:
        g = ponder_pb2_grpc.PonderServiceStub(channel).Ask(
            ponder_pb2.AskRequest(
                messages=[ponder_pb2.ChatMessage(role="user", content="Is the sea blue? Answer yes or no.")], seed=21,
                choices=3, hints=ponder_pb2.Hints(level="direct", answer_tokens=8),
            ),
            metadata=metadata, timeout=120,
        )
    # gRPC's AskResponse.samples are the same full answers: choice 0 is the vote's sample, the others follow in order.
    assert g.text == r.choices[0].message.content and g.cost == pytest.approx(ponder["cost"])
    assert [s.finish_reason for s in g.samples] != [] and all(s.finish_reason in ("stop", "length") for s in g.samples)
    chosen = next(s.index for s in g.samples if s.text == g.voted_text)
    assert [c.message.content for c in r.choices[1:]] == [s.text for s in g.samples if s.index != chosen]


def test_n_that_the_policy_cannot_serve_is_a_400_naming_n_and_charges_nothing(d):
    token = new_tenant(d, "no-samples-hint", 10.0)  # the defaults: no samples hint
    before = len(spend_rows(d, "no-samples-hint"))
    for c, n, extra in ((client(d, token), 2, {}), (client(d), 2, {"stream": True}), (client(d), 3, {"extra_body": {"ponder": {"samples": 2}}})):
        with pytest.raises(openai.BadRequestError) as err:
            c.chat.completions.create(model="default", messages=[{"role": "user", "content": PROMPT}], n=n, **extra)
        assert err.value.param == "n" and "n" in err.value.message
    assert len(spend_rows(d, "no-samples-hint")) == before
    metadata = (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(d.address) as channel:
        with pytest.raises(grpc.RpcError) as grpc_err:
            ponder_pb2_grpc.PonderServiceStub(channel).Ask(ponder_pb2.AskRequest(prompt="Hi", choices=2), metadata=metadata, timeout=120)
    assert grpc_err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "choices" in grpc_err.value.details()


def test_a_grpc_ask_with_messages_and_both_prompt_and_messages(d):
    metadata = (("authorization", f"Bearer {d.token('local')}"),)
    with grpc.insecure_channel(d.address) as channel:
        stub = ponder_pb2_grpc.PonderServiceStub(channel)
        turns = [
            ponder_pb2.ChatMessage(role="user", content="My name is Ada."),
            ponder_pb2.ChatMessage(role="assistant", content="Hello Ada."),
            ponder_pb2.ChatMessage(role="user", content="What is my name?"),
        ]
        r = stub.Ask(ponder_pb2.AskRequest(messages=turns, seed=1), metadata=metadata, timeout=120)
        assert r.text and r.request_id
        with pytest.raises(grpc.RpcError) as err:
            stub.Ask(ponder_pb2.AskRequest(prompt="x", messages=turns), metadata=metadata, timeout=120)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not both" in err.value.details()


def test_a_client_that_drops_mid_stream_stops_the_request_and_pays_for_what_ran(d):
    body = {
        "model": "default", "messages": [{"role": "user", "content": "Think about the sea, then describe it."}],
        "stream": True, "seed": 9, "ponder": {"samples": 5, "thinking_tokens": 64},
    }
    conn = http.client.HTTPConnection("127.0.0.1", d.server.http.port, timeout=120)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"content-type": "application/json", **auth(d)})
    response = conn.getresponse()
    request_id = response.getheader("x-request-id")
    assert response.status == 200 and response.readline().startswith(b"data: ")  # the plan is made: it runs
    conn.sock.shutdown(2)
    conn.close()

    def settled():
        with sqlite3.connect(d.settings.database) as db:
            return db.execute(
                "SELECT status, cost_micros, prompt_tokens, forced_tokens, thinking_tokens, answer_tokens, reserved_micros"
                " FROM spend WHERE request_id = ?", (request_id,),
            ).fetchone()

    status, cost, prompt, forced, thinking, answer, reserved = eventually(settled, timeout=120)
    assert status == "cancelled"
    # The small policy's prices per 1,000 tokens: prompt 1, thinking 2, answer 2.
    assert cost == (prompt + forced) * 1000 + (thinking + answer) * 2000 < reserved
    with sqlite3.connect(d.settings.database) as db:
        assert db.execute("SELECT COUNT(*) FROM reservations").fetchone()[0] == 0


def _example(text: str, marker: str | None = None) -> str:
    """The first ```python block of `text` (after `marker`, when given)."""
    if marker is not None:
        text = text.split(marker, 1)[1]
    return text.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("doc, marker", [("README.md", "<!-- openai-example -->"), ("docs/http.md", None)])
def test_the_documented_openai_examples_run(d, doc, marker, capsys):
    code = _example((REPO / doc).read_text(encoding="utf-8"), marker)
    assert 'base_url="http://127.0.0.1:8080/v1"' in code and "~/.local/state/ponder/local.token" in code
    code = code.replace("http://127.0.0.1:8080/v1", base_url(d)).replace(
        "~/.local/state/ponder/local.token", str(d.settings.state_dir / "local.token"),
    )
    exec(compile(code, doc, "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) >= 2 and printed[0]


def test_http_requests_are_counted_and_logged_with_their_transport(d, caplog):
    caplog.set_level(logging.INFO, logger="ponder.access")
    secret = "Is the word zanzibar-7731 a colour?"
    r = client(d).chat.completions.create(model="default", messages=[{"role": "user", "content": secret}], max_tokens=8)
    request_id = r.model_extra["ponder"]["request_id"]
    eventually(lambda: counted(scrape(d), "ponder_rpcs_total", method="ChatCompletions", code="OK", transport="http"))
    lines = eventually(lambda: [
        rec.getMessage() for rec in caplog.records if rec.name == "ponder.access" and request_id in rec.getMessage()
    ])
    assert "transport=http" in lines[0] and "http_status=200" in lines[0] and "tenant=local" in lines[0]
    assert not any("zanzibar" in rec.getMessage() or d.token("local") in rec.getMessage() for rec in caplog.records)


def test_a_client_that_leaves_a_plain_request_stops_it(d):
    body = {
        "model": "default", "messages": [{"role": "user", "content": "Think about the sea, then describe it."}],
        "seed": 9, "ponder": {"samples": 5, "thinking_tokens": 64},
    }
    sock = socket.create_connection(("127.0.0.1", d.server.http.port), timeout=30)
    data = json.dumps(body).encode()
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + f"authorization: Bearer {d.token('local')}\r\ncontent-length: {len(data)}\r\n\r\n".encode() + data
    )
    (request_id,) = eventually(lambda: set(d.daemon.pipeline.live), timeout=60)  # reserved: it runs
    sock.close()

    def settled():
        with sqlite3.connect(d.settings.database) as db:
            return db.execute("SELECT status, cost_micros, reserved_micros FROM spend WHERE request_id = ?", (request_id,)).fetchone()

    status, cost, reserved = eventually(settled, timeout=120)
    assert status == "cancelled" and cost < reserved
