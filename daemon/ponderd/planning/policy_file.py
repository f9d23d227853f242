"""Reading a policy file: parse the TOML, validate every field, and build the Policy (policy.py).

Validation collects every problem before it fails (`_Checker`), with
did-you-mean hints for unknown fields, so one run of `ponder policy check`
reports them all; tests/policies holds golden bad files.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import pathlib
import re
import threading
import tomllib
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any, Sequence

from ponderd.answers import ANSWER_FORMATS
from ponderd.errors import PolicyError
from ponderd.planning.policy import (
    _ALERTS,
    _LEVEL,
    _LEVEL_OPTIONAL,
    _OVERRIDE,
    _PLANNING,
    _ROUTE,
    _RULES,
    _TOP,
    HINTS,
    LIMIT_MAX,
    LIMITS,
    PLANNING_MODES,
    PRUNE_PERCENTILE,
    REFINE_KEEPS,
    SEVERITIES,
    STOP_CONFIDENCE,
    STOPS,
    TOKEN_KINDS,
    UNAVAILABLE,
    UNSURE_CONFIDENCE,
    UNSURE_OFF,
    VOTES,
    AlertSettings,
    Level,
    Override,
    Planning,
    Policy,
    Prices,
    Route,
    TenantRules,
)

log = logging.getLogger("ponder.policy")


class _Checker:
    """Collects every problem in a file so one run reports them all."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fields(self, where: str, table: Any, allowed: set[str], required: set[str] | frozenset[str] = frozenset()) -> dict:
        if not isinstance(table, dict):
            self.problems.append(f"{where}: must be a table")
            return {}
        for key in sorted(set(table) - allowed):
            near = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else f" (allowed: {', '.join(sorted(allowed))})"
            self.problems.append(f"{where}: unknown field {key!r}{hint}")
        for key in sorted(required - set(table)):
            self.problems.append(f"{where}: missing field {key!r}")
        return table

    def integer(self, where: str, value: Any, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.problems.append(f"{where}: must be an integer from {lo} to {hi}, not {value!r}")
            return lo
        return value

    def choice(self, where: str, value: Any, options: tuple[str, ...] | list[str]) -> str:
        if value not in options:
            self.problems.append(f"{where}: {value!r} is not one of {', '.join(options)}")
            return options[0] if options else ""
        return value

    def fraction(self, where: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            self.problems.append(f"{where}: must be a number from 0 to 1, not {value!r}")
            return 0.0
        return float(value)

    def price(self, where: str, value: Any) -> Decimal:
        try:
            if isinstance(value, bool):
                raise InvalidOperation
            d = Decimal(str(value))
            if d < 0 or not d.is_finite():
                raise InvalidOperation
            return d
        except InvalidOperation:
            self.problems.append(f"{where}: must be a number >= 0, not {value!r}")
            return Decimal(0)


def load_policy(path: pathlib.Path, models: Sequence[str] | None = None, model: Any = None) -> Policy:
    """Read and validate a policy file; PolicyError lists every problem found.

    `models`: the served models' names, primary first, to check the levels'
    `model` against (None, as in `ponder policy check` without a config: unchecked).
    `model`: the primary model file's identity (engine.model_file.ModelIdentity); in
    expected_loss mode a profile measured on another file (or naming none) is set aside,
    `profile_note` says so, and the routing table plans. None: not checked; a callable
    returning one (or None) is called only when there is a profile to check.
    """
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise PolicyError(str(path), [f"cannot read ({exc.strerror})"]) from None
    try:
        raw = tomllib.loads(raw_bytes.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(str(path), [f"not valid TOML ({exc})"]) from None
    check = _Checker()
    policy = _parse(raw, check, str(path), hashlib.sha256(raw_bytes).hexdigest(), models)
    profile = _profile(check, path, policy.planning)
    policy = replace(policy, alerts=_alerts(check, path, raw.get("alerts", {})))
    if check.problems:
        raise PolicyError(str(path), check.problems)
    note = ""
    if profile is not None and model is not None and policy.planning.mode == "expected_loss":
        # Computed only when it matters: a digest reads the whole model file.
        served = model() if callable(model) else model
        note = profile.model_check(served.file, served.sha256) if served is not None else ""
        if note:
            profile = None
    return replace(policy, profile=profile, profile_note=note)


def _alerts(check: _Checker, path: pathlib.Path, table: Any) -> AlertSettings:
    from urllib.parse import urlsplit

    t = check.fields("alerts", table, _ALERTS)
    expiring = check.integer("alerts.key_expiring_hours", t.get("key_expiring_hours", 0), 0, 24 * 366)
    webhook = t.get("webhook", "")
    if not webhook:
        if "secret_file" in t:
            check.problems.append("alerts.secret_file: set alerts.webhook too, or remove it")
        return AlertSettings(key_expiring_hours=expiring)
    url = urlsplit(str(webhook)) if isinstance(webhook, str) else None
    if url is None or url.scheme not in ("http", "https") or not url.hostname:
        check.problems.append(
            f"alerts.webhook: must be an http:// or https:// URL with a host, not {webhook!r}"
        )
        return AlertSettings()
    secret = t.get("secret_file")
    if not isinstance(secret, str) or not secret:
        check.problems.append("alerts.secret_file: the webhook needs the path of a file holding its HMAC secret")
        return AlertSettings()
    secret_path = (path.parent / secret).resolve()
    try:
        if not secret_path.read_bytes().strip():
            check.problems.append(f"alerts.secret_file: {secret_path} is empty; put the shared secret in it")
    except OSError as exc:
        check.problems.append(f"alerts.secret_file: cannot read {secret_path} ({exc.strerror})")
    return AlertSettings(str(webhook), secret_path, expiring)


# `profile = "package:NAME"`: a profile shipped in the daemon package (ponderd/planning/data/NAME), so a
# policy file copied elsewhere (deploy puts it in /etc/ponder) still finds it.
PACKAGE_PROFILE = "package:"
PACKAGE_PROFILES = pathlib.Path(__file__).resolve().parent / "data"


def profile_file(policy_path: pathlib.Path, value: pathlib.Path | str) -> pathlib.Path:
    """Where a policy's `[planning] profile` lies: in the package for package:NAME, else relative to the policy."""
    text = str(value)
    if text.startswith(PACKAGE_PROFILE):
        return PACKAGE_PROFILES / text[len(PACKAGE_PROFILE):]
    return (policy_path.parent / value).resolve()


def _profile(check: _Checker, path: pathlib.Path, planning: Planning) -> Any:
    if planning.profile_path is None:
        return None
    from ponderd.planning.profile import Profile, ProfileError

    try:
        return Profile.load(profile_file(path, planning.profile_path))
    except ProfileError as exc:
        check.problems.append(f"planning.profile: {exc}")
        return None


def _parse(raw: dict, check: _Checker, path: str, sha: str, models: Sequence[str] | None) -> Policy:
    check.fields("policy", raw, _TOP, {"version", "prices", "levels", "routing"})
    prices = _prices(check, "prices", raw.get("prices", {}))
    mp = raw.get("model_prices", {})
    model_prices = {
        name: _prices(check, f"model_prices.{name}", table)
        for name, table in check.fields("model_prices", mp, set(mp) if isinstance(mp, dict) else set()).items()
    }
    if models is not None:
        for name in model_prices:
            if name == models[0]:
                check.problems.append(f"model_prices.{name}: {name!r} is the primary model, whose prices are [prices]")
            else:
                check.choice("model_prices", name, list(models[1:]))

    levels: list[Level] = []
    for name, table in (raw.get("levels") or {}).items():
        t = check.fields(f"levels.{name}", table, _LEVEL | _LEVEL_OPTIONAL, _LEVEL)
        levels.append(
            Level(
                name,
                check.integer(f"levels.{name}.thinking_tokens", t.get("thinking_tokens", 0), 0, 131072),
                check.integer(f"levels.{name}.samples", t.get("samples", 1), 1, 64),
                check.integer(f"levels.{name}.answer_tokens", t.get("answer_tokens", 1), 1, 32768),
                _answer_format(check, f"levels.{name}", t),
                _vote(check, f"levels.{name}.vote", t.get("vote", "majority")),
                _model(check, f"levels.{name}.model", t.get("model", ""), models),
                **_sampling(check, f"levels.{name}", t),
                **_refinement(check, f"levels.{name}", t),
            )
        )
    if not levels and "levels" in raw:
        check.problems.append("levels: define at least one level")

    def generation_cost(level: Level) -> Decimal:
        # What a level's samples can cost at most, on its own model's prices (the prompt aside).
        p = model_prices.get(level.model or (models[0] if models else ""), prices)
        return (p.thinking * level.thinking_tokens + p.answer * level.answer_tokens) * level.samples

    for lo, hi in zip(levels, levels[1:]):
        if generation_cost(hi) < generation_cost(lo):
            check.problems.append(
                f"levels: {hi.name!r} costs less than {lo.name!r} listed before it; list levels cheapest first"
            )
    names = [lvl.name for lvl in levels] or [""]

    routing: dict[str, Route] = {}
    routing_raw = check.fields("routing", raw.get("routing", {}), set(SEVERITIES), set(SEVERITIES) if "routing" in raw else set())
    for sev in SEVERITIES if "routing" in raw else ():
        t = check.fields(f"routing.{sev}", routing_raw.get(sev, {}), _ROUTE, {"direct", "reasoning"})
        direct = check.choice(f"routing.{sev}.direct", t.get("direct", names[0]), names)
        reasoning = check.choice(f"routing.{sev}.reasoning", t.get("reasoning", names[0]), names)
        floor = check.choice(f"routing.{sev}.floor", t.get("floor", names[0]), names)
        if levels and names.index(floor) > min(names.index(direct), names.index(reasoning)):
            check.problems.append(f"routing.{sev}.floor: {floor!r} is above the level it routes to")
        routing[sev] = Route(direct, reasoning, floor)

    base = {
        "min_level": names[0],
        "max_level": names[-1],
        "hints": ["severity_floor", "max_cost"],
        "max_samples": max((lvl.samples for lvl in levels), default=1),
        "max_thinking_tokens": max((lvl.thinking_tokens for lvl in levels), default=0),
        # On by default: no lower than what a high-severity query may be degraded to.
        "unsure_floor": routing["high"].floor if "high" in routing else UNSURE_OFF,
        "unsure_confidence": UNSURE_CONFIDENCE,
        **{limit: 0 for limit in LIMITS},
        "soft_limit": 0,
    }
    defaults = _rules(check, "defaults", raw.get("defaults", {}), base, names)
    default_raw = {**base, **(raw.get("defaults") or {})} if isinstance(raw.get("defaults", {}), dict) else base
    tenants = {
        name: _rules(check, f"tenants.{name}", table, default_raw, names)
        for name, table in (raw.get("tenants") or {}).items()
    }

    overrides = tuple(
        _override(check, i, table, names) for i, table in enumerate(raw.get("overrides") or [], start=1)
    )
    planning = _planning(check, raw.get("planning", {}))
    version = raw.get("version")
    if not isinstance(version, str) or not version:
        check.problems.append("version: must be a non-empty string naming this policy revision")
    currency = raw.get("currency", "credits")
    return Policy(
        version=str(version),
        path=path,
        sha256=sha,
        currency=str(currency),
        prices=prices,
        levels=tuple(levels),
        routing=routing,
        defaults=defaults,
        tenants=tenants,
        overrides=overrides,
        planning=planning,
        model_prices=model_prices,
    )


def _prices(check: _Checker, where: str, table: Any) -> Prices:
    t = check.fields(where, table, set(TOKEN_KINDS), set(TOKEN_KINDS))
    return Prices(*(check.price(f"{where}.{k}", t.get(k, 0)) for k in TOKEN_KINDS))


def _model(check: _Checker, where: str, value: Any, models: Sequence[str] | None) -> str:
    if not isinstance(value, str):
        check.problems.append(f"{where}: must be a model name, not {value!r}")
        return ""
    if value and models is not None and value not in models:
        near = difflib.get_close_matches(value, list(models), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        check.problems.append(f"{where}: no served model {value!r}{hint}; the daemon serves {', '.join(models)}")
    # "" and the primary's own name are the same model: say it one way.
    return "" if models and value == models[0] else value


def _planning(check: _Checker, table: Any) -> Planning:
    t = check.fields("planning", table, _PLANNING)
    mode = check.choice("planning.mode", t.get("mode", "routing"), PLANNING_MODES)
    loss_raw = check.fields("planning.loss", t.get("loss", {}), set(SEVERITIES), set(SEVERITIES) if mode == "expected_loss" else set())
    loss = {sev: float(check.price(f"planning.loss.{sev}", v)) for sev, v in loss_raw.items()}
    profile = t.get("profile")
    if profile is not None and (not isinstance(profile, str) or not profile):
        check.problems.append("planning.profile: must be the path of an accuracy profile (`ponder calibrate` writes one)")
        profile = None
    if mode == "expected_loss" and profile is None:
        check.problems.append("planning: mode 'expected_loss' needs profile = \"PATH\" (write one with `ponder calibrate`)")
    return Planning(
        mode=mode,
        loss=loss,
        profile_path=pathlib.Path(profile) if profile else None,
        unavailable=check.choice("planning.unavailable", t.get("unavailable", "route_around"), UNAVAILABLE),
    )


def _answer_format(check: _Checker, where: str, table: dict) -> str:
    value = table.get("answer_format", "auto")
    if value not in ANSWER_FORMATS:
        near = difflib.get_close_matches(str(value), ANSWER_FORMATS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        check.problems.append(f"{where}.answer_format: {value!r} is not one of {', '.join(ANSWER_FORMATS)}{hint}")
        return "auto"
    if value == "free" and table.get("samples", 1) != 1:
        # Free text has nothing to vote on: more samples would only cost more.
        check.problems.append(f"{where}: answer_format 'free' is not voted, so samples must be 1, not {table.get('samples')!r}")
    return value


def _vote(check: _Checker, where: str, value: Any) -> str:
    if value not in VOTES:
        near = difflib.get_close_matches(str(value), VOTES, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        check.problems.append(f"{where}: {value!r} is not one of {', '.join(VOTES)}{hint}")
        return "majority"
    return value


def _sampling(check: _Checker, where: str, table: dict) -> dict[str, Any]:
    """A level's adaptive-sampling settings (docs/policy.md, "Spending fewer samples")."""
    vote = table.get("vote", "majority")
    stop = table.get("stop", "decided" if vote == "majority" else "never")
    if stop not in STOPS:
        near = difflib.get_close_matches(str(stop), STOPS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        check.problems.append(f"{where}.stop: {stop!r} is not one of {', '.join(STOPS)}{hint}")
        stop = "never"
    elif stop != "never" and vote != "majority":
        # The rules count votes; a sample still running could outweigh the leader.
        check.problems.append(f"{where}.stop: {stop!r} counts votes, which a {vote!r} vote does not; use stop = \"never\"")
    confidence = check.fraction(f"{where}.stop_confidence", table.get("stop_confidence", STOP_CONFIDENCE))
    if "stop_confidence" in table and not 0.5 < confidence < 1.0:
        check.problems.append(f"{where}.stop_confidence: must be above 0.5 and below 1, not {table['stop_confidence']!r}")
    samples = table.get("samples", 1)
    samples = samples if isinstance(samples, int) and samples >= 1 else 1
    first = table.get("first_samples", 0)
    if "first_samples" in table:
        if samples < 2:
            check.problems.append(f"{where}.first_samples: escalation needs samples >= 2 to draw more of; remove it")
        else:
            first = check.integer(f"{where}.first_samples", first, 1, samples - 1)
    prune = table.get("prune", False)
    if not isinstance(prune, bool):
        check.problems.append(f"{where}.prune: must be true or false, not {prune!r}")
        prune = False
    percentile = table.get("prune_percentile", PRUNE_PERCENTILE)
    if "prune_percentile" in table:
        percentile = check.integer(f"{where}.prune_percentile", percentile, 1, 99)
        if not prune:
            check.problems.append(f"{where}.prune_percentile: set prune = true for it to apply, or remove it")
    return {
        "stop": stop, "stop_confidence": confidence, "first_samples": first if samples >= 2 else 0,
        "prune_percentile": percentile if prune else 0,
    }


def _refinement(check: _Checker, where: str, table: dict) -> dict[str, Any]:
    """A level's self-refinement settings (docs/policy.md, "Self-refinement")."""
    rounds = check.integer(f"{where}.refine", table.get("refine", 0), 0, 4)
    answer = table.get("answer_tokens", 1)
    tokens = table.get("refine_tokens", answer if isinstance(answer, int) else 1)
    if "refine_tokens" in table:
        tokens = check.integer(f"{where}.refine_tokens", tokens, 1, 32768)
    keep = table.get("refine_keep", "unless_decided")
    if keep not in REFINE_KEEPS:
        near = difflib.get_close_matches(str(keep), REFINE_KEEPS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        check.problems.append(f"{where}.refine_keep: {keep!r} is not one of {', '.join(REFINE_KEEPS)}{hint}")
        keep = "unless_decided"
    if not rounds and ("refine_tokens" in table or "refine_keep" in table):
        check.problems.append(f"{where}: refine_tokens and refine_keep apply only with refine >= 1; set refine or remove them")
    return {"refine": rounds, "refine_tokens": tokens if rounds else 0, "refine_keep": keep}


def _rules(check: _Checker, where: str, table: Any, base: dict, names: list[str]) -> TenantRules:
    t = {**base, **check.fields(where, table, _RULES)}
    hints = t["hints"]
    if not isinstance(hints, list):
        check.problems.append(f"{where}.hints: must be a list of hint names")
        hints = []
    for h in hints:
        check.choice(f"{where}.hints", h, HINTS)
    unsure_floor = check.choice(f"{where}.unsure_floor", t["unsure_floor"], [*names, UNSURE_OFF])
    rules = TenantRules(
        min_level=check.choice(f"{where}.min_level", t["min_level"], names),
        max_level=check.choice(f"{where}.max_level", t["max_level"], names),
        hints=frozenset(h for h in hints if h in HINTS),
        max_samples=check.integer(f"{where}.max_samples", t["max_samples"], 1, 64),
        max_thinking_tokens=check.integer(f"{where}.max_thinking_tokens", t["max_thinking_tokens"], 0, 131072),
        unsure_floor="" if unsure_floor == UNSURE_OFF else unsure_floor,
        unsure_confidence=check.fraction(f"{where}.unsure_confidence", t["unsure_confidence"]),
        **{limit: _limit(check, f"{where}.{limit}", t[limit]) for limit in LIMITS},
        soft_limit=_soft_limit(check, f"{where}.soft_limit", t["soft_limit"], base.get("soft_limit") == t["soft_limit"]),
    )
    if rules.min_level in names and rules.max_level in names and names.index(rules.min_level) > names.index(rules.max_level):
        check.problems.append(f"{where}: min_level {rules.min_level!r} is above max_level {rules.max_level!r}")
    return rules


def _limit(check: _Checker, where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= LIMIT_MAX:
        check.problems.append(
            f"{where}: must be a whole number from 0 (no limit) to {LIMIT_MAX}, not {value!r}"
        )
        return 0
    return value


def _soft_limit(check: _Checker, where: str, value: Any, inherited: bool) -> float:
    if inherited and value == 0:
        return 0.0  # not set: no alert
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        check.problems.append(
            f"{where}: must be a fraction of the window's budget above 0 and below 1 (e.g. 0.8), not {value!r}"
        )
        return 0.0
    return float(value)


def _override(check: _Checker, number: int, table: Any, names: list[str]) -> Override:
    where = f"overrides[{number}]"
    t = check.fields(where, table, _OVERRIDE)
    pattern = None
    if "pattern" in t:
        try:
            pattern = re.compile(str(t["pattern"]))
        except re.error as exc:
            check.problems.append(f"{where}.pattern: not a valid regular expression ({exc})")
    tenants = t.get("tenants", [])
    if not isinstance(tenants, list) or not all(isinstance(x, str) for x in tenants):
        check.problems.append(f"{where}.tenants: must be a list of tenant names or glob patterns")
        tenants = []
    nr = t.get("needs_reasoning")
    if nr is not None and not isinstance(nr, bool):
        check.problems.append(f"{where}.needs_reasoning: must be true or false")
        nr = None
    floor = t.get("severity_floor")
    pin = t.get("severity")
    if floor is not None:
        check.choice(f"{where}.severity_floor", floor, SEVERITIES)
    if pin is not None:
        check.choice(f"{where}.severity", pin, SEVERITIES)
    if floor is None and pin is None and nr is None:
        check.problems.append(f"{where}: set at least one of severity_floor, severity, needs_reasoning")
    if not tenants and "pattern" not in t:
        check.problems.append(f"{where}: set tenants or pattern (an override for everything would replace the classifier)")
    return Override(number, tuple(tenants), pattern, floor, pin, nr, str(t.get("note", "")))


class PolicyHolder:
    """The policy in force. `reload` validates the new file whole before swapping it in."""

    def __init__(self, path: pathlib.Path, models: Sequence[str] | None = None, model: Any = None) -> None:
        self.path = path
        self.models = models
        self.model = model
        self._policy = load_policy(path, models, model)
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self._say_note(self._policy)

    def _say_note(self, policy: Policy) -> None:
        if policy.profile_note:
            log.warning("%s: %s", self.path, policy.profile_note)

    def current(self) -> Policy:
        """A snapshot: one request uses the same policy from start to end."""
        return self._policy

    def load(self) -> Policy:
        """Read and validate the file's current content without putting it in force (PolicyError if bad)."""
        try:
            return load_policy(self.path, self.models, self.model)
        except PolicyError as exc:
            self.last_error = str(exc)
            raise

    def swap(self, policy: Policy) -> None:
        with self._lock:
            self._policy, self.last_error = policy, None
        self._say_note(policy)

    def reload(self) -> Policy:
        """Swap in the file's current content, or keep the old policy and raise PolicyError."""
        new = self.load()
        self.swap(new)
        return new
