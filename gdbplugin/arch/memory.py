"""The physical-memory interface every table walk reads through.

A backend only has to implement ``read(pa, n)``.  ``read_tables`` — many whole tables at once,
as a 2-D uint64 array — has a generic implementation on top of ``read`` and a vectorized one
for memory that is already an in-process buffer (a raw image, an mmapped QEMU RAM file).
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from .errors import PhysMemError

__all__ = ["PhysMemError", "PhysMemory", "ImageMemory", "read_tables_via_read"]


class PhysMemory(ABC):
    @abstractmethod
    def read(self, pa: int, n: int) -> bytes:
        """``n`` bytes at physical address ``pa``; raise PhysMemError if not all are backed."""

    def read_tables(self, pas: np.ndarray, entries: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``entries`` little-endian 64-bit descriptors at each PA in ``pas``.

        Returns (rows, ok): rows has shape (len(pas), entries); ok[i] is False where the
        table at pas[i] could not be read (its row is then zeros).
        """
        return read_tables_via_read(self, pas, entries)


def read_tables_via_read(mem, pas: np.ndarray, entries: int) -> tuple[np.ndarray, np.ndarray]:
    """``read_tables`` for any object with ``read(pa, n)``: one read per table."""
    rows = np.zeros((len(pas), entries), dtype=np.uint64)
    ok = np.zeros(len(pas), dtype=bool)
    for i, pa in enumerate(pas.tolist()):
        try:
            data = mem.read(int(pa), entries * 8)
        except PhysMemError:
            continue
        rows[i] = np.frombuffer(data, dtype="<u8", count=entries)
        ok[i] = True
    return rows, ok


class ImageMemory(PhysMemory):
    """Physical memory held in a buffer (bytes, bytearray, mmap, numpy) whose first byte is at
    physical address ``base``: a raw dump (QEMU ``pmemsave``) or QEMU's shared RAM file."""

    def __init__(self, buffer, base: int = 0):
        self.base = base
        self._u8 = np.frombuffer(buffer, dtype=np.uint8)
        self.size = self._u8.size
        # A 64-bit view aligned on physical 8-byte boundaries, for whole-table gathers.
        skip = (-base) % 8
        usable = max(0, (self.size - skip) // 8 * 8)
        self._u64 = self._u8[skip:skip + usable].view("<u8")
        self._u64_base = base + skip

    @property
    def end(self) -> int:
        return self.base + self.size

    def read(self, pa: int, n: int) -> bytes:
        if n < 0 or pa < self.base or pa + n > self.end:
            raise PhysMemError(f"PA {pa:#x}..{pa + n:#x} is outside memory "
                               f"{self.base:#x}..{self.end:#x}")
        off = pa - self.base
        return self._u8[off:off + n].tobytes()

    def read_tables(self, pas: np.ndarray, entries: int) -> tuple[np.ndarray, np.ndarray]:
        pas = np.asarray(pas, dtype=np.uint64)
        count = self._u64.size
        lo = np.uint64(self._u64_base)
        ok = (pas >= lo) & (pas % np.uint64(8) == 0)
        idx = np.where(ok, (pas - np.where(ok, lo, pas)) // np.uint64(8), 0).astype(np.int64)
        ok &= idx + entries <= count
        if not ok.any():
            return np.zeros((len(pas), entries), dtype=np.uint64), ok
        if ok.all() and len(pas) and _evenly_spaced(idx, entries):
            # Tables packed back to back: a reshape of one slice, no gather.
            first = int(idx[0])
            return self._u64[first:first + len(pas) * entries].reshape(len(pas), entries), ok
        rows = self._u64[np.where(ok, idx, 0)[:, None] + np.arange(entries)]
        rows[~ok] = 0
        return rows, ok


def _evenly_spaced(idx: np.ndarray, entries: int) -> bool:
    return idx.size == 1 or bool(np.all(np.diff(idx) == entries))
