"""Debian's Linux 6.1 arm64 kernel + busybox initramfs under the reference shim, every policy,
1 and 2 vCPUs, with the default observation (TVM kept armed, the guest's cache maintenance
trapped, writes tracked): the guest must reach its marker at EL1, and the shim's event ring
must tell a consistent story -- checked against itself, against the shim's counters, and
against the stage-2 tables the shim actually built (walked from the shared RAM file with our
walker).

Each (policy, vCPUs) pair boots once (~3-5 s of TCG); all checks share that boot.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path

import pytest

from gdbplugin.shim.launch import ShimImage, ShimParams, ShimSession, shim_config
from gdbplugin.shim.ring import Event, RingHeader

pytestmark = pytest.mark.qemu

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ["none", "rfc2013", "kvm", "xen", "fwb"]
APPEND = "console=ttyAMA0 panic=-1"
SCTLR_M, SCTLR_C = 1 << 0, 1 << 2
SCTLR_EL1_RESET = 0x30D00980
HCR_FWB, HCR_TVM = 1 << 46, 1 << 26
PAGE = 4096


@dataclass
class Boot:
    policy: str
    smp: int
    why: str
    returncode: int | None
    console: str
    events: list[Event]
    header: RingHeader
    maps: list                       # walker Mappings of the final stage 2
    walk_errors: list
    wall: float


def boot_linux(shim: ShimImage, images: Path, params: ShimParams, smp: int = 1,
               consume: bool = False, timeout: float = 90) -> Boot:
    config = shim_config(images / "vmlinuz", params, shim=shim,
                         initrd=images / "initramfs.cpio.gz", append=APPEND, smp=smp,
                         paused=False)
    import time
    with ShimSession(config, shim, consume=consume) as s:
        why = s.wait(timeout=timeout)
        wall = time.monotonic() - s.started
        header = s.header()
        walker = s.stage2()
        maps = walker.mappings()
        return Boot(params.policy, smp, why, s.returncode, s.console(), s.events, header, maps,
                    walker.errors, wall)


MATRIX = [(p, n) for p in POLICIES for n in (1, 2)]


@pytest.fixture(scope="module", params=MATRIX, ids=[f"{p}-smp{n}" for p, n in MATRIX])
def boot(request, shim, images) -> Boot:
    policy, smp = request.param
    return boot_linux(shim, images, ShimParams(policy=policy, poweroff_on_fatal=True), smp)


def by_vcpu(events: list[Event]) -> dict[int, list[Event]]:
    out = collections.defaultdict(list)
    for e in events:
        out[e.vcpu].append(e)
    return out


def test_linux_reaches_marker_at_el1(boot):
    assert boot.why == "exit" and boot.returncode == 0, \
        f"{boot.policy} smp{boot.smp}: {boot.why}\n{boot.console[-2000:]}"
    assert boot.header.halted is None, boot.header.diag
    assert "S2CACHE-BOOT-OK" in boot.console
    assert "CPU: All CPU(s) started at EL1" in boot.console
    assert "started at EL1" in boot.console.split("S2CACHE-BOOT-OK", 1)[1].splitlines()[0]
    if boot.smp > 1:
        assert f"SMP: Total of {boot.smp} processors activated" in boot.console
    assert len(boot.header.vcpus) == boot.smp
    assert sum(e.kind == "vcpu-start" for e in boot.events) == boot.smp
    assert boot.header.policy == boot.policy
    assert boot.header.policy_effective == boot.policy      # QEMU's max has FEAT_S2FWB
    print(f"{boot.policy} smp{boot.smp}: {boot.wall:.2f} s, {len(boot.events)} events, "
          f"{boot.header.stats['dabt'] + boot.header.stats['iabt']} stage-2 faults")


def test_ring_is_complete_and_in_order(boot):
    h = boot.header
    assert h.overflow == 0 and h.read_index == 0
    assert [e.seq for e in boot.events] == list(range(h.write_index))
    assert boot.events[0].kind == "shim-start"
    assert boot.events[0].extra["policy"] == boot.policy
    assert not [e for e in boot.events if e.kind.startswith("unknown") or e.kind == "diag"]
    assert boot.events[-1].kind == "smc" and boot.events[-1].extra["function"] == 0x84000008
    # the shim's counters agree with its records
    kinds = collections.Counter(e.kind for e in boot.events)
    faults = [e for e in boot.events if e.kind == "s2-fault"]
    maps = [e for e in boot.events if e.kind == "s2-map"]
    assert len(faults) == h.stats["dabt"] + h.stats["iabt"]
    assert sum(e.access == "exec" for e in faults) == h.stats["iabt"]
    assert sum(m.extra["memtype"] == "normal" for m in maps) == h.stats["map_normal"]
    assert sum(m.extra["memtype"] == "device" for m in maps) == h.stats["map_device"]
    assert kinds["s2-perm"] == h.stats["exec_grant"] + h.stats["write_grant"] + \
        h.stats["refetch"]
    assert sum(e.extra["observer"] for e in boot.events if e.kind == "s2-perm") == \
        h.stats["refetch"] == sum(e.extra["fetch"] for e in faults)
    assert sum(e.access == "write" for e in boot.events if e.kind == "s2-perm") == \
        h.stats["write_grant"] > 0
    assert kinds["sysreg-write"] == h.stats["sysreg"]
    assert kinds["flush-vm"] == h.stats["flush_vm"]
    assert kinds["smc"] + kinds["psci-cpu-on"] >= h.stats["smc"] - kinds["psci-cpu-on"]


def test_each_first_touch_maps_exactly_once(boot):
    """Every page enters stage 2 once, right after the fault that touched it; a fault that
    maps nothing was either a vCPU race (spurious) or an exec permission fault."""
    mapped: dict[int, Event] = {}
    for e in boot.events:
        if e.kind == "s2-map":
            for page in range(e.ipa, e.ipa + e.size, PAGE):
                assert page not in mapped, f"{page:#x} mapped twice: {mapped[page]} / {e}"
                mapped[page] = e
    h = boot.header
    for _vcpu, evs in by_vcpu(boot.events).items():
        for i, e in enumerate(evs):
            if e.kind != "s2-map":
                continue
            fault = evs[i - 1]
            assert fault.kind == "s2-fault" and e.ipa <= fault.ipa < e.ipa + e.size, (fault, e)
            assert fault.extra["fsc"] & 0x3C == 0x04          # a translation fault
            if e.extra["memtype"] == "normal":
                assert h.ram_base <= e.ipa and e.ipa + e.size <= h.ram_end
            else:
                assert any(b <= e.ipa < b + s for b, s in h.mmio), hex(e.ipa)
    # a fault that maps nothing: another vCPU was first (the shim counts it as spurious)
    unresolved = 0
    for _vcpu, evs in by_vcpu(boot.events).items():
        for i, e in enumerate(evs):
            if e.kind != "s2-fault":
                continue
            nxt = evs[i + 1].kind if i + 1 < len(evs) else None
            want = "s2-map" if e.extra["fsc"] & 0x3C == 0x04 else "s2-perm"
            assert e.extra["fsc"] & 0x3C in (0x04, 0x0C)
            unresolved += nxt != want
    assert unresolved == h.stats["spurious"]
    assert boot.smp > 1 or not unresolved


def test_ring_matches_the_stage2_tables(boot):
    """The final stage 2 (walked from RAM) is exactly the union of the map events, identity,
    Normal WB for RAM and Device-nGnRE for MMIO, executable where the ring says so (the
    policy's view) but where write-xor-execute holds XN: a page written (a deferred write
    fault) after it was last made executable; RAM is writable only where the ring granted a
    write (the epochs write-protect it again)."""
    assert boot.walk_errors == []
    table = {}
    for m in boot.maps:
        assert m.ia == m.oa
        for page in range(m.ia, m.ia + m.size, PAGE):
            table[page] = m.attrs
    ring, granted, held = {}, set(), set()
    last_fault = {}
    for e in boot.events:
        if e.kind == "s2-fault":
            last_fault[e.vcpu] = e
        if e.kind in ("s2-map", "s2-perm") and e.access == "write" and \
                last_fault[e.vcpu].extra["deferred"]:
            held.update(range(e.ipa, e.ipa + e.size, PAGE))     # may be held (I-cache on)
        elif e.kind == "s2-perm" and e.access == "exec":
            held.difference_update(range(e.ipa, e.ipa + e.size, PAGE))
        if e.kind == "s2-map":
            for page in range(e.ipa, e.ipa + e.size, PAGE):
                ring[page] = [e.extra["memtype"], "x" in e.extra["perms"]]
                if "w" in e.extra["perms"]:
                    granted.add(page)
        elif e.kind == "s2-perm":
            for page in range(e.ipa, e.ipa + e.size, PAGE):
                ring[page][1] |= e.access == "exec"
                if e.access == "write":
                    granted.add(page)
    assert table.keys() == ring.keys()
    normal = "Normal-WB"
    for page, (memtype, executable) in ring.items():
        attrs = table[page]
        if memtype == "normal":          # FWB: "Normal-WB (forced)"
            assert attrs["memtype"].startswith(normal), (hex(page), attrs)
        else:
            assert attrs["memtype"] == "Device-nGnRE", (hex(page), attrs)
        assert attrs["exec_el1"] == executable or (page in held and executable), hex(page)
        if memtype == "normal":
            assert attrs["s2ap"] in ("RW", "RO")
            assert attrs["s2ap"] == "RO" or page in granted, hex(page)
        else:
            assert attrs["s2ap"] == "RW"
    assert any(table[p]["s2ap"] == "RO" for p in ring)          # writes are tracked


def _maintenance(boot: Boot, kind: str) -> list[Event]:
    return [e for e in boot.events if e.kind == kind]


def test_policy_maintenance(boot):
    p, h, evs = boot.policy, boot.header, boot.events
    dc, ic, sweeps = (_maintenance(boot, k) for k in ("dc", "ic", "flush-vm"))
    assert bool(h.hcr & HCR_FWB) == (p == "fwb")
    maps = [e for e in evs if e.kind == "s2-map"]
    if p in ("none", "fwb"):
        assert dc == [] and sweeps == []
    if p == "none":
        assert ic == []
    if p in ("kvm", "fwb"):
        # an exec leaf gets an I-cache invalidate for exactly that leaf, same vCPU, next record
        execs = [e for e in evs if (e.kind == "s2-map" and "x" in e.extra["perms"])
                 or (e.kind == "s2-perm" and e.access == "exec" and not e.extra["observer"])]
        assert execs and len(ic) == len(execs)
        rule = "kvm.icache-inval-on-exec-fault"       # KVM's rule, FWB keeps it
        assert {e.rule for e in ic} == {rule}
        exec_seqs = {e.seq for e in execs}
        for _vcpu, vevs in by_vcpu(evs).items():
            for i, e in enumerate(vevs):
                if e.seq in exec_seqs:
                    j = i + 1
                    while vevs[j].kind in ("dc", "tlbi"):     # kvm cleans first; a relax
                        j += 1                                # invalidates the TLB first
                    nxt = vevs[j]
                    assert nxt.kind == "ic" and (nxt.ipa, nxt.size) == (e.ipa, e.size), (e, nxt)
    if p == "kvm":
        # every new Normal leaf is cleaned+invalidated to PoC right after it is mapped
        normal = [m for m in maps if m.extra["memtype"] == "normal"]
        assert len(dc) == len(normal)
        for _vcpu, vevs in by_vcpu(evs).items():
            for i, e in enumerate(vevs):
                if e.kind == "s2-map" and e.extra["memtype"] == "normal":
                    nxt = vevs[i + 1]
                    assert nxt.kind == "dc" and (nxt.ipa, nxt.size) == (e.ipa, e.size)
                    assert nxt.rule == "kvm.clean-on-translation-fault"
        # each vCPU's caches-on toggle flushed the VM once
        assert [s.rule for s in sweeps] == ["kvm.flush-on-cache-toggle"] * boot.smp
    if p == "xen":
        assert len(dc) == 1 and dc[0].rule == "xen.flush-on-alloc"
        assert (dc[0].ipa, dc[0].size) == (h.ram_base, h.ram_end - h.ram_base)
        first_fault = next(i for i, e in enumerate(evs) if e.kind == "s2-fault")
        assert dc[0].seq < first_fault
        assert len(ic) == 1 and ic[0].op == "ialluis"
        assert sweeps == []              # no set/way op: TVM never armed by the policy
    if p == "rfc2013":
        # point 1 until the first vCPU turned M&C on, point 2 at that moment, nothing after
        assert len(sweeps) == 1 and sweeps[0].rule == "rfc2013.flush-on-stage1-enable"
        assert dc and all(d.seq < sweeps[0].seq for d in dc)
        assert {d.rule for d in dc} == {"rfc2013.clean-first-map-uncached"}
        assert ic == []


def test_sctlr_transitions_and_tvm(boot):
    """Trapped SCTLR_EL1 writes chain (old == previous new), caches end up on; the policy
    wants TVM from reset until the caches are on (kvm, rfc2013's boot vCPU) or never,
    while observation keeps it armed to the end, so every later write is seen too."""
    for vcpu, evs in by_vcpu(boot.events).items():
        if vcpu is None:
            continue
        sctlr = [e for e in evs if e.kind == "sysreg-write" and e.reg == "SCTLR_EL1"]
        assert sctlr, f"vCPU {vcpu}: no SCTLR_EL1 write trapped"
        assert sctlr[0].old == SCTLR_EL1_RESET
        for a, b in zip(sctlr, sctlr[1:]):
            assert b.old == a.new
        assert sctlr[-1].new & (SCTLR_M | SCTLR_C) == SCTLR_M | SCTLR_C
        tvm = [e for e in evs if e.kind == "tvm"]
        assert {t.op for t in tvm} == {"arm"}
        wish = [t.extra["policy"] for t in tvm]
        # rfc2013 traps only until the first vCPU enabled stage 1 (seed point 4): the
        # secondaries start after that.
        if boot.policy == "kvm" or (boot.policy == "rfc2013" and vcpu == 0):
            assert wish == [True, False]
            on = next(e for e in sctlr if e.new & (SCTLR_M | SCTLR_C) == SCTLR_M | SCTLR_C)
            assert tvm[-1].seq > on.seq
        else:
            assert wish == [False]
