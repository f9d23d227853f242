"""Policy files: load, validate whole, then swap atomically. Requests read one snapshot.

The file (TOML) says what effort each kind of query gets (levels, routing),
what it costs (prices), what each tenant may ask for (tenant rules), and which
assessments admins pin (overrides). See docs/policy.md.
"""

from __future__ import annotations

import fnmatch
import pathlib
import re
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any

SEVERITIES = ("low", "medium", "high")
# Stop rules, vote rules and their defaults (request/stopping.py, request/voting.py run them).
STOPS = ("never", "decided", "beta")
STOP_CONFIDENCE = 0.95
PRUNE_PERCENTILE = 10
VOTES = ("majority", "weighted")
HINTS = ("severity_floor", "max_cost", "samples", "thinking_tokens", "level", "answer_format")
TOKEN_KINDS = ("prompt", "thinking", "answer")

_TOP = {"version", "currency", "prices", "model_prices", "levels", "routing", "planning", "defaults", "tenants", "overrides"}
# Where alerts go besides the log and the metrics (serve/webhook.py): a URL to POST them to, signed.
_TOP.add("alerts")
_ALERTS = {"webhook", "secret_file", "key_expiring_hours"}
_LEVEL = {"thinking_tokens", "samples", "answer_tokens"}
_LEVEL_OPTIONAL = {"answer_format", "vote", "model"}
_PLANNING = {"mode", "loss", "profile", "unavailable"}
PLANNING_MODES = ("routing", "expected_loss")
# What the planner does when a level's model is not serving: use the nearest
# level on a model that is (saying so), or refuse the request.
UNAVAILABLE = ("route_around", "refuse")
# Adaptive sampling (stopping.py); see _sampling().
_LEVEL_OPTIONAL |= {"stop", "stop_confidence", "first_samples", "prune", "prune_percentile"}
# Self-refinement (refine.py); see _refinement().
_LEVEL_OPTIONAL |= {"refine", "refine_tokens", "refine_keep"}
REFINE_KEEPS = ("always", "unless_decided")
_ROUTE = {"direct", "reasoning", "floor"}
_RULES = {"min_level", "max_level", "hints", "max_samples", "max_thinking_tokens", "unsure_floor", "unsure_confidence"}
# Rate and concurrency limits (request/limits.py); 0 is no limit.
LIMITS = ("requests_per_minute", "tokens_per_minute", "max_concurrent")
LIMIT_MAX = 1_000_000_000
_RULES |= set(LIMITS)
# A fraction of the window's budget whose crossing raises one alert per tenant and window (request/alerts.py).
_RULES.add("soft_limit")
# `unsure_floor = "off"` turns the unsure-stakes floor off.
UNSURE_OFF = "off"
UNSURE_CONFIDENCE = 0.6
_OVERRIDE = {"tenants", "pattern", "severity_floor", "severity", "needs_reasoning", "note"}


@dataclass(frozen=True)
class Level:
    name: str
    thinking_tokens: int
    samples: int
    answer_tokens: int
    # What kind of answer the samples vote on (answers.ANSWER_FORMATS).
    answer_format: str = "auto"
    # How the samples' answers are counted (VOTES, below): one each, or by confidence.
    vote: str = "majority"
    # The served model that runs this level (settings: [model] name or a
    # [models.NAME] table); "" is the primary model.
    model: str = ""
    # When to stop drawing samples (STOPS, below; request/stopping.py runs them); "decided" is today's rule.
    stop: str = "decided"
    # The "beta" rule stops once P(leader is the true majority) reaches this.
    stop_confidence: float = STOP_CONFIDENCE
    # Escalation: draw this many first, the rest only when they disagree (0: all at once).
    first_samples: int = 0
    # Stop a sample whose running confidence is below this percentile of the finished samples' (0: off).
    prune_percentile: int = 0
    # Critique-and-revise rounds after the vote, each answering in at most refine_tokens.
    refine: int = 0
    refine_tokens: int = 0
    # Whether a revision whose answer differs from a decided vote replaces it.
    refine_keep: str = "unless_decided"


@dataclass(frozen=True)
class Prices:
    """Credits per 1,000 tokens, by kind of token."""

    prompt: Decimal
    thinking: Decimal
    answer: Decimal

    def micros(self, prompt: int, thinking: int, answer: int) -> int:
        """Cost in micro-credits, rounded up so a charge never undercounts."""
        total = (self.prompt * prompt + self.thinking * thinking + self.answer * answer) * 1000
        return int(total.to_integral_value(rounding=ROUND_CEILING))


@dataclass(frozen=True)
class Route:
    direct: str
    reasoning: str
    # Budget degradation never goes below this level for this severity.
    floor: str


@dataclass(frozen=True)
class Planning:
    """How a level is chosen: the routing table, or the lowest expected cost plus expected loss."""

    mode: str = "routing"
    # Credits a wrong answer costs, by severity (expected_loss mode).
    loss: dict[str, float] = field(default_factory=dict)
    # The accuracy profile (`ponder calibrate`) the expected losses come from;
    # relative paths are relative to the policy file. None: no profile.
    profile_path: pathlib.Path | None = None
    unavailable: str = "route_around"


@dataclass(frozen=True)
class TenantRules:
    min_level: str
    max_level: str
    hints: frozenset[str]
    max_samples: int
    max_thinking_tokens: int
    # When the classifier is unsure (top severity probability below
    # unsure_confidence) and the query carries stakes cues (a dose, a quantity
    # with a unit, a deadline, money), plans go no lower than this level.
    # "" is off. See assessment.adjust and docs/policy.md.
    unsure_floor: str = ""
    unsure_confidence: float = UNSURE_CONFIDENCE
    # Limits on this host (request/limits.py; docs/policy.md "Rate and concurrency limits"); 0: none.
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    max_concurrent: int = 0
    # Alert once per window when spent reaches this fraction of the budget; 0: off.
    soft_limit: float = 0.0


@dataclass(frozen=True)
class Override:
    number: int
    tenants: tuple[str, ...]
    pattern: re.Pattern[str] | None
    severity_floor: str | None
    severity: str | None
    needs_reasoning: bool | None
    note: str

    def applies(self, tenant: str | None, text: str) -> bool:
        if self.tenants and not (tenant and any(fnmatch.fnmatchcase(tenant, p) for p in self.tenants)):
            return False
        return self.pattern is None or bool(self.pattern.search(text))


@dataclass(frozen=True)
class AlertSettings:
    """`[alerts]`: POST each alert to `webhook` (http or https), signed with HMAC-SHA256 by the secret in `secret_file`."""

    webhook: str = ""
    # Relative paths are relative to the policy file; read at each delivery, so it can be rotated.
    secret_file: pathlib.Path | None = None
    # Alert when an active key expires within this many hours (the warn_expiring_keys job); 0: off.
    key_expiring_hours: int = 0


@dataclass(frozen=True)
class Policy:
    version: str
    path: str
    sha256: str
    currency: str
    prices: Prices
    levels: tuple[Level, ...]
    routing: dict[str, Route]
    defaults: TenantRules
    tenants: dict[str, TenantRules]
    overrides: tuple[Override, ...]
    planning: Planning = field(default_factory=Planning)
    # Prices of models other than the primary one; a model not listed costs `prices`.
    model_prices: dict[str, Prices] = field(default_factory=dict)
    # The accuracy profile named by planning.profile, loaded with the policy (profile.Profile).
    profile: Any = None
    alerts: AlertSettings = field(default_factory=AlertSettings)
    # Why expected_loss mode plans by the routing table after all: the profile was measured on
    # another model file, or names none ("" when the profile is in use, or nothing was checked).
    profile_note: str = ""

    def prices_for(self, model: str) -> Prices:
        return self.model_prices.get(model, self.prices)

    def level(self, name: str) -> Level:
        return self.levels[self.rank(name)]

    def rank(self, name: str) -> int:
        """Position on the ladder: 0 is the cheapest level."""
        for i, lvl in enumerate(self.levels):
            if lvl.name == name:
                return i
        raise KeyError(name)

    def rules_for(self, tenant: str | None) -> TenantRules:
        return self.tenants.get(tenant or "", self.defaults)
