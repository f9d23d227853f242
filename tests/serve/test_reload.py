"""Reloads and retrains never interleave: what a retrain installs, a reload cannot revert."""

from __future__ import annotations

import shutil
import threading

from ponderd.risk import ClassifierHolder
from ponderd.risk.artifact import SHIPPED_DIR, load


def test_install_points_at_the_new_model_before_serving_it_and_reload_keeps_it(tmp_path):
    holder = ClassifierHolder(tmp_path, None)
    shipped = holder.current().version
    retrained = tmp_path / "risk" / "retrained"
    shutil.copytree(SHIPPED_DIR, retrained)

    # While a reload holds the lock, an install waits: the two never interleave.
    installed = threading.Event()
    with holder.lock:
        t = threading.Thread(target=lambda: (holder.install(retrained), installed.set()))
        t.start()
        assert not installed.wait(0.2)
        assert holder.model_dir() == SHIPPED_DIR
    t.join(120)
    assert installed.is_set()
    # The pointer names the retrained directory, so a reload (or a restart) serves it, not the shipped one.
    assert (tmp_path / "risk" / "current").read_text().strip() == "retrained"
    assert holder.model_dir() == retrained
    assert holder.reload().version == load(retrained).version == shipped
    assert ClassifierHolder(tmp_path, None).model_dir() == retrained
