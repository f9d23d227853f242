"""The engine's waiting room admits round-robin by tenant; a cancelled job leaves at once. No model."""

from ponderd.engine import GenerationJob, PreparedPrompt
from ponderd.engine.jobs import JobQueue

PROMPT = PreparedPrompt((1, 2, 3), (), (), ())


def job(tenant: str, name: str) -> GenerationJob:
    j = GenerationJob(PROMPT, 1, 0, 4, 1, lambda t: t, lambda a, r: False, tenant=tenant)
    j.name = name  # for the assertions only
    return j


def admit_all(q: JobQueue) -> list[str]:
    order = []
    while (head := q.head()) is not None:
        q.take(head)
        order.append(head[0].name)
    return order


def test_a_flooding_tenant_takes_turns_with_the_others():
    q = JobQueue(max_queue=20)
    for k in range(4):
        q.submit(job("a", f"a{k}"))
    q.submit(job("b", "b0"))
    q.submit(job("c", "c0"))
    q.submit(job("b", "b1"))
    assert admit_all(q) == ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]


def test_a_tenant_just_served_goes_after_one_that_waited():
    q = JobQueue(max_queue=20)
    q.submit(job("a", "a0"))
    q.take(q.head())  # a0 admitted: a's turn is spent
    q.submit(job("a", "a1"))
    q.submit(job("b", "b0"))
    assert admit_all(q) == ["b0", "a1"]


def test_one_tenant_alone_is_first_come_first_served():
    q = JobQueue(max_queue=20)
    for k in range(3):
        q.submit(job("", f"x{k}"))
    assert admit_all(q) == ["x0", "x1", "x2"]


def test_a_cancelled_waiting_job_leaves_at_once_and_resolves():
    q = JobQueue(max_queue=20)
    a0, a1, b0 = job("a", "a0"), job("a", "a1"), job("b", "b0")
    futures = [q.submit(j) for j in (a0, a1, b0)]
    a1.cancel()
    assert [j.name for j, _ in q.pending] == ["a0", "b0"]
    assert futures[1].done() and futures[1].result().error == "cancelled before it started"
    assert admit_all(q) == ["a0", "b0"]


def test_dropping_a_job_does_not_spend_its_tenants_turn():
    q = JobQueue(max_queue=20)
    for j in (job("b", "b0"), job("a", "a0"), job("a", "a1")):
        q.submit(j)
    q.take(q.head())  # b0 admitted
    q.take(q.head(), turn=False)  # a0 dropped (cancelled or refused), not admitted
    q.submit(job("b", "b1"))
    assert admit_all(q) == ["a1", "b1"]  # a has still not had a turn
