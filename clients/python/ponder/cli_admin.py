"""`ponder admin …`: tenants, keys, budgets, spend, policy, jobs, the risk model. Needs an admin key."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from .cli_connect import tls_options
from .cli_format import SEVERITY, assessment_line, dump_json
from .cli_progress import spinner
from .cli_table import Column, print_table
from .client import AdminClient
from .dates import duration_argument, future_argument, when_argument


def _admin(args: argparse.Namespace) -> AdminClient:
    return AdminClient(args.address, args.token, timeout=args.timeout, **tls_options(args))


TENANT_COLUMNS = (
    Column("tenant"), Column("remaining", "right"), Column("budget", "right"), Column("currency"), Column("window"),
    Column("state"),
)


def _tenant_row(t: Any) -> list[str]:
    b = t.balance
    return [t.name, f"{b.remaining:.4f}", f"{b.budget:.4f}", b.currency, b.window, "enabled" if t.enabled else "DISABLED"]


def _tenants(tenants: list[Any]) -> None:
    print_table(TENANT_COLUMNS, [_tenant_row(t) for t in tenants])


def _tenant_reply(args: argparse.Namespace, tenant: Any) -> int:
    if args.json:
        dump_json(tenant)
    else:
        _tenants([tenant])
    return 0


def tenant_create(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        r = admin.create_tenant(args.name, args.budget, args.window)
    if args.json:
        dump_json(r)
    else:
        _tenants([r.tenant])
        sys.stdout.flush()
        print(f"key {r.key_id}; its token is on the next line, shown once: store it now", file=sys.stderr)
        print(r.token)
    return 0


def tenant_list(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        tenants = admin.list_tenants()
    if args.json:
        dump_json(tenants)
    else:
        _tenants(tenants)
    return 0


def tenant_enable(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        return _tenant_reply(args, admin.set_enabled(args.name, args.enabled))


def budget_set(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        return _tenant_reply(args, admin.set_budget(args.name, args.amount, args.window or ""))


def _moment(ts: Any) -> str:
    """A Timestamp field as `2026-12-07 01:30:00Z`, or '-' when unset."""
    return f"{ts.ToDatetime():%Y-%m-%d %H:%M:%S}Z" if ts.seconds or ts.nanos else "-"


def key_issue(args: argparse.Namespace) -> int:
    if args.expires is not None and args.expires_at is not None:
        print("ponder: give --expires or --expires-at, not both", file=sys.stderr)
        return 2
    with _admin(args) as admin:
        r = admin.issue_key(
            args.tenant or "", "admin" if args.admin else "tenant", args.label or "",
            expires_in=args.expires.total_seconds() if args.expires is not None else None, expires_at=args.expires_at,
            budget=args.budget,
        )
    if args.json:
        dump_json(r)
        return 0
    # The token alone on stdout (`TOKEN=$(ponder admin key issue …)`); the note on stderr.
    expiry = f", expires {_moment(r.expires_at)}" if r.HasField("expires_at") else ""
    print(f"key {r.key_id}{expiry}; its token is on the next line, shown once: store it now", file=sys.stderr)
    print(r.token)
    return 0


def key_rotate(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        r = admin.rotate_key(
            args.key_id, args.overlap.total_seconds(),
            expires_in=args.expires.total_seconds() if args.expires is not None else None,
        )
    if args.json:
        dump_json(r)
        return 0
    expiry = f", expires {_moment(r.expires_at)}" if r.HasField("expires_at") else ""
    print(
        f"key {r.key_id} replaces {r.old_key_id}{expiry}; {r.old_key_id} works until {_moment(r.old_expires_at)}. "
        "The new token is on the next line, shown once: store it now", file=sys.stderr,
    )
    print(r.token)
    return 0


def key_revoke(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        admin.revoke_key(args.key_id)
    if args.json:
        dump_json({"key_id": args.key_id, "revoked": True})
    else:
        print(f"revoked {args.key_id}")
    return 0


def _cap(text: str) -> float | None:
    """`key budget`'s AMOUNT: credits (a number from 0), or `none` to remove the cap."""
    if text.strip().lower() == "none":
        return None
    try:
        amount = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected credits (e.g. 2.5) or 'none', not {text!r}") from None
    if not amount >= 0:
        raise argparse.ArgumentTypeError(f"a budget cap is 0 or more credits, not {text!r}")
    return amount


def key_budget(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        k = admin.set_key_budget(args.key_id, args.amount)
    if args.json:
        dump_json(k)
    else:
        _keys([k])
    return 0


def key_list(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        keys = admin.list_keys(args.tenant or "")
    if args.json:
        dump_json(keys)
        return 0
    _keys(keys)
    return 0


def _keys(keys: list[Any]) -> None:
    # BUDGET: the key's own cap per its tenant's window ('-': none); SPENT: what it spent this window.
    columns = (Column("key"), Column("scope"), Column("tenant"), Column("state"), Column("created"), Column("expires"),
               Column("last used"), Column("budget", "right"), Column("spent", "right"), Column("label"))
    rows = []
    for k in keys:
        state = "revoked" if k.revoked else "expired" if k.expired else "rotating" if k.replaced_by else "active"
        label = (k.label or "-") + (f" (replaced by {k.replaced_by})" if k.replaced_by else "")
        budget = f"{k.budget:.4f}" if k.HasField("budget") else "-"
        spent = f"{k.spent:.4f}" if k.HasField("budget") or k.spent else "-"
        rows.append([k.key_id, k.scope, k.tenant or "-", state, _moment(k.created_at), _moment(k.expires_at),
                     _moment(k.last_used_at), budget, spent, label])
    print_table(columns, rows)


def alerts(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        rows = admin.list_alerts(args.limit)
    if args.json:
        dump_json(rows)
        return 0
    columns = (Column("raised"), Column("tenant"), Column("kind"), Column("spent", "right"), Column("budget", "right"),
               Column("delivery"))
    table = []
    for a in rows:
        if a.delivered:
            state = f"delivered {_moment(a.delivered_at)}"
        elif a.attempts:
            state = f"{a.attempts} failed ({a.last_error}); next try {_moment(a.next_attempt_at)}"
        else:
            state = "pending (or no webhook)"
        table.append([_moment(a.at), a.tenant, a.kind, f"{a.spent:.4f}", f"{a.budget:.4f}", state])
    print_table(columns, table)
    return 0


def _when(ts: Any, seconds: bool = False) -> str:
    return f"{ts.ToDatetime():%Y-%m-%d %H:%M:%S}" if seconds else f"{ts.ToDatetime():%Y-%m-%d %H:%M}"


def spend(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        r = admin.spend(args.tenant or "", args.since, args.until, args.records, by_host=args.by_host)
    if args.json:
        dump_json(r)
        return 0
    print(f"spend from {_when(r.since)} to {_when(r.until)} UTC")
    columns = [Column("tenant")] + ([Column("host")] if args.by_host else []) + [
        Column("requests", "right"), Column("cost", "right"), Column("prompt", "right"), Column("thinking", "right"),
        Column("answer", "right"), Column("statuses"),
    ]
    print_table(columns, [
        [line.tenant] + ([line.host or "-"] if args.by_host else []) + [
            line.requests, f"{line.cost:.4f}", line.prompt_tokens, line.thinking_tokens, line.answer_tokens,
            ", ".join(f"{k} {v}" for k, v in sorted(line.by_status.items())) or "-",
        ]
        for line in r.lines
    ])
    if r.records:
        print()
        columns = [
            Column("at"), Column("request"), Column("tenant"), Column("status"), Column("severity"), Column("level"),
            Column("cost", "right"), Column("reserved", "right"),
        ]
        print_table(columns, [
            [_when(rec.at, seconds=True), rec.request_id, rec.tenant, rec.status, SEVERITY.get(rec.severity, "-"),
             rec.level or "-", f"{rec.cost:.4f}", f"{rec.reserved:.4f}"]
            for rec in r.records
        ])
    return 0


def policy_reload(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        r = admin.reload_policy()
    if args.json:
        dump_json(r)
        return 0
    print(f"policy {r.policy_version} from {r.path} in force; risk model {r.model_version}")
    return 0


def explain(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        a = admin.explain(args.text, args.tenant or "")
    if args.json:
        dump_json(a)
        return 0
    print(assessment_line(a))
    for note in a.adjustments:
        print(f"  adjusted: {note}")
    for c in a.explanation:
        print(f"  {c.axis:<16} {c.weight:+.3f}  {c.feature}")
    return 0


def job_run(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        with spinner(f"running {args.name} on the daemon", enabled=not args.json):
            summary = admin.run_job(args.name)
    if args.json:
        dump_json({"job": args.name, "summary": summary})
    else:
        print(summary)
    return 0


def risk_status(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        r = admin.risk_status()
    if args.json:
        dump_json(r)
        return 0
    print(f"risk model in service: {r.model_version}")
    if r.metrics:
        print_table((Column("metric"), Column("value", "right")), [[k, f"{r.metrics[k]:.4f}"] for k in sorted(r.metrics)])
    if r.retrains:
        print()
        print_table((Column("at"), Column("verdict"), Column("candidate"), Column("reason")), [
            [_when(t.at), "accepted" if t.accepted else "rejected", t.candidate_version or "-", t.reason]
            for t in r.retrains
        ])
    return 0


def add_commands(sub: Any, connection: Callable[[argparse.ArgumentParser], None]) -> None:
    admin = sub.add_parser("admin", help="administer tenants, keys, budgets, spend and policy",
                           description="Administer the daemon (needs an admin key: PONDER_ADMIN_TOKEN or admin.token).")
    groups = admin.add_subparsers(dest="group", metavar="GROUP", required=True)

    def command(group: Any, name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = group.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        connection(p)
        # The shared connection flags name the tenant key's variable; an admin command reads another.
        for action in p._actions:
            if action.dest == "token":
                action.help = "admin API key (or PONDER_ADMIN_TOKEN; default: the local admin.token)"
        p.add_argument("--timeout", type=float, default=None, help="seconds to wait for the daemon (default: per command)")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(handler=handler)
        return p

    tenant = groups.add_parser("tenant", help="create, list, enable and disable tenants", description="Tenants.")
    t = tenant.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = command(t, "create", tenant_create, "create a tenant and print its first key")
    p.add_argument("name")
    p.add_argument("--budget", type=float, required=True, help="credits per window")
    p.add_argument("--window", choices=["day", "week", "month"], default="day", help="budget window (default day)")
    p = command(t, "list", tenant_list, "list tenants and their balances")
    p = command(t, "disable", tenant_enable, "refuse every key of a tenant")
    p.add_argument("name")
    p.set_defaults(enabled=False)
    p = command(t, "enable", tenant_enable, "accept a disabled tenant's keys again")
    p.add_argument("name")
    p.set_defaults(enabled=True)

    budget = groups.add_parser("budget", help="change a tenant's budget", description="Budgets.")
    b = budget.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = command(b, "set", budget_set, "set a tenant's budget (and window)")
    p.add_argument("name")
    p.add_argument("amount", type=float, help="credits per window")
    p.add_argument("--window", choices=["day", "week", "month"], help="change the window too")

    key = groups.add_parser("key", help="issue, rotate, cap, revoke and list API keys", description="API keys.")
    k = key.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = command(k, "issue", key_issue, "issue a key for a tenant (or an admin key)")
    p.add_argument("tenant", nargs="?", help="the tenant (omit with --admin)")
    p.add_argument("--admin", action="store_true", help="issue an admin key")
    p.add_argument("--label", help="a note to tell keys apart")
    p.add_argument("--expires", type=duration_argument, metavar="DURATION",
                   help="the key expires this long after it is issued: 90s, 30m, 12h, 30d, 2w (default: never)")
    p.add_argument("--expires-at", type=future_argument, metavar="TIME",
                   help="the key expires at this ISO 8601 time (UTC unless a zone is given)")
    p.add_argument("--budget", type=float, metavar="AMOUNT",
                   help="a cap of the key's own, in credits per the tenant's window, inside the tenant's budget "
                        "(spend counts against both; single-host SQLite ledger only; default: none)")
    p = command(k, "rotate", key_rotate, "issue a successor of a key; the old one works for the overlap, then expires")
    p.add_argument("key_id")
    p.add_argument("--overlap", type=duration_argument, default=duration_argument("1h"), metavar="DURATION",
                   help="how long the old key keeps working: 0s revokes it at once (default 1h)")
    p.add_argument("--expires", type=duration_argument, metavar="DURATION",
                   help="the new key's lifetime (default: the old key's lifetime, if it had one)")
    p = command(k, "budget", key_budget, "set or remove a key's own budget cap (credits per the tenant's window)")
    p.add_argument("key_id")
    p.add_argument("amount", type=_cap, metavar="AMOUNT|none", help="credits per the tenant's window, or 'none'")
    p = command(k, "revoke", key_revoke, "revoke a key")
    p.add_argument("key_id")
    p = command(k, "list", key_list, "list keys (never their secrets)")
    p.add_argument("--tenant", help="only this tenant's keys")

    p = command(groups, "alerts", alerts, "recent alerts (soft limit crossed, budget exhausted) and their delivery")
    p.add_argument("--limit", type=int, default=50, help="the most to list, newest first (default 50)")

    p = command(groups, "spend", spend, "spend by tenant over a period")
    p.add_argument("--tenant", help="one tenant (default: all)")
    p.add_argument("--since", type=when_argument, help="ISO time, or 7d, 12h, today, yesterday (UTC; default: start of the window)")
    p.add_argument("--until", type=when_argument, help="ISO time, or 1d, today, now (UTC; default: now)")
    p.add_argument("--records", type=int, default=0, help="also list up to N spend records")
    p.add_argument("--by-host", action="store_true", help="one line per tenant and host (a fleet on the shared ledger)")

    policy = groups.add_parser("policy", help="reload the policy file", description="Policy.")
    pol = policy.add_subparsers(dest="action", metavar="ACTION", required=True)
    command(pol, "reload", policy_reload,
            "re-read the policy file and risk model (a bad file keeps the old one); on a fleet host, also "
            "store the policy as the fleet's newest version, which every host then puts in force")

    p = command(groups, "explain", explain, "show how the daemon assesses a text, and why")
    p.add_argument("text")
    p.add_argument("--tenant", help="apply this tenant's override rules too")

    job = groups.add_parser("job", help="run a scheduled job now", description="Scheduled jobs.")
    j = job.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = command(j, "run", job_run, "run a job now: renew_windows, expire_reservations, prune_prompts, retrain_risk, update_accuracy, prune_idempotency, flush_key_usage, deliver_alerts, warn_expiring_keys")
    p.add_argument("name")

    risk = groups.add_parser("risk", help="the risk model in service", description="The risk model in service.")
    r = risk.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = command(r, "status", risk_status, "show the model in service and the retrain log")
