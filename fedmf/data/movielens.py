"""MovieLens 100K and 1M: locate, download and strictly parse the GroupLens files.

Lookup order for a dataset directory (``ml-100k`` or ``ml-1m``):

1. ``$FEDMF_DATA/<name>/`` (a folder holding the unpacked GroupLens files);
2. the per-user cache, ``$XDG_CACHE_HOME/fedmf/<name>/`` (default ``~/.cache/fedmf``);
3. a download of the official GroupLens archive into that cache, checked against the
   MD5 sum GroupLens publishes next to it, unpacked into a temporary folder and moved
   into place with one atomic rename (an interrupted download leaves no half cache).
   Setting ``FEDMF_OFFLINE=1`` disables this step (no network access at all).

Parsing is strict: every line must have the expected fields, ids and ratings in
range, and the row count must match the published size of the file. A corrupt or
truncated file raises :class:`~fedmf.errors.DatasetFormatError` naming file and line.
The MovieLens license forbids redistribution: read a copy you have, never commit it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetFormatError, DatasetNotFoundError


@dataclass(frozen=True)
class _Spec:
    url: str
    md5: str  # published by GroupLens at <url>.md5
    ratings_file: str
    separator: str
    rating_scale: tuple[float, float]  # whole stars, as the GroupLens README defines
    expected_rows: dict[str, int]  # file name -> number of rating rows


SPECS: dict[str, _Spec] = {
    "ml-100k": _Spec(
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        md5="0e33842e24a9c977be4e0107933c0723",
        ratings_file="u.data",
        separator="\t",
        rating_scale=(1.0, 5.0),
        expected_rows={
            "u.data": 100_000,
            **{f"u{k}.base": 80_000 for k in range(1, 6)},
            **{f"u{k}.test": 20_000 for k in range(1, 6)},
            "ua.base": 90_570,
            "ua.test": 9_430,
            "ub.base": 90_570,
            "ub.test": 9_430,
        },
    ),
    "ml-1m": _Spec(
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        md5="c4d9eecfca2ab87c1945afe126590906",
        ratings_file="ratings.dat",
        separator="::",
        rating_scale=(1.0, 5.0),
        expected_rows={"ratings.dat": 1_000_209},
    ),
}


def cache_dir() -> Path:
    """The per-user cache folder for downloaded datasets."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fedmf"


def offline() -> bool:
    """True when ``FEDMF_OFFLINE`` is set to a non-empty value other than ``0``: never download."""
    return os.environ.get("FEDMF_OFFLINE", "") not in ("", "0")


def _candidates(name: str) -> list[Path]:
    places = []
    if os.environ.get("FEDMF_DATA"):
        places.append(Path(os.environ["FEDMF_DATA"]).expanduser().resolve() / name)
    places.append(cache_dir() / name)
    return places


def locate(name: str, *, download: bool = True) -> Path:
    """Return the folder holding dataset ``name``, downloading it into the cache if needed."""
    spec = _spec(name)
    places = _candidates(name)
    for place in places:
        if (place / spec.ratings_file).is_file():
            return place
    if download and offline():
        reason = "download was disabled (FEDMF_OFFLINE is set)"
    elif download:
        try:
            return _download(name, spec)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = f"download from {spec.url} failed: {exc}"
    else:
        reason = "download was disabled"
    looked = ", ".join(str(p) for p in places)
    raise DatasetNotFoundError(
        f"dataset {name!r} not found: looked for {spec.ratings_file} in {looked}; {reason}. "
        f"Fix: set FEDMF_DATA to a folder containing {name}/ (the unpacked GroupLens "
        f"archive), or connect to the internet so it can be downloaded into {cache_dir()}."
    )


def _spec(name: str) -> _Spec:
    try:
        return SPECS[name]
    except KeyError:
        raise DatasetNotFoundError(
            f"unknown MovieLens dataset {name!r}; choose one of {sorted(SPECS)}"
        ) from None


def _download(name: str, spec: _Spec) -> Path:
    """Download, verify and unpack into the cache; the final rename is atomic."""
    target = cache_dir() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        archive = Path(tmp) / f"{name}.zip"
        digest = hashlib.md5(usedforsecurity=False)
        with urllib.request.urlopen(spec.url, timeout=60) as response, open(archive, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != spec.md5:
            raise DatasetFormatError(
                f"{spec.url}: checksum mismatch (md5 {digest.hexdigest()}, expected "
                f"{spec.md5}); the download is corrupt or the archive changed"
            )
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(unpacked)
        source = unpacked / name
        if not (source / spec.ratings_file).is_file():
            raise DatasetFormatError(f"{spec.url}: archive has no {name}/{spec.ratings_file}")
        try:
            os.rename(source, target)
        except OSError:
            if not (target / spec.ratings_file).is_file():  # not a concurrent winner
                raise
    return target


def read_ratings_file(path: Path, separator: str, expected_rows: int | None,
                      rating_scale: tuple[float, float]) -> np.ndarray:
    """Parse ``user item rating timestamp`` rows into an (N, 4) int64 array, strictly.

    Raises :class:`DatasetFormatError` naming the file and 1-based line of the first
    bad row, or the row count when the file is truncated.
    """
    rows = []
    lo, hi = rating_scale
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as exc:
        raise DatasetFormatError(f"{path}: cannot read: {exc}") from exc
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            raise DatasetFormatError(f"{path}, line {lineno}: empty line")
        fields = line.split(separator)
        if len(fields) != 4:
            raise DatasetFormatError(
                f"{path}, line {lineno}: expected 4 fields separated by {separator!r}, "
                f"got {len(fields)}: {line[:80]!r}"
            )
        try:
            user, item, rating, stamp = (int(f) for f in fields)
        except ValueError:
            raise DatasetFormatError(
                f"{path}, line {lineno}: non-integer field in {line[:80]!r}"
            ) from None
        if user < 1 or item < 1 or not lo <= rating <= hi or stamp < 0:
            raise DatasetFormatError(
                f"{path}, line {lineno}: value out of range (ids >= 1, rating {lo:g}..{hi:g}, "
                f"timestamp >= 0): {line[:80]!r}"
            )
        rows.append((user, item, rating, stamp))
    if expected_rows is not None and len(rows) != expected_rows:
        raise DatasetFormatError(
            f"{path}, line {len(rows) + 1}: file has {len(rows)} rating rows, expected "
            f"{expected_rows}; it is truncated or corrupt"
        )
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def read_file(name: str, file_name: str | None = None, *, download: bool = True) -> np.ndarray:
    """Parse one file of dataset ``name`` (default: its full ratings file)."""
    spec = _spec(name)
    file_name = file_name or spec.ratings_file
    folder = locate(name, download=download)
    path = folder / file_name
    if not path.is_file():
        raise DatasetNotFoundError(f"dataset {name!r} in {folder} has no file {file_name}")
    return read_ratings_file(path, spec.separator, spec.expected_rows.get(file_name), spec.rating_scale)


def rating_scale(name: str) -> tuple[float, float]:
    """(lowest, highest) rating of MovieLens dataset ``name``."""
    return _spec(name).rating_scale

