"""The replay engine's own rules (gdbplugin/model/engine.py), one small hand-written trace per
rule: what each event does to the shadow cache, what each policy's maintenance costs, when a
pending check settles, how findings are grouped and attributed.  Every expectation is argued
in its docstring from the Arm ARM, from the upstream KVM/Xen function a policy mirrors, or from
the contract the engine, hazards and README document; none is read off the tool's output.

Every trace is replayed twice, vectorized and strictly event by event (``max_batch=1``), and
the two must agree on findings, costs, statistics and every shadow-cache bit: the engine's
documented promise that batching changes nothing."""
from __future__ import annotations

import numpy as np
import pytest

import gdbplugin.model.engine  # noqa: F401  (scripts/mutate selects this file by it)
from gdbplugin.model.engine import (Cost, Replay, _access, _known, _pc_el, _runs,
                                    _small_unique)
from gdbplugin.model.trace import TraceWriter, read_trace
from oracle import BASE, RAM, replay          # tests/unit/oracle.py

POLICIES = ("none", "rfc2013", "kvm", "xen", "fwb")

PAGE, BLOCK = 4096, 2 << 20
CODE = BASE + 0x20_0000
A, B, C = BASE + 0x40_0000, BASE + 0x80_0000, BASE + 0xC0_0000
OFF, I_ON, M_ON, MC_ON = 0x0, 0x1000, 0x1, 0x1005     # SCTLR_EL1: I bit 12, C bit 2, M bit 0
MC = 0x5                                               # M and C, I clear
HCR_DC = 1 << 12                                       # HCR_EL2.DC
WB, DEVICE, NC = 0xF, 0x0, 0x5                         # stage-2 MemAttr[3:0]
LINE = 64




def found(result, policy, kind):
    return [f for f in result.findings(policy) if f.kind == kind]


def uncovered(result, kind, worlds=POLICIES):
    return {p for p in worlds if found(result, p, kind)}


def cost(result, policy):
    return result.stats["cost"][policy]


def page_index(pa):
    return (pa - BASE) // PAGE


def bits(result, policy, state, pa):
    return int(result.worlds[policy].cache.bits[state][page_index(pa)])


def on(v=0, **kw):
    return {"kind": "vcpu-on", "vcpu": v, **kw}


def off(v=0):
    return {"kind": "vcpu-off", "vcpu": v}


def sctlr(old, new, v=0, pc=None, reg="SCTLR_EL1"):
    e = {"kind": "sysreg-write", "vcpu": v, "reg": reg, "old": old, "new": new}
    return e if pc is None else {**e, "pc": pc}


def fault(addr, access, v=0, **kw):
    return {"kind": "s2-fault", "vcpu": v, "ipa": addr, "access": access, **kw}


def map_(ipa, v=0, size=PAGE, pa=None, memattr=WB, xn=None):
    m = {"kind": "s2-map", "ipa": ipa, "pa": ipa if pa is None else pa, "size": size,
         "memattr": memattr}
    if v is not None:
        m["vcpu"] = v
    if xn is not None:
        m["xn"] = xn
    return m


def fault_map(addr, access, v=0, size=PAGE, base=None, pa=None, memattr=WB, xn=None):
    base = addr if base is None else base
    return [fault(addr, access, v), map_(base, v, size, pa, memattr, xn)]


def host(pa, size=PAGE, source="other"):
    return {"kind": "host-write", "pa": pa, "size": size, "source": source}


def load(pa=CODE, size=PAGE):
    return host(pa, size, "load")


def gwrite(pa, size=LINE, v=0, pc=None):
    e = {"kind": "guest-access", "vcpu": v, "pa": pa, "size": size, "access": "write"}
    return e if pc is None else {**e, "pc": pc}


def dc(op, pa, size=PAGE, v=0):
    return {"kind": "cmo-va", "vcpu": v, "op": op, "pa": pa, "size": size}


def hyp(op, pa, size=PAGE, **kw):
    return {"kind": "hyp-maintenance", "op": op, "pa": pa, "size": size, **kw}


def setway(v=0, op="cisw"):
    return {"kind": "set-way", "vcpu": v, "op": op}


def iallu(v=0):
    return {"kind": "ic-inval", "vcpu": v, "op": "iallu"}


def unmap(ipa, size=PAGE):
    return {"kind": "s2-unmap", "ipa": ipa, "size": size}


def access(ipa, v=0, pc=None):
    e = {"kind": "s2-access", "vcpu": v, "ipa": ipa, "access": "read"}
    return e if pc is None else {**e, "pc": pc}


FULL = (1 << 64) - 1


# -- the cost of each kind of maintenance ------------------------------------------------

def test_vm_flush_costs_one_call_over_every_mapped_page(tmp_path):
    """A VMM re-init of a vCPU that ran: KVM's kvm_arch_vcpu_ioctl_vcpu_init calls
    stage2_unmap_vm, one call over the whole VM that cleans+invalidates every mapped page (two
    here, each already cleaned once by stage2_map_walker_try_leaf at its fault); with FWB it is
    one icache_inval_all_pou and no D-side work.  rfc2013 cleans each page it maps while the
    caches are off and nothing else; Xen's maintenance is at allocation and set/way only."""
    r = replay(tmp_path, [on(), *fault_map(A, "read"), *fault_map(B, "read"), off(),
                          on(reinit=1)])
    assert cost(r, "kvm") == {"bytes_cleaned": 4 * PAGE, "bytes_invalidated": 4 * PAGE,
                              "operations": 3, "vm_flushes": 1, "icache_invalidations": 0}
    assert cost(r, "fwb") == {"bytes_cleaned": 0, "bytes_invalidated": 0, "operations": 1,
                              "vm_flushes": 0, "icache_invalidations": 1}
    assert cost(r, "rfc2013") == {"bytes_cleaned": 2 * PAGE, "bytes_invalidated": 2 * PAGE,
                                  "operations": 2, "vm_flushes": 0, "icache_invalidations": 0}
    assert cost(r, "none") == cost(r, "xen") == Cost().as_dict()


def test_xen_set_way_and_toggle_flushes(tmp_path):
    """Xen traps the guest's first set/way operation (p2m_set_way_flush): TVM is armed and
    p2m_flush_vm cleans+invalidates every mapped page, and p2m_cache_flush_range ends with
    invalidate_icache().  The following caches-on is trapped under TVM (p2m_toggle_cache):
    the same flush again, after which TVM is dropped, so the caches-off is not trapped.  KVM
    armed TVM at vCPU init, so kvm_set_way_flush does nothing at the set/way (it relies on
    the toggle trap), flushes once at the caches-on (kvm_toggle_cache) and drops TVM too."""
    r = replay(tmp_path, [on(), *fault_map(A, "write"), *fault_map(B, "read"), setway(),
                          sctlr(OFF, MC_ON), sctlr(MC_ON, OFF)])
    assert cost(r, "xen") == {"bytes_cleaned": 4 * PAGE, "bytes_invalidated": 4 * PAGE,
                              "operations": 4, "vm_flushes": 2, "icache_invalidations": 2}
    assert cost(r, "kvm")["vm_flushes"] == 1
    assert cost(r, "kvm")["operations"] == 3                # two maps and one flush
    assert cost(r, "kvm")["bytes_cleaned"] == 4 * PAGE
    # The page written with the MMU off (Device-nGnRnE accesses) is stale only under `none`:
    # every other policy flushed it before the caches came on, and the last rule to clean it
    # is named (for fwb, the forced write-back made the write cacheable in the first place).
    (f,) = found(r, "none", "stage1-enable-stale")
    assert (f.pa, f.size) == (A, PAGE)
    assert f.covered_by == ["fwb.force-write-back", "kvm.flush-on-cache-toggle",
                            "rfc2013.flush-on-stage1-enable", "xen.flush-on-toggle"]
    assert uncovered(r, "stage1-enable-stale") == {"none"}


def test_xen_flushes_ram_at_allocation_once_per_ram_range(tmp_path):
    """Xen's alloc_heap_pages flushes each new page to RAM with flush_page_to_ram(mfn,
    sync_icache): the zeroed RAM, one call per RAM range, each followed by its I-cache
    invalidation.  The host zeroing before the guest runs (no seq) is not a host write to a
    page the guest uses: no mismatched-alias check."""
    second = BASE + 0x1000_0000
    r = replay(tmp_path, [on()], ram=[[BASE, 1 << 20], [second, 1 << 20]],
               host_zero_ram=True)
    assert cost(r, "xen") == {"bytes_cleaned": 2 << 20, "bytes_invalidated": 2 << 20,
                              "operations": 4, "vm_flushes": 0, "icache_invalidations": 2}
    assert all(not w.findings or all(f.kind == "smp-mmu-off-window" for f in w.findings)
               for w in r.worlds.values())
    # The host's zeroing left every line of RAM possibly dirty where nothing cleaned it.
    assert r.worlds["none"].cache.lines("dirty") == (2 << 20) // LINE
    assert r.worlds["xen"].cache.lines("dirty") == 0


def test_a_range_flush_costs_the_bytes_of_its_range(tmp_path):
    """XEN_DOMCTL_cacheflush -> p2m_cache_flush_range over what the builder copied: the
    clean covers that range, so its cost is the range's bytes (a partial page counts its
    bytes, two whole pages count two pages), each followed by one whole I-cache
    invalidation."""
    r = replay(tmp_path, [load(CODE + 0x100, 0x100), load(A, 2 * PAGE)])
    assert cost(r, "xen") == {"bytes_cleaned": 0x100 + 2 * PAGE,
                              "bytes_invalidated": 0x100 + 2 * PAGE,
                              "operations": 4, "vm_flushes": 0, "icache_invalidations": 2}


def test_the_observed_world_costs_what_the_trace_says(tmp_path):
    """hyp-maintenance events are the traced hypervisor's own maintenance: each is one call,
    a clean counts as cleaned bytes, an invalidate as invalidated bytes, a clean+invalidate
    as both, and an I-cache invalidation as one I-side operation.  They change only the
    observed world; the policies' worlds neither pay for them nor see their effect."""
    r = replay(tmp_path, [on(), *fault_map(A, "write"), *fault_map(B, "write"),
                          *fault_map(C, "write"),
                          hyp("clean", A), hyp("inval", B, 2 * PAGE), hyp("clean-inval", C, LINE),
                          hyp("icache-inval", CODE)])
    assert cost(r, "observed") == {"bytes_cleaned": PAGE + LINE,
                                   "bytes_invalidated": 2 * PAGE + LINE, "operations": 4,
                                   "vm_flushes": 0, "icache_invalidations": 1}
    assert cost(r, "none") == Cost().as_dict()
    # The MMU-off writes (Device-nGnRnE) left RAM newer than any cached copy: stale.  A clean
    # does not discard a stale clean line; an invalidate does, and only over its range.
    assert bits(r, "observed", "stale", A) == FULL
    assert bits(r, "observed", "stale", B) == 0
    assert bits(r, "observed", "stale", C) == FULL & ~1
    assert bits(r, "none", "stale", B) == FULL


def test_kvm_invalidates_the_icache_once_per_leaf_made_executable(tmp_path):
    """KVM maps data faults non-executable (user_mem_abort) and invalidates the I-cache when
    a leaf becomes executable: a new leaf installed on an instruction fault
    (stage2_map_walker_try_leaf) or a permission fault adding X (stage2_attr_walker).  Two
    exec faults, then a data-mapped page fetched: three invalidations; a second exec fault on
    an already executable leaf costs nothing.  FWB keeps this I-side work."""
    r = replay(tmp_path, [on(), *fault_map(A, "exec"), *fault_map(B, "exec"),
                          fault(A, "exec"), *fault_map(C, "read"), fault(C, "exec")])
    assert cost(r, "kvm")["icache_invalidations"] == 3
    assert cost(r, "kvm")["operations"] == 3 + 3       # three maps, three invalidations
    assert cost(r, "fwb") == {"bytes_cleaned": 0, "bytes_invalidated": 0, "operations": 3,
                              "vm_flushes": 0, "icache_invalidations": 3}
    assert cost(r, "none")["icache_invalidations"] == 0


def test_two_exec_faults_in_one_run_each_cost_an_invalidation(tmp_path):
    """The same rule when both exec faults are permission faults on pages already mapped by
    data faults, back to back: two leaves become executable, two icache_inval_pou calls."""
    r = replay(tmp_path, [on(), *fault_map(A, "read"), *fault_map(B, "read"),
                          fault(A, "exec"), fault(B, "exec")])
    assert cost(r, "kvm")["icache_invalidations"] == 2


def test_a_block_map_is_one_maintenance_call(tmp_path):
    """stage2_map_walker_try_leaf cleans a new 2 MiB block leaf with one
    dcache_clean_inval_poc over its size: one operation, 2 MiB cleaned."""
    r = replay(tmp_path, [on(), *fault_map(A + PAGE, "read", size=BLOCK, base=A)])
    assert cost(r, "kvm") == {"bytes_cleaned": BLOCK, "bytes_invalidated": BLOCK,
                              "operations": 1, "vm_flushes": 0, "icache_invalidations": 0}
    assert r.stats["pages_mapped"] == BLOCK // PAGE


def test_kvm_cleans_what_it_unmaps(tmp_path):
    """stage2_unmap_walker cleans+invalidates each unmapped page to PoC (one call per page
    here); an unmap of IPA space outside RAM has no RAM to clean."""
    r = replay(tmp_path, [on(), *fault_map(A, "read"), *fault_map(A + PAGE, "read"),
                          unmap(A, 2 * PAGE), unmap(0x1000_0000)])
    assert cost(r, "kvm") == {"bytes_cleaned": 4 * PAGE, "bytes_invalidated": 4 * PAGE,
                              "operations": 4, "vm_flushes": 0, "icache_invalidations": 0}
    assert cost(r, "fwb")["operations"] == 0
    assert r.unmaps == 2 and r.maps == 2
    assert r.stats["pages_mapped"] == 0 and r.stats["pages_ever_mapped"] == 0


# -- vCPU state --------------------------------------------------------------------------

def test_a_vcpu_enters_with_mmu_and_caches_off(tmp_path):
    """PSCI CPU_ON (and reset) enter the guest with SCTLR_EL1.M, C and I clear (PSCI
    DEN0022, CPU_ON's entry state): a vCPU that had everything on, went off and came back
    writes SCTLR_EL1 with old value 0, and that is no unobserved transition.  Its next
    enable is a real 0->1 transition, so the caches-on check runs: a page it wrote with the
    MMU off (Device-nGnRnE, non-cacheable) may now be shadowed by a stale clean line where
    no policy flushed (KVM's TVM was dropped at the first enable and CPU_ON does not re-arm
    it: kvm_psci_vcpu_on leaves HCR_EL2 alone; the RFC traps only until the first stage-1
    enable, seed point 4)."""
    r = replay(tmp_path, [on(), sctlr(OFF, MC_ON), off(), on(), *fault_map(A, "write"),
                          sctlr(OFF, MC_ON)])
    assert not found(r, "none", "unobserved-transition")
    assert uncovered(r, "stage1-enable-stale") == {"none", "rfc2013", "kvm", "xen"}
    assert r.stats["window"]["start_seq"] == 0
    # A vCPU that never ran: its first SCTLR_EL1 write finds the reset value 0 too.
    r = replay(tmp_path, [on(1), sctlr(OFF, MC_ON, v=1)], vcpus=2)
    assert not found(r, "none", "unobserved-transition")


def test_the_smp_mmu_off_window(tmp_path):
    """The window opens at the first vCPU's entry and closes when any vCPU first sets
    SCTLR_EL1.M; first maps are counted inside or after it, each page once (a second map of
    a mapped page is not a first map).  It is information, reported once per world."""
    r = replay(tmp_path, [load(A), on(0), on(1), *fault_map(A, "read"),
                          *fault_map(B, "read", v=1), sctlr(OFF, M_ON, v=1),
                          *fault_map(C, "read"), *fault_map(C, "read"), sctlr(OFF, M_ON, v=0),
                          *fault_map(C + PAGE, "read", v=1)], vcpus=2)
    want = ("every vCPU had its MMU off from seq 1 to 7: 2 pages first mapped inside the "
            "window, 2 after it")
    for name, w in r.worlds.items():
        (f,) = [f for f in w.findings if f.kind == "smp-mmu-off-window"]
        assert (f.seq, f.vcpu, f.message) == (1, None, want), name
    assert r.stats["window"] == {"start_seq": 1, "end_seq": 7, "first_maps_inside": 2,
                                 "first_maps_outside": 2, "pages_inside": 0,
                                 "pages_outside": 0}
    assert "smp-mmu-off-window" not in {f.kind for f in r.uncovered("none")}
    assert "first-map-uncached" in {f.kind for f in r.uncovered("none")}


def test_no_window_without_a_vcpu_and_an_open_window_to_the_end(tmp_path):
    """No vCPU ever entered: there is no window.  No vCPU ever set M: it lasts to the end,
    and a 2 MiB block first mapped in it counts its 512 pages."""
    r = replay(tmp_path, [*fault_map(A, "read")])
    assert not found(r, "none", "smp-mmu-off-window")
    r = replay(tmp_path, [on(), *fault_map(A, "read", size=BLOCK), sctlr(OFF, I_ON)])
    (f,) = found(r, "none", "smp-mmu-off-window")
    assert f.message == ("every vCPU had its MMU off from seq 0 to the end: 512 pages first "
                         "mapped inside the window, 0 after it")


# -- host writes ---------------------------------------------------------------------------

def test_a_host_write_makes_lines_dirty_and_new_code(tmp_path):
    """The host writes through its cacheable linear map: the lines may now be dirty (newer
    than RAM), they are no longer stale (the cache holds the newest data), and they are new
    code for the I-cache.  The guest still reads the page with its MMU off
    (Device-nGnRnE): a mismatched alias under every policy but FWB, whose stage 2 forces
    Normal WB (no policy's host-write maintenance covers a write that is neither allocation
    nor a builder load)."""
    r = replay(tmp_path, [on(), *fault_map(A, "write"), host(A, 2 * LINE)])
    assert bits(r, "none", "stale", A) == FULL & ~0b11
    assert bits(r, "none", "dirty", A) == 0b11
    assert bits(r, "none", "code", A) == FULL
    (f,) = found(r, "none", "mismatched-alias")
    assert (f.pa, f.size, f.vcpu, f.seq) == (A, PAGE, None, 3)
    assert uncovered(r, "mismatched-alias") == {"none", "rfc2013", "kvm", "xen"}
    assert f.covered_by == ["fwb.force-write-back"]


def test_mismatched_alias_needs_a_mapped_page_and_an_online_vcpu(tmp_path):
    """A host write to a page no vCPU has mapped, or while no vCPU runs, is no alias the
    guest can observe; with a vCPU online and MMU-off it is (the second vCPU's caches being
    on does not make the first's accesses cacheable)."""
    events = [on(0), on(1), sctlr(OFF, MC_ON, v=1), *fault_map(A, "read", v=1),
              host(B)]
    r = replay(tmp_path, events, vcpus=2)
    assert not found(r, "none", "mismatched-alias")
    r = replay(tmp_path, events + [host(A)], vcpus=2)
    assert [f.pa for f in found(r, "none", "mismatched-alias")] == [A]
    r = replay(tmp_path, events + [off(0), host(A)], vcpus=2)
    assert not found(r, "none", "mismatched-alias")
    r = replay(tmp_path, events + [off(0), off(1), host(A)], vcpus=2)
    assert not found(r, "none", "mismatched-alias")
    # Only the pages the host wrote are judged, not the dirty mapped pages around them.
    r = replay(tmp_path, [load(A), load(A + 2 * PAGE), on(), *fault_map(A, "read"),
                          *fault_map(A + 2 * PAGE, "read"), host(A + PAGE)])
    assert not found(r, "none", "mismatched-alias")


# -- guest writes ----------------------------------------------------------------------

def test_guest_writes_and_line_clears_keep_their_order_in_a_run(tmp_path):
    """Guest writes are replayed vectorized, set before the rest of their run: that is right
    only while nothing earlier in the run touched their lines.  A line cleaned and then
    written again is dirty (the write came last), one written and then cleaned is clean,
    whatever else the run holds."""
    head = [on(), *fault_map(A, "read"), sctlr(OFF, MC_ON)]      # A mapped, caches on
    r = replay(tmp_path, head + [dc("civac", A, LINE), gwrite(A, LINE)])
    assert bits(r, "none", "dirty", A) == 1
    r = replay(tmp_path, head + [gwrite(A, LINE), dc("civac", A, LINE)])
    assert bits(r, "none", "dirty", A) == 0
    r = replay(tmp_path, head + [dc("civac", A, LINE), gwrite(A + LINE, LINE),
                                 dc("civac", A + 2 * LINE, LINE), gwrite(A, 3 * LINE)])
    assert bits(r, "none", "dirty", A) == 0b111 and bits(r, "none", "code", A) == 0b111
    # The hypervisor retypes the page to Device (stage2_attr_walker) and the guest then
    # writes it: a non-cacheable write, RAM newer than any cached copy (stale), not dirty;
    # under FWB stage 2 forces Write-Back whatever the leaf says.
    retype = {"kind": "s2-attr", "ipa": A, "size": PAGE, "memattr": DEVICE}
    r = replay(tmp_path, head + [retype, gwrite(A, LINE)])
    assert (bits(r, "none", "stale", A), bits(r, "none", "dirty", A)) == (1, 0)
    assert (bits(r, "fwb", "stale", A), bits(r, "fwb", "dirty", A)) == (0, 1)

def test_guest_writes_are_dirty_when_cacheable_and_stale_when_not(tmp_path):
    """A guest write with the MMU off is Device-nGnRnE (not cacheable): RAM becomes newer
    than any clean copy, the lines are stale.  With M and C on and a Normal WB stage 2 it is
    cacheable: dirty.  Through a stage-2 Device mapping it is non-cacheable again whatever
    stage 1 says (the combination takes the stronger type).  A read changes nothing."""
    r = replay(tmp_path, [on(), *fault_map(A, "read"), *fault_map(B, "read"),
                          *fault_map(C, "read", memattr=DEVICE),
                          {"kind": "guest-access", "vcpu": 0, "pa": B, "size": PAGE,
                           "access": "read"},
                          gwrite(A), sctlr(OFF, MC), gwrite(B + LINE), gwrite(C)])
    assert (bits(r, "none", "stale", A), bits(r, "none", "dirty", A)) == (1, 0)
    assert (bits(r, "none", "stale", B), bits(r, "none", "dirty", B)) == (0, 2)
    assert (bits(r, "none", "stale", C), bits(r, "none", "dirty", C)) == (1, 0)
    assert bits(r, "none", "code", B) == 2
    # FWB: MT_S2_FWB_NORMAL with HCR_EL2.FWB forces Normal WB for RAM, MMU off or not.
    assert (bits(r, "fwb", "stale", A), bits(r, "fwb", "dirty", A)) == (0, 1)
    assert (bits(r, "fwb", "stale", C), bits(r, "fwb", "dirty", C)) == (0, 1)


def test_a_write_fault_writes_its_page_as_the_vcpu_sees_it(tmp_path):
    """A stage-2 write fault is evidence that the faulting page is written once it is
    mapped: non-cacheably with the MMU off (stale), cacheably with M and C on (dirty).  The
    other pages of a block mapped for it are not written, and a read fault writes nothing."""
    r = replay(tmp_path, [on(), *fault_map(A + PAGE, "write", size=BLOCK, base=A),
                          *fault_map(B, "read"), sctlr(OFF, MC), *fault_map(C, "write")])
    assert bits(r, "none", "stale", A + PAGE) == FULL
    assert bits(r, "none", "stale", A) == 0 and bits(r, "none", "stale", A + 2 * PAGE) == 0
    assert bits(r, "none", "stale", B) == 0 and bits(r, "none", "dirty", B) == 0
    assert (bits(r, "none", "dirty", C), bits(r, "none", "stale", C)) == (FULL, 0)
    # KVM cleaned each new leaf at its fault (stage2_map_walker_try_leaf), then the guest
    # wrote: the write comes after the clean.  The MMU-off write was flushed at the
    # caches-on (kvm_toggle_cache under TVM).
    assert bits(r, "kvm", "stale", A + PAGE) == 0 and bits(r, "kvm", "dirty", C) == FULL
    assert bits(r, "xen", "stale", A + PAGE) == FULL


def test_dc_zva_is_a_write(tmp_path):
    """DC ZVA writes zeros to a block: with M on and C off, stage 1 makes data accesses
    Normal Non-cacheable, so the zeroed lines are newer in RAM than any clean cached copy
    (stale).  At the caches-on only rfc2013 (seed point 2) and KVM (TVM from vCPU init,
    kvm_toggle_cache) flush; Xen has no TVM without a set/way operation."""
    r = replay(tmp_path, [on(), sctlr(OFF, M_ON), *fault_map(A, "read"),
                          dc("zva", A + LINE, LINE), sctlr(M_ON, MC)])
    assert uncovered(r, "stage1-enable-stale") == {"none", "xen"}
    assert bits(r, "none", "stale", A) == 2


@pytest.mark.parametrize("op,stale", [("cvac", True), ("cvau", True), ("ivac", False),
                                      ("civac", False)])
def test_a_clean_does_not_discard_stale_lines(tmp_path, op, stale):
    """The page is written with the MMU off (stale), the guest maintains it by VA, takes a
    permission fault on it (an instruction fetch, a change of the page) and turns its
    caches on.  DC CVAC and CVAU only write dirty data back (to PoC, to PoU) and leave a
    stale clean line valid; DC IVAC (performed as a clean+invalidate under HCR_EL2.VM) and
    CIVAC discard it.  Xen does nothing at the enable."""
    r = replay(tmp_path, [on(), *fault_map(A, "write"), dc(op, A), fault(A, "exec"),
                          sctlr(OFF, MC_ON)])
    assert ("xen" in uncovered(r, "stage1-enable-stale")) is stale
    assert ("none" in uncovered(r, "stage1-enable-stale")) is stale


def test_a_clean_between_two_changes_of_a_page_keeps_its_place(tmp_path):
    """Written with the MMU off (stale), invalidated (DC IVAC), written again by a
    permission fault: the second write makes the page stale again, the first does not
    survive the invalidate.  Cleaned (DC CIVAC) after the second write instead: clean."""
    base = [on(), *fault_map(A, "write")]
    r = replay(tmp_path, base + [dc("ivac", A), fault(A, "write"), sctlr(OFF, MC_ON)])
    assert "xen" in uncovered(r, "stage1-enable-stale")
    r = replay(tmp_path, base + [fault(A, "write"), dc("civac", A), sctlr(OFF, MC_ON)])
    assert "xen" not in uncovered(r, "stage1-enable-stale")
    # A clean of the page before its first map in the run cannot clean the later write.
    r = replay(tmp_path, [on(), dc("civac", A), *fault_map(A, "write"), sctlr(OFF, MC_ON)])
    assert "xen" in uncovered(r, "stage1-enable-stale")


# -- stage 2 changes -----------------------------------------------------------------------

def test_an_unmapped_page_is_no_longer_executable(tmp_path):
    """KVM: the guest fetched from the page (exec fault, icache_inval_pou), KVM unmapped it
    (stage2_unmap_walker), the host loaded new code into it and the guest maps it again on a
    data read: user_mem_abort maps it non-executable, so no fetch can hit stale code before
    the next exec fault, which will invalidate.  The I-cache enable finds nothing under kvm
    and names that future invalidation; with no maintenance the new code may be stale."""
    r = replay(tmp_path, [on(), *fault_map(A, "exec"), unmap(A), load(A),
                          *fault_map(A, "read"), sctlr(OFF, I_ON)])
    assert {"none", "rfc2013"} <= uncovered(r, "icache-not-invalidated")
    assert "kvm" not in uncovered(r, "icache-not-invalidated")
    (f,) = found(r, "none", "icache-not-invalidated")
    assert "kvm.icache-inval-on-exec-fault" in f.covered_by


def test_an_unmap_follows_the_ipa_to_its_pa(tmp_path):
    """IPA X maps PA A (not identity).  While mapped, a host write to A is a mismatched
    alias of the MMU-off guest; once X is unmapped, A is no page the guest uses, and KVM's
    stage2_unmap_walker cleaned A (one call)."""
    x = BASE + 0x1000_0000
    head = [on(), *fault_map(x, "read", pa=A)]
    r = replay(tmp_path, head + [host(A)])
    (f,) = found(r, "none", "mismatched-alias")
    assert (f.ipa, f.pa) == (x, A)
    r = replay(tmp_path, head + [unmap(x), host(A)])
    assert not found(r, "none", "mismatched-alias")
    assert cost(r, "kvm")["operations"] == 2 and cost(r, "kvm")["bytes_cleaned"] == 2 * PAGE


def test_a_pa_is_named_by_the_ipa_whose_leaf_maps_it_now(tmp_path):
    """Findings give a page's IPA from the leaves that map it.  IPA X maps PA A and is
    unmapped; A mapped again at its own address is named A, not X.  And when X and Y both
    map A and X is then moved to PA B, A is still Y's: the latest leaf onto A decides."""
    x, y = BASE + 0x1000_0000, BASE + 0x1100_0000
    b = A + 0x10 * PAGE
    r = replay(tmp_path, [on(), *fault_map(x, "read", pa=A), unmap(x),
                          *fault_map(A, "read"), host(A)])
    (f,) = found(r, "none", "mismatched-alias")
    assert (f.ipa, f.pa) == (A, A)
    r = replay(tmp_path, [on(), *fault_map(x, "read", pa=A), *fault_map(y, "read", pa=A),
                          *fault_map(x, "read", pa=b), host(A)])
    (f,) = found(r, "none", "mismatched-alias")
    assert (f.ipa, f.pa) == (y, A)


def test_an_attribute_change_changes_the_guests_memory_type(tmp_path):
    """The guest runs with M and C on; its page is Normal WB at stage 2, so a host write is
    no mismatched alias.  The hypervisor changes the leaf to Device-nGnRnE (s2-attr on the
    IPA that maps the page): the combined type is Device, the guest's accesses are
    non-cacheable and the next host write is a mismatched alias, except under FWB, whose
    stage 2 forces Normal WB for RAM (MT_S2_FWB_NORMAL)."""
    x = BASE + 0x1000_0000
    head = [on(), sctlr(OFF, MC_ON), iallu(), *fault_map(x, "read", pa=A), host(A)]
    r = replay(tmp_path, head)
    assert not uncovered(r, "mismatched-alias")
    attr = {"kind": "s2-attr", "ipa": x, "size": PAGE, "memattr": DEVICE}
    r = replay(tmp_path, head + [attr, host(A)])
    assert uncovered(r, "mismatched-alias") == {"none", "rfc2013", "kvm", "xen"}
    # An attribute change outside RAM changes nothing here.
    attr_out = {"kind": "s2-attr", "ipa": 0x1000, "size": PAGE, "memattr": DEVICE}
    r = replay(tmp_path, head + [attr_out, host(A)])
    assert not uncovered(r, "mismatched-alias")


def test_an_attribute_change_grants_execute_in_the_observed_world_only(tmp_path):
    """The traced hypervisor mapped the page XN and later made it executable (s2-attr with
    xn 0, KVM's relax_perms), without invalidating the I-cache: in the observed world the
    I-cache enable may fetch the host-loaded code stale.  A policy's world decides
    executability by its own rule, not by the trace's.  An attribute change of a page that
    is not mapped grants nothing."""
    def events(*attrs):
        return [load(), on(), hyp("clean-inval", C), *fault_map(CODE, "read", xn=2), *attrs,
                sctlr(OFF, I_ON)]
    grant = {"kind": "s2-attr", "ipa": CODE, "size": PAGE, "memattr": WB, "xn": 0}
    (f,) = found(replay(tmp_path, events()), "none", "icache-not-invalidated")
    assert f.observed is True
    r = replay(tmp_path, events(grant))
    (f,) = found(r, "none", "icache-not-invalidated")
    assert f.observed is False
    assert found(r, "kvm", "icache-not-invalidated") == []
    r = replay(tmp_path, events(unmap(CODE), grant))
    assert not found(r, "observed", "icache-not-invalidated")


def test_a_map_without_a_vcpu_answers_the_latest_fault(tmp_path):
    """A map event that does not name its vCPU answers the latest fault (documented in
    _faults_and_maps): vCPU 1, caches on, takes the write fault, so the page is written
    cacheably (dirty), also when the map comes after an unrelated host event."""
    head = [on(0), on(1), sctlr(OFF, MC, v=1), fault(B, "read", v=0), fault(A, "write", v=1)]
    for between in ([], [host(C)]):
        r = replay(tmp_path, head + between + [map_(A, v=None)], vcpus=2)
        assert bits(r, "none", "dirty", A) == FULL and bits(r, "none", "stale", A) == 0
    # The map names vCPU 0, whose latest fault was a read of another page: nothing written.
    r = replay(tmp_path, head + [map_(A, v=0)], vcpus=2)
    assert bits(r, "none", "dirty", A) == 0 and bits(r, "none", "stale", A) == 0


def test_a_map_answers_a_fault_only_inside_its_range(tmp_path):
    """A write fault on A answered by a map of B (another page): the write is to A, which is
    still unmapped, so neither page is written yet."""
    r = replay(tmp_path, [on(), fault(A, "write"), map_(B)])
    for pa in (A, B):
        assert bits(r, "none", "stale", pa) == 0 and bits(r, "none", "dirty", pa) == 0


# -- system register writes ----------------------------------------------------------------

def test_every_register_write_is_a_transition_and_only_sctlr_drives_checks(tmp_path):
    """Every recorded register write is listed (vCPU, register, old, new, pc, seq); an
    unknown register keeps its name.  Only SCTLR_EL1 changes the vCPU's translation regime
    here: a TCR_EL1 write whose values look like M&C is not a caches-on, so the following
    SCTLR_EL1 write from 0 is consistent and is the enable."""
    r = replay(tmp_path, [on(), sctlr(OFF, MC_ON, reg="TCR_EL1", pc=0x10),
                          sctlr(0, 5, reg="FOO_EL1"), sctlr(OFF, MC_ON, pc=0x20),
                          sctlr(0, HCR_DC, reg="HCR_EL2")])
    assert r.transitions == [
        {"vcpu": 0, "reg": "TCR_EL1", "old": OFF, "new": MC_ON, "pc": 0x10, "seq": 1},
        {"vcpu": 0, "reg": "FOO_EL1", "old": 0, "new": 5, "pc": None, "seq": 2},
        {"vcpu": 0, "reg": "SCTLR_EL1", "old": OFF, "new": MC_ON, "pc": 0x20, "seq": 3},
        {"vcpu": 0, "reg": "HCR_EL2", "old": 0, "new": HCR_DC, "pc": None, "seq": 4}]
    assert not found(r, "none", "unobserved-transition")


@pytest.mark.parametrize("where", ["header", "write"])
def test_the_traced_hcr_decides_the_observed_worlds_memory_type(tmp_path, where):
    """HCR_EL2.DC=1 makes stage 1 behave as if enabled with Normal WB memory for a vCPU
    whose MMU is off (Arm ARM, HCR_EL2.DC): the traced hypervisor's guest wrote the page
    cacheably, so nothing is stale at its caches-on in the observed world, while the
    policies' worlds run with their own HCR_EL2 (no DC) and find the NC write stale."""
    events = [hyp("clean-inval", C), on(), *fault_map(A, "write"), sctlr(OFF, MC_ON)]
    header = {}
    if where == "header":
        header["hcr"] = HCR_DC
    else:
        events.insert(2, sctlr(0, HCR_DC, reg="HCR_EL2"))
    r = replay(tmp_path, events, **header)
    (f,) = found(r, "none", "stage1-enable-stale")
    assert f.observed is True
    assert found(r, "observed", "stage1-enable-stale") == []
    assert bits(r, "observed", "dirty", A) == FULL
    r = replay(tmp_path, [hyp("clean-inval", C), on(), *fault_map(A, "write"),
                          sctlr(OFF, MC_ON)])
    (f,) = found(r, "none", "stage1-enable-stale")
    assert f.observed is False


def test_an_unobserved_caches_on_makes_the_caches_off_a_caches_off_after_boot(tmp_path):
    """The capture missed the guest turning M and C on; the next write says old = M|C and
    turns them off.  The model reports the gap (only the fields that changed are named),
    adopts the old value, so the vCPU did have its caches on and the write is a caches-off
    after boot: the host-loaded page is dirty and the guest now reads it non-cacheably.  KVM
    cleaned it at its translation fault (stage2_map_walker_try_leaf), the RFC too (a fault
    with the caches off, seed point 1), Xen at the builder load (p2m_cache_flush_range)."""
    r = replay(tmp_path, [load(A), on(), *fault_map(A, "read"),
                          {**sctlr(MC, OFF, pc=0x44), "el": 1}])
    (u,) = found(r, "none", "unobserved-transition")
    assert "(M 0->1, C 0->1;" in u.message and "I " not in u.message
    assert (u.seq, u.vcpu, u.pc, u.el, u.sctlr) == (4, 0, 0x44, 1, MC)
    (f,) = found(r, "none", "caches-off-after-boot")
    assert (f.pa, f.seq, f.pc) == (A, 4, 0x44)
    assert uncovered(r, "caches-off-after-boot") == {"none"}


def test_a_caches_off_before_the_caches_were_ever_on_is_not_after_boot(tmp_path):
    """M went off but C never came on: the vCPU never had its caches on (M&C), so it can
    have no cacheably written data of its own to lose; only the guest's own caches-off after
    an enable is seed point 3."""
    r = replay(tmp_path, [load(A), on(), *fault_map(A, "read"), sctlr(OFF, M_ON),
                          sctlr(M_ON, OFF)])
    assert not found(r, "none", "caches-off-after-boot")


def test_setting_m_with_the_icache_already_on_is_a_fetch_enable(tmp_path):
    """The I-cache check runs when SCTLR_EL1.I or M goes 0->1 (hazards.py, fetch-enable):
    the guest turned I on and invalidated (IC IALLU), then the host loaded new code into a
    mapped page, then the guest set M: the new code may be fetched stale.  A write that
    changes neither I nor M (here C) raises nothing."""
    head = [on(), *fault_map(CODE, "read"), sctlr(OFF, I_ON), iallu(), load(CODE)]
    r = replay(tmp_path, head + [sctlr(I_ON, I_ON | M_ON)])
    (f,) = found(r, "none", "icache-not-invalidated")
    assert (f.pa, f.seq, f.sctlr) == (CODE, 6, I_ON | M_ON)
    r = replay(tmp_path, head + [sctlr(I_ON, I_ON | 0x4)])
    assert not found(r, "none", "icache-not-invalidated")


def test_an_icache_enable_is_judged_at_the_vcpus_next_event(tmp_path):
    """Linux's set_sctlr_el1 is msr; isb; ic iallu.  The enable is judged at the vCPU's
    next event: its IC IALLU discharges it, an IC IVAU of one line does not (it is not the
    whole-cache invalidation the sequence needs) and neither does any other event of it.
    Nothing follows: judged at the end of the trace."""
    head = [load(), on(), *fault_map(CODE, "read"), sctlr(OFF, I_ON)]
    assert not found(replay(tmp_path, head + [iallu()]), "none", "icache-not-invalidated")
    ivau = {"kind": "ic-inval", "vcpu": 0, "op": "ivau", "pa": CODE, "size": LINE}
    assert found(replay(tmp_path, head + [ivau, iallu()]), "none", "icache-not-invalidated")
    assert found(replay(tmp_path, head), "none", "icache-not-invalidated")
    (f,) = found(replay(tmp_path, head + [dc("civac", A), iallu()]), "none",
                 "icache-not-invalidated")
    assert f.seq == 4


def test_the_icache_grace_ignores_the_hypervisors_events(tmp_path):
    """Events of the hypervisor are not the vCPU's next instructions: a map that names no
    vCPU (the hypervisor mapping ahead) and the traced hypervisor's own maintenance (even
    when it says on whose behalf) do not settle the vCPU's pending I-cache enable, so its
    IC IALLU still follows the enable."""
    events = [load(), on(), *fault_map(CODE, "read"), sctlr(OFF, I_ON), map_(A, v=None),
              hyp("clean", B, vcpu=0), iallu()]
    r = replay(tmp_path, events)
    assert not found(r, "none", "icache-not-invalidated")
    # The vCPU's own TLBI is one of its instructions: it settles the enable before the IALLU.
    tlbi = {"kind": "tlbi", "vcpu": 0, "op": "vmalle1"}
    r = replay(tmp_path, events[:-1] + [tlbi, events[-1]])
    (f,) = found(r, "none", "icache-not-invalidated")
    assert f.seq == 4


def test_pending_checks_are_per_vcpu_and_settle_in_order(tmp_path):
    """Both vCPUs enable their I-caches; vCPU 1 faults next (its check settles: found),
    vCPU 0 invalidates next (discharged).  The finding is vCPU 1's."""
    r = replay(tmp_path, [load(), on(0), on(1), *fault_map(CODE, "read"),
                          sctlr(OFF, I_ON, v=0), sctlr(OFF, I_ON, v=1),
                          *fault_map(A, "read", v=1), iallu(0), iallu(1)], vcpus=2)
    (f,) = found(r, "none", "icache-not-invalidated")
    assert (f.vcpu, f.seq) == (1, 6)


def test_a_caches_off_waits_through_the_vcpus_maintenance(tmp_path):
    """U-Boot/Arm: clear C and M, then clean.  The caches-off check waits through the
    vCPU's maintenance (DC by VA, set/way, IC) and is judged at its next other event: a DC
    CIVAC of the dirty page there means nothing is lost; without it the dirty page is found
    (under every policy but FWB: KVM dropped TVM at the enable, so the caches-off is not
    trapped)."""
    head = [on(), sctlr(OFF, MC_ON), *fault_map(A, "write")]
    tail = [sctlr(MC_ON, OFF)]
    r = replay(tmp_path, head + tail + [dc("civac", A), iallu(), *fault_map(B, "read")])
    assert not found(r, "none", "caches-off-after-boot")
    r = replay(tmp_path, head + tail + [dc("cvac", B), *fault_map(B, "read")])
    (f,) = found(r, "none", "caches-off-after-boot")
    assert (f.pa, f.seq) == (A, 4)
    assert uncovered(r, "caches-off-after-boot") == {"none", "rfc2013", "kvm", "xen"}
    # Another vCPU's clean does not count for this one's: its check settled before.
    r = replay(tmp_path, [on(0), on(1), sctlr(OFF, MC_ON), *fault_map(A, "write"),
                          sctlr(MC_ON, OFF), *fault_map(B, "read"),
                          dc("civac", A, v=1)], vcpus=2)
    assert found(r, "none", "caches-off-after-boot")


# -- first non-cacheable accesses (accesses tracked) ---------------------------------------

def _dirty_then_off(vcpus=1):
    """vCPU 0 writes A, A+1 page and C cacheably, then turns its caches off."""
    return [*[on(v) for v in range(vcpus)], sctlr(OFF, MC_ON), iallu(),
            *fault_map(A, "write"), *fault_map(A + PAGE, "write"), *fault_map(C, "write"),
            sctlr(MC_ON, OFF)]


def test_contiguous_first_accesses_make_one_finding(tmp_path):
    """Each first access after the caches-off to a page with dirty lines is a hazard
    (hazards.py, nc-access); pages accessed one after another and contiguous make one finding
    (engine.access), a page elsewhere another.  An access outside RAM is none of the
    model's business."""
    r = replay(tmp_path, _dirty_then_off() + [access(0x1000), {**access(A, pc=0x80), "el": 1},
                                              access(A + PAGE), access(C)],
               accesses="tracked")
    got = [(f.pa, f.size, f.seq, f.pc, f.el, f.vcpu, f.sctlr)
           for f in found(r, "none", "caches-off-after-boot")]
    assert got == [(A, 2 * PAGE, 11, 0x80, 1, 0, OFF), (C, PAGE, 13, None, None, 0, OFF)]
    assert uncovered(r, "caches-off-after-boot") == {"none", "rfc2013", "kvm", "xen"}


def test_first_accesses_merge_only_in_order_and_per_vcpu(tmp_path):
    """Not merged: the higher page first (a run grows upwards from its first page), nor
    pages of two vCPUs (each finding has one vCPU)."""
    r = replay(tmp_path, _dirty_then_off() + [access(A + PAGE), access(A)],
               accesses="tracked")
    assert [f.pa for f in found(r, "none", "caches-off-after-boot")] == [A + PAGE, A]
    r = replay(tmp_path, _dirty_then_off(2) + [sctlr(OFF, MC_ON, v=1), sctlr(MC_ON, OFF, v=1),
                                               access(A), access(A + PAGE, v=1)],
               vcpus=2, accesses="tracked")
    assert [(f.pa, f.vcpu) for f in found(r, "none", "caches-off-after-boot")] == \
        [(A, 0), (A + PAGE, 1)]


def test_a_first_access_after_an_unrelated_finding_is_its_own(tmp_path):
    """The finding before the access is of another kind (a host write aliasing the page the
    guest now reads non-cacheably): the access's finding stands on its own."""
    r = replay(tmp_path, _dirty_then_off() + [host(A), access(A + PAGE)], accesses="tracked")
    kinds = [(f.kind, f.pa) for f in r.findings("none") if f.kind != "smp-mmu-off-window"]
    assert ("caches-off-after-boot", A + PAGE) in kinds and ("mismatched-alias", A) in kinds
    # After earlier findings, two contiguous first accesses still make one.
    r = replay(tmp_path, _dirty_then_off() + [host(A), host(C), access(A), access(A + PAGE)],
               accesses="tracked")
    assert [(f.pa, f.size) for f in found(r, "none", "caches-off-after-boot")] == \
        [(A, 2 * PAGE)]


# -- fetches of rewritten code -------------------------------------------------------------

def _rewritten(*between, fetch_at=CODE + 0x48, pc=CODE + 0x48, words=True, writer_pc=True,
               ipa=None):
    fetch = {"kind": "fetch", "vcpu": 0, "ipa": fetch_at if ipa is None else ipa}
    if pc is not None:
        fetch.update(pc=pc, el=1)
    if words is True:
        fetch.update(old=0xD503201F, new=0xAA1E03E9)
    elif words:
        fetch.update(words)
    write = gwrite(CODE + 0x40, pc=CODE + 0x800 if writer_pc else None)
    return [on(), *fault_map(CODE, "exec"), sctlr(OFF, MC_ON), iallu(),
            fault(CODE + 0x48, "write", deferred=1), write, *between, fetch]


def test_a_fetch_is_judged_on_its_line_only(tmp_path):
    """The guest rewrote line 0x40 of the page: a fetch from line 0x80, untouched since the
    I-cache enable's IC IALLU, cannot see stale code; a fetch from line 0x40 can, and the
    message names what it knows."""
    assert not found(replay(tmp_path, _rewritten(fetch_at=CODE + 0x88)), "kvm",
                     "icache-not-invalidated")
    (f,) = found(replay(tmp_path, _rewritten()), "kvm", "icache-not-invalidated")
    assert (f.seq, f.vcpu, f.el, f.sctlr, f.pa, f.size) == (7, 0, 1, MC_ON, CODE, PAGE)
    assert f.message == (f"vCPU 0 fetched line {CODE + 0x40:#x} at pc {CODE + 0x48:#x} "
                         "(instruction 0xd503201f -> 0xaa1e03e9), rewritten since the last "
                         "I-cache invalidation covering it (written by vCPU 0 at pc "
                         f"{CODE + 0x800:#x})")


def test_a_fetch_message_says_only_what_the_trace_gave(tmp_path):
    """No fetch PC, no instruction words, no writer PC: the message leaves them out."""
    (f,) = found(replay(tmp_path, _rewritten(pc=None, words=False, writer_pc=False)), "none",
                 "icache-not-invalidated")
    assert f.message == (f"vCPU 0 fetched line {CODE + 0x40:#x}, rewritten since the last "
                         "I-cache invalidation covering it")
    # Only the new word known (the old one was 0, UDF #0): both are still shown.
    (f,) = found(replay(tmp_path, _rewritten(words={"new": 0xD503201F})), "none",
                 "icache-not-invalidated")
    assert "(instruction 0x00000000 -> 0xd503201f)" in f.message


def test_a_fetch_outside_ram_or_through_another_ipa(tmp_path):
    """A fetch from an IPA outside RAM is not the model's; a fetch through an IPA mapped to
    the rewritten PA is judged on that PA."""
    assert not found(replay(tmp_path, _rewritten(ipa=0x1000)), "none",
                     "icache-not-invalidated")
    x = BASE + 0x1000_0000
    events = [on(), *fault_map(x, "exec", pa=CODE), sctlr(OFF, MC_ON), iallu(),
              gwrite(CODE + 0x40), {"kind": "fetch", "vcpu": 0, "ipa": x + 0x48}]
    (f,) = found(replay(tmp_path, events), "none", "icache-not-invalidated")
    assert (f.pa, f.ipa) == (CODE, x)


def test_ic_ivau_without_a_size_invalidates_its_line(tmp_path):
    """IC IVAU takes one address: it invalidates the line holding it.  Recorded with its PA
    but no size, it still covers the fetched line."""
    ivau = {"kind": "ic-inval", "vcpu": 0, "op": "ivau", "pa": CODE + 0x44}
    assert not found(replay(tmp_path, _rewritten(ivau)), "none", "icache-not-invalidated")
    # Without its PA nothing is known to be invalidated.
    ivau = {"kind": "ic-inval", "vcpu": 0, "op": "ivau"}
    assert found(replay(tmp_path, _rewritten(ivau)), "none", "icache-not-invalidated")


# -- set/way -------------------------------------------------------------------------------

def test_a_set_way_sweep_is_one_finding(tmp_path):
    """Consecutive set/way operations of a vCPU are one sweep, one finding that counts them;
    another event of the vCPU, or a stage-2 run, ends the sweep.  The operation is not
    trapped with no maintenance or under the RFC; KVM (access_dcsw), Xen
    (p2m_set_way_flush) and FWB (access_dcsw's NOP) each have a rule for it."""
    r = replay(tmp_path, [on(), setway(), setway(), setway(), iallu(), setway(op="csw"),
                          *fault_map(A, "read"), setway()])
    got = [(f.seq, f.message) for f in found(r, "none", "set-way-op")]
    assert got == [(1, "DC CISW by set/way: 3 operations in this sweep"),
                   (5, "DC CSW by set/way: 1 operation in this sweep"),
                   (8, "DC CISW by set/way: 1 operation in this sweep")]
    f = found(r, "none", "set-way-op")[0]
    assert f.covered_by == ["fwb.set-way-nop", "kvm.trap-set-way", "xen.trap-set-way"]
    assert f.observed is None
    assert uncovered(r, "set-way-op") == {"none", "rfc2013"}


def test_set_way_sweeps_are_per_vcpu(tmp_path):
    """Two vCPUs sweeping interleaved: each has its own sweep and finding."""
    r = replay(tmp_path, [on(0), on(1), setway(0), setway(1), setway(0)], vcpus=2)
    got = [(f.vcpu, f.message) for f in found(r, "none", "set-way-op")]
    assert got == [(0, "DC CISW by set/way: 2 operations in this sweep"),
                   (1, "DC CISW by set/way: 1 operation in this sweep")]


@pytest.mark.parametrize("traps", [True, False, None])
def test_the_traced_hypervisor_trapping_set_way(tmp_path, traps):
    """The header says whether the traced hypervisor set HCR_EL2.TSW: if so the guest's
    set/way operation reached it (observed covers it), else it did not and the observed world
    reports it too.  A header that does not say claims no trap."""
    header = {} if traps is None else {"traps_set_way": traps}
    r = replay(tmp_path, [hyp("clean", A), on(), setway()], **header)
    traps = bool(traps)
    (f,) = found(r, "none", "set-way-op")
    assert f.observed is traps
    assert bool(found(r, "observed", "set-way-op")) is not traps


# -- first maps ------------------------------------------------------------------------------

def test_first_maps_group_by_vcpu_contiguity_and_outcome(tmp_path):
    """Host-loaded pages first mapped by the MMU-off guest (Device-nGnRnE reads under dirty
    lines): contiguous pages mapped one after another by one vCPU are one finding; a gap, or
    another vCPU, starts another (engine._emit_first_maps).  The finding carries the PC and
    EL of the fault that mapped its first page."""
    r = replay(tmp_path, [load(A, 4 * PAGE), load(C, PAGE), on(0), on(1),
                          fault(A, "read", pc=0x100, el=1), map_(A),
                          *fault_map(A + PAGE, "read"),
                          *fault_map(A + 2 * PAGE, "read", v=1),
                          *fault_map(C, "read", v=1)], vcpus=2)
    got = [(f.pa, f.size, f.vcpu, f.pc, f.el, f.seq) for f in
           found(r, "none", "first-map-uncached")]
    assert got == [(A, 2 * PAGE, 0, 0x100, 1, 5), (A + 2 * PAGE, PAGE, 1, None, None, 9),
                   (C, PAGE, 1, None, None, 11)]
    for f in found(r, "none", "first-map-uncached"):
        assert f.covered_by == ["fwb.force-write-back", "kvm.clean-on-translation-fault",
                                "rfc2013.clean-first-map-uncached", "xen.builder-flush"]
        assert f.ipa == f.pa and f.observed is None
    assert uncovered(r, "first-map-uncached") == {"none"}


def test_first_maps_split_where_another_policy_differs(tmp_path):
    """Two adjacent pages, the second first mapped after vCPU 1 enabled stage 1: the RFC
    cleans only the first (its expensive path ends at the first enable, seed point 4), so the
    pages differ in outcome and are two findings, each naming the rules that cover it."""
    r = replay(tmp_path, [load(A, 2 * PAGE), on(0), on(1), *fault_map(A, "read"),
                          sctlr(OFF, MC_ON, v=1), iallu(1), *fault_map(A + PAGE, "read")],
               vcpus=2)
    first, second = found(r, "none", "first-map-uncached")
    assert (first.pa, first.size, second.pa, second.size) == (A, PAGE, A + PAGE, PAGE)
    assert "rfc2013.clean-first-map-uncached" in first.covered_by
    assert "rfc2013.clean-first-map-uncached" not in second.covered_by
    (f,) = found(r, "rfc2013", "first-map-uncached")
    assert f.pa == A + PAGE


def test_a_map_of_a_mapped_page_is_not_a_first_map(tmp_path):
    """Only a page entering stage 2 for the first time is judged: the MMU-off guest's
    second map of the page (another leaf size, say) after the host wrote it is a
    mismatched alias, not a first map."""
    r = replay(tmp_path, [on(), *fault_map(A, "read"), host(A), map_(A)])
    assert not found(r, "none", "first-map-uncached")
    assert found(r, "none", "mismatched-alias")


def test_a_first_map_reports_the_ipa_and_pa(tmp_path):
    """Stage 2 maps IPA X to PA A: a finding says both, the IPA the guest used and the PA
    whose lines are dirty; so does a finding judged later over mapped pages."""
    x = BASE + 0x1000_0000
    r = replay(tmp_path, [load(A), on(), *fault_map(x, "write", pa=A), sctlr(OFF, MC_ON)])
    (f,) = found(r, "none", "first-map-uncached")
    assert (f.ipa, f.pa) == (x, A)
    (f,) = found(r, "none", "stage1-enable-stale")
    assert (f.ipa, f.pa) == (x, A)


def test_a_map_outside_ram_is_not_tracked(tmp_path):
    """A stage-2 map of device memory (no RAM behind it) is not a page of the model: no
    maintenance, no finding, nothing mapped."""
    r = replay(tmp_path, [on(), *fault_map(0x0900_0000, "write", memattr=DEVICE)])
    assert r.stats["pages_mapped"] == 0 and r.maps == 1
    assert cost(r, "kvm")["operations"] == 0
    # Followed in the same run by a map of RAM: that one is cleaned, one call.
    r = replay(tmp_path, [on(), *fault_map(0x0900_0000, "write", memattr=DEVICE),
                          *fault_map(A, "read")])
    assert cost(r, "kvm")["operations"] == 1 and r.maps == 2


def test_ram_in_two_ranges(tmp_path):
    """Guest RAM in two ranges: the second range's pages are tracked like the first's
    (host writes, maps, cleans and findings land on the right page)."""
    second = BASE + 0x1000_0000
    r = replay(tmp_path, [load(second + PAGE), on(), *fault_map(second + PAGE, "read"),
                          hyp("clean", second + PAGE), *fault_map(second, "write"),
                          sctlr(OFF, MC_ON)], ram=[[BASE, 1 << 20], [second, 1 << 20]])
    (f,) = found(r, "none", "first-map-uncached")
    assert (f.pa, f.size) == (second + PAGE, PAGE)
    (f,) = found(r, "xen", "stage1-enable-stale")
    assert (f.pa, f.ipa) == (second, second)
    assert f.observed is False
    (f,) = found(r, "none", "first-map-uncached")
    assert r.stats["ram_pages"] == 512 and r.stats["pages_mapped"] == 2


# -- the observed world ----------------------------------------------------------------------

def test_the_observed_world_exists_only_with_traced_maintenance(tmp_path):
    """Without hyp-maintenance events there is nothing to say what the traced hypervisor
    did: no observed world, findings' ``observed`` is None.  With them, a finding the traced
    maintenance covered is observed=True."""
    events = [load(A), on(), *fault_map(A, "read")]
    r = replay(tmp_path, events)
    assert "observed" not in r.worlds
    assert found(r, "none", "first-map-uncached")[0].observed is None
    r = replay(tmp_path, [load(A), hyp("clean-inval", A), on(), *fault_map(A, "read")])
    assert found(r, "none", "first-map-uncached")[0].observed is True
    assert not found(r, "observed", "first-map-uncached")
    r = replay(tmp_path, [load(A), hyp("clean-inval", B), on(), *fault_map(A, "read")])
    assert found(r, "none", "first-map-uncached")[0].observed is False


def test_the_traced_icache_invalidation_covers_fetches(tmp_path):
    """The traced hypervisor invalidated the I-cache over the page it loaded (an
    hyp-maintenance icache-inval): the I-cache enable finds that code covered in the
    observed world.  It is not a D-side clean: the first map still reads dirty lines."""
    r = replay(tmp_path, [load(), on(), hyp("icache-inval", CODE), *fault_map(CODE, "read"),
                          sctlr(OFF, I_ON)])
    (f,) = found(r, "none", "icache-not-invalidated")
    assert f.observed is True
    (f,) = found(r, "none", "first-map-uncached")
    assert f.observed is False
    assert cost(r, "observed")["icache_invalidations"] == 1


# -- statistics and small helpers -------------------------------------------------------------

def test_stats_count_events_pages_and_the_models_memory(tmp_path):
    """The statistics count events by kind, RAM pages (4 KiB each), pages mapped now and
    ever, and the write-evidence mode; the model's memory is per page, so twice the RAM is
    twice the bytes."""
    events = [on(), *fault_map(A, "read"), *fault_map(B, "read"), unmap(B), iallu()]
    r = replay(tmp_path, events, writes="tracked")
    s = r.stats
    assert s["events"] == {"vcpu-on": 1, "s2-fault": 2, "s2-map": 2, "s2-unmap": 1,
                           "ic-inval": 1}
    assert s["ram_pages"] == RAM // PAGE
    assert (s["pages_mapped"], s["pages_ever_mapped"]) == (1, 1)
    assert s["guest_writes"] == "tracked"
    assert set(s["cost"]) == set(POLICIES)
    small = replay(tmp_path, events, ram=[[BASE, RAM // 2]]).stats
    assert small["guest_writes"] == "untracked"
    assert s["model_bytes"] == 2 * small["model_bytes"] > 0
    # Per page: in each world three 64-bit line bitmaps (dirty, stale, code), the rule of
    # the last D-side clean and of the last I-side invalidation and the executable flag, a
    # byte each (World); shared, the mapped and ever-mapped flags and the MemAttr byte.
    assert s["model_bytes"] == (RAM // PAGE) * (len(POLICIES) * (3 * 8 + 3) + 3)
    assert replay(tmp_path, []).stats["events"] == {}


def test_helpers():
    """_access: a deferred write fault is evidence of no write (its lines come later);
    _small_unique: sorted distinct small integers; _runs: consecutive runs of a page set;
    _pc_el/_known: the optional PC/EL of an event or fault context, None when absent."""
    ev = np.zeros(4, dtype=gdbplugin.model.events.EVENT_DTYPE)
    ev["access"] = [1, 1, 2, 0]
    ev["op"] = [1, 0, 1, 0]
    assert _access(ev, np.arange(4)).tolist() == [0, 1, 2, 0]
    assert _small_unique(np.array([3, 1, 3, 0])).tolist() == [0, 1, 3]
    assert _small_unique(np.zeros(0, dtype=np.int64)).size == 0
    assert [r.tolist() for r in _runs(np.array([7, 3, 4, 9, 8]))] == [[3, 4], [7, 8, 9]]
    assert _runs(np.zeros(0, dtype=np.int64)) == []
    row = np.zeros((), dtype=gdbplugin.model.events.EVENT_DTYPE)
    row["pc"], row["el"] = 0x40, 2
    assert _pc_el(row) == (None, None)
    row["present"] = gdbplugin.model.events.OPTIONAL_BIT["pc"]
    assert _pc_el(row) == (0x40, None)
    row["present"] |= gdbplugin.model.events.OPTIONAL_BIT["el"]
    assert _pc_el(row) == (0x40, 2)
    ctx = np.zeros((), dtype=[("pc", "<u8"), ("has_pc", "?"), ("el", "<i2")])
    ctx["pc"], ctx["el"] = 0x40, -1
    assert _known(ctx) == (None, None)
    ctx["has_pc"], ctx["el"] = True, 0
    assert _known(ctx) == (0x40, 0)
    assert Cost(bytes_cleaned=3).as_dict() == {"bytes_cleaned": 3, "bytes_invalidated": 0,
                                               "operations": 0, "vm_flushes": 0,
                                               "icache_invalidations": 0}


def test_replay_reads_its_header():
    """The header's facts: RAM, vCPUs with the traced HCR_EL2, host zeroing (on unless
    said otherwise), write and access tracking, set/way trapping, CTR_EL0.DIC; policies can
    be chosen."""
    rp = Replay({"ram": [[BASE, RAM]], "vcpus": 2, "hcr": HCR_DC, "writes": "tracked",
                 "accesses": "tracked", "traps_set_way": True,
                 "cpu": {"ctr_el0": 1 << 29}}, policies=["none", "kvm"])
    assert list(rp.worlds) == ["none", "kvm"]
    assert [v.hcr for v in rp.vcpus] == [HCR_DC, HCR_DC]
    assert rp.host_zero and rp.writes_tracked and rp.accesses_tracked and rp.traps_set_way
    assert rp.dic
    rp = Replay({"ram": [[BASE, RAM]], "vcpus": 1, "cpu": {"ctr_el0": 0x8444c004}})
    assert rp.host_zero and not rp.writes_tracked and not rp.accesses_tracked
    assert not rp.traps_set_way and not rp.dic
    assert list(rp.worlds) == list(POLICIES)
    assert rp.vcpus[0].hcr == 0 and not rp.vcpus[0].caches_on


def test_host_zeroing_by_default(tmp_path):
    """A header that does not say otherwise: the host zeroed guest RAM through its
    cacheable mapping before the guest ran, so a first map with the MMU off reads under
    dirty lines; Xen flushed at allocation."""
    path = tmp_path / "t.jsonl"
    with TraceWriter(path, {"ram": [[BASE, RAM]], "vcpus": 1}) as w:
        for e in [on(), *fault_map(A, "read")]:
            w.write(e)
    trace = read_trace(path)
    r = Replay(trace.header).run(trace)
    assert uncovered(r, "first-map-uncached") == {"none"}
    assert r.worlds["none"].cache.lines("dirty") == RAM // LINE


# -- order inside a run of stage-2 events (the vectorized path) ---------------------------

def test_a_clean_over_two_pages_between_their_writes(tmp_path):
    """A write fault maps and writes A, a DC CIVAC over A and B follows, then a write
    fault maps and writes B, all with the MMU off (stale lines).  The clean comes after A's
    write and before B's: at the caches-on Xen (no TVM) leaves B stale, not A."""
    r = replay(tmp_path, [on(), *fault_map(A, "write"), dc("civac", A, 2 * PAGE),
                          *fault_map(A + PAGE, "write"), sctlr(OFF, MC_ON)])
    (f,) = found(r, "xen", "stage1-enable-stale")
    assert (f.pa, f.size) == (A + PAGE, PAGE)
    assert bits(r, "none", "stale", A) == 0


def test_the_latest_map_of_a_page_sets_its_memory_type(tmp_path):
    """The hypervisor maps a page Device, then Normal WB (a second leaf for the same IPA):
    the guest, caches on, writes it cacheably (dirty), as the latest leaf says.  In the
    other order the write is non-cacheable (stale)."""
    head = [on(), sctlr(OFF, MC), map_(A, memattr=DEVICE)]
    r = replay(tmp_path, head + [map_(A, memattr=WB), gwrite(A)])
    assert (bits(r, "none", "dirty", A), bits(r, "none", "stale", A)) == (1, 0)
    head = [on(), sctlr(OFF, MC), map_(A, memattr=WB)]
    r = replay(tmp_path, head + [map_(A, memattr=DEVICE), gwrite(A)])
    assert (bits(r, "none", "dirty", A), bits(r, "none", "stale", A)) == (0, 1)


@pytest.mark.parametrize("order,kvm_finds", [(("exec", "write"), True),
                                             (("write", "exec"), False)])
def test_a_page_written_and_fetched_in_one_run_keeps_its_order(tmp_path, order, kvm_finds):
    """A data-mapped page takes an exec permission fault (KVM invalidates the I-cache,
    stage2_attr_walker) and a write permission fault.  Written after the invalidation, the
    new code is the guest's to invalidate and KVM's world finds it at the I-cache enable;
    written before, KVM's invalidation covers it."""
    r = replay(tmp_path, [on(), *fault_map(A, "read"), fault(A, order[0]), fault(A, order[1]),
                          sctlr(OFF, I_ON)])
    assert bool(found(r, "kvm", "icache-not-invalidated")) is kvm_finds
    assert found(r, "none", "icache-not-invalidated")


def test_two_pending_checks_of_one_vcpu_settle_separately(tmp_path):
    """One write turns M and C off and I on: a caches-off and an I-cache enable pending on
    the same vCPU.  The vCPU's DC CIVAC settles the I-cache check (an IC IALLU was due: the
    page the guest wrote with its caches on is new code) but the caches-off check waits
    through it; the clean of the dirty page then covers it.  DC CVAU cleans only to PoU, no
    help to the non-cacheable accesses that follow."""
    for op, lost in (("civac", []), ("cvau", [A])):
        r = replay(tmp_path, [on(), sctlr(OFF, MC), *fault_map(A, "write"), sctlr(MC, I_ON),
                              dc(op, A), *fault_map(B, "read")])
        assert [(f.pa, f.seq) for f in found(r, "none", "icache-not-invalidated")] == \
            [(A, 4)]
        assert [f.pa for f in found(r, "none", "caches-off-after-boot")] == lost


def test_a_map_in_a_later_run_carries_the_faults_context(tmp_path):
    """The fault and the map that answers it are split by an unrelated host event: the
    finding at the first map still names the fault's PC and EL."""
    r = replay(tmp_path, [load(A), on(), fault(A, "read", pc=0x100, el=1), host(C),
                          map_(A)])
    (f,) = found(r, "none", "first-map-uncached")
    assert (f.pc, f.el, f.seq) == (0x100, 1, 4)


def test_a_write_fault_answered_by_a_block_writes_the_faulting_page_of_the_right_vcpu(
        tmp_path):
    """Two vCPUs fault in one run: vCPU 1 (caches on) writes A+1 page, vCPU 0 (MMU off)
    writes C; each map answers its own vCPU's fault: A+1 page dirty, C stale."""
    r = replay(tmp_path, [on(0), on(1), sctlr(OFF, MC, v=1), fault(A + PAGE, "write", v=1),
                          fault(C, "write", v=0), map_(C, v=0), map_(A, v=1, size=BLOCK)],
               vcpus=2)
    assert (bits(r, "none", "dirty", A + PAGE), bits(r, "none", "stale", A + PAGE)) == \
        (FULL, 0)
    assert (bits(r, "none", "dirty", C), bits(r, "none", "stale", C)) == (0, FULL)
    assert bits(r, "none", "dirty", A) == 0


# -- what a finding says -------------------------------------------------------------------

def test_a_finding_at_a_register_write_carries_its_context(tmp_path):
    """A check judged at an SCTLR_EL1 write reports that write: its seq, vCPU, PC, EL and
    the new value; the IPA and PA of the first page of the run and the run's size."""
    e = {**sctlr(OFF, MC_ON, pc=0x4008_0000), "el": 1}
    r = replay(tmp_path, [on(), *fault_map(A, "write"), *fault_map(A + PAGE, "write"), e])
    (f,) = found(r, "none", "stage1-enable-stale")
    assert (f.seq, f.vcpu, f.pc, f.el, f.sctlr, f.ipa, f.pa, f.size) == \
        (5, 0, 0x4008_0000, 1, MC_ON, A, A, 2 * PAGE)
    assert f.message.startswith("the vCPU turned SCTLR_EL1.M&C on")


def test_only_m_c_and_i_are_tracked(tmp_path):
    """The model tracks SCTLR_EL1.M, C and I only: a write whose old value differs from the
    tracked one in another bit (A, alignment checking) is no unobserved transition.  One
    that differs in I is, and says so with both values."""
    r = replay(tmp_path, [on(), sctlr(0x2, 0x2)])
    assert not found(r, "none", "unobserved-transition")
    r = replay(tmp_path, [on(), sctlr(I_ON, I_ON)])
    (u,) = found(r, "none", "unobserved-transition")
    assert u.message == ("SCTLR_EL1 of vCPU 0 changed without a recorded write (I 0->1; "
                         "tracked 0x0, the write's old value 0x1000): adopted from here")
    assert [f.kind for f in r.uncovered("none")] == []


def test_icache_coverage_names_the_i_side_rules(tmp_path):
    """Host-loaded code, data-mapped, then the I-cache enable with no IC IALLU.  Under KVM
    and FWB the page is not executable yet (data faults map non-executable) and will be
    invalidated at its exec fault; Xen invalidated the whole I-cache after the builder's copy
    (p2m_cache_flush_range -> invalidate_icache()).  The D-side rule of FWB (forced
    write-back) is no cover for the I-side."""
    r = replay(tmp_path, [load(), on(), *fault_map(CODE, "read"), sctlr(OFF, I_ON)])
    (f,) = found(r, "none", "icache-not-invalidated")
    assert f.covered_by == ["kvm.icache-inval-on-exec-fault", "xen.builder-flush"]
    assert uncovered(r, "icache-not-invalidated") == {"none", "rfc2013"}


def test_a_finding_never_names_its_own_worlds_rules(tmp_path):
    """The guest writes code with caches on, cleans by set/way (Xen traps it: TVM and a VM
    flush ending with invalidate_icache()), turns its caches off (under TVM: p2m_toggle_cache
    flushes again) and its I-cache on.  KVM's finding is covered by Xen's latest I-side
    flush only: not by KVM's own rules, and `none` has none."""
    r = replay(tmp_path, [on(), sctlr(OFF, MC_ON), *fault_map(CODE, "exec"),
                          fault(CODE, "write"), setway(), sctlr(MC_ON, OFF), sctlr(OFF, I_ON)])
    (f,) = found(r, "kvm", "icache-not-invalidated")
    assert f.covered_by == ["xen.flush-on-toggle"]


def test_the_rfc_flushes_the_vm_at_the_first_stage1_enable(tmp_path):
    """rfc2013 cleans each page faulted in while the caches are off (seed point 1) and
    flushes every mapped page once, at the first stage-1 enable (seed point 2), one call."""
    r = replay(tmp_path, [on(), *fault_map(A, "write"), *fault_map(B, "read"),
                          sctlr(OFF, MC_ON), sctlr(MC_ON, OFF), sctlr(OFF, MC_ON)])
    assert cost(r, "rfc2013") == {"bytes_cleaned": 4 * PAGE, "bytes_invalidated": 4 * PAGE,
                                  "operations": 3, "vm_flushes": 1, "icache_invalidations": 0}


def test_the_first_ram_page_is_ram(tmp_path):
    """Page 0 of RAM is a page like any other: a first access there after a caches-off, or
    a fetch of rewritten code there, is judged."""
    r = replay(tmp_path, [on(), sctlr(OFF, MC_ON), iallu(), *fault_map(BASE, "write"),
                          sctlr(MC_ON, OFF), access(BASE)], accesses="tracked")
    assert [f.pa for f in found(r, "none", "caches-off-after-boot")] == [BASE]
    r = replay(tmp_path, [on(), *fault_map(BASE, "exec"), sctlr(OFF, MC_ON), iallu(),
                          gwrite(BASE), {"kind": "fetch", "vcpu": 0, "ipa": BASE}])
    assert [f.pa for f in found(r, "none", "icache-not-invalidated")] == [BASE]
    # Mapped Device at stage 2, the guest's write there is non-cacheable whatever stage 1.
    r = replay(tmp_path, [on(), sctlr(OFF, MC), *fault_map(BASE, "read", memattr=DEVICE),
                          gwrite(BASE)])
    assert (bits(r, "none", "stale", BASE), bits(r, "none", "dirty", BASE)) == (1, 0)
    # Unmapped, it is no longer used by the guest: a host write there is no alias.
    r = replay(tmp_path, [on(), *fault_map(BASE, "read"), unmap(BASE), host(BASE)])
    assert not found(r, "none", "mismatched-alias")
    # Made Device at stage 2 while the guest runs cacheably: a host write there is one.
    r = replay(tmp_path, [on(), sctlr(OFF, MC_ON), iallu(), *fault_map(BASE, "read"),
                          {"kind": "s2-attr", "ipa": BASE, "size": PAGE, "memattr": DEVICE},
                          host(BASE)])
    assert [f.pa for f in found(r, "none", "mismatched-alias")] == [BASE]


def test_set_way_finding_context(tmp_path):
    """The set/way finding reports the first operation of the sweep: its seq, vCPU, PC, EL
    and the vCPU's SCTLR_EL1 then."""
    e = {**setway(), "pc": 0x8000, "el": 1}
    r = replay(tmp_path, [on(), sctlr(OFF, MC_ON), e, setway()])
    (f,) = found(r, "rfc2013", "set-way-op")
    assert (f.seq, f.vcpu, f.pc, f.el, f.sctlr) == (2, 0, 0x8000, 1, MC_ON)
    assert f.message == "DC CISW by set/way: 2 operations in this sweep"


def test_lines_shows_the_shadow_state_of_lines(tmp_path):
    """Replay.lines (its docstring): per 64-byte line from the line holding ``pa``, its
    dirty/stale/code state in one world, whether its page is mapped, the last writer seen
    on the page, and the rules that last cleaned and I-invalidated the page ('-': none).
    KVM cleaned the page at its translation fault; the MMU-off guest then wrote one line of
    it non-cacheably (stale, new code); nothing invalidated its I-side."""
    path = tmp_path / "t.jsonl"
    with TraceWriter(path, {"ram": [[BASE, RAM]], "vcpus": 1, "host_zero_ram": False}) as w:
        for e in [on(), *fault_map(A, "read"), gwrite(A + LINE, pc=0x500)]:
            w.write(e)
    trace = read_trace(path)
    rp = Replay(trace.header)
    rp.run(trace)
    first, second = rp.lines("kvm", A + LINE + 8, 2)
    assert first == {"pa": A + LINE, "ram": True, "mapped": True, "dirty": False,
                     "stale": True, "code": True, "writer": (0, 0x500),
                     "cleaned_by": "kvm.clean-on-translation-fault", "icache_by": "-"}
    assert (second["pa"], second["stale"], second["code"]) == (A + 2 * LINE, False, False)
    (line,) = rp.lines("none", B, 1)
    assert (line["mapped"], line["writer"], line["cleaned_by"]) == (False, None, "-")
    assert rp.lines("none", 0x1000, 1) == [{"pa": 0x1000, "ram": False}]


def test_line_clears_in_one_run_add_up(tmp_path):
    """Two DC CIVACs of two different lines of a page written with the MMU off (stale): each
    discards its own line, both are gone; a third, of the next page's first line, leaves
    the first page alone."""
    r = replay(tmp_path, [on(), *fault_map(A, "write"), *fault_map(A + PAGE, "write"),
                          dc("civac", A, LINE), dc("civac", A + LINE, LINE),
                          dc("civac", A + PAGE, LINE)])
    assert bits(r, "none", "stale", A) == FULL & ~0b11
    assert bits(r, "none", "stale", A + PAGE) == FULL & ~0b1


def test_a_map_before_any_fault(tmp_path):
    """The hypervisor maps RAM before any vCPU faulted (no vCPU named, none to answer): a
    plain map, nothing written; the host-loaded page is first mapped under dirty lines."""
    r = replay(tmp_path, [load(A), map_(A, v=None), on(), sctlr(OFF, MC_ON)])
    (f,) = found(r, "none", "first-map-uncached")
    assert (f.pa, f.pc, f.el) == (A, None, None)
    assert bits(r, "none", "stale", A) == 0


def test_the_last_writer_is_the_last_write(tmp_path):
    """The fetch message names the vCPU and PC of the last write to the page; a later read
    with a PC is no write."""
    read = {"kind": "guest-access", "vcpu": 0, "pa": CODE + 0x40, "size": 4,
            "access": "read", "pc": 0x900}
    (f,) = found(replay(tmp_path, _rewritten(read)), "none", "icache-not-invalidated")
    assert f"(written by vCPU 0 at pc {CODE + 0x800:#x})" in f.message


def test_first_map_runs_need_contiguous_pages_in_order(tmp_path):
    """One vCPU first-maps A, C, A+1 page, A+3 pages, one after another in one run: no two
    consecutive maps are of contiguous pages, so four findings (a run is of pages mapped one
    after another).  Each says what it means and the vCPU's SCTLR_EL1 (MMU off: 0)."""
    r = replay(tmp_path, [load(A, 4 * PAGE), load(C), on(), *fault_map(A, "read"),
                          *fault_map(C, "read"), *fault_map(A + PAGE, "read"),
                          *fault_map(A + 3 * PAGE, "read")])
    got = [(f.pa, f.size) for f in found(r, "none", "first-map-uncached")]
    assert got == [(A, PAGE), (C, PAGE), (A + PAGE, PAGE), (A + 3 * PAGE, PAGE)]
    for f in found(r, "none", "first-map-uncached"):
        assert f.sctlr == OFF
        assert f.message.startswith("page entered stage 2 for the first time")


def test_first_map_runs_split_where_the_outcome_changes(tmp_path):
    """Three contiguous pages first mapped one after another: the middle one was loaded by
    the builder (Xen flushed it, p2m_cache_flush_range), the outer two written by the host
    otherwise (no Xen maintenance).  The outcome changes at each page, so three findings
    under `none`, only the middle one covered by Xen; under Xen, the outer two."""
    r = replay(tmp_path, [host(A), load(A + PAGE), host(A + 2 * PAGE), on(),
                          *fault_map(A, "read"), *fault_map(A + PAGE, "read"),
                          *fault_map(A + 2 * PAGE, "read")])
    got = [(f.pa, "xen.builder-flush" in f.covered_by)
           for f in found(r, "none", "first-map-uncached")]
    assert got == [(A, False), (A + PAGE, True), (A + 2 * PAGE, False)]
    assert [f.pa for f in found(r, "xen", "first-map-uncached")] == [A, A + 2 * PAGE]


def test_first_map_coverage_lists_only_worlds_that_did_not_fire(tmp_path):
    """Xen flushed RAM at allocation (flush_page_to_ram), then the host wrote the page again
    outside the builder: Xen's world fires too, so its allocation flush is not named as
    covering the finding."""
    r = replay(tmp_path, [host(A), on(), *fault_map(A, "read")], host_zero_ram=True)
    (f,) = found(r, "none", "first-map-uncached")
    assert "xen" in uncovered(r, "first-map-uncached")
    assert not any(rule.startswith("xen.") for rule in f.covered_by)


def test_a_first_map_run_grows_across_other_events(tmp_path):
    """The vCPU first-maps A, the host loads C meanwhile, then the vCPU first-maps A+1
    page and C: A and A+1 page are one run mapped one after another (the host's write maps
    nothing), C is another.  The run's coverage is every rule that covered any of its
    pages: Xen's allocation flush for A, its builder flush for A+1 page."""
    r = replay(tmp_path, [load(A + PAGE), on(), *fault_map(A, "read"), load(C),
                          *fault_map(A + PAGE, "read"), *fault_map(C, "read")],
               host_zero_ram=True)
    got = [(f.pa, f.size) for f in found(r, "none", "first-map-uncached")]
    assert got == [(A, 2 * PAGE), (C, PAGE)]
    f = found(r, "none", "first-map-uncached")[0]
    assert {"xen.flush-on-alloc", "xen.builder-flush"} <= set(f.covered_by)


# -- the cache-toggle traps ------------------------------------------------------------------

def test_toggle_flushes_only_when_m_and_c_change(tmp_path):
    """kvm_toggle_cache (and Xen's p2m_toggle_cache) flush the VM when the vCPU's caches
    (vcpu_has_cache_enabled: M&C) change state under TVM: setting M alone first changes
    nothing, the C write that completes M&C flushes and drops TVM.  Xen armed TVM at the
    guest's set/way with the caches on (p2m_set_way_flush): an I-bit write that leaves M&C
    on is no toggle, and TVM is dropped."""
    r = replay(tmp_path, [on(), sctlr(OFF, M_ON), sctlr(M_ON, MC)])
    assert cost(r, "kvm")["vm_flushes"] == 1
    r = replay(tmp_path, [on(), sctlr(OFF, MC), setway(), sctlr(MC, MC | I_ON),
                          sctlr(MC | I_ON, OFF)])
    assert cost(r, "xen")["vm_flushes"] == 1
    assert cost(r, "xen")["icache_invalidations"] == 1


def test_a_capture_gap_keeps_the_caches_ever_on(tmp_path):
    """The vCPU had its caches on, turned them off, then a write shows a missed I-bit
    change: the vCPU still had its caches on once, so its first non-cacheable access to the
    page it wrote cacheably is a caches-off-after-boot (accesses tracked).  A vCPU that
    never had M and C on together has no such hazard, even when a gap shows M was on."""
    r = replay(tmp_path, [on(), sctlr(OFF, MC_ON), iallu(), *fault_map(A, "write"),
                          sctlr(MC_ON, OFF), sctlr(I_ON, I_ON), iallu(), access(A)],
               accesses="tracked")
    assert [f.pa for f in found(r, "none", "caches-off-after-boot")] == [A]
    r = replay(tmp_path, [load(A), on(), *fault_map(A, "read"), sctlr(M_ON, OFF), access(A)],
               accesses="tracked")
    assert found(r, "none", "unobserved-transition")
    assert not found(r, "none", "caches-off-after-boot")


def test_fwb_reinit_invalidation_is_named_for_the_icache(tmp_path):
    """With FWB, a VMM re-init of a vCPU that ran invalidates the whole I-cache
    (kvm_arch_vcpu_ioctl_vcpu_init: icache_inval_all_pou): the code the host loaded before
    is covered in that world, and the rule is named together with the invalidation that
    will come when the page becomes executable."""
    r = replay(tmp_path, [load(), on(), off(), on(reinit=1), *fault_map(CODE, "read"),
                          sctlr(OFF, I_ON)])
    (f,) = found(r, "none", "icache-not-invalidated")
    assert {"fwb.icache-inval-on-vcpu-reinit", "kvm.icache-inval-on-exec-fault"} <= \
        set(f.covered_by)


def test_a_map_answers_the_fault_just_before_it(tmp_path):
    """vCPU 0 faulted earlier; after an unrelated event, vCPU 1 (caches on) takes a write
    fault and a map naming no vCPU follows at once: it answers vCPU 1's fault, so the write
    is cacheable (dirty), not vCPU 0's MMU-off kind (stale)."""
    r = replay(tmp_path, [on(0), on(1), sctlr(OFF, MC, v=1), *fault_map(B, "read", v=0),
                          host(C), fault(A, "write", v=1), map_(A, v=None)], vcpus=2)
    assert (bits(r, "none", "dirty", A), bits(r, "none", "stale", A)) == (FULL, 0)


def test_a_fault_context_gives_only_what_it_has(tmp_path):
    """A fault that gave its PC but not its EL: the first-map finding has that PC and no
    EL."""
    r = replay(tmp_path, [load(A), on(), fault(A, "read", pc=0x100), map_(A)])
    (f,) = found(r, "none", "first-map-uncached")
    assert (f.pc, f.el) == (0x100, None)


def test_a_block_answers_faults_on_its_pages_only(tmp_path):
    """A write fault on the last page of a 2 MiB block is answered by the block's map: that
    page is written.  A write fault just past the block's end is not: nothing written."""
    r = replay(tmp_path, [on(), *fault_map(A + BLOCK - PAGE, "write", size=BLOCK, base=A)])
    assert bits(r, "none", "stale", A + BLOCK - PAGE) == FULL
    r = replay(tmp_path, [on(), *fault_map(A + BLOCK, "write", size=BLOCK, base=A)])
    assert r.worlds["none"].cache.lines("stale") == 0
    r = replay(tmp_path, [on(), *fault_map(A, "write", size=BLOCK, base=A + PAGE)])
    assert r.worlds["none"].cache.lines("stale") == 0


def test_pending_checks_settle_in_trace_order(tmp_path):
    """Both vCPUs enabled their I-caches; vCPU 1 faults first, then vCPU 0: vCPU 1's check
    is judged (and reported) first, each at its own vCPU's next event."""
    r = replay(tmp_path, [load(), on(0), on(1), *fault_map(CODE, "read"),
                          sctlr(OFF, I_ON, v=0), sctlr(OFF, I_ON, v=1), fault(A, "read", v=1),
                          fault(B, "read", v=0)], vcpus=2)
    assert [f.vcpu for f in found(r, "none", "icache-not-invalidated")] == [1, 0]


@pytest.mark.parametrize("declared,events,observed", [
    ("tracked", [], True),              # declared: the world exists from the start
    ("untracked", [hyp("clean", A)], False),   # declared untracked: no observed world
    (None, [hyp("clean", A)], True),     # undeclared (hand-written): inferred from events
    (None, [], False),
    ("untracked", [hyp("icache-inval", A)], False)])
def test_the_header_declares_the_observed_world(tmp_path, declared, events, observed):
    """Replay.observe / run: a trace whose header says hypervisor maintenance was tracked
    has the observed world whatever its events; one that says it was not has none; a header
    that does not say gets it when the trace has any hyp-maintenance event."""
    header = {} if declared is None else {"hyp_maintenance": declared}
    r = replay(tmp_path, [on(), *events, *fault_map(A, "read")], **header)
    assert ("observed" in r.worlds) is observed


def test_traced_maintenance_between_two_changes_of_a_page(tmp_path):
    """The traced hypervisor cleaned+invalidated the page after the guest's MMU-off write
    (a permission fault on it follows in the same run): in the observed world nothing is
    stale at the caches-on, and that maintenance cost one call over one page."""
    r = replay(tmp_path, [on(), *fault_map(A, "write"), hyp("clean-inval", A),
                          fault(A, "exec"), sctlr(OFF, MC_ON)])
    (f,) = found(r, "none", "stage1-enable-stale")
    assert f.observed is True
    assert cost(r, "observed") == {"bytes_cleaned": PAGE, "bytes_invalidated": PAGE,
                                   "operations": 1, "vm_flushes": 0,
                                   "icache_invalidations": 0}


def test_an_attribute_change_can_revoke_execute_in_the_observed_world(tmp_path):
    """The traced hypervisor mapped the code page executable, then made it XN (s2-attr with
    xn 2) before the I-cache enable: no fetch from it can be stale in the observed world."""
    revoke = {"kind": "s2-attr", "ipa": CODE, "size": PAGE, "memattr": WB, "xn": 2}
    r = replay(tmp_path, [load(), on(), hyp("clean-inval", C),
                          *fault_map(CODE, "read", xn=0), revoke, sctlr(OFF, I_ON)])
    (f,) = found(r, "none", "icache-not-invalidated")
    assert f.observed is True


def test_a_write_over_two_pages_names_its_writer_on_both(tmp_path):
    """A guest write that spans two pages: a fetch of rewritten code on the second page
    names that write's vCPU and PC."""
    r = replay(tmp_path, [on(), *fault_map(CODE, "exec"), *fault_map(CODE + PAGE, "exec"),
                          sctlr(OFF, MC_ON), iallu(), gwrite(CODE + PAGE - LINE, 2 * LINE,
                                                             pc=0x700),
                          {"kind": "fetch", "vcpu": 0, "ipa": CODE + PAGE}])
    (f,) = found(r, "none", "icache-not-invalidated")
    assert f.pa == CODE + PAGE and "(written by vCPU 0 at pc 0x700)" in f.message


def test_a_leaf_replaced_by_an_identity_leaf_forgets_the_old_pa(tmp_path):
    """Stage 2 maps IPA A to PA B, then the hypervisor replaces that leaf with one mapping
    IPA A to PA A (identity) and makes IPA A Device: the guest now reaches PA A through a
    Device mapping, so the host's cacheable write to A is the mismatched alias, and the
    finding names IPA A; PA B is no longer reached through IPA A."""
    r = replay(tmp_path, [on(), sctlr(OFF, MC_ON), iallu(), *fault_map(A, "read", pa=B),
                          map_(A, pa=A),
                          {"kind": "s2-attr", "ipa": A, "size": PAGE, "memattr": DEVICE},
                          host(A)])
    assert [(f.ipa, f.pa) for f in found(r, "none", "mismatched-alias")] == [(A, A)]


def test_a_second_ipa_onto_the_same_pa_leaves_the_first_leaf_alone(tmp_path):
    """IPA A maps PA B; then IPA B maps PA B too (identity).  Two leaves now reach PA B, and
    A's is still there: making IPA A Device makes the guest reach PA B non-cacheably, so
    the host's cacheable write to B is a mismatched alias (found through IPA A's leaf)."""
    r = replay(tmp_path, [on(), sctlr(OFF, MC_ON), iallu(), *fault_map(A, "read", pa=B),
                          map_(B, pa=B),
                          {"kind": "s2-attr", "ipa": A, "size": PAGE, "memattr": DEVICE},
                          host(B)])
    assert [f.pa for f in found(r, "none", "mismatched-alias")] == [B]


def attr(ipa, memattr=WB, xn=0, size=PAGE):
    return {"kind": "s2-attr", "ipa": ipa, "size": size, "memattr": memattr, "xn": xn}


def test_a_fault_after_its_leaf_moved_takes_effect_at_the_new_pa(tmp_path):
    """Within one vectorized run, the map that moves an IPA (A -> B, a non-identity leaf as a
    real hypervisor's stage 2 has) decides where the faults and attribute changes after it
    land: the permission fault's write goes to B, cacheably (dirty) while the leaf is
    Normal WB, non-cacheably (stale: stage 2 Device overrides stage 1, Arm ARM D8.2.9) once
    an s2-attr makes it Device.  Nothing lands on A, which the IPA no longer names."""
    head = [on(), sctlr(OFF, MC_ON), *fault_map(A, "read", pa=B)]
    r = replay(tmp_path, head + [fault(A, "write")])
    assert bits(r, "kvm", "dirty", B) == (1 << 64) - 1
    assert bits(r, "kvm", "stale", B) == 0
    r = replay(tmp_path, head + [attr(A, DEVICE), fault(A, "write")])
    assert bits(r, "kvm", "stale", B) == (1 << 64) - 1
    assert bits(r, "kvm", "dirty", B) == 0
    for state in ("dirty", "stale", "code"):
        assert bits(r, "kvm", state, A) == 0


def test_linux_new_code_pattern_in_one_run(tmp_path):
    """What a Linux guest does to each page of new code (its boot's most common events):
    a read fault and map, a write fault (KVM's relax_perms answers it with an s2-attr that
    keeps the memory type), DC CVAU + IC IVAU per line.  IC IVAU clears the code state of
    exactly its line (until the page is written again), DC CVAU (to PoU) no dirty state;
    the attribute changes between two writes of a page keep the type, and a later DC CIVAC
    cleans only the lines it names.  An s2-attr that does change the type between two writes of a page
    makes the second write non-cacheable (stale as well as dirty)."""
    events = [on(), sctlr(OFF, MC_ON)]
    pages = [A + i * PAGE for i in range(6)]
    for p in pages:
        events += [*fault_map(p, "read"), fault(p, "write"), attr(p)]
        events += [dc("cvau", p + LINE, LINE),
                   {"kind": "ic-inval", "vcpu": 0, "op": "ivau", "pa": p + LINE, "size": LINE}]
    events += [fault(pages[0], "write"), attr(pages[0]), dc("civac", pages[0], LINE)]
    r = replay(tmp_path, events)
    full = (1 << 64) - 1
    for p in pages:
        again = p == pages[0]           # written again after its IC IVAU: code state again
        assert bits(r, "kvm", "code", p) == (full if again else full & ~(1 << 1))
        assert bits(r, "kvm", "dirty", p) == (full & ~1 if again else full)
    r = replay(tmp_path, events + [attr(pages[1], NC), fault(pages[1], "write")])
    assert bits(r, "kvm", "stale", pages[1]) == full
    assert bits(r, "kvm", "dirty", pages[1]) == full


def test_a_fault_is_answered_until_its_vcpu_runs_again(tmp_path):
    """A vCPU that faults waits in the hypervisor until its fault is handled: every map of the
    faulting IPA before the vCPU's next event of its own is part of that handling, and the
    faulting write lands after the last of them (KVM cleans at each map: the page ends dirty).
    Once the vCPU has run again (here it cleaned another page or wrote SCTLR_EL1), its
    fault is answered: the hypervisor mapping the page again later (a remap after an
    unmap, a split) writes nothing of the guest's, so KVM's clean at that map leaves the page
    clean.  The faulting PC names a first map only while the fault is being handled."""
    full = (1 << 64) - 1
    head = [on(), sctlr(OFF, MC_ON), fault(A, "write", pc=0x1234)]
    r = replay(tmp_path, head + [map_(A), map_(A)])
    assert bits(r, "kvm", "dirty", A) == full
    for ran in (dc("civac", B), sctlr(MC_ON, MC_ON | 0x800)):
        r = replay(tmp_path, head + [map_(A), ran, unmap(A), map_(A)])
        assert bits(r, "kvm", "dirty", A) == 0, ran
        assert bits(r, "none", "dirty", A) == full         # nobody cleaned: still dirty
    for between, pc in (([], 0x1234), ([dc("cvau", B, LINE)], None)):
        r = replay(tmp_path, [load(A), on(), fault(A, "read", pc=0x1234), *between, map_(A)])
        (f,) = found(r, "none", "first-map-uncached")
        assert f.pc == pc


def test_a_line_clear_between_two_writes_of_a_page(tmp_path):
    """A shim tracking writes line by line re-protects a page after each write (s2-attr, XN,
    same memory type), so Linux's DC CIVAC of a line lands between two write faults of one
    page.  The second write makes the whole page dirty again (cacheable) or stale again
    (non-cacheable): the clear between them leaves what the first write's kind does not set.
    Two vCPUs, caches on and off, write the page: each write's kind decides its own bits."""
    full, line1 = (1 << 64) - 1, 1 << 1
    head = [on(0), on(1), sctlr(OFF, MC_ON, v=0),
            *fault_map(A, "read")]
    same = [fault(A, "write"), attr(A, xn=2), dc("civac", A + LINE, LINE), fault(A, "write"),
            attr(A, xn=2), {"kind": "ic-inval", "vcpu": 0, "op": "ivau", "pa": A + LINE}]
    r = replay(tmp_path, head + same, vcpus=2)
    assert bits(r, "none", "dirty", A) == full and bits(r, "none", "stale", A) == 0
    assert bits(r, "none", "code", A) == full & ~line1
    mixed = [fault(A, "write"), dc("civac", A + LINE, LINE), fault(A, "write", v=1)]
    r = replay(tmp_path, head + mixed, vcpus=2)
    assert bits(r, "none", "dirty", A) == full & ~line1        # vCPU 0's, then cleaned
    assert bits(r, "none", "stale", A) == full                 # vCPU 1 writes uncached


def test_a_clear_between_two_write_faults_stays_between_them_when_the_page_is_retyped(tmp_path):
    """Two permission faults for writes on one page with a line clean between them: each
    write sets the whole page, so the clean may be applied before both -- unless the
    hypervisor retyped the page between them (here to Device): the first write left the
    lines dirty, the clean cleans line 0, the second (non-cacheable) leaves RAM newer than
    any copy (stale) and cleans nothing.  Line 0 ends stale but not dirty."""
    head = [on(), *fault_map(A, "read"), sctlr(OFF, MC_ON)]
    retype = {"kind": "s2-attr", "ipa": A, "size": PAGE, "memattr": DEVICE}
    r = replay(tmp_path, head + [fault(A, "write"), retype, dc("civac", A, LINE),
                                 fault(A, "write")])
    assert bits(r, "none", "dirty", A) == (1 << 64) - 2
    assert bits(r, "none", "stale", A) == (1 << 64) - 1
