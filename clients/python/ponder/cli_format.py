"""How the CLI prints replies: short aligned blocks for people, one JSON object for scripts."""

from __future__ import annotations

from typing import Any

from . import cli_json
from .v1 import ponder_pb2

SEVERITY = {1: "low", 2: "medium", 3: "high"}


def to_dict(message: Any) -> Any:
    """A reply as JSON-ready values, by the rules of ponder.cli_json (docs/json.md)."""
    return cli_json.to_json(message)


def dump_json(value: Any) -> None:
    """Print a reply (a message, or dicts and lists of them) as one JSON document: every `--json` goes through here."""
    cli_json.dump(value)


def _row(label: str, value: str) -> None:
    print(f"  {label:<11} {value}")


def assessment_line(a: ponder_pb2.Assessment) -> str:
    probs = ", ".join(f"{k} {a.severity_probs[k]:.2f}" for k in ("low", "medium", "high") if k in a.severity_probs)
    text = (
        f"severity={SEVERITY.get(a.severity, '?')}  needs_reasoning={'yes' if a.needs_reasoning else 'no'}"
        f"  (p: {probs}; reasoning {a.needs_reasoning_prob:.2f}; model {a.model_version})"
    )
    return text


def plan_line(p: ponder_pb2.Plan, currency: str) -> str:
    return (
        f"level={p.level}{f'  model={p.model}' if p.model else ''}  thinking<={p.thinking_tokens}  samples={p.samples}  answer<={p.answer_tokens}"
        f"  format={p.answer_format or 'auto'}  (worst case {p.worst_case_cost:.4f} {currency})"
    )


def _assessment_block(a: ponder_pb2.Assessment) -> None:
    _row("assessment", assessment_line(a))
    for note in a.adjustments:
        _row("", f"adjusted: {note}")
    for c in a.explanation:
        _row("", f"{c.axis:<16} {c.weight:+.3f}  {c.feature}")


def print_choices(p: ponder_pb2.Plan, currency: str) -> None:
    """Expected-loss planning's why: the plan's level and the next best, each cost + P(wrong) x loss."""
    if not p.choices:
        return
    mine = next((c for c in p.choices if c.level == p.level), None)
    other = next((c for c in p.choices if c.level != p.level), None)
    width = max(len(c.level) for c in p.choices)
    _row("weighed", f"{'level':<{width}}  expected cost  P(wrong)  expected loss  total ({currency})")
    for label, c in (("chosen", mine), ("next best", other)):
        if c is not None:
            _row(label, f"{c.level:<{width}}  {c.expected_cost:>13.4f}  {c.p_wrong:>8.3f}  {c.expected_wrong_loss:>13.4f}"
                        f"  {c.expected_total:.4f}")


def print_answer(r: ponder_pb2.AskResponse, text: bool = True, explain: bool = False) -> None:
    if text:
        print(r.text or "(no answer)")
        print()
    currency = r.balance.currency or "credits"
    _assessment_block(r.assessment)
    _row("plan", plan_line(r.plan, currency))
    for reason in r.plan.reasons:
        _row("", reason)
    if explain:
        print_choices(r.plan, currency)
    if r.votes:
        tie = len(r.votes) > 1 and r.votes[0].count == r.votes[1].count
        note = "  (a tie: the first sample to give a leading answer wins)" if tie else ""
        _row("votes", ", ".join(f"{v.answer!r} x{v.count}" for v in r.votes) + note)
    u = r.usage
    stopped = f", {u.samples_stopped} stopped early (vote decided)" if u.samples_stopped else ""
    stopped += f", {u.samples_pruned} pruned (low confidence)" if u.samples_pruned else ""
    stopped += f"; stopped: {u.stop_reason}" if u.stop_reason else ""
    _row(
        "usage",
        f"prompt {u.prompt_tokens}, thinking {u.thinking_tokens}, answer {u.answer_tokens}, forced {u.forced_tokens} tokens;"
        f" {u.samples_run} sample(s) run{stopped}",
    )
    if r.HasField("verified"):
        _row("verified", "right (the answer passed the check)" if r.verified else "wrong (the answer failed the check)")
    _row("cost", f"{r.cost:.4f} {currency}  in {r.latency_seconds:.2f}s")
    _row("balance", _balance_text(r.balance))
    _row("request", r.request_id)
    if r.replayed:
        _row("replayed", "the stored answer to this idempotency key: not run or charged again (cost and balance as then)")


def print_quote(q: ponder_pb2.QuoteResponse) -> None:
    currency = q.balance.currency or "credits"
    _assessment_block(q.assessment)
    _row("plan", plan_line(q.plan, currency))
    for reason in q.plan.reasons:
        _row("", reason)
    print_choices(q.plan, currency)
    _row("prompt", f"{q.prompt_tokens} tokens")
    _row("balance", _balance_text(q.balance))


def _balance_text(b: ponder_pb2.Balance) -> str:
    return (
        f"{b.remaining:.4f} of {b.budget:.4f} {b.currency} left this {b.window}"
        f" (spent {b.spent:.4f}, reserved {b.reserved:.4f}; renews {b.window_end.ToDatetime():%Y-%m-%d %H:%M} UTC)"
    )


def print_balance(b: ponder_pb2.Balance) -> None:
    print(f"{b.tenant}: {_balance_text(b)}")
