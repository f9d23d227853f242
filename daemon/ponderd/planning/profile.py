"""The accuracy profile: what each effort level bought on a verifiable dataset, and estimates from it.

`ponder calibrate` measures it (calibrate.py) and writes it here; the planner
reads it through `Profile.load` and `Profile.estimate`. The file is JSON:

    {"format": "ponder-accuracy-profile/1", "created_at": "...Z", "policy_version": "default-1",
     "model": {"file": "SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": "..."},
     "dataset": {"path": "...", "sha256": "...", "items": 60},
     "levels": {"direct": {"model": "default", "n": 60, "correct": 33, "accuracy": 0.55, "ci95": [0.42, 0.67],
                           "mean_cost": 0.0024, "mean_prompt_tokens": 40.1, "mean_thinking_tokens": 0.0,
                           "mean_answer_tokens": 12.3, "mean_samples": 1.0, "p50_latency_s": 0.21,
                           "p90_latency_s": 0.4, "slices": {"high/reasoning": {"n": 10, "correct": 4}}}}}

`model` names the primary model's GGUF file the levels were measured on (its file name and
SHA-256); a daemon serving another file plans by the routing table instead (model_check below).
Profiles written before it have no `model` and are treated the same way.
Token means are per request (all samples together); divide by mean_samples for per sample.
A slice is `severity/reasoning` or `severity/direct`.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import pathlib
import tempfile
from dataclasses import dataclass, field
from typing import Any

FORMAT = "ponder-accuracy-profile/1"
SEVERITIES = ("low", "medium", "high")
# Pseudo-outcomes of the level's overall accuracy added to a slice: a slice of
# 3 outcomes moves the estimate a little, one of 100 mostly speaks for itself.
SHRINK_M = 10
_TOP = ("format", "created_at", "policy_version", "dataset", "levels")
_TOP_OPTIONAL = ("model",)
_MODEL = ("file", "sha256")
_DATASET = ("path", "sha256", "items")
_MEANS = ("mean_cost", "mean_prompt_tokens", "mean_thinking_tokens", "mean_answer_tokens", "mean_samples",
          "p50_latency_s", "p90_latency_s")
_LEVEL = ("model", "n", "correct", "accuracy", "ci95", *_MEANS, "slices")


class ProfileError(ValueError):
    """A profile file that cannot be used: one line naming the file and what is wrong."""


def slice_key(severity: str, needs_reasoning: bool) -> str:
    return f"{severity}/{'reasoning' if needs_reasoning else 'direct'}"


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for `correct` successes in `n` trials ((0, 1) when n is 0)."""
    if n <= 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Estimate:
    """An accuracy estimate; n is the outcomes behind it (the level's), slice_n those of its own slice."""

    accuracy: float
    n: int
    slice_n: int = 0


@dataclass(frozen=True)
class LevelProfile:
    model: str
    n: int
    correct: int
    accuracy: float
    ci95: tuple[float, float]
    mean_cost: float
    mean_prompt_tokens: float
    mean_thinking_tokens: float
    mean_answer_tokens: float
    mean_samples: float
    p50_latency_s: float
    p90_latency_s: float
    # slice key -> (n, correct)
    slices: dict[str, tuple[int, int]] = field(default_factory=dict)

    def per_sample(self) -> tuple[float, float]:
        """Mean thinking and answer tokens per sample."""
        s = self.mean_samples or 1.0
        return self.mean_thinking_tokens / s, self.mean_answer_tokens / s

    def to_json(self) -> dict[str, Any]:
        # Full precision: a saved profile loads back equal to what was saved.
        out: dict[str, Any] = {"model": self.model, "n": self.n, "correct": self.correct,
                               "accuracy": self.accuracy, "ci95": list(self.ci95)}
        out.update({k: getattr(self, k) for k in _MEANS})
        out["slices"] = {k: {"n": n, "correct": c} for k, (n, c) in sorted(self.slices.items())}
        return out


@dataclass(frozen=True)
class Profile:
    levels: dict[str, LevelProfile]
    policy_version: str
    created_at: str
    dataset: dict[str, Any]
    # The model file measured (its name and SHA-256); "" in a profile written before profiles named it.
    model_file: str = ""
    model_sha256: str = ""

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Profile:
        """Read and validate a profile file; ProfileError names the file and the first problem."""
        p = pathlib.Path(path)
        try:
            obj = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ProfileError(f"{p}: no such profile; write one with `ponder calibrate DATA.jsonl --out {p}`") from None
        except OSError as exc:
            raise ProfileError(f"{p}: cannot read ({exc.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProfileError(f"{p}: not valid JSON ({exc})") from None
        return cls.from_json(obj, where=str(p))

    @classmethod
    def from_json(cls, obj: Any, where: str = "profile") -> Profile:
        v = _Validator(where)
        top = v.table("", obj, _TOP, _TOP_OPTIONAL)
        if top.get("format") != FORMAT:
            v.fail("format", f"must be {FORMAT!r}, not {top.get('format')!r} (is this an accuracy profile?)")
        created = v.text("created_at", top["created_at"])
        version = v.text("policy_version", top["policy_version"])
        ds = v.table("dataset", top["dataset"], _DATASET)
        dataset = {"path": v.text("dataset.path", ds["path"]), "sha256": v.text("dataset.sha256", ds["sha256"]),
                   "items": v.count("dataset.items", ds["items"])}
        levels_raw = top["levels"]
        if not isinstance(levels_raw, dict) or not levels_raw:
            v.fail("levels", "must be an object with at least one level")
        levels = {str(name): _level(v, f"levels.{name}", raw) for name, raw in levels_raw.items()}
        model_file = model_sha = ""
        if "model" in top:
            m = v.table("model", top["model"], _MODEL)
            model_file, model_sha = v.text("model.file", m["file"]), v.text("model.sha256", m["sha256"])
            if len(model_sha) != 64 or any(ch not in "0123456789abcdef" for ch in model_sha):
                v.fail("model.sha256", f"must be the model file's SHA-256 in 64 lowercase hex digits, not {model_sha!r}")
        return cls(levels=levels, policy_version=version, created_at=created, dataset=dataset,
                   model_file=model_file, model_sha256=model_sha)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT, "created_at": self.created_at, "policy_version": self.policy_version}
        if self.model_sha256:
            out["model"] = {"file": self.model_file, "sha256": self.model_sha256}
        out["dataset"] = dict(self.dataset)
        out["levels"] = {k: lvl.to_json() for k, lvl in self.levels.items()}
        return out

    def model_check(self, file: str, sha256: str) -> str:
        """"" when this profile was measured on the model file with this digest; else the one line saying it was not."""
        if not self.model_sha256:
            return (f"no profile for model {file}: the profile names no model (written before profiles did); "
                    "run `ponder calibrate`; planning by the routing table")
        if self.model_sha256 != sha256:
            return (f"no profile for model {file}: the profile was measured on {self.model_file or 'another file'} "
                    f"(sha256 {self.model_sha256[:12]}…, this one {sha256[:12]}…); run `ponder calibrate`; "
                    "planning by the routing table")
        return ""

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (a temporary file renamed over the old one), readable by its owner only."""
        p = pathlib.Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_json(), f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
        except BaseException:
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise

    def estimate(self, level: str, severity: str, needs_reasoning: bool) -> Estimate | None:
        """The slice's accuracy shrunk toward the level's: (correct_s + m*acc)/(n_s + m), m = SHRINK_M.

        None when the level is not in the profile."""
        lvl = self.levels.get(level)
        if lvl is None:
            return None
        n_s, c_s = lvl.slices.get(slice_key(severity, needs_reasoning), (0, 0))
        return Estimate((c_s + SHRINK_M * lvl.accuracy) / (n_s + SHRINK_M), lvl.n, n_s)


class _Validator:
    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, field_: str, problem: str) -> None:
        raise ProfileError(f"{self.where}: {field_}: {problem}" if field_ else f"{self.where}: {problem}")

    def table(self, where: str, value: Any, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(where, "must be a JSON object")
        for key in value:
            if key not in keys and key not in optional:
                near = difflib.get_close_matches(str(key), keys + optional, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                self.fail(_join(where, key), f"unknown field{hint}")
        for key in keys:
            if key not in value:
                self.fail(_join(where, key), "missing")
        return value

    def text(self, where: str, value: Any) -> str:
        if not isinstance(value, str):
            self.fail(where, f"must be a string, not {value!r}")
        return value

    def count(self, where: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(where, f"must be a whole number >= 0, not {value!r}")
        return value

    def number(self, where: str, value: Any, hi: float = math.inf) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= hi:
            limit = f"from 0 to {hi:g}" if hi != math.inf else ">= 0"
            self.fail(where, f"must be a number {limit}, not {value!r}")
        return float(value)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _level(v: _Validator, where: str, raw: Any) -> LevelProfile:
    t = v.table(where, raw, _LEVEL)
    n = v.count(f"{where}.n", t["n"])
    correct = v.count(f"{where}.correct", t["correct"])
    if n == 0:
        v.fail(f"{where}.n", "must be at least 1: a level with no outcomes says nothing")
    if correct > n:
        v.fail(f"{where}.correct", f"is {correct}, more than n ({n})")
    accuracy = v.number(f"{where}.accuracy", t["accuracy"], 1.0)
    if abs(accuracy - correct / n) > 1e-3:
        v.fail(f"{where}.accuracy", f"is {accuracy}, but correct/n is {correct / n:.6f}")
    ci = t["ci95"]
    if not (isinstance(ci, list) and len(ci) == 2):
        v.fail(f"{where}.ci95", f"must be [low, high], not {ci!r}")
    lo, hi = (v.number(f"{where}.ci95", x, 1.0) for x in ci)
    if lo > hi:
        v.fail(f"{where}.ci95", f"low {lo} is above high {hi}")
    means = {k: v.number(f"{where}.{k}", t[k]) for k in _MEANS}
    slices_raw = t["slices"]
    if not isinstance(slices_raw, dict):
        v.fail(f"{where}.slices", "must be a JSON object of severity/reasoning|direct -> {n, correct}")
    slices: dict[str, tuple[int, int]] = {}
    keys = [slice_key(s, r) for s in SEVERITIES for r in (True, False)]
    for key, cell in slices_raw.items():
        at = f"{where}.slices.{key}"
        if key not in keys:
            near = difflib.get_close_matches(str(key), keys, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else " (use SEVERITY/reasoning or SEVERITY/direct)"
            v.fail(at, f"unknown slice{hint}")
        c = v.table(at, cell, ("n", "correct"))
        sn, sc = v.count(f"{at}.n", c["n"]), v.count(f"{at}.correct", c["correct"])
        if sc > sn:
            v.fail(f"{at}.correct", f"is {sc}, more than n ({sn})")
        slices[key] = (sn, sc)
    if sum(sn for sn, _ in slices.values()) > n:
        v.fail(f"{where}.slices", f"count more outcomes than the level's n ({n})")
    return LevelProfile(model=v.text(f"{where}.model", t["model"]), n=n, correct=correct, accuracy=accuracy,
                        ci95=(lo, hi), slices=slices, **means)
