"""The HTTP API serves HTTPS with the daemon's TLS settings: its certificate, its client CA, its [tls] identities
(tests/pki.py makes the CA at run time)."""

from __future__ import annotations

import http.client
import json
import ssl

import openai
import pytest
from pki import CA

from conftest import DaemonThread, make_settings
from ponder.client import AdminClient

pytestmark = pytest.mark.model

BODY = {"model": "default", "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8}


@pytest.fixture(scope="module")
def tls_daemon(tmp_path_factory):
    ca = CA(tmp_path_factory.mktemp("pki") / "ca", "ponder-http-ca")
    server = ca.issue("ponder", dns=("localhost",), ips=("127.0.0.1",))
    settings = make_settings(
        tmp_path_factory.mktemp("state"), http={"listen": "127.0.0.1:0"},
        tls={"cert": server.cert, "key": server.key, "client_ca": ca.path, "identities": {"svc-a": "local"}},
    )
    d = DaemonThread(settings).start()
    yield d, ca, {"svc-a": ca.issue("svc-a", client=True), "svc-b": ca.issue("svc-b", client=True)}
    d.stop()


def context(ca: CA, client=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.path))
    if client is not None:
        ctx.load_cert_chain(client.cert, client.key)
    return ctx


def post(d, ctx, headers):
    conn = http.client.HTTPSConnection("127.0.0.1", d.server.http.port, timeout=120, context=ctx)
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(BODY), headers={"content-type": "application/json", **headers})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_https_with_the_daemons_certificate_and_client_ca(tls_daemon):
    d, ca, clients = tls_daemon
    assert d.server.http.address.startswith("https://127.0.0.1:")
    http_client = openai.DefaultHttpxClient(verify=context(ca, clients["svc-b"]))
    c = openai.OpenAI(base_url=f"{d.server.http.address}/v1", api_key=d.token("local"), max_retries=0, timeout=120,
                      http_client=http_client)
    r = c.chat.completions.create(**BODY)
    assert r.choices[0].message.content and r.model_extra["ponder"]["cost"] > 0
    d.server.reload()  # what SIGHUP does (in an executor thread): new connections get the re-read files
    status, body = post(d, context(ca, clients["svc-b"]), {"authorization": f"Bearer {d.token('local')}"})
    assert status == 200 and body["choices"][0]["message"]["content"]
    # Without a client certificate the CA signed, or in plaintext, no answer at all.
    for make in (lambda: http.client.HTTPSConnection("127.0.0.1", d.server.http.port, timeout=30, context=context(ca)),
                 lambda: http.client.HTTPConnection("127.0.0.1", d.server.http.port, timeout=30)):
        conn = make()
        with pytest.raises((OSError, http.client.HTTPException)):
            conn.request("GET", "/healthz")
            conn.getresponse()
        conn.close()


def test_a_mapped_client_certificate_is_its_tenant_as_on_grpc(tls_daemon):
    d, ca, clients = tls_daemon
    status, body = post(d, context(ca, clients["svc-a"]), {})  # no key: the certificate's mapping decides
    assert status == 200 and body["ponder"]["balance"]["tenant"] == "local"
    status, body = post(d, context(ca, clients["svc-b"]), {})  # not mapped, no key
    assert status == 401 and "Authorization: Bearer" in body["error"]["message"]
    b = clients["svc-b"]
    with AdminClient(d.address, d.token("admin"), timeout=60, tls_ca=str(ca.path), tls_cert=str(b.cert), tls_key=str(b.key)) as admin:
        other = admin.create_tenant("other", 10.0, "day").token
    status, body = post(d, context(ca, clients["svc-a"]), {"authorization": f"Bearer {other}"})
    assert status == 403 and "mapped to tenant 'local'" in body["error"]["message"]
