"""Dataset loaders, splits, the synthetic generator and their error paths."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import urllib.error
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedmf.cli import main
from fedmf.data import leave_one_out, load_ratings, load_split, movielens, synthetic_ratings
from fedmf.errors import ConfigError, DatasetFormatError, DatasetNotFoundError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FEDMF_OFFLINE", raising=False)  # these tests serve the download themselves
    return tmp_path / "cache" / "fedmf"


def test_ml100k_full_counts(ml100k_root, empty_cache):
    stats = load_ratings("ml-100k").stats()
    assert (stats["users"], stats["items"], stats["ratings"]) == (943, 1682, 100_000)
    assert load_ratings("ml-100k").rating_scale == (1.0, 5.0), "MovieLens: whole stars 1..5"
    assert not empty_cache.exists(), "a local copy must not be re-downloaded"


@pytest.mark.parametrize("split", ["u1", "u2", "u3", "u4", "u5", "ua", "ub"])
def test_grouplens_splits_partition_the_data(ml100k_root, split):
    s = load_split("ml-100k", split)
    expected_test = 9_430 if split in ("ua", "ub") else 20_000
    assert len(s.test) == expected_test
    assert len(s.train) + len(s.test) == 100_000
    pairs = lambda r: set(zip(r.users.tolist(), r.items.tolist()))
    assert not pairs(s.train) & pairs(s.test)
    assert s.train.n_users == s.test.n_users == 943 and s.train.n_items == 1682
    # the mapping is 0-based and contiguous, and maps back to GroupLens ids
    assert s.train.user_ids[s.train.users].min() == 1 and s.train.users.min() == 0
    raw = movielens.read_file("ml-100k", f"{split}.test")
    assert np.array_equal(s.test.user_ids[s.test.users], raw[:, 0])
    assert np.array_equal(s.test.item_ids[s.test.items], raw[:, 1])


def test_ua_holds_out_ten_per_user(ml100k_root):
    s = load_split("ml-100k", "ua")
    assert np.all(np.bincount(s.test.users, minlength=943) == 10)


def test_random_holdout_is_seeded(ml100k_root):
    a = load_split("ml-100k", "random", seed=3)
    b = load_split("ml-100k", "random", seed=3)
    c = load_split("ml-100k", "random", seed=4)
    assert np.array_equal(a.test.ratings, b.test.ratings) and np.array_equal(a.test.users, b.test.users)
    assert not np.array_equal(a.test.users, c.test.users)
    assert len(a.test) == 20_000 and len(a.train) == 80_000


def test_leave_one_out_takes_latest_and_second_latest(ml100k_root):
    s = load_split("ml-100k", "loo")
    full = load_ratings("ml-100k")
    assert len(s.test) == len(s.validation) == 943
    assert len(s.train) + 2 * 943 == 100_000
    for u in (0, 10, 500):
        stamps = np.sort(full.timestamps[full.users == u])
        assert s.test.timestamps[s.test.users == u][0] == stamps[-1]
        assert s.validation.timestamps[s.validation.users == u][0] == stamps[-2]
        assert s.train.timestamps[s.train.users == u].max() <= stamps[-2]


def test_leave_one_out_keeps_users_with_few_ratings_in_train():
    r = synthetic_ratings(n_users=5, n_items=50, density=0.05, min_per_user=2, seed=1)
    s = leave_one_out(r)
    counts = np.bincount(r.users, minlength=5)
    for u in range(5):
        in_test = int((s.test.users == u).sum())
        assert in_test == (1 if counts[u] >= 3 else 0)


def test_synthetic_is_seeded_and_shaped_like_ml100k():
    a, b = synthetic_ratings(seed=7), synthetic_ratings(seed=7)
    assert np.array_equal(a.ratings, b.ratings) and np.array_equal(a.items, b.items)
    assert (a.n_users, a.n_items) == (943, 1682)
    assert 90_000 <= len(a) <= 110_000
    assert set(np.unique(a.ratings)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert np.bincount(a.users).min() >= 20
    pairs = a.users * a.n_items + a.items
    assert np.unique(pairs).size == len(a), "a user rates an item at most once"


def test_synthetic_is_low_rank_plus_noise():
    """Ratings are predictable from a low-rank model: the test RMSE of a rank-5 fit
    is well below the spread of the ratings."""
    r = synthetic_ratings(n_users=200, n_items=100, density=0.5, seed=2)
    dense = np.full((200, 100), np.nan)
    dense[r.users, r.items] = r.ratings
    filled = np.where(np.isnan(dense), np.nanmean(dense), dense)
    u, s, vt = np.linalg.svd(filled - filled.mean(), full_matrices=False)
    approx = (u[:, :5] * s[:5]) @ vt[:5] + filled.mean()
    mask = ~np.isnan(dense)
    assert np.sqrt(np.mean((approx[mask] - dense[mask]) ** 2)) < 0.8 * dense[mask].std()


def test_unknown_dataset_and_split_are_config_errors():
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_ratings("netflix")
    with pytest.raises(ConfigError, match="unknown split"):
        load_split("synthetic", "u9")


def _copy_with(tmp_path, ml100k_root, name, transform):
    dest = tmp_path / "data" / "ml-100k"
    dest.mkdir(parents=True)
    for f in ("u1.base", "u1.test"):
        shutil.copy(ml100k_root / "ml-100k" / f, dest / f)
    lines = (ml100k_root / "ml-100k" / "u.data").read_text().splitlines(keepends=True)
    (dest / "u.data").write_text("".join(transform(lines)))
    return tmp_path / "data"


def test_truncated_file_names_file_and_line(tmp_path, ml100k_root, monkeypatch):
    root = _copy_with(tmp_path, ml100k_root, "u.data", lambda lines: lines[:-5])
    monkeypatch.setenv("FEDMF_DATA", str(root))
    with pytest.raises(DatasetFormatError, match=r"u\.data, line 99996: .*99995 rating rows, expected 100000"):
        load_ratings("ml-100k")


@pytest.mark.parametrize(
    "bad_line, reason",
    [("1\t2\tthree\t4\n", "non-integer"), ("1\t2\t9\t4\n", "value out of range"), ("1\t2\t3\n", "expected 4 fields")],
)
def test_corrupt_line_names_file_and_line(tmp_path, ml100k_root, monkeypatch, bad_line, reason):
    def corrupt(lines):
        lines[41] = bad_line
        return lines

    monkeypatch.setenv("FEDMF_DATA", str(_copy_with(tmp_path, ml100k_root, "u.data", corrupt)))
    with pytest.raises(DatasetFormatError, match=rf"u\.data, line 42: {reason}"):
        load_ratings("ml-100k")


def test_offline_and_absent_is_a_clear_error(tmp_path, monkeypatch, empty_cache):
    monkeypatch.setenv("FEDMF_DATA", str(tmp_path / "nothing"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(movielens.urllib.request, "urlopen", offline)
    with pytest.raises(DatasetNotFoundError) as err:
        load_ratings("ml-100k")
    text = str(err.value)
    assert "ml-100k" in text and str(tmp_path / "nothing") in text and "FEDMF_DATA" in text
    assert "network unreachable" in text
    assert not (empty_cache / "ml-100k").exists()


def _archive_of(ml100k_root) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in ("u.data", "u1.base", "u1.test"):
            zf.write(ml100k_root / "ml-100k" / f, f"ml-100k/{f}")
    return buf.getvalue()


class _FakeResponse(io.BytesIO):
    """An HTTP response body served from memory (no network in tests)."""

    def __init__(self, payload: bytes, fail_after: int | None = None):
        super().__init__(payload)
        self.fail_after = fail_after

    def read(self, size=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise ConnectionResetError("connection dropped mid-download")
        return super().read(size)


def _serve(monkeypatch, payload, fail_after=None):
    monkeypatch.setattr(
        movielens.urllib.request, "urlopen", lambda *a, **k: _FakeResponse(payload, fail_after)
    )


def test_download_verifies_checksum_and_installs_atomically(tmp_path, ml100k_root, monkeypatch, empty_cache):
    payload = _archive_of(ml100k_root)
    spec = replace(movielens.SPECS["ml-100k"], md5=hashlib.md5(payload).hexdigest())
    monkeypatch.setitem(movielens.SPECS, "ml-100k", spec)
    monkeypatch.setenv("FEDMF_DATA", str(tmp_path / "nothing"))
    _serve(monkeypatch, payload)
    assert len(load_ratings("ml-100k")) == 100_000
    assert (empty_cache / "ml-100k" / "u.data").is_file()
    assert [p.name for p in empty_cache.iterdir()] == ["ml-100k"], "no temporary leftovers"


def test_download_with_wrong_checksum_is_rejected(tmp_path, ml100k_root, monkeypatch, empty_cache):
    monkeypatch.setenv("FEDMF_DATA", str(tmp_path / "nothing"))
    _serve(monkeypatch, _archive_of(ml100k_root))  # real GroupLens md5 will not match
    with pytest.raises(DatasetFormatError, match="checksum mismatch"):
        load_ratings("ml-100k")
    assert list(empty_cache.iterdir()) == []


def test_interrupted_download_leaves_no_cache(tmp_path, ml100k_root, monkeypatch, empty_cache):
    monkeypatch.setenv("FEDMF_DATA", str(tmp_path / "nothing"))
    _serve(monkeypatch, _archive_of(ml100k_root), fail_after=1 << 20)
    with pytest.raises(DatasetNotFoundError, match="connection dropped"):
        load_ratings("ml-100k")
    assert list(empty_cache.iterdir()) == []


def test_cli_data_prints_ml100k_counts(ml100k_root, capsys):
    assert main(["data", "ml-100k", "--json", "--no-download"]) == 0
    out = capsys.readouterr().out
    assert '"users": 943' in out and '"items": 1682' in out and '"ratings": 100000' in out


def test_cli_reports_missing_data_without_traceback(tmp_path, monkeypatch, empty_cache, capsys):
    monkeypatch.setenv("FEDMF_DATA", str(tmp_path))
    assert main(["data", "ml-1m", "--no-download"]) == 2
    assert "dataset 'ml-1m' not found" in capsys.readouterr().err


def _run_data_tests(tmp_path, cache_home, *, offline: bool) -> subprocess.CompletedProcess:
    """This suite's ML-100K tests in a fresh pytest process, FEDMF_DATA unset."""
    env = {k: v for k, v in os.environ.items() if k not in ("FEDMF_DATA", "FEDMF_OFFLINE")}
    env.update(XDG_CACHE_HOME=str(cache_home), PYTHONPATH=str(REPO))
    if offline:
        env["FEDMF_OFFLINE"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k",
         "ml100k_full_counts or cli_data_prints",
         str(REPO / "tests" / "test_data.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )


def test_data_tests_find_ml100k_in_the_per_user_cache(tmp_path, ml100k_root):
    """FEDMF_DATA unset, ML-100K in the cache where ``fedmf data`` puts it: the tests run."""
    cache = tmp_path / "cache"
    (cache / "fedmf").mkdir(parents=True)
    (cache / "fedmf" / "ml-100k").symlink_to(ml100k_root / "ml-100k")  # a link: no copy of the data
    run = _run_data_tests(tmp_path, cache, offline=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "skipped" not in run.stdout and " passed" in run.stdout


def test_data_tests_skip_with_one_reason_when_no_copy_can_be_had(tmp_path):
    """Offline (FEDMF_OFFLINE=1, so no network is touched), nothing cached, FEDMF_DATA
    unset: exit 0, every data test skipped, all for the same stated reason."""
    run = _run_data_tests(tmp_path, tmp_path / "empty-cache", offline=True)
    assert run.returncode == 0, run.stdout + run.stderr
    reasons = {line.split(": ", 1)[1] for line in run.stdout.splitlines() if line.startswith("SKIPPED")}
    assert len(reasons) == 1 and " passed" not in run.stdout
    (reason,) = reasons
    assert "MovieLens 100K unavailable" in reason and "FEDMF_OFFLINE" in reason and "FEDMF_DATA" in reason
