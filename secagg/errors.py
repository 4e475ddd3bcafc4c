"""Exception types of the crypto layer.

Every error the crypto layer raises on bad input or a protocol violation is a
subclass of :class:`SecaggError`, so callers can catch the whole family at once.
Messages name what was wrong (which argument, which client, which value).
"""

from __future__ import annotations


class SecaggError(Exception):
    """Base class of every error raised by :mod:`secagg`."""


class InvalidInputError(SecaggError, ValueError):
    """An argument has the wrong shape, type or value (NaN, inf, out of range)."""


class InsecureParameterError(SecaggError, ValueError):
    """A parameter would weaken security (a small key) without the explicit opt-in."""


class KeyMismatchError(SecaggError, ValueError):
    """Ciphertexts or keys from different key pairs were combined."""


class HeadroomExceededError(SecaggError, OverflowError):
    """A packed or fixed-point value would overflow its slot or the plaintext space."""


class MalformedMessageError(SecaggError, ValueError):
    """Serialized data (bytes or JSON) is truncated, tampered with or of the wrong kind."""


class ProtocolError(SecaggError):
    """A protocol message arrived in the wrong state, twice, or from an unknown party."""


class RoundAbortedError(ProtocolError):
    """A secure-aggregation round aborted (too few survivors) and revealed nothing."""


class TooFewInputsError(SecaggError):
    """A round had fewer included inputs than the backend's ``min_inputs`` guard allows.

    This guard stops a server from isolating one client's update by declaring all
    other clients dropped, or by building a cohort of one.
    """
