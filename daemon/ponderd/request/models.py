"""The served models: one engine per model, the primary first.

Levels name the model that runs them (policy `model = "NAME"`). The primary
model must load, or the daemon does not start; another model that fails to
load, or whose engine stops later, is only marked down: its levels are skipped
by the planner (which says so in the plan's reasons) and its health service
`ponder.engine.NAME` reports NOT_SERVING, while the rest keeps serving.

`ServedModels` is itself an `Engine` (the primary's generate/prepare/limits,
everyone's queue depth and progress), so code that knows one model keeps working.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

from ponderd.engine import Engine, EngineLimits, GenerationJob, GenerationResult, PreparedPrompt

log = logging.getLogger("ponder.models")


class ServedModels:
    def __init__(self, engines: Mapping[str, Engine], primary: str) -> None:
        if primary not in engines:
            raise ValueError(f"the primary model {primary!r} has no engine")
        self.primary = primary
        self._engines = dict(engines)
        # Why a model did not load; it is never retried while the process lives.
        self._load_failures: dict[str, str] = {}

    @classmethod
    def single(cls, engine: Engine) -> "ServedModels":
        return engine if isinstance(engine, ServedModels) else cls({"": engine}, "")

    # which model ----------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self._engines)

    def get(self, name: str) -> Engine:
        return self._engines[name or self.primary]

    def down(self, name: str) -> str:
        """"" when the model can serve; else why not."""
        name = name or self.primary
        if name in self._load_failures:
            return f"model {name!r} failed to load: {self._load_failures[name]}"
        failure = self._engines[name].failure()
        return f"model {name!r} stopped: {failure}" if failure else ""

    def others(self) -> list[str]:
        return [n for n in self._engines if n != self.primary]

    # the Engine protocol: the primary's, with everyone's health ----------------------

    @property
    def limits(self) -> EngineLimits:
        return self.get(self.primary).limits

    @property
    def model_name(self) -> str:
        return self.get(self.primary).model_name

    def start(self) -> None:
        """Start the primary (its failure is the daemon's), then each other model (their failures are theirs)."""
        self.get(self.primary).start()
        for name in self.others():
            try:
                self._engines[name].start()
            except Exception as exc:  # a bad second model must not take the first one down
                self._load_failures[name] = str(exc) or type(exc).__name__
                log.error("model %s did not load (%s); its levels are unavailable until the next start", name, exc)

    def warm(self) -> None:
        for name, engine in self._engines.items():
            if not self.down(name):
                engine.warm()

    def prepare(self, system: str, prompt: str, history: Sequence[tuple[str, str]] = ()) -> PreparedPrompt:
        return self.get(self.primary).prepare(system, prompt, history)

    async def generate(self, job: GenerationJob) -> GenerationResult:
        return await self.get(self.primary).generate(job)

    def queue_depth(self) -> int:
        return sum(e.queue_depth() for n, e in self._engines.items() if n not in self._load_failures)

    def failure(self) -> str:
        """The primary's failure: without it the daemon cannot serve, so it exits (see server.py)."""
        return self.get(self.primary).failure()

    def last_progress(self) -> float:
        """The least recent loop turn among the engines that still run (the watchdog's evidence)."""
        running = [e.last_progress() for n, e in self._engines.items() if not self.down(n)]
        return min(running) if running else self.get(self.primary).last_progress()

    def close(self) -> None:
        for name, engine in self._engines.items():
            if name not in self._load_failures:
                engine.close()
