"""The round engine: FedMF on it reproduces the pre-engine trainer; the loop's own contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmf.data import load_split, random_holdout, synthetic_ratings
from fedmf.engine import (ClientUpdates, Engine, RoundTrainer, UploadLayout, best_round, cohort_size,
                          to_codec_units, write_json)
from fedmf.errors import ConfigError
from fedmf.model import ModelConfig
from fedmf.trainer import FedMFTrainer

# Per-round test RMSE, sum(V), sum(U) of FedMFTrainer at commit 113d02e (before the engine),
# recorded with the exact calls below.
BEFORE_DEFAULT = [0.7814537548153979, 0.7811695921651571, 0.7815654892143892, 0.7812945721786391,
                  0.7807357241744456, 0.7799870056272905, 0.7790598883093419, 0.7779429123563567]
BEFORE_PART_SEQUENTIAL = [0.7890723425513257, 0.7817351786852175, 0.7824531740379627,
                          0.7832474173966703, 0.783430396351011, 0.7831094586598254,
                          0.7824007349822348, 0.7813698934214568]
BEFORE_ML100K_U1 = [1.0231256571927292, 1.020786011368065, 1.0182943354597165, 1.0175078372378348]


@pytest.fixture(scope="module")
def small_split():
    ratings = synthetic_ratings(n_users=120, n_items=80, density=0.2, min_per_user=5, seed=3)
    return random_holdout(ratings, 0.2, seed=3, name="small")


@pytest.mark.parametrize("kwargs, expected, sums", [
    ({}, BEFORE_DEFAULT, (76.5936793004262, 116.71793443880799)),
    ({"mode": "part", "config": ModelConfig(order="sequential"), "seed": 5}, BEFORE_PART_SEQUENTIAL,
     (78.098344314515, 122.62586493568934)),
])
def test_fedmf_on_the_engine_reproduces_the_old_trainer_exactly(small_split, kwargs, expected, sums):
    trainer = FedMFTrainer(small_split, **kwargs)
    for _ in range(8):
        trainer.run_round()
    assert [log.test_rmse for log in trainer.history] == expected
    assert (float(trainer.V.sum()), float(trainer.U.sum())) == sums
    assert trainer.mu == 3.477611940298508


def test_fedmf_on_the_engine_reproduces_the_old_trainer_on_movielens(ml100k_root):
    split = load_split("ml-100k", "u1")
    trainer = FedMFTrainer(split, users=np.arange(0, 943, 3), seed=1)
    for _ in range(4):
        trainer.run_round()
    np.testing.assert_allclose([log.test_rmse for log in trainer.history], BEFORE_ML100K_U1, rtol=0, atol=1e-13)
    assert float(trainer.V.sum()) == pytest.approx(1302.7130971516444, abs=1e-9)


class _Mean(RoundTrainer):
    """A toy trainer: each client uploads (its value - model); the server adds the mean."""

    def __init__(self, values, scale=4.0):
        self.values, self.model, self.scale = values, 0.0, scale
        self.seen_rounds, self.committed = [], []

    def clients(self):
        return list(self.values)

    def upload_layout(self):
        return UploadLayout(2, self.scale)

    def local_updates(self, round, users):
        self.seen_rounds.append((round, list(users)))
        return ClientUpdates({u: np.full(2, self.values[u] - self.model) for u in users},
                             {u: 0.0 for u in users})

    def server_step(self, round, aggregate, included):
        self.model += aggregate[0] / len(included)
        self.committed.append(sorted(included))

    def evaluate(self, round):
        return {"model": self.model, "val_score": -abs(self.model - 2.0)}


def test_engine_runs_the_loop_and_scales_uploads_into_the_backend_range():
    trainer = _Mean({0: 1.0, 1: 2.0, 2: 3.0, 3: 6.0})
    seen = []
    engine = Engine(trainer, "plain", observer=lambda r, res, up, s: seen.append((r, up, s)))
    records = engine.run(3)
    assert [r.round for r in records] == [1, 2, 3] and engine.round == 3
    assert trainer.model == pytest.approx(3.0)
    assert seen[0][2] == 4.0 and seen[0][1][3][0] == pytest.approx(6.0 / 4.0), "uploads are sent / scale"
    assert records[0].participants == 4 and records[0].bytes_up_per_client > 0
    summary = engine.summary()
    assert summary["rounds"] == 3 and summary["history"][0]["model"] == pytest.approx(3.0)


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.floats(-1e30, 1e30), min_size=1, max_size=20),
       scale=st.floats(1e-3, 1e6))
def test_codec_scaling_in_place_equals_the_division(values, scale):
    x = np.array(values)
    expected = x / scale
    out = to_codec_units(x, scale)
    assert out is x and np.array_equal(out, expected), "float64 uploads are scaled in place, same values"
    for other in (np.array(values, np.float32), np.arange(len(values))):
        before = other.copy()
        assert np.array_equal(to_codec_units(other, scale), other / scale)
        assert np.array_equal(other, before), "other dtypes are not changed in place"
    frozen = np.array(values)
    frozen.flags.writeable = False
    assert np.array_equal(to_codec_units(frozen, scale), expected)


def test_partial_participation_is_seeded_and_commits_only_included_clients():
    values = {u: float(u) for u in range(10)}
    runs = []
    for _ in range(2):
        trainer = _Mean(values)
        Engine(trainer, "plain", participation=0.3, seed=7).run(4)
        runs.append(trainer.seen_rounds)
    assert runs[0] == runs[1]
    assert all(len(users) == 3 for _, users in runs[0])
    assert len({tuple(u) for _, u in runs[0]}) > 1, "a fresh sample every round"
    with pytest.raises(ConfigError, match="participation"):
        Engine(_Mean(values), "plain", participation=0.0)


def test_cohort_size_is_the_ceiling_of_the_fraction():
    """max(1, ceil(p N)), the PersonalFR code's rule, without float error adding a client."""
    assert cohort_size(0.1, 943) == 95
    assert cohort_size(0.07, 100) == 7, "0.07 x 100 is 7.000000000000001 in floats"
    assert cohort_size(0.3, 10) == 3 and cohort_size(0.25, 10) == 3 and cohort_size(0.01, 10) == 1
    assert cohort_size(1.0, 943) == 943
    with pytest.raises(ConfigError, match="participation"):
        cohort_size(0.0, 10)


def test_each_round_samples_the_cohort_size_and_reports_it():
    trainer = _Mean({u: float(u) for u in range(943)})
    engine = Engine(trainer, "plain", participation=0.1, seed=1)
    assert engine.participants_per_round() == 95
    engine.run_round()
    assert len(trainer.seen_rounds[0][1]) == 95 == engine.history[0].participants


def test_run_round_passes_the_per_client_progress_hook_to_the_backend():
    trainer = _Mean({u: float(u) for u in range(10)})
    engine = Engine(trainer, "plain", participation=0.5, seed=2)
    calls = []
    engine.run_round(progress=calls.append)
    assert sorted(calls) == trainer.seen_rounds[0][1] and len(calls) == 5


def test_the_run_bar_advances_per_client_to_rounds_x_participants(monkeypatch, capsys):
    """On a terminal, Engine.run(progress=True) draws one bar of rounds x participants steps
    fed by the backend's hook, and prints one line per round."""
    import fedmf.progress

    monkeypatch.setattr(fedmf.progress, "stderr_is_terminal", lambda: True)
    seen = []
    original = fedmf.progress.ClientProgress.client_done

    def spy(self, cid):
        original(self, cid)
        seen.append(self.bar.n)

    monkeypatch.setattr(fedmf.progress.ClientProgress, "client_done", spy)
    trainer = _Mean({u: float(u) for u in range(10)})
    Engine(trainer, "plain", participation=0.3, seed=2).run(4, progress=True)
    out = capsys.readouterr()
    assert seen == list(range(1, 13)), "one step per client upload, 3 clients x 4 rounds"
    assert "12/12" in out.err and out.out.count("round ") == 4


def test_best_round_prefers_the_latest_tie(tmp_path):
    trainer = _Mean({0: 2.0, 1: 2.0})
    engine = Engine(trainer, "plain")
    engine.run(3)  # the model reaches 2.0 in round 1 and stays: all rounds tie
    assert best_round(engine.history, "val_score").round == 3
    with pytest.raises(ConfigError, match="missing"):
        best_round(engine.history, "hr_at_10")
    write_json(tmp_path / "x" / "run.json", engine.summary())
    assert json.loads((tmp_path / "x" / "run.json").read_text())["backend"] == "plain"
