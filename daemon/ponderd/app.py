"""The one place that chooses concrete classes and wires the daemon together."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlite_utils import Database

from . import keys
from .clock import Clock, SystemClock
from .engine import Engine
from .jobs import Jobs
from .ledger import Ledger, SqliteBudgets, to_micros
from .pipeline import Pipeline
from .policy import Policy, PolicyHolder
from .risk import Classifier, ClassifierHolder
from .risk.retrain import Retrainer
from .settings import Settings
from .store import Store

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
    engine: Engine
    pipeline: Pipeline
    retrainer: Retrainer
    jobs: Jobs

    def open(self) -> None:
        """Open the database, write first-run credentials, load keys, start the model."""
        self.store.open()
        self.store.call_sync(self._bootstrap)
        self.engine.start()

    def reload(self) -> tuple[Policy, Classifier]:
        """Re-read the policy file and the risk model; each keeps its old version if the new one is bad."""
        policy = self.policies.reload()
        return policy, self.classifier.reload()

    def close(self) -> None:
        self.jobs.shutdown()
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
    """Wire a daemon from settings. Nothing starts until `open`."""
    clock = clock or SystemClock()
    if engine is None:
        from .engine.llama import LlamaEngine

        engine = LlamaEngine(settings.model, settings.max_queue)
    store = Store(settings.database)
    ledger = Ledger(settings.zone)
    budgets = SqliteBudgets(store, ledger, clock)
    policies = PolicyHolder(settings.policy_file)
    classifier = ClassifierHolder(settings.state_dir, settings.risk.model_dir)
    pipeline = Pipeline(policies, classifier, engine, budgets, clock, keep_prompts=settings.risk.keep_prompts_days > 0)
    retrainer = Retrainer(classifier, store, clock, settings.risk.high_recall_target, settings.risk.retrain_cv_folds)
    daemon = Daemon(
        settings, clock, store, ledger, budgets, keys.Keyring(), policies, classifier, engine, pipeline, retrainer,
        jobs=None,  # type: ignore[arg-type]
    )
    daemon.jobs = Jobs(daemon)
    return daemon
