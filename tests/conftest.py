"""Shared fixtures: the real MovieLens copy through FEDMF_DATA (../shared/data by default)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


def _data_root() -> Path | None:
    root = Path(os.environ["FEDMF_DATA"]) if os.environ.get("FEDMF_DATA") else DEFAULT_DATA
    return root.resolve() if (root / "ml-100k" / "u.data").is_file() else None


@pytest.fixture
def ml100k_root(monkeypatch) -> Path:
    """The folder holding ml-100k/; tests needing real data fail loudly without it."""
    root = _data_root()
    if root is None:
        pytest.fail("MovieLens 100K not found: set FEDMF_DATA to the folder holding ml-100k/")
    monkeypatch.setenv("FEDMF_DATA", str(root))
    return root
