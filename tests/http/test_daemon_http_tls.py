"""The HTTP API serves HTTPS with the daemon's TLS certificate (tests/pki.py makes the CA at run time)."""

from __future__ import annotations

import http.client
import ssl

import openai
import pytest
from pki import CA

from conftest import DaemonThread, make_settings

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def tls_daemon(tmp_path_factory):
    ca = CA(tmp_path_factory.mktemp("pki") / "ca", "ponder-http-ca")
    server = ca.issue("ponder", dns=("localhost",), ips=("127.0.0.1",))
    settings = make_settings(
        tmp_path_factory.mktemp("state"), tls={"cert": server.cert, "key": server.key}, http={"listen": "127.0.0.1:0"},
    )
    d = DaemonThread(settings).start()
    yield d, ca
    d.stop()


def test_https_with_the_daemons_certificate(tls_daemon):
    d, ca = tls_daemon
    assert d.server.http.address.startswith("https://127.0.0.1:")
    http_client = openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=str(ca.path)))
    c = openai.OpenAI(base_url=f"{d.server.http.address}/v1", api_key=d.token("local"), max_retries=0, timeout=120,
                      http_client=http_client)
    r = c.chat.completions.create(model="default", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8)
    assert r.choices[0].message.content and r.model_extra["ponder"]["cost"] > 0
    # Plain HTTP to the TLS port gets no answer.
    conn = http.client.HTTPConnection("127.0.0.1", d.server.http.port, timeout=30)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        conn.request("GET", "/healthz")
        conn.getresponse()
    conn.close()
