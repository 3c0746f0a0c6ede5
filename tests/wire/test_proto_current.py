"""The committed peer_pb2 files are exactly what the pinned generator makes of peer.proto.

grpcio-tools is in the dev extra that `./run test` installs, so this runs in CI: a missing
generator is a failure here, never a skip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

WIRE = Path(__file__).resolve().parents[2] / "agent" / "wire"


def test_generated_code_is_current(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{WIRE}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(WIRE / "peer.proto"),
        ],
        check=True,
    )
    for name in ("peer_pb2.py", "peer_pb2.pyi"):
        assert (tmp_path / name).read_bytes() == (WIRE / name).read_bytes(), (
            f"{name} is stale: run `tox -e proto` (or grpc_tools.protoc) and commit the result"
        )
