"""Model artifacts: skops (a format that cannot run code on load) plus a JSON manifest.

Loading refuses a file whose bytes differ from the manifest's SHA-256, or that
holds any type skops does not trust by default, with an error saying which.
Saving writes a new directory and renames it into place, so a reader never
sees half a model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import shutil
import tempfile
import zipfile
from typing import Any

from ponderd.errors import ArtifactError
from ponderd.risk.cascade import CascadeModel
from ponderd.risk.model import RiskModel

log = logging.getLogger("ponder.risk")

MODEL_FILE = "risk.skops"
MANIFEST_FILE = "manifest.json"
SHIPPED_DIR = pathlib.Path(__file__).resolve().parent / "data" / "model"
PARTS = ("word", "char", "severity", "reasoning")
# Only in models trained with the embedding view (Hyper.embedding, docs/risk.md "A second view").
OPTIONAL_PARTS = ("embedding", "severity_view", "reasoning_view")


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save(model: RiskModel | CascadeModel, directory: pathlib.Path) -> pathlib.Path:
    """Write model and manifest into `directory` (replaced whole); return it."""
    import sklearn
    import skops.io as sio

    for name in ("word", "char"):
        # Terms pruned by min_df: only needed for introspection, and most of the file's size.
        if hasattr(model.parts[name], "stop_words_"):
            del model.parts[name].stop_words_
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory.parent))
    try:
        sio.dump(model.parts, tmp / MODEL_FILE, compression=zipfile.ZIP_DEFLATED, compresslevel=9)
        manifest = dict(model.manifest)
        manifest["artifact_sha256"] = _sha256(tmp / MODEL_FILE)
        manifest["sklearn_version"] = sklearn.__version__
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if directory.exists():
            old = directory.with_name(directory.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    model.manifest = manifest
    return directory


def read_manifest(directory: pathlib.Path) -> dict[str, Any]:
    path = directory / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing: not a risk model directory") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc})") from None
    for key in ("version", "thresholds", "temperatures", "artifact_sha256"):
        if key not in manifest:
            raise ArtifactError(f"{path} lacks {key!r}: retrain with 'ponder risk train'")
    return manifest


def load(directory: pathlib.Path, embedder: Any = None, second_view: bool = True) -> RiskModel | CascadeModel:
    """Load and verify a model directory; raise ArtifactError (and load nothing) if it is not safe.

    A model with the embedding view scores through `embedder`, by default the
    embedded SmolLM2 loaded with llama-cpp-python (risk/embed.py). With `second_view`
    false (the `risk.second_view` setting) a cascade serves its n-gram stage
    alone, and a model that embeds every query is refused.
    """
    import skops.io as sio

    manifest = read_manifest(directory)
    path = directory / MODEL_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} is missing")
    digest = _sha256(path)
    if digest != manifest["artifact_sha256"]:
        raise ArtifactError(
            f"{path} does not match its manifest (sha256 {digest[:12]}…, expected "
            f"{manifest['artifact_sha256'][:12]}…): it changed after training; retrain or restore it"
        )
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # a damaged zip or schema: refuse it the same way
        raise ArtifactError(f"{path} is not a readable skops file ({exc})") from None
    if untrusted:
        raise ArtifactError(
            f"{path} holds types that could run code on load ({', '.join(sorted(untrusted))}); refusing it"
        )
    try:
        parts = sio.load(path, trusted=[])
    except Exception as exc:
        raise ArtifactError(f"{path} could not be loaded ({exc})") from None
    if not isinstance(parts, dict) or not set(PARTS) <= set(parts) <= set(PARTS + OPTIONAL_PARTS):
        raise ArtifactError(f"{path} does not hold the parts {', '.join(PARTS)}")
    if "embedding" in parts and not second_view:
        if "severity_view" in parts:
            log.info("%s: risk.second_view is off; serving the cascade's n-gram stage alone", path)
            return RiskModel({k: parts[k] for k in PARTS}, manifest)
        raise ArtifactError(
            f"{path} reads an embedding of every query, and risk.second_view is off: "
            "turn it on, or serve an n-gram model or a cascade"
        )
    if "embedding" in parts and embedder is None:
        from ponderd.risk.embed import LlamaEmbedder

        try:
            embedder = LlamaEmbedder()
        except Exception as exc:
            if "severity_view" in parts:
                # A cascade falls back to its n-gram stage, which needs no embedding model.
                log.warning("%s: the embedding model did not load (%s); serving its n-gram stage alone", path, exc)
                return RiskModel({k: parts[k] for k in PARTS}, manifest)
            raise ArtifactError(f"{path} has an embedding view, but its embedding model did not load ({exc})") from None
    if "embedding" in parts and manifest.get("embedding_model") not in (None, "", embedder.name):
        raise ArtifactError(
            f"{path} was trained on embeddings of {manifest['embedding_model']}, not {embedder.name}; retrain it"
        )
    # A cascade (risk/cascade.py) carries the second model's heads beside the first's.
    cls: Any = CascadeModel if "severity_view" in parts else RiskModel
    try:
        return cls(parts, manifest, embedder)
    except (KeyError, ValueError, AttributeError, TypeError) as exc:
        raise ArtifactError(f"{path} is not a Ponder risk model ({exc})") from None
