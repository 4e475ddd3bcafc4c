"""Shared fixtures: MovieLens 100K found the way the library finds it.

:func:`fedmf.data.locate` looks in ``$FEDMF_DATA/ml-100k``, then the per-user cache
(``~/.cache/fedmf/ml-100k``, where ``fedmf data`` puts it), then downloads the GroupLens
archive (MD5-checked) into that cache. The lookup runs once per test session; when no
copy can be had (nothing local and the download failed, or ``FEDMF_OFFLINE=1``), every
test that needs the data is skipped with that one reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmf.data import locate
from fedmf.errors import DatasetNotFoundError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def _ml100k_location() -> Path | str:
    """The located ml-100k folder, or why there is none (looked up once per session)."""
    try:
        return locate("ml-100k")
    except DatasetNotFoundError as exc:
        return f"MovieLens 100K unavailable, data tests skipped: {exc}"


@pytest.fixture
def ml100k_root(_ml100k_location, monkeypatch) -> Path:
    """The folder holding ml-100k/ (FEDMF_DATA points there for the test's duration)."""
    if isinstance(_ml100k_location, str):
        pytest.skip(_ml100k_location)
    root = _ml100k_location.parent
    monkeypatch.setenv("FEDMF_DATA", str(root))
    return root
