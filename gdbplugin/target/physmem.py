"""Guest-physical memory backends for the walker and the capture code: ``read(pa, n)`` (and
``write(pa, data)``, which the ring reader needs to hand records back to the shim).

Fastest first (``open_ram`` picks the first that works and says which):

- ``SharedRam``: QEMU's ``memory-backend-file`` RAM mmapped; memory speed, live while the guest
  runs, no gdb round trip.  The default whenever we launched QEMU ourselves.
- ``ProcMem``: ``/proc/<qemu-pid>/mem`` at the host address ``monitor gpa2hva`` gives, for a
  QEMU someone else started (same user); live while the guest runs, one pread per read.
- ``GdbPhysMem``: reads over the gdb link in QEMU's physical mode (``Qqemu.PhyMemMode``); only
  while the guest is stopped, ~5 MB/s through MI, so it caches pages until the next resume.

All raise ``PhysMemError`` (a TargetError and an ``arch.memory.PhysMemError``, so a walk treats
it as an unbacked table) for addresses outside what they can read.
"""
from __future__ import annotations

import collections
import mmap
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..arch import memory
from ..arch.memory import ImageMemory, PhysMemory
from .errors import MemoryAccessError, PhysMemError, TargetError
from .gdbmi import GdbMI


class SharedRam(PhysMemory):
    """The RAM file of a QEMU started with ``memory-backend-file,share=on``; ``base`` is the
    PA of its first byte (``Qemu.ram_base()``).  ``writable`` maps it for writing too."""

    def __init__(self, path: str | Path, base: int, writable: bool = False):
        try:
            with open(path, "r+b" if writable else "rb") as f:
                self.buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE if writable
                                        else mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise PhysMemError(f"cannot map guest RAM file {path}: {exc}") from None
        self._image = ImageMemory(self.buffer, base)
        self.base = base
        self.size = len(self.buffer)
        self.describe = f"shared RAM file {path}"

    def read(self, pa: int, n: int) -> bytes:
        try:
            return self._image.read(pa, n)
        except memory.PhysMemError as exc:
            raise PhysMemError(str(exc)) from None

    def write(self, pa: int, data: bytes) -> None:
        off = pa - self.base
        if off < 0 or off + len(data) > self.size:
            raise PhysMemError(f"PA {pa:#x}+{len(data):#x} is outside the RAM file")
        self.buffer[off:off + len(data)] = data

    def read_tables(self, pas: np.ndarray, entries: int) -> tuple[np.ndarray, np.ndarray]:
        return self._image.read_tables(pas, entries)

    def close(self) -> None:
        self._image = None
        try:
            self.buffer.close()
        except BufferError:
            pass                     # a numpy view of it is still alive: unmapped with it


class ProcMem(PhysMemory):
    """Guest RAM [``base``, ``base + size``) of a running QEMU through ``/proc/<pid>/mem``, at
    host address ``hva`` (``monitor gpa2hva base``).  Reading another process's memory needs
    the same user (and ptrace permission); the first page is read at once to find out."""

    def __init__(self, pid: int, base: int, size: int, hva: int, writable: bool = False):
        path = f"/proc/{pid}/mem"
        try:
            self._fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        except OSError as exc:
            raise PhysMemError(f"cannot open {path}: {exc.strerror or exc}") from None
        self.base, self.size, self.hva = base, size, hva
        self.describe = f"/proc/{pid}/mem (gpa2hva {base:#x} -> {hva:#x})"
        self.read(base, 8)

    def _offset(self, pa: int, n: int) -> int:
        off = pa - self.base
        if n < 0 or off < 0 or off + n > self.size:
            raise PhysMemError(f"PA {pa:#x}+{n:#x} is outside guest RAM "
                               f"{self.base:#x}..{self.base + self.size:#x}")
        return self.hva + off

    def read(self, pa: int, n: int) -> bytes:
        at = self._offset(pa, n)
        try:
            data = os.pread(self._fd, n, at)
        except OSError as exc:
            raise PhysMemError(f"cannot read QEMU's memory at {at:#x}: "
                               f"{exc.strerror or exc}") from None
        if len(data) != n:
            raise PhysMemError(f"short read of QEMU's memory at {at:#x} (QEMU gone?)")
        return data

    def write(self, pa: int, data: bytes) -> None:
        at = self._offset(pa, len(data))
        try:
            os.pwrite(self._fd, data, at)
        except OSError as exc:
            raise PhysMemError(f"cannot write QEMU's memory at {at:#x}: "
                               f"{exc.strerror or exc}") from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


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
        self.describe = "gdb physical-memory reads (only while the guest is stopped)"

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

    def write(self, pa: int, data: bytes) -> None:
        """Write guest memory (physical) over gdb; the target must be stopped."""
        self._check_backed(pa, len(data))
        with self._gdb.physical():
            try:
                self._gdb.write_memory(pa, data)
            except TargetError as exc:
                raise PhysMemError(f"QEMU refused the physical write at {pa:#x}: "
                                   f"{exc}") from None
        for p in range(pa // self._page, (pa + len(data) - 1) // self._page + 1):
            self._cache.pop(p, None)

    def close(self) -> None:
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


# ---------------------------------------------------------------------------------------------
# Choosing the fastest way in.

_RAM_REGION = re.compile(r"^\s*([0-9a-f]+)-([0-9a-f]+) \(prio -?\d+, ram\): (\S+)", re.MULTILINE)
_GPA2HVA = re.compile(r"is (0x[0-9a-f]+)")


def ram_regions(info_mtree: str) -> list[tuple[int, int, str]]:
    """(base, size, name) of each RAM region of the system address space (the flat view of
    ``AS "memory"``) in ``info mtree -f``; other views (I/O, secure memory) come in any order."""
    views = re.split(r"(?m)^FlatView #\d+", info_mtree.replace("\r\n", "\n"))
    text = next((v for v in views if ' AS "memory"' in v), "")
    out = []
    for m in _RAM_REGION.finditer(text):
        lo, hi = int(m.group(1), 16), int(m.group(2), 16)
        out.append((lo, hi - lo + 1, m.group(3)))
    return out


PATH_FILE, PATH_PROC, PATH_GDB = ("shared RAM file", "/proc/<qemu-pid>/mem",
                                 "gdb physical reads")
# The user's word for each way in (``--via``): None lets ``open_ram`` take the fastest.
VIA = {"auto": None, "file": PATH_FILE, "proc": PATH_PROC, "gdb": PATH_GDB}


@dataclass
class RamAccess:
    """Guest RAM [base, base + size) through ``mem``; ``path`` names the way in."""

    mem: PhysMemory
    base: int
    size: int
    path: str


def open_ram(base: int, size: int, *, ram_file: str | Path | None = None,
             pid: int | None = None, monitor=None, gdb: GdbMI | None = None,
             writable: bool = False, allow=(PATH_FILE, PATH_PROC, PATH_GDB)
             ) -> tuple[RamAccess, list[str]]:
    """The fastest way to guest RAM that works among ``allow``: the shared RAM file, else
    /proc/<pid>/mem at ``monitor("gpa2hva BASE")``'s host address, else gdb physical reads.
    Returns it and why each faster way was not taken (one line each)."""
    skipped = []
    if PATH_FILE not in allow:
        ram_file = None
    if PATH_PROC not in allow:
        pid = None
    if PATH_GDB not in allow:
        gdb = None
    if ram_file is not None:
        try:
            mem = SharedRam(ram_file, base, writable)
            return RamAccess(mem, base, size, PATH_FILE), skipped
        except PhysMemError as exc:
            skipped.append(str(exc))
    else:
        skipped.append("no shared RAM file given" if PATH_FILE in allow else
                       "the shared RAM file was not to be used")
    if pid is not None and monitor is not None:
        try:
            m = _GPA2HVA.search(monitor(f"gpa2hva {base:#x}"))
            if not m:
                raise PhysMemError(f"`gpa2hva {base:#x}` gave no host address")
            mem = ProcMem(pid, base, size, int(m.group(1), 16), writable)
            return RamAccess(mem, base, size, PATH_PROC), skipped
        except TargetError as exc:
            skipped.append(str(exc))
    else:
        skipped.append("QEMU's pid is unknown (not on this machine?)" if PATH_PROC in allow
                       else "/proc/<qemu-pid>/mem was not to be used")
    if gdb is None:
        raise PhysMemError("no way to guest RAM: " + "; ".join(skipped))
    return RamAccess(GdbPhysMem(gdb, ram=[(base, size)]), base, size, PATH_GDB), skipped
