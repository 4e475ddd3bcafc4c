"""Deployment on localhost: a SuperLink and 5 SuperNodes started, run and always stopped.

In the default suite (CI runs it): it is the only test of a real deployment, and it
once went unnoticed that the example app's vectors had left the quantizer's grid. 40 to
70 s here: every message starts a ClientApp process.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="flwr is not installed (pip install 'fedmf-toolkit[flower]')")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("flower-superlink") is None, reason="flower-superlink is not on PATH")
def test_deployed_round_with_a_dropout_is_exact_and_leaves_no_process():
    spec = importlib.util.spec_from_file_location("flower_deploy", ROOT / "scripts" / "flower_deploy.py")
    deploy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(deploy)
    summary = deploy.deploy(5, 1000, 0, timeout=300)
    assert summary["exact"] and summary["included_partitions"] == [1, 2, 3, 4]
    assert summary["dropouts"] == {"masked-input": 1}
    assert not _processes_with(f"FLWR_HOME={summary['flwr_home']}".encode())


def _processes_with(marker: bytes) -> list[int]:
    """Live processes whose environment holds ``marker`` (the run's FLWR_HOME)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found
