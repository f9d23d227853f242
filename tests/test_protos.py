"""Generated protobuf code is exactly what `make proto` produces from protos/: never hand-edited."""

import subprocess
import sys

from conftest import REPO

GENERATED = REPO / "clients" / "python" / "ponder" / "v1"


def test_generated_code_matches_the_protos(tmp_path):
    protos = sorted(str(p.relative_to(REPO / "protos")) for p in (REPO / "protos").rglob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", "protos", f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", *protos],
        cwd=REPO / "protos" / "..", check=True,
    )
    fresh = sorted((tmp_path / "ponder" / "v1").glob("*.py*"))
    assert [p.name for p in fresh] == sorted(p.name for p in GENERATED.glob("*_pb2*.py*"))
    for path in fresh:
        assert path.read_text() == (GENERATED / path.name).read_text(), f"{path.name} is stale: run `make proto`"
