"""The shim's ring as a trace: ring records (gdbplugin/shim/ring.py) -> s2cache.trace/1 events.

What the shim did becomes ``hyp-maintenance`` (so a replay's *observed* world answers "did the
hypervisor do it"), what the guest did becomes faults, maps, register writes and set/way or
cache operations, and what QEMU wrote into guest memory becomes host writes: the blobs it
loaded before the guest ran (``info roms``: RAM and flash contents) and the fw_cfg DMA
transfers the shim saw (``host-dma``: firmware loading a kernel).  The shim records a trapped
event (a fault's map, an SCTLR_EL1 write) before the maintenance it did for it, but the guest
runs on only after both, so such an event is held back until that vCPU's maintenance records
have been emitted.

Guest memory for the trace is RAM plus the flash windows the shim maps as read-only Normal
memory (KVM's read-only memslots): firmware runs from there with its MMU off.
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator

from ..model.cache import PAGE_SHIFT
from ..model.trace import ROW_MAKERS
from ..shim.abi import (ACCESS, CMO_FLAGS, FAULT_FLAGS, GUEST_CMO_OPS, KINDS, MEMTYPES, PERMS,
                        RULES, SET_WAY_OPS, SYSREGS)
from ..shim.abi import IC_OPS as SHIM_IC_OPS
from ..target.physmem import page_runs

PAGE = 1 << PAGE_SHIFT

ROM_LINE = re.compile(r'addr=([0-9a-f]+) size=0x([0-9a-f]+) mem=(?:ram|rom) name="(.*)"')
# A blob QEMU put straight into a memory region (virt's flash: ``-bios``), placed by the
# region's address in ``info mtree -f``.
REGION_ROM_LINE = re.compile(r'^(\S+) size=0x([0-9a-f]+) name="(.*)"', re.M)
MTREE_LINE = re.compile(r'^\s*([0-9a-f]+)-[0-9a-f]+ \(prio [-0-9]+, [a-z-]+\): (\S+)', re.M)
# Stage-2 MemAttr the shim installs (KVM's MT_S2_NORMAL and MT_S2_DEVICE_nGnRE; flash is
# Normal memory, read-only).
MEMATTR = {"normal": 0xF, "rom": 0xF, "device": 0x1}
XN_NONE, XN_ALL = 0, 2
CMO_OPS = {"dc-civac": "civac", "dc-cvac": "cvac", "dc-ivac": "ivac", "dc-cvau": "cvau",
           "dc-cvap": "cvap"}
IC_OPS = {"ic-ivau": "ivau", "ic-iallu": "iallu", "ic-ialluis": "ialluis"}


def loaded_blobs(info_roms: str, info_mtree: str = "") -> list[tuple[int, int, str]]:
    """(addr, size, name) of every blob QEMU loaded into RAM or ROM, from HMP ``info roms``;
    blobs loaded into a memory region (``virt.flash0 size=...``) are placed with the region's
    address from ``info mtree -f`` (left out when it is not given)."""
    out = [(int(a, 16), int(s, 16), n) for a, s, n in ROM_LINE.findall(info_roms)]
    regions = {name: int(a, 16) for a, name in MTREE_LINE.findall(info_mtree)}
    for region, size, name in REGION_ROM_LINE.findall(info_roms):
        if region in regions:
            out.append((regions[region], int(size, 16), name))
    return sorted(out)


# ring codes the converter dispatches on (gdbplugin/shim/abi.py)
K = KINDS.ids
_MAINTENANCE = (K["dc"], K["ic"], K["flush-vm"])
_FETCH, _FETCH_OK, _DEFERRED = (FAULT_FLAGS.ids[n] for n in ("fetch", "fetch-ok", "deferred"))
_WRITE = ACCESS.ids["write"]
_PERM_X, _PERM_W, _OBSERVER = PERMS.ids["x"], PERMS.ids["w"], PERMS.ids["observer"]
_NO_IPA = CMO_FLAGS.ids["no-ipa"]
_NO_VCPU = 0xFF
_MEMTYPE_NORMAL = MEMTYPES.ids["normal"]
_S2_MEMATTR = {code: MEMATTR.get(name, MEMATTR["device"]) for code, name in MEMTYPES.items()}
# trace access of a fault: the shim's access code (none: a read)
_FAULT_ACCESS = {code: name or "read" for code, name in ACCESS.items()}
# guest-cmo op code -> (trace kind, trace op)
_GUEST_CMO = {code: ("ic-inval", IC_OPS[name]) if name in IC_OPS else ("cmo-va", CMO_OPS[name])
              for code, name in GUEST_CMO_OPS.items() if name in IC_OPS or name in CMO_OPS}
_TLBI_OP = "ipas2e1+vmalle1"
_ROW = ROW_MAKERS


class ShimTrace:
    """Converts ring records as they arrive (``convert`` may be called repeatedly) into trace
    events as (row, extras) pairs of ``gdbplugin.model.trace.ROW_MAKERS``, which the trace
    writer numbers and writes.  ``ram``: the guest memory ranges (RAM and flash windows);
    ``header``: extra trace-header keys (policy, cpu, writes)."""

    def __init__(self, ram: list[tuple[int, int]], vcpus: int, policy: str, **header):
        self.ram = sorted(ram)
        self.header = {"ram": [list(r) for r in self.ram], "vcpus": vcpus, "policy": policy,
                       "source": "shim", "traps_set_way": True,
                       "hyp_maintenance": "tracked", **header}
        self._held: dict[int, list] = {}           # vcpu -> its trap awaiting maintenance
        self._mapped: set[int] = set()             # RAM pages mapped Normal (for VM flushes)

    def host_writes(self, blobs: Iterable[tuple[int, int, str]]) -> Iterator[tuple]:
        """What QEMU loaded before the guest ran, clipped to guest memory."""
        for addr, size, _ in blobs:
            for base, length in self.ram:
                lo, hi = max(addr, base), min(addr + size, base + length)
                if lo < hi:
                    yield _ROW["host-write"](lo, hi - lo, "load")

    def convert(self, records: Iterable[tuple], out: list) -> list[tuple]:
        """Append to ``out`` the trace events, as (row, extras) pairs, of ring records given
        as their unpacked fields (``RingReader.poll_fields``), and return it (``out`` keeps
        the events before a record that cannot be converted)."""
        put = out.append
        held, in_ram = self._held, self._in_ram
        for (_, kind, vcpu, el, access, op, flags, pc, esr, ipa, pa, size, va) in records:
            if vcpu == _NO_VCPU:
                vcpu = None
            if kind in _MAINTENANCE:
                out += self._maintenance(kind, vcpu, op, flags, pa, size)
                continue
            if vcpu in held:                  # never None: what has no vCPU is not held
                out += held.pop(vcpu)
            if kind == K["guest-cmo"]:
                what = _GUEST_CMO.get(op)
                if what is None:
                    continue
                tkind, top = what
                translated = not flags & _NO_IPA
                if tkind == "cmo-va":
                    if translated and in_ram(pa, size):
                        put(_ROW["cmo-va"](vcpu, top, pa, size, va, pc, el))
                elif top == "ivau" and translated and in_ram(pa, size):
                    put(_ROW["ic-inval"](vcpu, top, pa, size, pc))
                else:
                    put(_ROW["ic-inval"](vcpu, top, None, None, pc))
            elif kind == K["s2-fault"]:
                if flags & _FETCH:
                    put(_ROW["fetch"](vcpu, ipa, pc, el, 1 if flags & _FETCH_OK else None,
                                      size >> 32 if size else None,
                                      size & 0xFFFFFFFF if size else None))
                else:
                    put(_ROW["s2-fault"](vcpu, ipa, _FAULT_ACCESS.get(access, "read"), esr,
                                         pc, el, 1 if flags & _DEFERRED else None))
            elif kind == K["s2-perm"]:
                if not flags & _OBSERVER:     # the observer's X given back: policy unchanged
                    put(_ROW["s2-attr"](ipa, size, _S2_MEMATTR.get(op, MEMATTR["device"]),
                                        XN_NONE if flags & _PERM_X else XN_ALL))
                    out += self._block_write(vcpu, access, flags, pa, size)
            elif kind == K["s2-map"]:
                if op == _MEMTYPE_NORMAL:
                    first = pa >> PAGE_SHIFT
                    self._mapped.update(range(first, first + (size >> PAGE_SHIFT)))
                mapped = [_ROW["s2-map"](ipa, pa, size, _S2_MEMATTR.get(op, MEMATTR["device"]),
                                         XN_NONE if flags & _PERM_X else XN_ALL, vcpu),
                          *self._block_write(vcpu, access, flags, pa, size)]
                self._hold(vcpu, mapped, out)
            elif kind == K["s2-written"]:
                out += self._written(vcpu, pc, pa, va)
            elif kind == K["s2-access"]:
                put(_ROW["s2-access"](vcpu, ipa, _FAULT_ACCESS.get(access, "read"), pc, el))
            elif kind == K["sysreg-write"]:
                self._hold(vcpu, [_ROW["sysreg-write"](vcpu, SYSREGS.get(op, str(op)), ipa,
                                                       pa, pc, el)], out)
            elif kind == K["tlbi"]:
                put(_ROW["tlbi"](vcpu, _TLBI_OP))
            elif kind == K["set-way"]:
                put(_ROW["set-way"](vcpu, SET_WAY_OPS.get(op, str(op)), pc, el))
            elif kind == K["host-dma"]:
                if in_ram(pa, size):
                    put(_ROW["host-write"](pa, size, "device"))
            elif kind == K["vcpu-start"]:
                put(_ROW["vcpu-on"](vcpu, pc))
        return out

    def finish(self) -> list[tuple]:
        """Events still held back at the end of the ring."""
        out = []
        for v in sorted(self._held):
            out += self._held.pop(v)
        return out

    def _hold(self, vcpu: int | None, events: list, out: list) -> None:
        """A trapped event waits for its vCPU's maintenance records (the vCPU's next other
        record releases it); one without a vCPU has nothing to wait for."""
        if vcpu is None:
            out += events
        else:
            self._held[vcpu] = events

    def _maintenance(self, kind, vcpu, op, flags, pa, size) -> list[tuple]:
        reason = RULES.get(flags, str(flags)) or "shim"
        if kind == K["flush-vm"]:
            return [_ROW["hyp-maintenance"]("clean-inval", first << PAGE_SHIFT,
                                            count << PAGE_SHIFT, None, reason)
                    for first, count in page_runs(sorted(self._mapped))] if self._mapped else []
        if kind == K["ic"] and (SHIM_IC_OPS.get(op) != "ivau" or not size):
            return [_ROW["hyp-maintenance"]("icache-inval", base, length, None, reason)
                    for base, length in self.ram]
        if self._in_ram(pa, size):
            return [_ROW["hyp-maintenance"]("icache-inval" if kind == K["ic"] else
                                            "clean-inval", pa, size, vcpu, reason)]
        return []

    def _block_write(self, vcpu, access, flags, pa, size) -> list[tuple]:
        """A write granted on a leaf larger than a page (2 MiB block mode): the fault says
        which page was written first, but any page of the leaf may be written until the
        epoch ends unobserved, so the whole leaf is write evidence."""
        if access == _WRITE and flags & _PERM_W and size > PAGE and self._in_ram(pa, size):
            return [_ROW["guest-access"](vcpu, pa, size, "write")]
        return []

    def _written(self, vcpu, pc, pa, mask) -> list[tuple]:
        """The lines a deferred write epoch changed, as guest writes (runs of lines)."""
        out, line = [], 0
        while mask >> line:
            if not (mask >> line) & 1:
                line += 1
                continue
            end = line
            while (mask >> end) & 1:
                end += 1
            if self._in_ram(pa + 64 * line, 64 * (end - line)):
                out.append(_ROW["guest-access"](vcpu, pa + 64 * line, 64 * (end - line),
                                                "write", None, pc))
            line = end
        return out

    def _in_ram(self, pa, size) -> bool:
        if not size:
            return False
        for b, s in self.ram:
            if b <= pa and pa + size <= b + s:
                return True
        return False
