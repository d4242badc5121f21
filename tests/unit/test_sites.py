"""Watching SCTLR_EL1 without the shim (gdbplugin/capture/sites.py, unshimmed.py): finding
the write sites in RAM, their VAs through stage 1 (and a guest's own stage 2), and turning a
breakpoint hit into the trace's sysreg-write event.  Instruction words are the Arm ARM's
encodings as GNU objdump prints them for Linux (``d5181000  msr sctlr_el1, x0``)."""
from __future__ import annotations


from gdbplugin.arch.walker import Mapping
from gdbplugin.capture.live import LiveSession
from gdbplugin.capture.sites import aliases, find_sites
from gdbplugin.capture.unshimmed import BreakpointWatch
from gdbplugin.model.engine import Replay
from gdbplugin.model.trace import read_trace

MSR_SCTLR_X3 = 0xD518_1003       # msr sctlr_el1, x3
MSR_SCTLR_XZR = 0xD518_101F      # msr sctlr_el1, xzr
MRS_SCTLR = 0xD538_1000          # mrs x0, sctlr_el1: a read
MSR_SCTLR_EL12 = 0xD51D_1000     # msr sctlr_el12, x0: a VHE host's guest register
MSR_TCR = 0xD518_2040            # msr tcr_el1, x0
DC_CISW_X1 = 0xD508_7E41         # dc cisw, x1
DC_CIVAC = 0xD50B_7E20           # dc civac, x0: by VA, not set/way
BASE = 0x4000_0000


class Ram:
    """Guest RAM as a PhysMemory over numpy words."""

    def __init__(self, regions, words: dict[int, int]):
        self.regions = regions
        self.data = {b: bytearray(s) for b, s in regions}
        for pa, w in words.items():
            for b, buf in self.data.items():
                if b <= pa < b + len(buf):
                    buf[pa - b:pa - b + 4] = w.to_bytes(4, "little")

    def read(self, pa, n):
        for b, buf in self.data.items():
            if b <= pa and pa + n <= b + len(buf):
                return bytes(buf[pa - b:pa - b + n])
        raise ValueError(f"{pa:#x}+{n:#x} outside RAM")


def test_sites_are_the_sctlr_el1_writes_and_the_set_way_operations():
    """Every MSR SCTLR_EL1 (any Rt, XZR too) in every RAM region, found across the scan's
    chunk boundaries; reads, other registers, SCTLR_EL12 and DC by VA are not sites; set/way
    operations are listed apart."""
    second = 0x8000_0000
    words = {BASE + 0x1000: MSR_SCTLR_X3, BASE + 0x1ffc: MSR_SCTLR_XZR,   # chunk edge
             BASE + 0x2000: MRS_SCTLR, BASE + 0x2004: MSR_SCTLR_EL12, BASE + 0x2008: MSR_TCR,
             BASE + 0x200c: DC_CIVAC, BASE + 0x3000: DC_CISW_X1, second + 0x10: MSR_SCTLR_X3}
    ram = Ram([(BASE, 0x4000), (second, 0x1000)], words)
    s = find_sites(ram, ram.regions, chunk=0x1000)
    assert [(x.pa, x.rt, x.text) for x in s.writes] == [
        (BASE + 0x1000, 3, "msr sctlr_el1, x3"), (BASE + 0x1ffc, 31, "msr sctlr_el1, xzr"),
        (second + 0x10, 3, "msr sctlr_el1, x3")]
    assert [(x.pa, x.text) for x in s.set_way] == [(BASE + 0x3000, "dc cisw, x1")]


def run(ia, oa, size, **attrs):
    return Mapping(ia, oa, size, 3, attrs)


def test_aliases_through_executable_stage1_leaves_and_a_guest_stage2():
    """A site's VAs: every executable (PXN clear) stage-1 run mapping its PA; a PXN run (the
    linear map of RAM) is no place to execute.  Under a guest's own stage 2 the stage-1 runs
    map IPAs: the site's PA is found through stage-2 runs executable at EL1."""
    site, kva = BASE + 0x1234, 0xFFFF_8000_1000_0000
    s1 = [run(kva, BASE, 0x20_0000, pxn=False),                  # kernel text
          run(0xFFFF_0000_0000_0000, BASE, 0x100_0000, pxn=True),  # linear map
          run(BASE, BASE, 0x1000, pxn=False)]                    # idmap, page 0 only
    assert aliases([site], s1) == {site: [kva + 0x1234]}
    assert aliases([BASE + 0x10], s1) == {BASE + 0x10: [kva + 0x10, BASE + 0x10]}
    ipa = 0x8000_0000
    s2 = [run(ipa, BASE, 0x20_0000, exec_el1=True), run(0x9000_0000, BASE, 0x1000,
                                                       exec_el1=False)]
    s1_ipa = [run(kva, ipa, 0x20_0000, pxn=False)]
    assert aliases([site], s1_ipa, s2) == {site: [kva + 0x1234]}
    assert aliases([site], s1_ipa, []) == {site: []}


class Debugger:
    """The selected vCPU stopped at a site: registers by QEMU's names."""

    def __init__(self, regs):
        self.regs = regs

    def has_register(self, name):
        return name in self.regs

    def read_registers(self, names):
        return {n: self.regs[n] for n in names}

    def read_register(self, name):
        return self.regs[name]


def test_a_hit_is_a_sysreg_write_and_a_missed_write_is_found(tmp_path):
    """A hit records SCTLR_EL1's old value (the register now) and new value (Xt), at EL1;
    the vCPU's first hit says it is running.  Turning M+C off after they were on is noted as
    caches off after boot.  A write the breakpoints missed (the register changed between two
    hits) is an unobserved transition when the trace is replayed."""
    ram = Ram([(BASE, 0x2000)], {BASE + 0x100: MSR_SCTLR_X3})
    regs = {"cpsr": 0x3c5, "SCTLR": 0x30d0_0800, "x3": 0x30d0_1805}
    dbg = Debugger(regs)
    trace = tmp_path / "t.jsonl"
    live = LiveSession(lambda: None, vcpus=2, trace=trace, policy="none")
    w = BreakpointWatch(dbg, ram, [(BASE, 0x2000)], live, vcpus=2)
    assert w.rt_of_pa == {BASE + 0x100: 3}
    ev = w.hit(1, BASE + 0x100, 3)
    assert ev == {"kind": "sysreg-write", "vcpu": 1, "reg": "SCTLR_EL1", "old": 0x30d0_0800,
                  "new": 0x30d0_1805, "pc": BASE + 0x100, "el": 1}
    regs.update(SCTLR=0x30d0_1805, x3=0x30d0_1800)
    w.hit(1, BASE + 0x100, 3)
    assert [e["new"] for e in w.caches_off] == [0x30d0_1800]
    regs.update(SCTLR=0x30d0_0801, x3=0x30d0_0800)        # M turned on behind our back
    w.hit(1, BASE + 0x100, 3)
    live.close()
    t = read_trace(trace)
    assert [d["kind"] for d in t.to_dicts()] == ["vcpu-on"] + ["sysreg-write"] * 3
    assert t.header["source"] == "gdb-breakpoints"
    missed = [f for f in Replay(t.header).run(t).findings("none")
              if f.kind == "unobserved-transition"]
    assert len(missed) == 1 and missed[0].vcpu == 1
    assert len(live.replay.transitions) == 3 and w.hits == 3
    assert all(tr["vcpu"] == 1 for tr in live.replay.transitions)
