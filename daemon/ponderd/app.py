"""The one place that chooses concrete classes and wires the daemon together."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlite_utils import Database

from . import keys
from .accuracy import AccuracyEstimates
from .budgets import SqliteBudgets
from .clock import Clock, SystemClock
from .engine import Engine
from .idempotency import IdempotencyKeys
from .jobs import Jobs, Schedules
from .ledger import Ledger, to_micros
from .models import ServedModels
from .pipeline import Pipeline
from .policy import Policy, PolicyHolder
from .risk import Classifier, ClassifierHolder
from .risk.retrain import Retrainer
from .settings import Settings
from .store import Store
from .telemetry import MeteredBudgets, NullTelemetry, Telemetry, TimedClassifiers
from .telemetry import create as create_telemetry

log = logging.getLogger("ponder")

QUICKSTART_TENANT = "local"


@dataclass
class Daemon:
    settings: Settings
    clock: Clock
    store: Store
    ledger: Ledger
    budgets: SqliteBudgets
    keyring: keys.Keyring
    policies: PolicyHolder
    classifier: ClassifierHolder
    engine: ServedModels
    pipeline: Pipeline
    retrainer: Retrainer
    jobs: Jobs
    # Idempotency keys of Ask/AskStream (idempotency.py), handed to the Ponder service and the jobs.
    keys: IdempotencyKeys
    telemetry: Telemetry = field(default_factory=NullTelemetry)
    accuracy: AccuracyEstimates = field(default_factory=AccuracyEstimates)

    def open(self) -> None:
        """Open the database, write first-run credentials, load keys, start the model, serve metrics."""
        self.store.open()
        self.store.call_sync(self._bootstrap)
        self.store.call_sync(self.accuracy.load)
        self.engine.start()
        self.telemetry.watch(
            self.engine.queue_depth,
            # Running requests hold (or are about to take) one; waiting settlements keep theirs.
            lambda: len(self.pipeline.live) + len(self.budgets.unsettled()),
        )
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
                _, token = keys.issue_key(db, None, "admin", "first admin key", now)
                keys.write_credential(state / "admin.token", token)
                log.info("wrote the first admin key to %s (mode 0600)", state / "admin.token")
            if self.settings.quickstart and not self.ledger.tenant_exists(db, QUICKSTART_TENANT):
                s = self.settings
                self.ledger.create_tenant(db, QUICKSTART_TENANT, to_micros(s.quickstart_budget), s.quickstart_window, now)
                _, token = keys.issue_key(db, QUICKSTART_TENANT, "tenant", "quickstart", now)
                keys.write_credential(state / "local.token", token)
                log.info("created tenant %r; its key is in %s (mode 0600)", QUICKSTART_TENANT, state / "local.token")
        self.keyring.refresh(db)


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
        from .engine.llama import LlamaEngine

        engines[name] = LlamaEngine(model_settings, settings.max_queue)
    models = ServedModels(engines, settings.model.name)
    store = Store(settings.database)
    ledger = Ledger(settings.zone)
    budgets = SqliteBudgets(store, ledger, clock)
    policies = PolicyHolder(settings.policy_file, models.names)
    accuracy = AccuracyEstimates(settings.accuracy.prior_weight, settings.accuracy.min_new_outcomes)
    classifier = ClassifierHolder(settings.state_dir, settings.risk.model_dir, settings.risk.second_view)
    telemetry = create_telemetry(settings.metrics.listen)
    # The pipeline sees metered wrappers; everything else uses the collaborators themselves.
    pipeline = Pipeline(
        policies, TimedClassifiers(classifier, telemetry),  # type: ignore[arg-type]
        models, MeteredBudgets(budgets, telemetry, lambda: models.model_name), clock,
        keep_prompts=settings.risk.keep_prompts_days > 0, planned=telemetry.planned,
        accuracy=lambda: accuracy.current(policies.current().profile),
    )
    retrainer = Retrainer(classifier, store, clock, settings.risk.high_recall_target, settings.risk.retrain_cv_folds)
    schedules = Schedules(settings.zone, settings.risk.retrain_schedule, settings.accuracy.update_schedule,
                          settings.risk.keep_prompts_days)
    # A settlement waiting for the disk may still turn its claim into an answered one.
    idempotency = IdempotencyKeys(store, ledger, clock, settings.idempotency_hours, budgets.unsettled)
    # Running requests, and settlements waiting for the disk, own their reservations: not orphans.
    jobs = Jobs(
        schedules, clock, store, ledger, lambda: set(pipeline.live) | budgets.unsettled(), retrainer, accuracy, telemetry,
        idempotency,
    )
    return Daemon(
        settings, clock, store, ledger, budgets, keys.Keyring(), policies, classifier, models, pipeline, retrainer,
        jobs, idempotency, telemetry=telemetry, accuracy=accuracy,
    )
