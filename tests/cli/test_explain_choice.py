"""`ponder quote` and `ponder ask --explain` say why expected-loss planning chose its level: the real CLI, a real daemon.

The daemon starts with a profile of another model file (it plans by the routing table and
says so once in its log), then reloads a profile the test writes for the embedded model.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import pytest

from conftest import DaemonProcess
from ponderd.engine.model_file import model_identity

PONDER = str(pathlib.Path(sys.executable).parent / "ponder")
pytestmark = pytest.mark.model

POLICY = """
version = "explain-1"
[prices]
prompt = 0.25
thinking = 1.0
answer = 1.0
[levels.direct]
thinking_tokens = 0
samples = 1
answer_tokens = 16
[levels.vote3]
thinking_tokens = 0
samples = 3
answer_tokens = 16
vote = "weighted"
[levels.careful]
thinking_tokens = 32
samples = 3
answer_tokens = 16
[planning]
mode = "expected_loss"
profile = "profile.json"
loss = { low = 0.001, medium = 0.1, high = 10.0 }
[routing]
low = { direct = "direct", reasoning = "direct", floor = "direct" }
medium = { direct = "direct", reasoning = "careful", floor = "direct" }
high = { direct = "careful", reasoning = "careful", floor = "direct" }
[defaults]
unsure_floor = "off"
[tenants.local]
hints = ["severity_floor", "max_cost", "level"]
unsure_floor = "off"
"""


def level(accuracy: float, cost: float, samples: int, thinking: float = 0.0) -> dict:
    correct = round(accuracy * 40)
    return {"model": "default", "n": 40, "correct": correct, "accuracy": correct / 40, "ci95": [0.0, 1.0],
            "mean_cost": cost, "mean_prompt_tokens": 30.0, "mean_thinking_tokens": thinking,
            "mean_answer_tokens": 8.0 * samples, "mean_samples": float(samples), "p50_latency_s": 0.1,
            "p90_latency_s": 0.2, "slices": {}}


def write_profile(path: pathlib.Path, file: str, sha256: str) -> None:
    path.write_text(json.dumps({
        "format": "ponder-accuracy-profile/1", "created_at": "2026-12-07T02:00:00Z", "policy_version": "explain-1",
        "model": {"file": file, "sha256": sha256},
        "dataset": {"path": "written by the test", "sha256": "", "items": 40},
        "levels": {"direct": level(0.55, 0.010, 1), "vote3": level(0.725, 0.030, 3),
                   "careful": level(0.35, 0.090, 3, 90.0)},
    }))


def ponder(env, *args):
    r = subprocess.run([PONDER, *args], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"ponder {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def rows(out: str) -> dict[str, list[str]]:
    return {m.group(1): m.group(2).split() for m in re.finditer(r"^  (weighed|chosen|next best)\s+(.*)$", out, re.M)}


def test_quote_and_ask_explain_show_the_chosen_and_next_best_levels(tmp_path: pathlib.Path, cli_env):
    policy = tmp_path / "explain.toml"
    policy.write_text(POLICY)
    write_profile(tmp_path / "profile.json", "other.gguf", "b" * 64)
    d = DaemonProcess(cli_env, "--policy-file", str(policy))
    try:
        d.wait_ready()
        served = model_identity(None)
        # Another model's profile: the routing table plans, and the log says why once.
        said = [x for x in d.log.read_text().splitlines() if "no profile for model" in x]
        assert len(said) == 1 and f"no profile for model {served.file}: the profile was measured on other.gguf" in said[0]
        fallback = ponder(cli_env, "quote", "--severity-floor", "high", "What is 12 + 30?")
        assert "level=careful" in fallback and "planning by the routing table" in fallback
        assert "weighed" not in fallback

        write_profile(tmp_path / "profile.json", served.file, served.sha256)
        admin = (d.state_dir / "admin.token").read_text().strip()
        ponder(cli_env, "--token", admin, "admin", "policy", "reload")
        quoted = ponder(cli_env, "quote", "--severity-floor", "high", "What is 12 + 30?")
        table = rows(quoted)
        assert table["weighed"][:4] == ["level", "expected", "cost", "P(wrong)"], quoted
        # vote3: ~0.03 + 0.275 x 10; the next best, direct: ~0.01 + 0.45 x 10.
        assert table["chosen"][0] == "vote3" and float(table["chosen"][2]) == pytest.approx(0.275, abs=0.001)
        assert float(table["chosen"][3]) == pytest.approx(2.75, abs=0.01)
        assert table["next best"][0] == "direct" and float(table["next best"][2]) == pytest.approx(0.45, abs=0.001)
        assert float(table["chosen"][4]) < float(table["next best"][4])
        assert "level=vote3" in quoted
        print(quoted)

        as_json = json.loads(ponder(cli_env, "quote", "--json", "--severity-floor", "high", "What is 12 + 30?"))
        choices = as_json["plan"]["choices"]
        assert [c["level"] for c in choices][:2] == ["vote3", "direct"] and len(choices) == 3
        assert choices[0]["expected_total"] == pytest.approx(choices[0]["expected_cost"] + choices[0]["expected_wrong_loss"])
        assert as_json["plan"]["expected_loss"] == pytest.approx(choices[0]["expected_total"])

        asked = ponder(cli_env, "ask", "--explain", "--severity-floor", "high", "--seed", "3", "What is 12 + 30?")
        assert rows(asked)["chosen"][0] == "vote3" and rows(asked)["next best"][0] == "direct"
        plain = ponder(cli_env, "ask", "--severity-floor", "high", "--seed", "3", "What is 12 + 30?")
        assert "weighed" not in plain and "level=vote3" in plain
    finally:
        d.stop()
