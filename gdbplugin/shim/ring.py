"""Decoding the shim's event ring from guest RAM (the shared RAM file), live or after the run.

Layouts mirror ``struct ring_header`` / ``struct record`` in gdbplugin/shim/shim.h.  The ring
header sits in the shim's bss (symbol ``shim_ring``) in the carve-out at the top of RAM, which
the guest never sees; ``RingReader`` finds it by its magic on a page boundary.  Records are 64
bytes; record i is complete once its ``seq`` is i + 1.  ``poll()`` returns every new complete
record as an ``Event`` (a plain dataclass whose field names follow DESIGN.md's event vocabulary:
kind, vcpu, pc, el, ipa, pa, size, access, esr, reg, old, new, op, va, plus ``rule`` and
``extra`` per kind); with ``consume=True`` it also writes the ring's read index, so a ring in
``wait`` mode never fills and one in ``halt`` mode halts only when we fall behind.
"""
from __future__ import annotations

import mmap
import struct
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

RING_MAGIC = 0x31474E4952433253            # "S2CRING1"
RING_VERSION = 1
RECORD_SIZE = 64
HEADER_SIZE = 4096
MAX_VCPUS = 16

KINDS = {1: "shim-start", 2: "vcpu-start", 3: "s2-fault", 4: "s2-map", 5: "s2-perm",
         6: "s2-unmap", 7: "dc", 8: "ic", 9: "flush-vm", 10: "tlbi", 11: "sysreg-write",
         12: "set-way", 13: "smc", 14: "hvc", 15: "tvm", 16: "diag", 17: "psci-cpu-on",
         18: "guest-cmo", 19: "host-dma", 20: "s2-wrprotect", 21: "s2-written",
         22: "s2-access", 23: "s2-hide"}
KIND_IDS = {name: k for k, name in KINDS.items()}
ACCESS = {0: None, 1: "read", 2: "write", 3: "exec"}
POLICY_NAMES = {0: "none", 1: "rfc2013", 2: "kvm", 3: "xen", 4: "fwb"}
# enum rule in shim.h: the policy rule a maintenance operation (or TVM change) carried out.
# Maintenance rules use the ids of gdbplugin/model/policies.py (FWB's exec-fault invalidation
# is KVM's rule, id 10 only tells the two apart in the ring).
RULES = {0: None,
         1: "kvm.clean-on-translation-fault",      # stage2_map_walker_try_leaf
         2: "kvm.icache-inval-on-exec-fault",      # stage2_map_walker_try_leaf / relax_perms
         3: "kvm.flush-on-cache-toggle",           # kvm_toggle_cache -> stage2_flush_vm
         4: "kvm.trap-set-way",                    # kvm_set_way_flush -> stage2_flush_vm
         5: "xen.flush-on-alloc",                  # alloc_heap_pages -> flush_page_to_ram
         6: "xen.trap-set-way",                    # p2m_set_way_flush -> p2m_flush_vm
         7: "xen.flush-on-toggle",                 # p2m_toggle_cache -> p2m_flush_vm
         8: "rfc2013.clean-first-map-uncached",    # seed point 1 (+ point 4)
         9: "rfc2013.flush-on-stage1-enable",      # seed point 2
         10: "kvm.icache-inval-on-exec-fault",     # the same rule, under fwb
         11: "kvm.tvm-at-reset", 12: "kvm.tvm-off-caches-on", 13: "rfc2013.tvm-at-reset",
         14: "rfc2013.tvm-off-mmu-on", 15: "xen.tvm-off-caches-on", 16: "observe"}
SYSREGS = {1: "SCTLR_EL1", 2: "TTBR0_EL1", 3: "TTBR1_EL1", 4: "TCR_EL1", 5: "ESR_EL1",
           6: "FAR_EL1", 7: "AFSR0_EL1", 8: "AFSR1_EL1", 9: "MAIR_EL1", 10: "AMAIR_EL1",
           11: "CONTEXTIDR_EL1"}
DIAGS = {1: "unknown-trap", 2: "outside-ram-and-mmio", 3: "ring-full", 4: "el2-exception",
         5: "bad-params", 6: "no-dtb", 7: "table-pool-exhausted", 8: "unexpected-fault-status",
         9: "unexpected-sysreg", 10: "vcpu-range", 11: "memory-layout", 12: "shim-memory",
         13: "el2-interrupt", 14: "fwb-missing", 15: "not-el2", 16: "cpu",
         17: "mmio-no-syndrome"}
SET_WAY_OPS = {1: "isw", 2: "csw", 3: "cisw"}
# s2-map/s2-perm op; "rom": a cfi-flash window, Normal and read-only at stage 2 (KVM's
# read-only memslot), writes emulated by the shim
MEMTYPES = {0: "normal", 1: "device", 2: "rom"}
# host-dma op: the fw_cfg DMA request's control bits; bit 0 is ERROR as QEMU left it
FW_CFG_CONTROL = {0x01: "error", 0x02: "read", 0x04: "skip", 0x08: "select", 0x10: "write"}
GUEST_CMO_OPS = {1: "dc-ivac", 2: "dc-cvac", 3: "dc-civac", 4: "dc-cvau", 5: "dc-cvap",
                 6: "ic-ivau", 7: "ic-iallu", 8: "ic-ialluis"}
STATS = ["traps", "dabt", "iabt", "map_normal", "map_device", "exec_grant", "dc_bytes",
         "ic_ops", "flush_vm", "sysreg", "set_way", "smc", "hvc", "spurious", "tables",
         "vcpus", "guest_cmo", "map_rom", "rom_writes", "fw_cfg", "host_dma", "host_dma_bytes",
         "write_grant", "wrprotect", "snapshots", "snapshot_full", "accesses"]

_REC = struct.Struct("<QHBBBBHQQQQQQ")
assert _REC.size == RECORD_SIZE


class RingError(Exception):
    """No ring where one was expected, or a ring this decoder does not understand."""


@dataclass(frozen=True)
class Event:
    """One ring record.  Fields that do not apply to the kind are None; ``extra`` holds the
    kind-specific rest (e.g. ``count`` of a coalesced set/way run, ``leaves`` of a sweep)."""

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
    (seq, kind_id, vcpu, el, access, op, flags, pc, esr, ipa, pa, size, va) = _REC.unpack(raw)
    kind = KINDS.get(kind_id, f"unknown-{kind_id}")
    vcpu_ = None if vcpu == 0xFF else vcpu
    base = dict(seq=index, kind=kind, vcpu=vcpu_, el=el)
    if kind == "s2-fault":
        return Event(**base, pc=pc, esr=esr, access=ACCESS.get(access), ipa=ipa, pa=pa,
                     va=None if flags & 2 else va, op="fault",
                     extra={"fsc": op, "s1ptw": bool(flags & 1), "far_valid": not flags & 2,
                            "deferred": bool(flags & 16)})
    if kind in ("s2-map", "s2-perm"):
        perms = "".join(c for b, c in ((1, "r"), (2, "w"), (4, "x")) if flags & b)
        return Event(**base, pc=pc, esr=esr or None, access=ACCESS.get(access), ipa=ipa, pa=pa,
                     size=size, op="map" if kind == "s2-map" else "relax",
                     extra={"memtype": MEMTYPES.get(op, str(op)), "perms": perms})
    if kind == "dc":
        return Event(**base, pc=pc, ipa=ipa, pa=pa, size=size, op="civac",
                     rule=RULES.get(flags, str(flags)))
    if kind == "ic":
        return Event(**base, pc=pc, ipa=ipa, pa=pa, size=size,
                     op={1: "ivau", 2: "ialluis"}.get(op, str(op)),
                     rule=RULES.get(flags, str(flags)))
    if kind == "flush-vm":
        return Event(**base, pc=pc, ipa=ipa if va else None, size=size, op="civac",
                     rule=RULES.get(flags, str(flags)), extra={"end": pa, "leaves": va})
    if kind == "tlbi":
        return Event(**base, pc=pc, ipa=ipa, size=size, op="ipas2e1+vmalle1")
    if kind == "sysreg-write":
        return Event(**base, pc=pc, esr=esr, access="write", reg=SYSREGS.get(op, str(op)),
                     old=ipa, new=pa, op="msr", extra={"encoding": va})
    if kind == "set-way":
        return Event(**base, pc=pc, esr=esr, op=SET_WAY_OPS.get(op, str(op)), size=None,
                     extra={"count": size, "first": ipa, "last": pa})
    if kind in ("smc", "hvc"):
        return Event(**base, pc=pc, esr=esr, op="psci" if flags != 2 else "unknown",
                     extra={"function": ipa, "result": pa if flags else None, "x1": va,
                            "x2": size})
    if kind == "tvm":
        return Event(**base, pc=pc, op="arm" if op else "disarm",
                     extra={"policy": bool(flags & 1), "observe": bool(flags & 2), "hcr": va})
    if kind == "diag":
        return Event(**base, pc=pc, esr=esr, ipa=ipa, va=va, op=DIAGS.get(op, str(op)),
                     extra={"fatal": bool(flags & 1), "info": pa})
    if kind == "guest-cmo":
        whole = op in (7, 8)
        return Event(**base, pc=pc, esr=esr, op=GUEST_CMO_OPS.get(op, str(op)),
                     va=None if whole else va,
                     ipa=None if whole or flags & 1 else ipa,
                     pa=None if whole or flags & 1 else pa, size=None if whole else size,
                     extra={"translated": not flags & 1} if not whole else {})
    if kind == "host-dma":
        return Event(**base, pc=pc, esr=esr, access="write", ipa=ipa, pa=pa, size=size,
                     op="fw-cfg-dma",
                     extra={"selector": flags, "descriptor": va,
                            "control": [n for b, n in FW_CFG_CONTROL.items() if op & b]})
    if kind == "s2-written":
        return Event(**base, pc=pc, access="write", ipa=ipa, pa=pa, size=size, op="lines",
                     extra={"lines": va})
    if kind == "s2-access":
        return Event(**base, pc=pc, esr=esr, access=ACCESS.get(access), ipa=ipa, pa=pa,
                     size=size, va=va or None, op="access")
    if kind == "s2-hide":
        return Event(**base, pc=pc, ipa=ipa, size=size, op="hide" if op else "restore",
                     extra={"end": pa})
    if kind == "s2-wrprotect":
        return Event(**base, pc=pc, ipa=ipa if va else None, size=size, op="wrprotect",
                     extra={"end": pa, "leaves": va})
    if kind == "psci-cpu-on":
        return Event(**base, pc=pc, extra={"target": op, "entry": ipa, "shim_entry": pa,
                                           "mpidr": va})
    if kind == "shim-start":
        return Event(**base, pc=pc, ipa=ipa, pa=pa, size=size,
                     extra={"policy": POLICY_NAMES.get(op), "requested": POLICY_NAMES.get(flags),
                            "ram_base": ipa, "carve_base": pa, "carve_size": size, "dtb": va})
    if kind == "vcpu-start":
        return Event(**base, pc=pc, extra={"slot": op, "x0": va})
    return Event(**base, pc=pc, esr=esr, ipa=ipa, pa=pa, size=size, va=va,
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
        q = lambda off: int.from_bytes(raw[off:off + 8], "little")       # noqa: E731
        d = lambda off: int.from_bytes(raw[off:off + 4], "little")       # noqa: E731
        if q(0) != RING_MAGIC:
            raise RingError(f"no ring header at {pa:#x}")
        if d(8) != RING_VERSION or d(12) != RECORD_SIZE:
            raise RingError(f"ring version {d(8)}, record size {d(12)}: not understood")
        halted = d(0x3C)
        diag_raw = raw[0x200:0x240]
        diag = decode_record(q(0x200) - 1, diag_raw) if q(0x200) else None
        vcpus = {i: q(0x240 + 8 * i) & ~(1 << 63) for i in range(MAX_VCPUS)
                 if q(0x240 + 8 * i) >> 63}
        mmio = [(q(0x2C0 + 16 * i), q(0x2C8 + 16 * i)) for i in range(min(q(0xD8), 64))]
        return cls(pa=pa, capacity=q(0x10), records=q(0x18), write_index=q(0x20),
                   read_index=q(0x28), overflow=q(0x30),
                   full_mode={0: "halt", 1: "wait", 2: "drop"}.get(d(0x38), str(d(0x38))),
                   halted=DIAGS.get(halted, str(halted)) if halted else None,
                   shim_base=q(0x40), link_base=q(0x48), carve_base=q(0x50),
                   carve_size=q(0x58), ram_base=q(0x60), ram_end=q(0x68), pool_base=q(0x70),
                   pool_size=q(0x78), pool_used=q(0x80), vttbr=q(0x88), vtcr=q(0x90),
                   hcr=q(0x98), policy=POLICY_NAMES.get(d(0xA0), str(d(0xA0))),
                   policy_effective=POLICY_NAMES.get(d(0xA4), str(d(0xA4))), flags=q(0xA8),
                   dtb=q(0xB0), entry=q(0xB8), stalls=q(0xC8),
                   stats={name: q(0x100 + 8 * i) for i, name in enumerate(STATS)},
                   diag=diag, vcpus=vcpus, mmio=mmio, fw_cfg=(q(0xE0), q(0xE8)),
                   cpu={"ctr_el0": q(0x6C0), "clidr_el1": q(0x6C8), "midr_el1": q(0x6D0)},
                   rom=[(q(0x6E0 + 16 * i), q(0x6E8 + 16 * i)) for i in range(min(q(0x6D8), 8))])


class RingReader:
    """The ring in a QEMU RAM file (``memory-backend-file``), readable while QEMU runs and
    after it exited.  ``ram_base``: PA of the file's first byte.  ``header_pa``: where the
    header is, if known (else found by its magic on a page boundary, top of RAM first)."""

    def __init__(self, ram_path: str | Path, ram_base: int, *, header_pa: int | None = None,
                 consume: bool = False):
        self.ram_base = ram_base
        self.consume = consume
        f = open(ram_path, "r+b" if consume else "rb")
        try:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE if consume
                                  else mmap.ACCESS_READ)
        finally:
            f.close()
        self.size = len(self._map)
        self.header_pa = header_pa if header_pa is not None else self.find()
        if self.header_pa is None:
            raise RingError("no shim ring in guest RAM (has the shim started?)")
        self.next = 0                      # index of the next record to decode
        self.lost = 0                      # records overwritten before we read them

    def find(self) -> int | None:
        """PA of the ring header (magic on a 4 KiB boundary whose shim_base field points
        into RAM at a 2 MiB boundary below it), highest first."""
        words = np.frombuffer(self._map, dtype="<u8")
        pages = words[::HEADER_SIZE // 8]
        for idx in np.flatnonzero(pages == RING_MAGIC)[::-1]:
            off = int(idx) * HEADER_SIZE
            base = int(words[off // 8 + 8])           # shim_base
            if base % (2 << 20) == 0 and self.ram_base <= base <= self.ram_base + off:
                return self.ram_base + off
        return None

    def _read(self, pa: int, n: int) -> bytes:
        off = pa - self.ram_base
        if off < 0 or off + n > self.size:
            raise RingError(f"{pa:#x}+{n:#x} is outside the RAM file")
        return self._map[off:off + n]

    def header(self) -> RingHeader:
        return RingHeader.parse(self.header_pa, self._read(self.header_pa, HEADER_SIZE))

    def poll(self, limit: int | None = None) -> list[Event]:
        """Every new complete record (in order), up to ``limit``."""
        h = self.header()
        events = []
        write = h.write_index
        if write - self.next > h.capacity:         # only possible if someone else consumed
            self.lost += write - self.next - h.capacity
            self.next = write - h.capacity
        while self.next < write and (limit is None or len(events) < limit):
            slot = self.next % h.capacity
            raw = self._read(h.records + slot * RECORD_SIZE, RECORD_SIZE)
            seq = int.from_bytes(raw[:8], "little")
            if seq != self.next + 1:
                break                              # being written: next poll
            events.append(decode_record(self.next, raw))
            self.next += 1
        if self.consume and events:
            off = self.header_pa - self.ram_base + 0x28
            self._map[off:off + 8] = self.next.to_bytes(8, "little")
        return events

    def follow(self, done, interval: float = 0.01) -> Iterator[Event]:
        """Yield events as they come until ``done()`` is true and the ring is drained."""
        while True:
            finished = done()
            batch = self.poll()
            yield from batch
            if finished and not batch:
                return
            if not batch:
                time.sleep(interval)

    def close(self) -> None:
        self._map.close()

    def __enter__(self) -> "RingReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
