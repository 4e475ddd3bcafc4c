"""The long checks, opt-in with ``python -m pytest -m slow``: full-dataset runs on MovieLens
100K and smoke runs (``--quick``) of the benchmark scripts, each as a user would start it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedmf.cli import main

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_fedmf_plain_60_rounds_on_ml100k_reaches_the_centralized_baseline(ml100k_root, tmp_path, capsys):
    """The README's accuracy row: plain FullText FedMF on all 943 users of u1, 60 rounds."""
    out = tmp_path / "r.json"
    assert main(["train", "--dataset", "ml-100k", "--split", "u1", "--backend", "plain",
                 "--rounds", "60", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["rounds"] == 60 and len(summary["history"]) == 60
    assert summary["test_rmse"] <= 0.95, "target RMSE <= 0.95"
    assert abs(summary["test_rmse"] - summary["centralized_test_rmse"]) <= 0.005, "federated = centralized"


def test_masked_self_audit_on_ml100k_lets_out_only_users_the_attack_cannot_beat(ml100k_root, tmp_path, capsys):
    """The FedMMF security target on the full data set (plain stand-in for the encrypting
    path: decisions, accuracy and leakage are real): every user the server saw in clear
    is recovered by the attack no better than the guess plus the margin, on both metrics."""
    out = tmp_path / "masked.json"
    assert main(["train", "--dataset", "ml-100k", "--mask", "personalized", "--mask-noise", "0.1",
                 "--mask-scale", "0.02", "0.04", "--selective-noise", "--refit", "--policy", "audit",
                 "--backend", "plain", "--rounds", "10", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    attack, margin = summary["attack"], summary["audit_margin"]
    assert 0 < summary["encrypted_fraction"] < 1
    if attack["users_recovered"]:
        assert attack["max_user_advantage"] <= margin and attack["max_user_advantage_rmse"] <= margin
    assert attack["users_attack_failed"] == 0


def _bench(tmp_path, script: str, *args: str) -> dict:
    """Run ``python bench/SCRIPT --quick --json PATH ARGS`` and return its JSON."""
    out = tmp_path / f"{script}.json"
    run = subprocess.run([sys.executable, str(REPO / "bench" / script), "--quick", "--json", str(out), *args],
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return json.loads(out.read_text())


def test_bench_paillier_vs_phe_quick(tmp_path):
    result = _bench(tmp_path, "paillier_vs_phe.py")
    assert result["quick"] and result["key_bits"] >= 2048
    assert result["encrypt_speedup_packed"] > 1 and result["bytes_ratio_packed"] < 1


def test_bench_fedmf_overhead_quick(ml100k_root, tmp_path):
    result = _bench(tmp_path, "fedmf_overhead.py")
    assert result["quick"] and result["dataset"] == "ml-100k"
    names = {r["backend"] for r in result["backends"]}
    assert {"plain", "paillier_packed", "secagg", "secagg+"} <= names
    assert result["packed_vs_phe_speedup"] > 1 and result["packed_vs_phe_bytes_ratio"] < 1


def test_bench_fedmmf_adaptive_quick(tmp_path):
    result = _bench(tmp_path, "fedmmf_adaptive.py")
    assert result["quick"] and result["trade_off"]
    assert 0 <= result["leakage"]["self_audit_encrypted_fraction"] <= 1
    assert result["leakage"]["plain_fedmf"]["exact_fraction"] == 1.0, "plain FedMF leaks every rating"
    assert "cost" in result


def test_bench_secagg_vs_flower_quick(tmp_path):
    pytest.importorskip("flwr", reason="the [bench] extra (Flower) is not installed")
    result = _bench(tmp_path, "secagg_vs_flower.py")
    assert result["exact"], "our unmasked sum is exact at every point"
    assert result["rows"]


def test_bench_fedmf_fullscale_quick_on_a_cohort(ml100k_root, tmp_path):
    result = _bench(tmp_path, "fedmf_fullscale.py", "--users", "40")
    assert result["rounds"] == 2 and result["users"] == 40
    assert result["max_round_rmse_difference"] < 0.002
    assert result["part_bytes_up_per_client"] < result["full_bytes_up_per_client"]
    assert "estimated_wall_seconds_60_rounds" in result
