"""The risk classifier seam: severity of a wrong answer, and need for reasoning."""

from __future__ import annotations

import logging
import pathlib
import threading
from typing import Any, Protocol

from ponderd.errors import ArtifactError
from ponderd.risk.score import RiskScore

log = logging.getLogger("ponder.risk")


class Classifier(Protocol):
    version: str

    def score(self, text: str, explain: bool = False) -> RiskScore:
        """Assess one query; with explain, include its top contributing features."""


def model_dir_for(risk_dir: pathlib.Path, configured: pathlib.Path | None) -> pathlib.Path:
    """Where the model to serve lives: the configured directory, the last accepted retrain, or the shipped one."""
    from ponderd.risk.artifact import SHIPPED_DIR

    if configured is not None:
        return configured
    pointer = risk_dir / "current"
    if pointer.is_file():
        return risk_dir / pointer.read_text().strip()
    return SHIPPED_DIR


class ClassifierHolder:
    """The model in service. Reload and retrain swap in a whole, verified model or keep the old one."""

    def __init__(self, state_dir: pathlib.Path, configured: pathlib.Path | None, second_view: bool = True,
                 embedder: Any = None) -> None:
        self.state_dir = state_dir / "risk"
        self.configured = configured
        self.second_view = second_view  # risk.second_view: false serves a cascade's n-gram stage alone
        # The second view's embedder (risk/embed.py): the serving engine's where it serves the
        # embedding model's file; None loads a LlamaEmbedder of its own.
        self.embedder = embedder
        # Held across load-and-swap by reload and install, so the two never interleave.
        self.lock = threading.RLock()
        self._model: Classifier = self.load()

    def current(self) -> Classifier:
        return self._model

    def model_dir(self) -> pathlib.Path:
        return model_dir_for(self.state_dir, self.configured)

    def reload(self) -> Classifier:
        """Re-read the model directory; on ArtifactError the old model stays and the error propagates."""
        with self.lock:
            self._model = self.load()
            return self._model

    def swap(self, model: Classifier) -> None:
        with self.lock:
            self._model = model

    def install(self, version_dir: pathlib.Path) -> Classifier:
        """Serve a retrained model directory (under state_dir/risk), and load it on start and reload from now on.

        The pointer is written before the swap, under the lock: a reload can
        only ever see the new pointer, so it cannot revert the new model.
        """
        from ponderd.risk import artifact

        with self.lock:
            # Load it back through the same checks as any artifact before serving it.
            model = artifact.load(version_dir, self.embedder, second_view=self.second_view)
            pointer = self.state_dir / "current"
            tmp = pointer.with_suffix(".tmp")
            tmp.write_text(version_dir.name + "\n")
            tmp.replace(pointer)
            self._model = model
            return model

    def load(self) -> Classifier:
        """Load and verify the model to serve (see model_dir) without putting it in force."""
        from ponderd.risk import artifact

        path = self.model_dir()
        model = artifact.load(path, self.embedder, second_view=self.second_view)
        log.info("risk model %s loaded from %s", model.version, path)
        return model


__all__ = ["ArtifactError", "Classifier", "ClassifierHolder", "model_dir_for"]
