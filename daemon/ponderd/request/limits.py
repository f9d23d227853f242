"""Per-tenant rate and concurrency limits: token buckets checked before the reservation, on this host.

Three limits per tenant, from the policy in force (`[tenants.NAME]` or
`[defaults]`; 0 is no limit):

- `requests_per_minute`: a bucket of that many requests, refilled evenly
  (one every 60/N seconds);
- `tokens_per_minute`: a bucket of tokens; an ask takes its plan's worst case
  (prompt, forced, every sample's thinking and answer caps, refinement rounds)
  when admitted, and the difference to what it used is given back (or taken)
  when it settles;
- `max_concurrent`: asks of the tenant running at once.

`admit` checks all three and takes from each only if all pass, with no await
in between, so the event loop makes it atomic. A refused ask raises
RateLimited (RESOURCE_EXHAUSTED with QuotaFailure naming the limit and
RetryInfo saying when a retry can pass) before anything is reserved: nothing
is charged and no spend record is written. The buckets are kept in memory on
this host: a restart fills them again, and on the fleet ledger each host
enforces the full limits on its own (docs/policy.md).

A reload changes the limits for the next check; the buckets keep what they
hold (cut to a lowered capacity) and running asks keep their slots.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from datetime import datetime

from ponderd.clock import Clock
from ponderd.errors import RateLimited
from ponderd.planning.planner import Plan
from ponderd.planning.policy import TenantRules


def worst_case_tokens(plan: Plan) -> int:
    """The most tokens a plan can read and write: what tokens_per_minute counts when the ask is admitted."""
    per_sample = plan.thinking_tokens + plan.answer_tokens
    refine = plan.refine * (plan.prompt_tokens + plan.answer_tokens + plan.refine_tokens + plan.forced_tokens)
    return plan.prompt_tokens + plan.forced_tokens + plan.samples * per_sample + refine


@dataclass
class _Bucket:
    level: float
    at: datetime

    def fill(self, capacity: int, now: datetime) -> None:
        elapsed = max((now - self.at).total_seconds(), 0.0)  # a clock stepped back refills nothing
        self.level = min(float(capacity), self.level + elapsed * capacity / 60.0)
        self.at = now


@dataclass
class _Tenant:
    requests: _Bucket | None = None
    tokens: _Bucket | None = None
    running: int = 0
    # The most asks that ran at once (an observable for tests and the metrics).
    peak: int = 0


@dataclass(frozen=True)
class Admission:
    """An admitted ask's hold on its tenant's limits; `release` it exactly once when the ask ends."""

    tenant: str
    tokens: int
    limiter: "Limiter" = field(repr=False)

    def settle(self, used_tokens: int) -> None:
        """Correct the tokens counted at admission to what the ask used."""
        if self.tokens:
            self.limiter._correct(self.tenant, self.tokens - used_tokens)

    def release(self) -> None:
        self.limiter._release(self.tenant)


class Limiter:
    """Token buckets and running counts per tenant, for the limits the rules in force set."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._tenants: dict[str, _Tenant] = {}

    def running(self, tenant: str) -> int:
        with self._lock:
            return self._tenants[tenant].running if tenant in self._tenants else 0

    def peak(self, tenant: str) -> int:
        with self._lock:
            return self._tenants[tenant].peak if tenant in self._tenants else 0

    def admit(self, tenant: str, rules: TenantRules, tokens: int) -> Admission:
        """Take one request, `tokens` tokens and one running slot, or raise RateLimited and take nothing."""
        now = self.clock.now()
        with self._lock:
            t = self._tenants.setdefault(tenant, _Tenant())
            if rules.max_concurrent and t.running >= rules.max_concurrent:
                raise RateLimited(
                    f"tenant {tenant!r} has {t.running} asks running, its max_concurrent is {rules.max_concurrent}; "
                    "retry when one ends (or ask an admin to raise the limit)",
                    tenant, "max_concurrent", rules.max_concurrent, 1.0,
                )
            rpm, tpm = rules.requests_per_minute, rules.tokens_per_minute
            if rpm:
                t.requests = t.requests or _Bucket(float(rpm), now)
                t.requests.fill(rpm, now)
                if t.requests.level < 1.0:
                    wait = (1.0 - t.requests.level) * 60.0 / rpm
                    raise RateLimited(
                        f"tenant {tenant!r} is at its requests_per_minute limit of {rpm}; retry in {wait:.1f}s",
                        tenant, "requests_per_minute", rpm, wait,
                    )
            if tpm:
                t.tokens = t.tokens or _Bucket(float(tpm), now)
                t.tokens.fill(tpm, now)
                if tokens > tpm:
                    raise RateLimited(
                        f"this ask may use up to {tokens} tokens, more than tenant {tenant!r}'s tokens_per_minute "
                        f"of {tpm} allows at all: ask for fewer (lower thinking_tokens or samples hints, a shorter "
                        "prompt) or ask an admin to raise the limit",
                        tenant, "tokens_per_minute", tpm, 60.0, retryable=False,
                    )
                if t.tokens.level < tokens:
                    wait = (tokens - t.tokens.level) * 60.0 / tpm
                    raise RateLimited(
                        f"tenant {tenant!r} is at its tokens_per_minute limit of {tpm} (this ask may use up to "
                        f"{tokens}, {math.floor(t.tokens.level)} are free); retry in {wait:.1f}s",
                        tenant, "tokens_per_minute", tpm, wait,
                    )
                t.tokens.level -= tokens
            if rpm and t.requests is not None:
                t.requests.level -= 1.0
            t.running += 1
            t.peak = max(t.peak, t.running)
        return Admission(tenant, tokens if tpm else 0, self)

    def _correct(self, tenant: str, unused: int) -> None:
        with self._lock:
            t = self._tenants.get(tenant)
            if t is not None and t.tokens is not None and unused:
                # Given back within the bucket; an ask that used more than counted leaves it in debt.
                t.tokens.level = t.tokens.level + unused

    def _release(self, tenant: str) -> None:
        with self._lock:
            t = self._tenants.get(tenant)
            if t is not None and t.running > 0:
                t.running -= 1
