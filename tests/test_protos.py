"""The generated admin API modules are what `make protos` makes from protos/: a change to a
.proto that was not compiled (or a hand edit of the output) fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_generated_modules_match_the_protos(tmp_path: Path) -> None:
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "protos").rglob("*.proto"))
    assert protos, "no .proto under protos/"
    outputs = [f"--python_out={tmp_path}", f"--pyi_out={tmp_path}"]
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iprotos", *outputs, *protos],
        cwd=ROOT,
        check=True,
    )
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert made
    for path in made:
        committed = ROOT / path
        assert committed.exists(), f"{path} is not committed: run `make protos`"
        assert committed.read_bytes() == (tmp_path / path).read_bytes(), (
            f"{path} is stale: run `make protos`"
        )
