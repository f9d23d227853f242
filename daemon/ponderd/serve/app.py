"""The one place that chooses concrete classes and wires the daemon together."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import pathlib
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable

from sqlite_utils import Database

from ponderd.clock import Clock, SystemClock
from ponderd.engine import Engine
from ponderd.errors import FailedPrecondition, PonderError
from ponderd.ledger import keys
from ponderd.ledger.accounts import Accounts
from ponderd.ledger.budgets import Budgets
from ponderd.ledger.sqlite import keys as sqlite_keys
from ponderd.ledger.sqlite.accounts import SqliteAccounts
from ponderd.ledger.sqlite.budgets import SqliteBudgets
from ponderd.ledger.sqlite.idempotency import IdempotencyKeys
from ponderd.ledger.sqlite.ledger import Ledger
from ponderd.ledger.sqlite.store import Store
from ponderd.ledger.types import to_micros
from ponderd.planning.accuracy import AccuracyEstimates, UpdateResult
from ponderd.planning.policy import Policy
from ponderd.planning.policy_file import PolicyHolder, load_policy
from ponderd.request.alerts import SoftLimits
from ponderd.request.limits import Limiter
from ponderd.request.models import ServedModels
from ponderd.request.pipeline import Pipeline
from ponderd.risk import Classifier, ClassifierHolder
from ponderd.risk.retrain import Retrainer
from ponderd.serve.jobs import Jobs, Schedules
from ponderd.serve.telemetry import MeteredBudgets, NullTelemetry, Telemetry, TimedClassifiers
from ponderd.serve.telemetry import create as create_telemetry
from ponderd.serve.webhook import Webhook
from ponderd.settings import Settings

log = logging.getLogger("ponder")

QUICKSTART_TENANT = "local"


@dataclass
class Daemon:
    settings: Settings
    clock: Clock
    store: Store
    ledger: Ledger
    budgets: Budgets
    keyring: keys.Keyring
    # Tenants, keys, spend, feedback and the jobs' SQL (ledger/accounts.py's Protocols).
    accounts: Accounts
    policies: PolicyHolder
    classifier: ClassifierHolder
    engine: ServedModels
    pipeline: Pipeline
    retrainer: Retrainer
    jobs: Jobs
    # Idempotency keys of Ask/AskStream (idempotency.py), handed to the Ponder service and the jobs.
    keys: Any
    telemetry: Telemetry = field(default_factory=NullTelemetry)
    accuracy: AccuracyEstimates = field(default_factory=AccuracyEstimates)
    # The fleet ledger's host side ([ledger] backend = "postgres"); None on a single host.
    fleet: Any = None

    def open(self, step: Callable[[str], None] = lambda what: None) -> None:
        """Open the database, write first-run credentials, load keys, start the model, serve metrics.

        `step` is told each step as it begins (systemd's STATUS= line, server.py)."""
        step(f"opening the database {self.settings.database}")
        self.store.open()
        if self.fleet is None:  # a fleet host's credentials come from the central ledger (Fleet.start)
            self.store.call_sync(self._bootstrap)
        self.store.call_sync(self.accuracy.load)
        step(f"loading the model ({', '.join(self.settings.served_models)})")
        self.engine.start()
        step("serving metrics")
        self.telemetry.watch(
            self.engine.queue_depth,
            # Running requests hold (or are about to take) one; waiting settlements keep theirs.
            lambda: len(self.pipeline.live) + len(self.budgets.unsettled()),
            self.engine.failure,
        )
        if self.fleet is not None:
            self.telemetry.watch_fleet(self.fleet)
        self.telemetry.start()

    def reload(self) -> tuple[Policy, Classifier]:
        """Re-read the policy file and the risk model: both come into force, or neither does.

        The classifier's lock is held throughout, so a retrain cannot install
        a model between this reload's load and its swap (and be reverted by it).
        """
        with self.classifier.lock:
            policy = self.policies.load()
            model = self.classifier.load()
            self.policies.swap(policy)
            self.classifier.swap(model)
        return policy, model

    async def publish_policy(self, policy: Policy) -> None:
        """A fleet host: store the policy just put in force as the fleet's newest version (admin policy reload)."""
        if self.fleet is None:
            return
        raw = await asyncio.to_thread(pathlib.Path(policy.path).read_bytes)
        if hashlib.sha256(raw).hexdigest() != policy.sha256:
            raise FailedPrecondition(
                f"the policy file {policy.path} changed while it was being reloaded; reload again to store it fleet-wide"
            )
        await self.fleet.publish_policy(raw.decode("utf-8"), policy.sha256)

    async def apply_central_policy(self, text: str, sha256: str, version: int) -> None:
        """A fleet host: put central policy version `version` in force here, written over this host's policy file
        (so a restart or SIGHUP keeps it). A version this host cannot use is logged and the policy in force kept."""
        if sha256 == self.policies.current().sha256:
            return
        path = self.policies.path
        tmp = path.with_name(f".{path.name}.central-{version}.tmp")
        try:
            await asyncio.to_thread(tmp.write_text, text, encoding="utf-8")
            await asyncio.to_thread(load_policy, tmp, self.policies.models)  # validated whole before it replaces the file
            await asyncio.to_thread(tmp.replace, path)
            policy, _ = await asyncio.to_thread(self.reload)
        except (OSError, PonderError) as exc:
            why = exc.message if isinstance(exc, PonderError) else f"{exc.strerror or exc} ({path})"
            log.error("central policy version %d is not in force on this host, keeping %s: %s",
                      version, self.policies.current().version, why)
            return
        finally:
            tmp.unlink(missing_ok=True)
        log.info("central policy version %d is in force: policy %s", version, policy.version)

    def close(self, free_model: bool = True) -> None:
        """Stop the jobs and metrics, free the model (unless a request may still use it), close the database."""
        self.jobs.shutdown()
        self.telemetry.close()
        if free_model:
            self.engine.close()
        self.store.close()

    def _bootstrap(self, db: Database) -> None:
        now = self.clock.now()
        state = self.settings.state_dir
        with db.atomic():
            if not db["keys"].count_where("scope = 'admin' AND revoked_at IS NULL"):
                _, token = sqlite_keys.issue_key(db, None, "admin", "first admin key", now)
                keys.write_credential(state / "admin.token", token)
                log.info("wrote the first admin key to %s (mode 0600)", state / "admin.token")
            if self.settings.quickstart and not self.ledger.tenant_exists(db, QUICKSTART_TENANT):
                s = self.settings
                self.ledger.create_tenant(db, QUICKSTART_TENANT, to_micros(s.quickstart_budget), s.quickstart_window, now)
                _, token = sqlite_keys.issue_key(db, QUICKSTART_TENANT, "tenant", "quickstart", now)
                keys.write_credential(state / "local.token", token)
                log.info("created tenant %r; its key is in %s (mode 0600)", QUICKSTART_TENANT, state / "local.token")
        sqlite_keys.refresh(self.keyring, db)


def _primary_identity(settings: Settings) -> Any:
    from ponderd.engine.model_file import model_identity

    try:
        return model_identity(settings.model.path)
    except (FailedPrecondition, OSError):
        return None  # the engine's own load says what is wrong with the file


def _engine_embedder(settings: Settings, engine: Engine) -> Any:
    """The second view computed by the serving engine, when it serves the embedding model's own
    file (the vectors are the same); else None, and the classifier loads a context of its own."""
    from ponderd.engine.llama import LlamaEngine
    from ponderd.engine.model_file import resolve_model_path
    from ponderd.risk.embed import EngineEmbedder, default_model_path

    if not (settings.risk.second_view and settings.risk.view_in_engine) or not isinstance(engine, LlamaEngine):
        return None
    try:
        path = resolve_model_path(settings.model.path)
        if path.resolve() != default_model_path().resolve():
            return None
        return EngineEmbedder(engine, path)
    except (FailedPrecondition, OSError):
        return None  # the engine's own load says what is wrong with the file


def build(settings: Settings, clock: Clock | None = None, engine: Engine | None = None) -> Daemon:
    """Wire a daemon from settings. Nothing starts until `open`.

    `engine` replaces the primary model's engine (tests); other models always get a llama.cpp engine.
    """
    clock = clock or SystemClock()
    engines: dict[str, Engine] = {}
    for name, model_settings in settings.served_models.items():
        if engine is not None and name == settings.model.name:
            engines[name] = engine
            continue
        from ponderd.engine.llama import LlamaEngine

        engines[name] = LlamaEngine(model_settings, settings.max_queue)
    models = ServedModels(engines, settings.model.name)
    store = Store(settings.database)
    fleet_mode = settings.ledger.backend == "postgres"
    ledger = Ledger(settings.zone, leased=fleet_mode)
    local_budgets = SqliteBudgets(store, ledger, clock)
    keyring = keys.Keyring(clock)
    local_accounts = SqliteAccounts(store, ledger, keyring, clock, settings.ledger.host)
    budgets: Any = local_budgets
    accounts: Any = local_accounts
    fleet = None
    if fleet_mode:
        from ponderd.ledger.postgres.fleet import Fleet, FleetBudgets, PostgresAccounts

        quickstart = (QUICKSTART_TENANT, to_micros(settings.quickstart_budget), settings.quickstart_window)
        fleet = Fleet(
            settings.ledger, store, ledger, keyring, clock, settings.zone, settings.timezone, settings.state_dir,
            quickstart if settings.quickstart else None,
        )
        budgets, accounts = FleetBudgets(local_budgets, fleet), PostgresAccounts(fleet, local_accounts)
    # Expected-loss planning uses a profile only if it was measured on the primary model's file;
    # an engine passed in (tests) serves no file to check against.
    policies = PolicyHolder(settings.policy_file, models.names, None if engine is not None else lambda: _primary_identity(settings))
    accuracy = AccuracyEstimates(settings.accuracy.prior_weight, settings.accuracy.min_new_outcomes)
    classifier = ClassifierHolder(settings.state_dir, settings.risk.model_dir, settings.risk.second_view,
                                  _engine_embedder(settings, engines[settings.model.name]))
    telemetry = create_telemetry(settings.metrics.listen)
    soft_limits = SoftLimits(accounts, telemetry.alert)
    # The pipeline sees metered wrappers; everything else uses the collaborators themselves.
    pipeline = Pipeline(
        policies, TimedClassifiers(classifier, telemetry),  # type: ignore[arg-type]
        models, MeteredBudgets(budgets, telemetry, lambda: models.model_name), clock,
        keep_prompts=settings.risk.keep_prompts_days > 0, planned=telemetry.planned, first_token=telemetry.first_token,
        accuracy=lambda: accuracy.current(policies.current().profile), limiter=Limiter(clock),
        soft_limits=soft_limits,
    )
    retrainer = Retrainer(classifier, store, clock, settings.risk.high_recall_target, settings.risk.retrain_cv_folds)
    schedules = Schedules(settings.zone, settings.risk.retrain_schedule, settings.accuracy.update_schedule,
                          settings.risk.keep_prompts_days)
    # A settlement waiting for the disk may still turn its claim into an answered one.
    idempotency: Any = IdempotencyKeys(store, ledger, clock, settings.idempotency_hours, budgets.unsettled)
    if fleet is not None:
        from ponderd.ledger.postgres.idempotency import CentralIdempotency

        idempotency = CentralIdempotency(fleet, idempotency, clock, settings.idempotency_hours)
    # Running requests, and settlements waiting for the disk, own their reservations: not orphans.
    async def update_accuracy() -> UpdateResult:
        return await store.call(accuracy.update, clock.now())

    async def flush_key_usage() -> int:
        used = keyring.take_usage()
        if not used:
            return 0
        try:
            await accounts.record_key_use(used)
        except BaseException:
            keyring.restore_usage(used)  # written by the next run
            raise
        return len(used)

    webhook = Webhook(policies, accounts, clock)

    async def warn_expiring_keys() -> str:
        hours = policies.current().alerts.key_expiring_hours
        if not hours:
            return "key expiry alerts are off ([alerts] key_expiring_hours)"
        raised = await soft_limits.keys_expiring(await accounts.list_keys(None), timedelta(hours=hours), clock.now())
        return f"raised {raised} key_expiring alert(s)"

    jobs = Jobs(
        schedules, clock, local_accounts, lambda: set(pipeline.live) | budgets.unsettled(), retrainer, update_accuracy,
        telemetry, idempotency, flush_key_usage, webhook.deliver, warn_expiring_keys,
    )
    return Daemon(
        settings, clock, store, ledger, budgets, keyring, accounts, policies, classifier, models, pipeline, retrainer,
        jobs, idempotency, telemetry=telemetry, accuracy=accuracy, fleet=fleet,
    )
