"""Decoding the shim's event ring from guest RAM, live or after the run.

The layouts and codes are gdbplugin/shim/abi.py (checked against gdbplugin/shim/shim.h).  The ring
header sits in the shim's bss (symbol ``shim_ring``) in the carve-out at the top of RAM, which
the guest never sees; ``RingReader`` finds it by its magic on a page boundary.  Records are 64
bytes; record i is complete once its ``seq`` is i + 1.  ``poll_fields()`` returns every new
complete record as its unpacked fields (what the trace converter, gdbplugin/capture/shim_trace.py,
reads); ``decode_fields`` makes one an ``Event`` (a plain dataclass whose field names follow
the event vocabulary of gdbplugin/model/events.py: kind, vcpu, pc, el, ipa, pa, size, access,
esr, reg, old, new, op, va, plus ``rule`` and ``extra`` per kind).  With ``consume=True`` a
poll also writes the ring's read index, so a ring in ``wait`` mode never fills and one in
``halt`` mode halts only when we fall behind.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..target.errors import TargetError
from ..target.physmem import SharedRam
from .abi import (ACCESS, CMO_FLAGS, DIAGS, FAULT_FLAGS, FW_CFG_CONTROL, GUEST_CMO_OPS, HEADER_SIZE,
                  IC_OPS, KINDS, MEMTYPES, PERMS, POLICIES, RECORD, RECORD_FORMAT,
                  RECORD_SIZE, RING_FULL, RING_HEADER, RING_MAGIC, RING_VERSION, RULES,
                  SET_WAY_OPS, STATS, SYSREGS, offset_of)

_WRITE_INDEX = offset_of(RING_HEADER, "write_index")
_READ_INDEX = offset_of(RING_HEADER, "read_index")
_SHIM_BASE = offset_of(RING_HEADER, "shim_base")
_CAPACITY = offset_of(RING_HEADER, "capacity")
_RECORDS = offset_of(RING_HEADER, "records")
_OVERFLOW = offset_of(RING_HEADER, "overflow")
_HALTED = offset_of(RING_HEADER, "halted")
# RECORD for numpy: a read of many records is checked and split in one step
RECORD_DTYPE = np.dtype([(s.name, "<" + s.subcon.fmtstr[1:]) for s in RECORD.subcons])


SEARCH_RETRY_S = 0.05


def next_search(started: float, now: float) -> float:
    """When to search guest RAM for the ring again after a search from ``started`` to ``now``
    found nothing: twice as long as it took later, at least SEARCH_RETRY_S (a miss reads all
    of RAM; looking before the shim has set its ring up costs at most a third of a CPU)."""
    return now + max(SEARCH_RETRY_S, 2 * (now - started))


def _diag_name(code: int) -> str | None:
    """The header's ``halted`` word as a name (None: running)."""
    return DIAGS.get(code, str(code)) if code else None


class RingError(Exception):
    """No ring where one was expected, or a ring this decoder does not understand."""


@dataclass(slots=True)
class Event:
    """One ring record.  Fields that do not apply to the kind are None; ``extra`` holds the
    kind-specific rest (e.g. ``count`` of a coalesced set/way run, ``leaves`` of a sweep).
    Not frozen: a frozen dataclass is built with one ``object.__setattr__`` per field, which
    made building these 4x slower (a Linux boot decodes ~200k)."""

    seq: int                       # ring index (0-based, gap-free)
    kind: str
    vcpu: int | None
    el: int | None
    pc: int | None = None
    esr: int | None = None
    access: str | None = None
    ipa: int | None = None
    pa: int | None = None
    size: int | None = None
    va: int | None = None
    op: str | None = None
    reg: str | None = None
    old: int | None = None
    new: int | None = None
    rule: str | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        d.update(extra)
        return {k: v for k, v in d.items() if v is not None}


def decode_record(index: int, raw: bytes) -> Event:
    return decode_fields(index, RECORD_FORMAT.unpack(raw))


def decode_fields(index: int, fields: tuple) -> Event:
    """A record's unpacked fields (``RECORD_FORMAT``) as an Event."""
    (_, kind_id, vcpu, el, access, op, flags, pc, esr, ipa, pa, size, va) = fields
    kind = KINDS.get(kind_id, f"unknown-{kind_id}")
    at = (index, kind, None if vcpu == 0xFF else vcpu, el)     # Event's first four fields
    if kind == "s2-fault":
        f = {name for bit, name in FAULT_FLAGS.items() if flags & bit}
        return Event(*at, pc=pc, esr=esr, access=ACCESS.get(access), ipa=ipa, pa=pa,
                     va=None if "fnv" in f else va, op="fault",
                     extra={"fsc": op, "s1ptw": "s1ptw" in f, "far_valid": "fnv" not in f,
                            "deferred": "deferred" in f, "fetch": "fetch" in f,
                            "fetch_ok": "fetch-ok" in f,
                            **({"insn_old": size >> 32, "insn_new": size & 0xFFFFFFFF}
                               if "fetch" in f and size else {})})
    if kind in ("s2-map", "s2-perm"):
        perms = "".join(c for b, c in PERMS.items() if flags & b and c in "rwx")
        return Event(*at, pc=pc, esr=esr or None, access=ACCESS.get(access), ipa=ipa, pa=pa,
                     size=size, op="map" if kind == "s2-map" else "relax",
                     extra={"memtype": MEMTYPES.get(op, str(op)), "perms": perms,
                            "observer": bool(flags & PERMS.ids["observer"])})
    if kind == "dc":
        return Event(*at, pc=pc, ipa=ipa, pa=pa, size=size, op="civac",
                     rule=RULES.get(flags, str(flags)))
    if kind == "ic":
        return Event(*at, pc=pc, ipa=ipa, pa=pa, size=size,
                     op=IC_OPS.get(op, str(op)),
                     rule=RULES.get(flags, str(flags)))
    if kind == "flush-vm":
        return Event(*at, pc=pc, ipa=ipa if va else None, size=size, op="civac",
                     rule=RULES.get(flags, str(flags)), extra={"end": pa, "leaves": va})
    if kind == "tlbi":
        return Event(*at, pc=pc, ipa=ipa, size=size, op="ipas2e1+vmalle1")
    if kind == "sysreg-write":
        return Event(*at, pc=pc, esr=esr, access="write", reg=SYSREGS.get(op, str(op)),
                     old=ipa, new=pa, op="msr", extra={"encoding": va})
    if kind == "set-way":
        return Event(*at, pc=pc, esr=esr, op=SET_WAY_OPS.get(op, str(op)), size=None,
                     extra={"count": size, "first": ipa, "last": pa})
    if kind in ("smc", "hvc"):
        return Event(*at, pc=pc, esr=esr, op="psci" if flags != 2 else "unknown",
                     extra={"function": ipa, "result": pa if flags else None, "x1": va,
                            "x2": size})
    if kind == "tvm":
        return Event(*at, pc=pc, op="arm" if op else "disarm",
                     extra={"policy": bool(flags & 1), "observe": bool(flags & 2), "hcr": va})
    if kind == "diag":
        return Event(*at, pc=pc, esr=esr, ipa=ipa, va=va, op=DIAGS.get(op, str(op)),
                     extra={"fatal": bool(flags & 1), "info": pa})
    if kind == "guest-cmo":
        whole = GUEST_CMO_OPS.get(op) in ("ic-iallu", "ic-ialluis")
        untranslated = bool(flags & CMO_FLAGS.ids["no-ipa"])
        return Event(*at, pc=pc, esr=esr, op=GUEST_CMO_OPS.get(op, str(op)),
                     va=None if whole else va,
                     ipa=None if whole or untranslated else ipa,
                     pa=None if whole or untranslated else pa, size=None if whole else size,
                     extra={"translated": not untranslated} if not whole else {})
    if kind == "host-dma":
        return Event(*at, pc=pc, esr=esr, access="write", ipa=ipa, pa=pa, size=size,
                     op="fw-cfg-dma",
                     extra={"selector": flags, "descriptor": va,
                            "control": [n for b, n in FW_CFG_CONTROL.items() if op & b]})
    if kind == "s2-written":
        return Event(*at, pc=pc, access="write", ipa=ipa, pa=pa, size=size, op="lines",
                     extra={"lines": va})
    if kind == "s2-access":
        return Event(*at, pc=pc, esr=esr, access=ACCESS.get(access), ipa=ipa, pa=pa,
                     size=size, va=va or None, op="access")
    if kind == "s2-hide":
        return Event(*at, pc=pc, ipa=ipa, size=size, op="hide" if op else "restore",
                     extra={"end": pa})
    if kind == "s2-wrprotect":
        return Event(*at, pc=pc, ipa=ipa if va else None, size=size, op="wrprotect",
                     extra={"end": pa, "leaves": va})
    if kind == "psci-cpu-on":
        return Event(*at, pc=pc, extra={"target": op, "entry": ipa, "shim_entry": pa,
                                           "mpidr": va})
    if kind == "shim-start":
        return Event(*at, pc=pc, ipa=ipa, pa=pa, size=size,
                     extra={"policy": POLICIES.get(op), "requested": POLICIES.get(flags),
                            "ram_base": ipa, "carve_base": pa, "carve_size": size, "dtb": va})
    if kind == "vcpu-start":
        return Event(*at, pc=pc, extra={"slot": op, "x0": va})
    return Event(*at, pc=pc, esr=esr, ipa=ipa, pa=pa, size=size, va=va,
                 extra={"op": op, "flags": flags})


@dataclass(frozen=True)
class RingHeader:
    pa: int
    capacity: int
    records: int
    write_index: int
    read_index: int
    overflow: int
    full_mode: str
    halted: str | None
    shim_base: int
    link_base: int
    carve_base: int
    carve_size: int
    ram_base: int
    ram_end: int
    pool_base: int
    pool_size: int
    pool_used: int
    vttbr: int
    vtcr: int
    hcr: int
    policy: str
    policy_effective: str
    flags: int
    dtb: int
    entry: int
    stalls: int
    stats: dict[str, int]
    diag: Event | None
    vcpus: dict[int, int]                 # slot -> MPIDR of every vCPU that started
    mmio: list[tuple[int, int]]
    fw_cfg: tuple[int, int] = (0, 0)      # fw_cfg window (base, size): emulated, never mapped
    cpu: dict = field(default_factory=dict)   # ctr_el0, clidr_el1, midr_el1
    rom: list = field(default_factory=list)   # cfi-flash windows (base, size)

    @classmethod
    def parse(cls, pa: int, raw: bytes) -> "RingHeader":
        h = RING_HEADER.parse(raw)
        if h.magic != RING_MAGIC:
            raise RingError(f"no ring header at {pa:#x}")
        if h.version != RING_VERSION or h.record_size != RECORD_SIZE:
            raise RingError(f"ring version {h.version}, record size {h.record_size}: "
                            "not understood")
        seq = int.from_bytes(h.diag[:8], "little")
        return cls(pa=pa, capacity=h.capacity, records=h.records, write_index=h.write_index,
                   read_index=h.read_index, overflow=h.overflow,
                   full_mode=RING_FULL.get(h.full_mode, str(h.full_mode)),
                   halted=_diag_name(h.halted),
                   shim_base=h.shim_base, link_base=h.link_base, carve_base=h.carve_base,
                   carve_size=h.carve_size, ram_base=h.ram_base, ram_end=h.ram_end,
                   pool_base=h.pool_base, pool_size=h.pool_size, pool_used=h.pool_used,
                   vttbr=h.vttbr, vtcr=h.vtcr, hcr=h.hcr,
                   policy=POLICIES.get(h.policy, str(h.policy)),
                   policy_effective=POLICIES.get(h.policy_effective, str(h.policy_effective)),
                   flags=h.flags, dtb=h.dtb, entry=h.entry, stalls=h.stalls,
                   stats={name: h.stat[i] for i, name in STATS.items()},
                   diag=decode_record(seq - 1, h.diag) if seq else None,
                   vcpus={i: m & ~(1 << 63) for i, m in enumerate(h.mpidr) if m >> 63},
                   mmio=[tuple(w) for w in h.mmio[:min(h.mmio_count, len(h.mmio))]],
                   fw_cfg=tuple(h.fw_cfg),
                   cpu={"ctr_el0": h.ctr_el0, "clidr_el1": h.clidr_el1,
                        "midr_el1": h.midr_el1},
                   rom=[tuple(w) for w in h.rom[:min(h.rom_count, len(h.rom))]])


class RingReader:
    """The ring in guest RAM, read through ``mem`` (gdbplugin/target/physmem.py: the shared RAM
    file, ``/proc/<qemu-pid>/mem`` or gdb physical reads), while QEMU runs and, for the RAM
    file, after it exited.  ``base``, ``size``: the guest RAM range to search.  ``header_pa``:
    where the header is, if known (else found by its magic on a page boundary, top of RAM
    first).  ``consume`` writes the read index back (``mem`` must be writable)."""

    SCAN = 2 << 20                         # bytes read per step of the search

    def __init__(self, mem, base: int, size: int, *, header_pa: int | None = None,
                 consume: bool = False, near: int | None = None, depth: int | None = None):
        self.mem = mem
        self.depth = depth                 # search only this many bytes below the top
        self.ram_base, self.size = base, size
        self.consume = consume
        if header_pa is not None and int.from_bytes(self._read(header_pa, 8), "little") \
                != RING_MAGIC:
            raise RingError(f"no ring header at {header_pa:#x} (yet)")
        self.header_pa = header_pa if header_pa is not None else self.find(near)
        if self.header_pa is None:
            raise RingError("no shim ring in guest RAM (has the shim started?)")
        self.next = 0                      # index of the next record to decode
        self.lost = 0                      # records overwritten before we read them

    @classmethod
    def from_file(cls, ram_path: str | Path, ram_base: int, *, consume: bool = False,
                  header_pa: int | None = None) -> "RingReader":
        """The ring in a QEMU RAM file (``memory-backend-file``) whose first byte is at PA
        ``ram_base``."""
        try:
            mem = SharedRam(ram_path, ram_base, writable=consume)
        except TargetError as exc:
            raise RingError(str(exc)) from None
        return cls(mem, ram_base, mem.size, header_pa=header_pa, consume=consume)

    def find(self, near: int | None = None) -> int | None:
        """PA of the ring header (magic on a 4 KiB boundary whose shim_base field points
        into RAM at a 2 MiB boundary below it), highest first: the shim's carve-out is at the
        top of RAM, so the search reads little of it.  ``near``: an address inside the shim
        (its VBAR_EL2): only the 4 MiB from the 2 MiB boundary below it are searched, all a
        slow reader (gdb) can afford.  Else ``depth`` (if set) bounds the search below the
        top of RAM."""
        if near is not None and self.ram_base <= near < self.ram_base + self.size:
            lo = (near & ~((2 << 20) - 1)) - self.ram_base
            return self._scan(max(0, lo), min(self.size, lo + 2 * self.SCAN))
        return self._scan(max(0, self.size - self.depth) if self.depth else 0, self.size)

    def _scan(self, lo: int, hi: int) -> int | None:
        end = hi
        while end > lo:
            start = max(lo, end - self.SCAN)
            words = np.frombuffer(self._read(self.ram_base + start, end - start), dtype="<u8")
            pages = words[::HEADER_SIZE // 8]
            for idx in np.flatnonzero(pages == RING_MAGIC)[::-1]:
                off = int(idx) * HEADER_SIZE
                base = int(words[(off + _SHIM_BASE) // 8])
                pa = self.ram_base + start + off
                if base % (2 << 20) == 0 and self.ram_base <= base <= pa:
                    return pa
            end = start
        return None

    def _read(self, pa: int, n: int) -> bytes:
        if pa < self.ram_base or pa + n > self.ram_base + self.size:
            raise RingError(f"{pa:#x}+{n:#x} is outside guest RAM")
        try:
            return self.mem.read(pa, n)
        except TargetError as exc:
            raise RingError(str(exc)) from None

    def header(self) -> RingHeader:
        return RingHeader.parse(self.header_pa, self._read(self.header_pa, HEADER_SIZE))

    def _indices(self) -> tuple[int, int, int]:
        """capacity, PA of record 0, write index: all poll needs (the whole header costs
        a construct parse)."""
        hdr = self._read(self.header_pa, _WRITE_INDEX + 8)
        return (int.from_bytes(hdr[_CAPACITY:_CAPACITY + 8], "little"),
                int.from_bytes(hdr[_RECORDS:_RECORDS + 8], "little"),
                int.from_bytes(hdr[_WRITE_INDEX:], "little"))

    def halted(self) -> str | None:
        """``header().halted`` in one small read: a session checks it at every wait step, and
        the whole header costs a construct parse (~0.6 ms)."""
        return _diag_name(int.from_bytes(self._read(self.header_pa + _HALTED, 4), "little"))

    def overflow(self) -> int:
        """``header().overflow`` in one small read: records the shim dropped, ring full."""
        return int.from_bytes(self._read(self.header_pa + _OVERFLOW, 8), "little")

    def backlog(self) -> float:
        """Records written and not read yet, as a fraction of the ring's capacity: how
        close a reader that falls behind is to the shim's ``ring_full`` action."""
        capacity, _, write = self._indices()
        return (write - self.next) / capacity if capacity else 0.0

    def poll_fields(self, limit: int | None = None) -> list[tuple]:
        """Every new complete record (in order), up to ``limit``, as its unpacked fields
        (``RECORD_FORMAT`` order: seq, the ring index + 1, first).  The records are read in
        at most two reads (the ring wraps), which matters when each read is a syscall or a
        gdb round trip; a live capture converts these without building Events."""
        capacity, records, write = self._indices()
        out = []
        if write - self.next > capacity:           # only possible if someone else consumed
            self.lost += write - self.next - capacity
            self.next = write - capacity
        want = write - self.next if limit is None else min(write - self.next, limit)
        while want > 0:
            slot = self.next % capacity
            count = min(want, capacity - slot)
            raw = np.frombuffer(self._read(records + slot * RECORD_SIZE, count * RECORD_SIZE),
                                dtype=RECORD_DTYPE)
            torn = np.flatnonzero(raw["seq"] != np.arange(self.next + 1, self.next + 1 + count,
                                                          dtype=np.uint64))
            complete = int(torn[0]) if len(torn) else count
            out += raw[:complete].tolist()
            self.next += complete
            want = 0 if complete < count else want - count    # being written: next poll
        if self.consume and out:
            try:
                self.mem.write(self.header_pa + _READ_INDEX, self.next.to_bytes(8, "little"))
            except TargetError as exc:
                raise RingError(str(exc)) from None
        return out

    def close(self) -> None:
        self.mem.close()

    def __enter__(self) -> "RingReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
