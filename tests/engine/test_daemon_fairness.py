"""Fair admission through the real daemon: a tenant's flood does not hold back another tenant's request."""

import threading
import time

import pytest

from conftest import DaemonThread, make_settings
from ponder.client import PonderClient

pytestmark = pytest.mark.model


def wait_for(predicate, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


def test_a_single_request_from_b_is_admitted_before_a_floods_later_ones(tmp_path):
    # One sequence: the engine runs one job at a time, so jobs finish in the order they were admitted.
    d = DaemonThread(make_settings(tmp_path / "state", model={"n_seq_max": 1})).start()
    engine = d.daemon.engine
    finished: list[str] = []
    lock = threading.Lock()

    def ask(token, label, **hints):
        # A slow, shared machine may take minutes for all of them: the order is what is checked.
        with PonderClient(d.address, token or d.token("local"), timeout=900) as c:
            c.ask("Describe the sea in one sentence.", seed=1, **hints)
        with lock:
            finished.append(label)

    try:
        with d.admin() as admin:
            b = admin.create_tenant("b", 100.0).token
        # A's requests think for 16 tokens each: far longer than queueing the rest takes.
        flood = [threading.Thread(target=ask, args=(None, f"a{k}"), kwargs={"thinking_tokens": 16, "samples": 1})
                 for k in range(3)]
        for t in flood:
            t.start()
        wait_for(lambda: engine.queue_depth() == 3, "A's three requests are queued (one running)")
        single = threading.Thread(target=ask, args=(b, "b"))
        single.start()
        wait_for(lambda: engine.queue_depth() == 4, "B's request is queued behind them")
        for t in [*flood, single]:
            t.join(900)
    finally:
        d.stop()
    # First come, first served would put b last; round-robin admits it right after the running a0.
    assert [x[0] for x in finished] == ["a", "b", "a", "a"], finished
