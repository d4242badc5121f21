"""Where a guest's code writes SCTLR_EL1, for watching a guest that is not under the shim.

Without the shim nothing traps the guest's SCTLR_EL1 writes, so they are caught with
breakpoints on the instructions that make them, found by decoding guest memory with
gdbplugin/arch/sysinsn.py: every ``MSR SCTLR_EL1, Xt``.  QEMU's breakpoints match the virtual
PC, so a site is planted at its PA (code running with the MMU off, or identity-mapped) and at
every VA an executable stage-1 leaf maps it to (``aliases``).  Set/way maintenance sites (DC
ISW/CSW/CISW and their tag forms) are only reported: planted, a set/way loop would stop the
guest once per set and way.

Measured on Debian 12's arm64 kernel Image: 44 ``MSR SCTLR_EL1`` sites, no set/way site; its
boot writes SCTLR_EL1 six times per vCPU, twice at the PA (MMU off) and four times at kernel
VAs.  Scanning 512 MiB of RAM through /proc/<qemu-pid>/mem takes about 1.1 s.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arch.sysinsn import (SYS_OP_SPECS, SysOp, SysRegAccess, decode, sysreg_encoding,
                             system_word)

CHUNK = 16 << 20                          # bytes of RAM read and scanned at a time
RT_MASK = np.uint32(0xFFFF_FFE0)          # every field of a system instruction but Rt
WATCHED_WRITES = ("SCTLR_EL1",)


MSR_WORDS = {name: system_word(0, *sysreg_encoding(name), 0) for name in WATCHED_WRITES}
SET_WAY_WORDS = {f"dc {s.op}": system_word(0, 1, s.op1, s.crn, s.crm, s.op2, 0)
                 for s in SYS_OP_SPECS if s.operand == "setway"}


@dataclass(frozen=True)
class Site:
    """One instruction: where (PA), which register it reads (Rt), what it is."""

    pa: int
    rt: int
    text: str


@dataclass
class Sites:
    writes: list[Site]                    # MSR SCTLR_EL1, Xt
    set_way: list[Site]                   # DC ISW/CSW/CISW (and tag forms)


def find_sites(mem, regions: list[tuple[int, int]], chunk: int = CHUNK) -> Sites:
    """Every SCTLR_EL1 write and set/way instruction in the RAM ``regions`` ([(base, size)])
    of ``mem`` (a PhysMemory: ``read(pa, n)``), each confirmed by the decoder."""
    writes, set_way = [], []
    patterns = np.array(list(MSR_WORDS.values()) + list(SET_WAY_WORDS.values()),
                        dtype=np.uint32)
    for base, size in regions:
        start = (base + 3) & ~3
        for pa in range(start, base + size, chunk):
            n = min(chunk, base + size - pa) & ~3
            if not n:
                continue
            words = np.frombuffer(mem.read(pa, n), dtype="<u4")
            hits = np.flatnonzero(np.isin(words & RT_MASK, patterns))
            for i in hits.tolist():
                word = int(words[i])
                insn = decode(word)
                site = Site(pa + 4 * i, word & 0x1F, str(insn))
                if isinstance(insn, SysRegAccess) and insn.is_write \
                        and insn.name in WATCHED_WRITES:
                    writes.append(site)
                elif isinstance(insn, SysOp) and insn.spec is not None \
                        and insn.spec.operand == "setway":
                    set_way.append(site)
    return Sites(writes, set_way)


def aliases(pas: list[int], stage1: list, stage2: list | None = None) -> dict[int, list[int]]:
    """The VAs at which EL1 may execute each PA in ``pas``: through the executable (PXN
    clear) runs of ``stage1`` (Walker.mappings() of each TTBR range), and when the guest has
    a stage 2 of its own, through its runs executable at EL1 (IPA -> PA)."""
    out: dict[int, list[int]] = {pa: [] for pa in pas}
    if not pas:
        return out
    target = np.array(pas, dtype=np.uint64)
    if stage2 is None:
        ipas = [(i, pa) for i, pa in enumerate(pas)]
    else:
        ipas = [(i, ia) for i, ia in _inverse(target, [m for m in stage2
                                                        if m.attrs.get("exec_el1")])]
    runs = [m for m in stage1 if not m.attrs.get("pxn")]
    if not ipas or not runs:
        return out
    idx = np.array([i for i, _ in ipas], dtype=np.int64)
    for i, va in _inverse(np.array([ia for _, ia in ipas], dtype=np.uint64), runs):
        out[pas[int(idx[i])]].append(va)
    return out


def _inverse(oa: np.ndarray, runs: list) -> list[tuple[int, int]]:
    """(index into ``oa``, input address) for every run that maps each output address."""
    if not runs or not oa.size:
        return []
    ia = np.array([m.ia for m in runs], dtype=np.uint64)
    start = np.array([m.oa for m in runs], dtype=np.uint64)
    size = np.array([m.size for m in runs], dtype=np.uint64)
    inside = (oa[:, None] >= start[None, :]) & (oa[:, None] - start[None, :] < size[None, :])
    k, r = np.nonzero(inside)
    return [(int(a), int(ia[b] + (oa[a] - start[b]))) for a, b in zip(k.tolist(), r.tolist())]
