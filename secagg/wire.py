"""The one reader of the crypto layer's binary formats: bounds-checked, zero-copy.

Both wire formats (:mod:`secagg.paillier.serialization` and the SecAgg messages of
:mod:`secagg.masking.messages`) parse untrusted bytes field by field. :class:`Reader`
raises :class:`~secagg.errors.MalformedMessageError` naming the message and the field
on truncation, on a length prefix larger than the bytes left (checked before anything
is allocated) and on trailing bytes. Integers are big-endian.
"""

from __future__ import annotations

import struct

from .errors import MalformedMessageError


class Reader:
    """Sequential reader over one message (``what`` names it in errors)."""

    def __init__(self, data: bytes, what: str) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MalformedMessageError(f"{what}: expected bytes, got {type(data).__name__}")
        self.data = memoryview(data).cast("B")  # no copy of a multi-megabyte message
        self.pos = 0
        self.what = what

    def take(self, n: int, field_name: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise MalformedMessageError(
                f"{self.what}: truncated reading {field_name} ({n} bytes at offset {self.pos}, "
                f"message has {len(self.data)})"
            )
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return out

    def rest(self) -> memoryview:
        """Everything not read yet (zero-copy); the message is then fully read."""
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out

    def unpack(self, fmt: str, name: str) -> tuple:
        """Fixed-size fields with a :mod:`struct` format (big-endian formats: ``">..."``)."""
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), name))

    def u8(self, name: str) -> int:
        return self.take(1, name)[0]

    def u16(self, name: str) -> int:
        return struct.unpack(">H", self.take(2, name))[0]

    def u32(self, name: str) -> int:
        return struct.unpack(">I", self.take(4, name))[0]

    def u64(self, name: str) -> int:
        return struct.unpack(">Q", self.take(8, name))[0]

    def big(self, name: str) -> int:
        """A non-negative integer with a u16 byte-length prefix."""
        return int.from_bytes(self.take(self.u16(name), name), "big")

    def count(self, name: str, item_size: int) -> int:
        n = self.u32(name)
        if n * item_size > len(self.data) - self.pos:
            raise MalformedMessageError(
                f"{self.what}: {name}={n} items of >= {item_size} bytes exceed the "
                f"{len(self.data) - self.pos} bytes left"
            )
        return n

    def blob(self, name: str) -> bytes:
        return self.take(self.count(name, 1), name)

    def blob_view(self, name: str) -> memoryview:
        """A length-prefixed field as a zero-copy view (for multi-megabyte vectors)."""
        n = self.count(name, 1)  # checked against the bytes left
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def ids(self, name: str) -> list[int]:
        n = self.count(name, 4)
        out = list(struct.unpack(f">{n}I", self.take(4 * n, name)))
        if len(set(out)) != n:
            raise MalformedMessageError(f"{self.what}: duplicate client id in {name}")
        return out

    def done(self) -> None:
        if self.pos != len(self.data):
            raise MalformedMessageError(
                f"{self.what}: {len(self.data) - self.pos} unexpected trailing bytes"
            )
