"""Guest-physical memory backends for the walker and the capture code: ``read(pa, n)``.

- ``SharedRam``: QEMU's ``memory-backend-file`` RAM mmapped; memory speed, live while the guest
  runs, no gdb round trip.  The default whenever we launched QEMU ourselves.
- ``GdbPhysMem``: reads over the gdb link in QEMU's physical mode (``Qqemu.PhyMemMode``), for a
  QEMU someone else started; ~5 MB/s through MI, so it caches pages.

Both raise ``PhysMemError`` (a TargetError and an ``arch.memory.PhysMemError``, so a walk treats
it as an unbacked table) for addresses outside what they can read.
"""
from __future__ import annotations

import collections
import mmap
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..arch import memory
from ..arch.memory import ImageMemory, PhysMemory
from .errors import MemoryAccessError, PhysMemError
from .gdbmi import GdbMI


class SharedRam(PhysMemory):
    """The RAM file of a QEMU started with ``memory-backend-file,share=on``; ``base`` is the
    PA of its first byte (``Qemu.ram_base()``)."""

    def __init__(self, path: str | Path, base: int):
        try:
            with open(path, "rb") as f:
                self.buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise PhysMemError(f"cannot map guest RAM file {path}: {exc}") from None
        self._image = ImageMemory(self.buffer, base)
        self.base = base
        self.size = len(self.buffer)

    def read(self, pa: int, n: int) -> bytes:
        try:
            return self._image.read(pa, n)
        except memory.PhysMemError as exc:
            raise PhysMemError(str(exc)) from None

    def read_tables(self, pas: np.ndarray, entries: int) -> tuple[np.ndarray, np.ndarray]:
        return self._image.read_tables(pas, entries)


class GdbPhysMem(PhysMemory):
    """Physical reads over gdb, a page at a time, cached until the target runs again.

    QEMU answers physical reads of unbacked addresses with zeros; pass ``ram`` as (base, size)
    ranges to have reads outside them refused instead.
    """

    def __init__(self, gdb: GdbMI, ram: Sequence[tuple[int, int]] | None = None,
                 page: int = 4096, max_pages: int = 4096):
        if page <= 0 or page & (page - 1):
            raise ValueError(f"page must be a power of two, not {page}")
        self._gdb = gdb
        self._ram = list(ram) if ram is not None else None
        self._page = page
        self._max_pages = max_pages
        self._cache: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._resumes = gdb.resumes

    def read(self, pa: int, n: int) -> bytes:
        if n < 0 or pa < 0:
            raise PhysMemError(f"bad physical read of {n} bytes at {pa:#x}")
        if n == 0:
            return b""
        self._check_backed(pa, n)
        first, last = pa // self._page, (pa + n - 1) // self._page
        self._fill(range(first, last + 1))
        data = b"".join(self._cache[p] for p in range(first, last + 1))
        off = pa - first * self._page
        return data[off:off + n]

    def read_tables(self, pas: np.ndarray, entries: int) -> tuple[np.ndarray, np.ndarray]:
        # Fetch every missing page of every table in one physical-mode session first.
        size = entries * 8
        pages = set()
        for pa in np.asarray(pas, dtype=np.uint64).tolist():
            if self._backed(pa, size):
                pages.update(range(pa // self._page, (pa + size - 1) // self._page + 1))
        self._fill(sorted(pages))
        return memory.read_tables_via_read(self, pas, entries)

    def invalidate(self) -> None:
        """Forget cached pages, e.g. after guest memory was written through gdb or the monitor
        (a resume of the target is noticed without this)."""
        self._cache.clear()

    def _backed(self, pa: int, n: int) -> bool:
        return self._ram is None or any(base <= pa and pa + n <= base + size
                                        for base, size in self._ram)

    def _check_backed(self, pa: int, n: int) -> None:
        if not self._backed(pa, n):
            ranges = ", ".join(f"{b:#x}..{b + s:#x}" for b, s in self._ram)
            raise PhysMemError(f"PA {pa:#x}..{pa + n:#x} is outside guest RAM ({ranges})")

    def _fill(self, pages: Sequence[int]) -> None:
        """Make sure ``pages`` are cached, reading the missing ones in one physical session."""
        if self._gdb.resumes != self._resumes:      # the guest ran: cached pages are stale
            self._cache.clear()
            self._resumes = self._gdb.resumes
        missing = [p for p in pages if p not in self._cache]
        if missing:
            with self._gdb.physical():
                for start, count in page_runs(missing):
                    pa = start * self._page
                    try:
                        data = self._gdb.read_memory(pa, count * self._page)
                    except MemoryAccessError as exc:
                        raise PhysMemError(f"QEMU refused the physical read at {pa:#x}: "
                                           f"{exc}") from None
                    for i in range(count):
                        self._cache[start + i] = data[i * self._page:(i + 1) * self._page]
        for p in pages:
            self._cache.move_to_end(p)
        while len(self._cache) > max(self._max_pages, len(pages)):
            self._cache.popitem(last=False)


def page_runs(pages: list[int]) -> Iterator[tuple[int, int]]:
    """(first, count) of each run of consecutive page numbers in a sorted list."""
    start = prev = pages[0]
    for p in pages[1:]:
        if p != prev + 1:
            yield start, prev - start + 1
            start = p
        prev = p
    yield start, prev - start + 1
