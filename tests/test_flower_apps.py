"""The trainers as Flower apps (fedmf.flower): the same results as the in-process engine.

Fast checks run the apps' device/server cut without Ray (federated evaluation equals the
trainer's ``evaluate``; settings refused with a clear error). The simulation tests run
each model for 2 rounds on 30 ML-100K users held by 3 SuperNodes in Flower's simulation
engine (``run_simulation``; the ServerApp runs in a thread of this process) and compare
the server's shared model and the metrics with :class:`fedmf.engine.Engine` on the same
settings: to float tolerance for ``plain``, to the quantization for ``secagg+`` and
``paillier_packed``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from fedmf.engine import Engine
from fedmf.errors import ConfigError
from fedmf.flower.models import MODELS, WRAPPERS, build_trainer, combine, settings

BASE = {"users": 30, "negatives": 20, "rounds": 2, "num-nodes": 3, "timeout": 120.0}


def _engine(cfg: dict):
    """The in-process engine over ``plain`` on the same settings (trainer, participation, seed)."""
    s = settings(cfg)
    trainer, participation = build_trainer(s)
    engine = Engine(trainer, "plain", participation=participation, seed=int(s["seed"]))
    engine.run(int(s["rounds"]))
    return engine, WRAPPERS[s["model"]](trainer, participation)


@pytest.mark.parametrize("model", MODELS)
def test_device_metric_sums_combine_to_the_trainers_evaluate(ml100k_root, model):
    engine, wrapped = _engine({**BASE, "model": model, "rounds": 1})
    clients = wrapped.clients()
    parts = np.array_split(np.asarray(clients), 3)
    sums: dict[str, float] = {}
    for part in parts:
        for key, value in wrapped.metric_sums([int(c) for c in part]).items():
            sums[key] = sums.get(key, 0.0) + value
    combined = combine(sums)
    expected = engine.history[-1].metrics
    assert combined, "no metric came back"
    for key, value in combined.items():
        assert value == pytest.approx(expected[key], rel=1e-6, abs=1e-9), key


def test_settings_refuse_what_cannot_run():
    with pytest.raises(ConfigError, match="paillier_packed"):
        settings({"model": "fcf", "backend": "paillier_packed"})
    with pytest.raises(ConfigError, match="model"):
        settings({"model": "als"})
    with pytest.raises(ConfigError, match="backend"):
        settings({"backend": "paillier"})


def test_combine_takes_the_root_of_mean_squared_errors():
    out = combine({"test:test_rmse.sum": 8.0, "test:test_mae.sum": 4.0, "test.count": 2.0})
    assert out == {"test_rmse": 2.0, "test_mae": 2.0}


# -------------------------------------------------------------------- in Flower's simulation


def _simulate(cfg: dict, tmp_path, monkeypatch):
    pytest.importorskip("flwr", reason="flwr is not installed (pip install 'fedmf-toolkit[flower]')")
    pytest.importorskip("ray", reason="Flower's simulation engine needs ray (flwr[simulation])")
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from fedmf.flower import client_app
    from fedmf.flower.server_app import run

    monkeypatch.setenv("FLWR_HOME", str(tmp_path))
    monkeypatch.setenv("FLWR_DISABLE_UPDATE_CHECK", "1")
    results: list = []
    server = ServerApp()

    @server.main()
    def main(grid, context) -> None:
        results.append(run(grid, cfg))

    cpus = max(1, min(2, os.cpu_count() or 1))
    run_simulation(server, client_app.app, num_supernodes=cfg["num-nodes"],
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": cpus, "include_dashboard": False}})
    assert results, "the ServerApp did not finish"
    return results[0]


def _assert_same(summary, model, engine, wrapped, *, rtol, atol, metric_rtol=1e-6):
    """The server's shared model to (rtol, atol); the metrics to ``metric_rtol`` (PersonalFR
    evaluates in float32: the sums of squares are added in another order)."""
    for name, value in wrapped.shared().items():
        np.testing.assert_allclose(model.shared()[name], value, rtol=rtol, atol=atol, err_msg=name)
    assert [h["participants"] for h in summary["history"]] == [r.participants for r in engine.history]
    for mine, theirs in zip(summary["history"], engine.history):
        common = [k for k in mine if k in theirs.metrics]
        assert common, "no metric in common with the engine"
        for key in common:
            assert mine[key] == pytest.approx(theirs.metrics[key], rel=max(rtol, metric_rtol), abs=atol), key


@pytest.mark.slow
@pytest.mark.parametrize("model", [m for m in MODELS if m != "fedmf"])  # FedMF: the default-suite test
def test_each_model_on_flower_equals_the_engine(ml100k_root, model, tmp_path, monkeypatch):
    cfg = {**BASE, "model": model, "backend": "plain"}
    if model == "personalfr":
        cfg["fraction"] = 0.5  # its default 0.1 chooses 3 of the 30 clients
    summary, served = _simulate(cfg, tmp_path, monkeypatch)
    engine, wrapped = _engine(cfg)
    _assert_same(summary, served, engine, wrapped, rtol=1e-9, atol=1e-9)


def test_fedmf_on_flower_equals_the_engine(ml100k_root, tmp_path, monkeypatch):
    cfg = {**BASE, "model": "fedmf", "backend": "plain"}
    summary, served = _simulate(cfg, tmp_path, monkeypatch)
    engine, wrapped = _engine(cfg)
    _assert_same(summary, served, engine, wrapped, rtol=1e-9, atol=1e-9)
    assert summary["history"][-1]["test_rmse"] == pytest.approx(engine.history[-1].metrics["test_rmse"], abs=1e-12)


@pytest.mark.slow
def test_fedmf_over_our_secagg_plus_on_flower_is_within_the_quantization(ml100k_root, tmp_path, monkeypatch):
    cfg = {**BASE, "model": "fedmf", "backend": "secagg+", "precision-bits": 24}
    summary, served = _simulate(cfg, tmp_path, monkeypatch)
    engine, wrapped = _engine(cfg)  # plain in-process: the secure sum differs only by quantization
    assert summary["history"][-1]["participants"] == 30
    _assert_same(summary, served, engine, wrapped, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_fedmf_over_packed_paillier_on_flower_the_nodes_hold_the_key_and_v(ml100k_root, tmp_path, monkeypatch):
    from fedmf.flower.keys import write_key

    key = write_key(tmp_path / "clients.key.json", 1024, allow_insecure_small_key=True)
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv("FEDMF_PAILLIER_KEY", str(key))  # the nodes' copy; the run config never names it
    monkeypatch.setenv("FEDMF_ALLOW_SMALL_KEY", "1")
    cfg = {**BASE, "model": "fedmf", "backend": "paillier_packed", "precision-bits": 24,
           "paillier-allow-small-key": True}
    summary, served = _simulate(cfg, tmp_path, monkeypatch)
    engine, wrapped = _engine(cfg)
    initial, _ = build_trainer(settings(cfg))
    # the server only multiplied ciphertexts: its V is still the seeded initial one
    np.testing.assert_array_equal(served.shared()["V"], initial.V)
    assert [h["participants"] for h in summary["history"]] == [30, 30]
    for mine, theirs in zip(summary["history"], engine.history):
        for key_ in ("test_rmse", "test_mae"):
            assert mine[key_] == pytest.approx(theirs.metrics[key_], rel=1e-4), key_
