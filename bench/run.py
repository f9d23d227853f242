"""Run every benchmark in one go (`make bench`); each prints ratios measured side by side in one run."""

from __future__ import annotations

import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
BENCHES = ["risk_latency.py", "batching.py", "self_consistency.py", "ledger_commit.py"]

if __name__ == "__main__":
    failed = 0
    for name in BENCHES:
        print(f"\n== {name} ==", flush=True)
        failed |= subprocess.call([sys.executable, str(HERE / name)], cwd=HERE.parent)
    sys.exit(failed)
