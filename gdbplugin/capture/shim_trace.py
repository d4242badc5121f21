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

PAGE = 1 << PAGE_SHIFT
from ..target.physmem import page_runs

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


class ShimTrace:
    """Converts ring events as they arrive (``convert`` may be called repeatedly).  ``ram``:
    the guest memory ranges (RAM and flash windows); ``header``: extra trace-header keys
    (policy, cpu, writes)."""

    def __init__(self, ram: list[tuple[int, int]], vcpus: int, policy: str, **header):
        self.ram = sorted(ram)
        self.header = {"ram": [list(r) for r in self.ram], "vcpus": vcpus, "policy": policy,
                       "source": "shim", "traps_set_way": True,
                       "hyp_maintenance": "tracked", **header}
        self._held: dict[int, list] = {}           # vcpu -> its trap awaiting maintenance
        self._mapped: set[int] = set()             # RAM pages mapped Normal (for VM flushes)

    def host_writes(self, blobs: Iterable[tuple[int, int, str]]) -> Iterator[dict]:
        """What QEMU loaded before the guest ran, clipped to guest memory."""
        for addr, size, _ in blobs:
            for base, length in self.ram:
                lo, hi = max(addr, base), min(addr + size, base + length)
                if lo < hi:
                    yield {"kind": "host-write", "pa": lo, "size": hi - lo, "source": "load"}

    def convert(self, events) -> Iterator[dict]:
        for e in events:
            k = e.kind
            if k in ("dc", "ic", "flush-vm"):
                yield from self._maintenance(e)
                continue
            if e.vcpu is not None and e.vcpu in self._held:
                yield from self._held.pop(e.vcpu)
            if k == "vcpu-start":
                yield _drop_none({"kind": "vcpu-on", "vcpu": e.vcpu, "pc": e.pc})
            elif k == "s2-fault" and e.extra.get("fetch"):
                yield _drop_none({"kind": "fetch", "vcpu": e.vcpu, "ipa": e.ipa, "pc": e.pc,
                                  "el": e.el, "ok": 1 if e.extra.get("fetch_ok") else None,
                                  "old": e.extra.get("insn_old"),
                                  "new": e.extra.get("insn_new")})
            elif k == "s2-fault":
                yield _drop_none({"kind": "s2-fault", "vcpu": e.vcpu, "ipa": e.ipa,
                                  "access": e.access or "read", "esr": e.esr, "pc": e.pc,
                                  "el": e.el,
                                  "deferred": 1 if e.extra.get("deferred") else None})
            elif k == "s2-written":
                yield from self._written(e)
            elif k == "s2-access":
                yield _drop_none({"kind": "s2-access", "vcpu": e.vcpu, "ipa": e.ipa,
                                  "access": e.access or "read", "pc": e.pc, "el": e.el})
            elif k == "s2-map":
                memtype = e.extra.get("memtype", "normal")
                if memtype == "normal":
                    first = e.pa >> PAGE_SHIFT
                    self._mapped.update(range(first, first + (e.size >> PAGE_SHIFT)))
                self._held[e.vcpu] = [{
                    "kind": "s2-map", "ipa": e.ipa, "pa": e.pa, "size": e.size,
                    "memattr": MEMATTR.get(memtype, MEMATTR["device"]),
                    "xn": XN_NONE if "x" in e.extra.get("perms", "") else XN_ALL,
                    "vcpu": e.vcpu}, *self._block_write(e)]
            elif k == "s2-perm" and e.extra.get("observer"):
                pass                # write-xor-execute gave X back: the policy's view is as it was
            elif k == "s2-perm":
                yield {"kind": "s2-attr", "ipa": e.ipa, "size": e.size,
                       "memattr": MEMATTR.get(e.extra.get("memtype", "normal"),
                                              MEMATTR["device"]),
                       "xn": XN_NONE if "x" in e.extra.get("perms", "") else XN_ALL}
                yield from self._block_write(e)
            elif k == "host-dma":
                if self._in_ram(e.pa, e.size):
                    yield {"kind": "host-write", "pa": e.pa, "size": e.size,
                           "source": "device"}
            elif k == "sysreg-write":
                self._held[e.vcpu] = [_drop_none({
                    "kind": "sysreg-write", "vcpu": e.vcpu, "reg": e.reg, "old": e.old,
                    "new": e.new, "pc": e.pc, "el": e.el})]
            elif k == "set-way":
                yield _drop_none({"kind": "set-way", "vcpu": e.vcpu, "op": e.op, "pc": e.pc,
                                  "el": e.el})
            elif k == "tlbi":
                yield {"kind": "tlbi", "vcpu": e.vcpu, "op": e.op}
            elif k == "guest-cmo":
                yield from self._guest_cmo(e)

    def finish(self) -> Iterator[dict]:
        """Events still held back at the end of the ring."""
        for v in sorted(self._held):
            yield from self._held.pop(v)

    def _maintenance(self, e) -> Iterator[dict]:
        reason = e.rule or "shim"
        if e.kind == "flush-vm":
            for first, count in page_runs(sorted(self._mapped)) if self._mapped else ():
                yield {"kind": "hyp-maintenance", "op": "clean-inval",
                       "pa": first << PAGE_SHIFT, "size": count << PAGE_SHIFT,
                       "reason": reason}
        elif e.kind == "ic" and (e.op != "ivau" or not e.size):
            for base, size in self.ram:
                yield {"kind": "hyp-maintenance", "op": "icache-inval", "pa": base,
                       "size": size, "reason": reason}
        elif self._in_ram(e.pa, e.size):
            yield {"kind": "hyp-maintenance",
                   "op": "icache-inval" if e.kind == "ic" else "clean-inval",
                   "pa": e.pa, "size": e.size, "vcpu": e.vcpu, "reason": reason}

    def _block_write(self, e) -> Iterator[dict]:
        """A write granted on a leaf larger than a page (2 MiB block mode): the fault says
        which page was written first, but any page of the leaf may be written until the
        epoch ends unobserved, so the whole leaf is write evidence."""
        if e.access == "write" and "w" in e.extra.get("perms", "") and e.size > PAGE and \
                self._in_ram(e.pa, e.size):
            yield {"kind": "guest-access", "vcpu": e.vcpu, "pa": e.pa, "size": e.size,
                   "access": "write"}

    def _written(self, e) -> Iterator[dict]:
        """The lines a deferred write epoch changed, as guest writes (runs of lines)."""
        mask, line = e.extra.get("lines", 0), 0
        while mask >> line:
            if not (mask >> line) & 1:
                line += 1
                continue
            end = line
            while (mask >> end) & 1:
                end += 1
            if self._in_ram(e.pa + 64 * line, 64 * (end - line)):
                yield _drop_none({"kind": "guest-access", "vcpu": e.vcpu,
                                  "pa": e.pa + 64 * line, "size": 64 * (end - line),
                                  "access": "write", "pc": e.pc})
            line = end

    def _guest_cmo(self, e) -> Iterator[dict]:
        if e.op in IC_OPS:
            out = {"kind": "ic-inval", "vcpu": e.vcpu, "op": IC_OPS[e.op], "pc": e.pc}
            if IC_OPS[e.op] == "ivau" and self._in_ram(e.pa, e.size):
                out.update(pa=e.pa, size=e.size)
            yield _drop_none(out)
        elif e.op in CMO_OPS and self._in_ram(e.pa, e.size):
            yield _drop_none({"kind": "cmo-va", "vcpu": e.vcpu, "op": CMO_OPS[e.op],
                              "pa": e.pa, "size": e.size, "va": e.va, "pc": e.pc, "el": e.el})

    def _in_ram(self, pa, size) -> bool:
        if pa is None or not size:
            return False
        for b, s in self.ram:
            if b <= pa and pa + size <= b + s:
                return True
        return False


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}
