"""Exception types of the ``fedmf`` package; each message names what was wrong and the fix."""

from __future__ import annotations


class FedMFError(Exception):
    """Base class of every error raised by :mod:`fedmf`."""


class DatasetNotFoundError(FedMFError, FileNotFoundError):
    """A dataset is neither in ``$FEDMF_DATA`` nor in the cache, and could not be downloaded."""


class DatasetFormatError(FedMFError, ValueError):
    """A dataset file is corrupt or truncated (the message names the file and line)."""


class ConfigError(FedMFError, ValueError):
    """An option has an invalid value (unknown dataset, split, mode, bad hyperparameter)."""
