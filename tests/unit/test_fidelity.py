"""Small hand-written traces, one per rule of what a real boot shows, each replayed under
every policy (gdbplugin.model.engine, through the replay oracle of tests/unit/oracle.py).  The
docstrings argue each expectation from upstream KVM arm64 and Xen on Arm (the function that
decides is named), never from this tool's output."""
from __future__ import annotations

import pytest

from oracle import BASE, replay               # tests/unit/oracle.py

POLICIES = ("none", "rfc2013", "kvm", "xen", "fwb")
PAGE, BLOCK = 4096, 2 << 20
CODE = BASE + 0x20_0000                     # where the host loaded "the kernel"
OFF, I_ON, M_ON, MC_ON = 0x0, 0x1000, 0x1, 0x1005   # SCTLR_EL1: I is bit 12, C 2, M 0


def run(tmp_path, events, vcpus=1, **header):
    return replay(tmp_path, events, vcpus, **header)


def uncovered(result, kind):
    return {p for p in POLICIES if any(f.kind == kind for f in result.findings(p))}


def found(result, policy, kind):
    return [f for f in result.findings(policy) if f.kind == kind]


def on(v=0):
    return {"kind": "vcpu-on", "vcpu": v}


def sctlr(old, new, v=0, pc=None):
    e = {"kind": "sysreg-write", "vcpu": v, "reg": "SCTLR_EL1", "old": old, "new": new}
    return e if pc is None else {**e, "pc": pc}


def fault_map(addr, access, v=0, size=PAGE, base=None, xn=None):
    base = addr if base is None else base
    m = {"kind": "s2-map", "ipa": base, "pa": base, "size": size, "memattr": 0xF, "vcpu": v}
    if xn is not None:
        m["xn"] = xn
    return [{"kind": "s2-fault", "vcpu": v, "ipa": addr, "access": access}, m]


def load(pa=CODE, size=16 * PAGE):
    return {"kind": "host-write", "pa": pa, "size": size, "source": "load"}


def iallu(v=0):
    return {"kind": "ic-inval", "vcpu": v, "op": "iallu"}


# -- 1. KVM's I-side ---------------------------------------------------------------------

def test_exec_fault_inside_a_block_makes_the_whole_leaf_executable(tmp_path):
    """An instruction fetch faults 1 MiB into a 2 MiB block that KVM maps whole: the new
    leaf is installed executable and stage2_map_walker_try_leaf invalidates the I-cache for
    the whole leaf (icache_inval_pou over its size).  The I-cache enable that follows finds
    nothing under kvm and fwb; with no maintenance the host-loaded code may be stale."""
    r = run(tmp_path, [load(BASE + BLOCK, BLOCK), on(),
                       *fault_map(BASE + BLOCK + (1 << 20), "exec", size=BLOCK, base=BASE + BLOCK),
                       sctlr(OFF, I_ON)])
    assert uncovered(r, "icache-not-invalidated") == {"none", "rfc2013"}
    (f,) = found(r, "none", "icache-not-invalidated")
    assert (f.pa, f.size) == (BASE + BLOCK, BLOCK)
    assert "kvm.icache-inval-on-exec-fault" in f.covered_by
    assert r.stats["cost"]["kvm"]["icache_invalidations"] == 1
    assert f.responsibility == "hypervisor"        # the host loaded that code
    assert r.failing("none") and not r.failing("kvm")


def test_permission_fault_adding_exec_invalidates(tmp_path):
    """A page first mapped on a data read is non-executable under KVM (user_mem_abort maps
    data faults without X); the later fetch takes a permission fault and stage2_attr_walker
    (kvm_pgtable_stage2_relax_perms) invalidates the I-cache before the fetch completes.  The
    guest then writes the page (a write fault: the page is already mapped) and enables its
    I-cache without IC IALLU: that code is the guest's own, and no policy invalidates it."""
    r = run(tmp_path, [load(), on(), *fault_map(CODE, "read"),
                       {"kind": "s2-fault", "vcpu": 0, "ipa": CODE, "access": "exec"},
                       sctlr(OFF, I_ON), iallu()])
    assert not uncovered(r, "icache-not-invalidated")
    assert r.stats["cost"]["kvm"]["icache_invalidations"] == 1
    r = run(tmp_path, [load(), on(), *fault_map(CODE, "read"),
                       {"kind": "s2-fault", "vcpu": 0, "ipa": CODE, "access": "exec"},
                       {"kind": "s2-fault", "vcpu": 0, "ipa": CODE + 8, "access": "write"},
                       sctlr(OFF, I_ON)])
    (f,) = found(r, "kvm", "icache-not-invalidated")
    assert (f.pa, f.size) == (CODE, PAGE)


def test_observed_world_follows_the_traced_permissions(tmp_path):
    """The traced hypervisor mapped the code page non-executable (xn=2) and never made it
    executable: no fetch from it can be stale, so the observed world reports nothing, while
    a trace that mapped it executable (xn=0) without invalidating leaves it uncovered."""
    def events(xn):
        return [load(), on(), *fault_map(CODE, "read", xn=xn),
                {"kind": "hyp-maintenance", "op": "clean-inval", "pa": CODE, "size": PAGE},
                sctlr(OFF, I_ON)]
    assert found(run(tmp_path, events(2)), "none", "icache-not-invalidated")[0].observed
    assert found(run(tmp_path, events(0)), "none", "icache-not-invalidated")[0].observed \
        is False


# -- 2. Xen's I-side ---------------------------------------------------------------------

def test_xen_invalidates_the_icache_after_a_vm_flush(tmp_path):
    """The guest writes code with its caches on, cleans by set/way (trapped by Xen:
    p2m_set_way_flush arms TVM and defers p2m_flush_vm), and turns its caches off and its
    I-cache on.  p2m_cache_flush_range ends with invalidate_icache(), so the written code is
    covered under Xen; KVM's stage2_flush_vm is D-side only and its page was already
    executable, so the guest's own write stays the guest's job there."""
    r = run(tmp_path, [on(), sctlr(OFF, MC_ON), *fault_map(CODE, "exec"),
                       {"kind": "s2-fault", "vcpu": 0, "ipa": CODE, "access": "write"},
                       {"kind": "set-way", "vcpu": 0, "op": "cisw"},
                       sctlr(MC_ON, OFF), sctlr(OFF, I_ON)])
    assert "xen" not in uncovered(r, "icache-not-invalidated")
    assert {"kvm", "none"} <= uncovered(r, "icache-not-invalidated")


# -- 3. the I-cache grace is per vCPU ----------------------------------------------------

def test_another_vcpus_event_does_not_settle_the_enable(tmp_path):
    """Linux's set_sctlr_el1 is msr; isb; ic iallu.  vCPU 1's fault lands between vCPU 0's
    write and its IC IALLU: the invalidation still belongs to the enable, under every
    policy.  vCPU 0's own event in between settles it (then only policies that invalidate
    themselves cover it)."""
    events = [load(), on(0), on(1), *fault_map(CODE, "read"), sctlr(OFF, I_ON, v=0),
              *fault_map(BASE + 0x80_0000, "read", v=1), iallu(0)]
    assert not uncovered(run(tmp_path, events, vcpus=2), "icache-not-invalidated")
    events = [load(), on(0), on(1), *fault_map(CODE, "read"), sctlr(OFF, I_ON, v=0),
              *fault_map(BASE + 0x80_0000, "read", v=0), iallu(0)]
    assert uncovered(run(tmp_path, events, vcpus=2), "icache-not-invalidated") == \
        {"none", "rfc2013"}


# -- 5. unobserved transitions -----------------------------------------------------------

def test_a_write_whose_old_value_disagrees_is_reported_and_adopted(tmp_path):
    """The capture saw the caches go on, missed the guest turning them off, and sees the
    next write (old value: caches off).  The model reports the gap as information and adopts
    the old value: the following enable is a real off -> on transition, so the
    stage-1-enable check runs (and finds the page the guest wrote with its caches off)."""
    r = run(tmp_path, [on(), sctlr(OFF, MC_ON), *fault_map(BASE + 0x40_0000, "write"),
                       sctlr(I_ON, I_ON | 0x4, pc=0x1234)])
    (u,) = found(r, "none", "unobserved-transition")
    assert (u.pc, u.vcpu, u.sctlr) == (0x1234, 0, I_ON)
    assert "M 1->0" in u.message and "C 1->0" in u.message
    assert r.uncovered("none") == []           # info only: no exit status from it
    r = run(tmp_path, [on(), sctlr(OFF, MC_ON), sctlr(MC_ON, OFF),
                       *fault_map(BASE + 0x40_0000, "write"), sctlr(OFF, MC_ON)])
    assert not found(r, "none", "unobserved-transition")


# -- 6. caches-off settles after the vCPU's maintenance ----------------------------------

def test_caches_off_then_set_way_is_covered_by_the_trap(tmp_path):
    """U-Boot's dcache_disable clears C and M, then flushes by set/way.  KVM traps the
    DC CISW (access_dcsw -> kvm_set_way_flush -> stage2_flush_vm) before the guest does
    anything else, so the dirty page is at PoC when the guest next runs non-cacheably; Xen
    likewise (p2m_set_way_flush).  Judged at the instant of the write, it would not be."""
    events = [on(), sctlr(OFF, MC_ON), *fault_map(BASE + 0x40_0000, "write"),
              sctlr(MC_ON, OFF), {"kind": "set-way", "vcpu": 0, "op": "cisw"},
              {"kind": "set-way", "vcpu": 0, "op": "cisw"},
              *fault_map(BASE + 0x80_0000, "read")]
    r = run(tmp_path, events)
    assert uncovered(r, "caches-off-after-boot") == {"none", "rfc2013"}
    (f,) = found(r, "none", "caches-off-after-boot")
    assert f.pa == BASE + 0x40_0000 and f.seq == 4     # reported at the write itself


# -- 7. rfc2013 latches on M&C -----------------------------------------------------------

def test_rfc2013_flushes_when_c_follows_m(tmp_path):
    """U-Boot sets M first and C later.  The RFC's flush is triggered by stage 1 becoming
    enabled with caches (M&C); a latch on M alone would end the expensive path at the M write
    and the flush would never come.  Under rfc2013 the NC-written page is flushed at the C
    write; Xen (no TVM by default) leaves it stale."""
    r = run(tmp_path, [on(), *fault_map(BASE + 0x40_0000, "write"), sctlr(OFF, M_ON),
                       sctlr(M_ON, MC_ON)])
    assert uncovered(r, "stage1-enable-stale") == {"none", "xen"}


# -- 8. writes from evidence only --------------------------------------------------------

def test_no_write_evidence_no_stale_lines(tmp_path):
    """A guest that only reads its pages with its caches off leaves RAM unchanged: the
    enable finds nothing stale under any policy, Xen included (no whole-RAM findings).  One
    write fault with the caches off makes exactly that page stale under Xen (no TVM, so no
    flush at the enable), and only that page."""
    reads = [on(), *fault_map(BASE + 0x40_0000, "read"), *fault_map(BASE + 0x41_0000, "read")]
    assert not uncovered(run(tmp_path, reads + [sctlr(OFF, MC_ON)]), "stage1-enable-stale")
    r = run(tmp_path, reads + [{"kind": "s2-fault", "vcpu": 0, "ipa": BASE + 0x41_0000,
                                "access": "write"}, sctlr(OFF, MC_ON)], writes="tracked")
    (f,) = found(r, "xen", "stage1-enable-stale")
    assert (f.pa, f.size) == (BASE + 0x41_0000, PAGE)
    assert r.stats["guest_writes"] == "tracked"


# -- 9. re-maps ------------------------------------------------------------------------

def test_a_page_mapped_again_after_an_unmap_is_a_first_map(tmp_path):
    """The hypervisor unmapped a page, the host wrote it (a balloon or migration refill),
    and the MMU-off guest faults it in again: the dirty host lines make it a first map
    under `none` once more; kvm cleans it at that fault too."""
    page = BASE + 0x40_0000
    r = run(tmp_path, [on(), *fault_map(page, "read"),
                       {"kind": "s2-unmap", "ipa": page, "size": PAGE},
                       {"kind": "host-write", "pa": page, "size": PAGE, "source": "other"},
                       *fault_map(page, "read")])
    assert [f.seq for f in found(r, "none", "first-map-uncached")] == [6]
    assert uncovered(r, "first-map-uncached") == {"none", "xen"}


# -- 10. HCR_EL2 per world, PSCI CPU_ON is not a re-init --------------------------------

def test_the_traced_fwb_does_not_leak_into_other_worlds(tmp_path):
    """The traced hypervisor ran with HCR_EL2.FWB (a header HCR of bit 46): under the kvm
    and xen hypotheses it did not, so the NC write of the MMU-off guest is stale under Xen,
    while the fwb world (its own FWB) sees a Normal WB write."""
    r = run(tmp_path, [on(), *fault_map(BASE + 0x40_0000, "write"), sctlr(OFF, MC_ON)],
            hcr=1 << 46)
    assert uncovered(r, "stage1-enable-stale") == {"none", "xen"}


def test_psci_cpu_on_again_does_not_rearm_tvm(tmp_path):
    """KVM arms TVM at KVM_ARM_VCPU_INIT (vcpu_reset_hcr) and drops it once the caches are
    on.  A guest CPU_OFF/CPU_ON (kvm_psci_vcpu_on) is not an init: the second stage-1 enable
    is not trapped, so a page written with the caches off in between stays stale under kvm.
    With a VMM re-init (reinit: 1), TVM is armed again and the enable flushes."""
    page = BASE + 0x40_0000
    head = [on(), sctlr(OFF, MC_ON), {"kind": "vcpu-off", "vcpu": 0}]
    tail = [*fault_map(page, "write"), sctlr(OFF, MC_ON)]
    r = run(tmp_path, head + [on()] + tail)
    assert "kvm" in uncovered(r, "stage1-enable-stale")
    r = run(tmp_path, head + [{"kind": "vcpu-on", "vcpu": 0, "reinit": 1}] + tail)
    assert "kvm" not in uncovered(r, "stage1-enable-stale")


# -- 11. cache geometry ----------------------------------------------------------------

@pytest.mark.parametrize("ctr,expect", [(0x8444c004, {"none", "rfc2013"}),
                                        (0x8444c004 | 1 << 29, set())])
def test_dic_makes_the_icache_coherent(tmp_path, ctr, expect):
    """CTR_EL0.DIC = 1: instruction cache invalidation to PoU is not required for
    instruction-to-data coherence, so no I-cache hazard exists on such a CPU."""
    r = run(tmp_path, [load(), on(), *fault_map(CODE, "read"), sctlr(OFF, I_ON)],
            cpu={"ctr_el0": ctr})
    assert uncovered(r, "icache-not-invalidated") == expect


# -- covered_by is per finding --------------------------------------------------------

def test_covered_by_names_only_policies_that_cover_every_page(tmp_path):
    """Two host-loaded pages are first-mapped uncached: the first while every vCPU has its
    MMU off, the second after vCPU 1 enabled stage 1.  rfc2013 cleans only the first (seed
    point 4), so its rule is named for that finding and not for the second."""
    a, b = BASE + 0x40_0000, BASE + 0x80_0000
    r = run(tmp_path, [load(a, PAGE), load(b, PAGE), on(0), on(1), *fault_map(a, "read"),
                       sctlr(OFF, MC_ON, v=1), iallu(1), *fault_map(b, "read")], vcpus=2)
    first, second = found(r, "none", "first-map-uncached")
    assert "rfc2013.clean-first-map-uncached" in first.covered_by
    assert "rfc2013.clean-first-map-uncached" not in second.covered_by


def test_deferred_write_evidence_is_line_precise(tmp_path):
    """The shim copied a page at a write fault taken with the caches off and reported, when
    the epoch ended, the one line whose content changed; the guest then invalidated exactly
    that line (Linux: str; dc ivac) before turning its caches on.  Nothing is stale.  Taken
    as whole-page evidence, the same fault would leave 63 lines 'stale' under Xen."""
    page = BASE + 0x40_0000
    fault = {"kind": "s2-fault", "vcpu": 0, "ipa": page + 0x40, "access": "write"}
    tail = [{"kind": "cmo-va", "vcpu": 0, "op": "ivac", "pa": page + 0x40, "size": 64},
            sctlr(OFF, MC_ON)]
    base = [on(), *fault_map(page, "read")]
    precise = base + [{**fault, "deferred": 1},
                      {"kind": "guest-access", "vcpu": 0, "pa": page + 0x40, "size": 64,
                       "access": "write"}] + tail
    assert not uncovered(run(tmp_path, precise, writes="tracked"), "stage1-enable-stale")
    coarse = base + [fault] + tail
    (f,) = found(run(tmp_path, coarse, writes="tracked"), "xen", "stage1-enable-stale")
    assert f.pa == page


def test_caches_off_is_judged_where_the_guest_goes_non_cacheable(tmp_path):
    """With accesses tracked, a caches-off transition is a hazard only for the pages the
    vCPU then touches non-cacheably while they still hold dirty lines (EDK2's EFI stub turns
    the MMU off with all of firmware memory dirty, and Linux touches only its own cleaned
    image).  Two dirty pages, the vCPU touches one: one finding, at that access's PC."""
    a, b = BASE + 0x40_0000, BASE + 0x80_0000
    events = [on(), sctlr(OFF, MC_ON), *fault_map(a, "write"), *fault_map(b, "write"),
              sctlr(MC_ON, OFF),
              {"kind": "s2-access", "vcpu": 0, "ipa": b + 8, "access": "read", "pc": 0x99}]
    r = run(tmp_path, events, accesses="tracked")
    (f,) = found(r, "none", "caches-off-after-boot")
    assert (f.pa, f.size, f.pc, f.seq) == (b, PAGE, 0x99, 7)
    # KVM dropped TVM once the caches were on (kvm_toggle_cache), so the caches-off write is
    # not trapped and nothing is flushed: the guest's job (seed point 3); only FWB keeps the
    # access cacheable.
    assert uncovered(r, "caches-off-after-boot") == {"none", "rfc2013", "kvm", "xen"}
    # Untracked, the same trace is judged at the transition: both pages.
    r = run(tmp_path, events[:-1], accesses="untracked")
    assert [(f.pa, f.seq) for f in found(r, "none", "caches-off-after-boot")] == [(a, 6),
                                                                                   (b, 6)]


def test_a_map_after_a_permission_faults_write_keeps_its_order(tmp_path):
    """A write fault on a mapped page takes effect at once; a later map of the same page in
    the same run (here with another memory type) must come after it, as it did: `run`
    compares the vectorized replay with the event-by-event one."""
    page = BASE + 0x40_0000
    remap = {"kind": "s2-map", "ipa": page, "pa": page, "size": PAGE, "memattr": 0x5,
             "vcpu": 0}
    r = run(tmp_path, [on(), *fault_map(page, "read"), sctlr(OFF, MC_ON),
                       {"kind": "s2-fault", "vcpu": 0, "ipa": page, "access": "write"},
                       remap])
    # The write came first, cacheable (memattr 0xF): with no maintenance its lines may be
    # dirty; replayed after the remap (memattr 0x5, non-cacheable) they would only be stale.
    assert r.worlds["none"].cache.bits["dirty"][0x400] != 0


# -- 13. Code rewritten after it ran, checked at the fetch ---------------------------------

def _rewrite(*between, ok=None, sctlr_now=MC_ON):
    """The guest runs with everything on from code at CODE (made executable by an exec
    fault), rewrites one line of it (the shim reports the line it changed: a guest-access
    write after a deferred write fault), does ``between``, and fetches from that line again
    (write-xor-execute reports the fetch)."""
    fetch = {"kind": "fetch", "vcpu": 0, "ipa": CODE + 0x48, "pc": CODE + 0x48, "el": 1,
             "old": 0xD503201F, "new": 0xAA1E03E9}
    if ok is not None:
        fetch["ok"] = ok
    return [load(), on(), *fault_map(CODE, "exec"), iallu(), sctlr(OFF, sctlr_now, pc=CODE),
            iallu(),
            {"kind": "s2-fault", "vcpu": 0, "ipa": CODE + 0x48, "access": "write",
             "deferred": 1},
            {"kind": "guest-access", "vcpu": 0, "pa": CODE + 0x40, "size": 64,
             "access": "write", "pc": CODE + 0x800},
            *between, fetch]


def test_a_fetch_of_rewritten_code_without_icache_maintenance_is_found(tmp_path):
    """No hypervisor invalidates the I-cache when a guest rewrites its own code: KVM's
    invalidation happens when a leaf becomes executable (stage2_map_walker_try_leaf,
    relax_perms), Xen's at allocation and VM flushes; this leaf was executable long before.
    A fetch of the rewritten line may hit the old instruction: the guest's job (seed point 5)
    under every policy, reported at the fetch with the fetching and the writing PC."""
    r = run(tmp_path, _rewrite())
    assert uncovered(r, "icache-not-invalidated") == set(POLICIES)
    (f,) = found(r, "kvm", "icache-not-invalidated")
    assert (f.pc, f.pa, f.size) == (CODE + 0x48, CODE, PAGE)
    assert f"{CODE + 0x800:#x}" in f.message and "0xd503201f -> 0xaa1e03e9" in f.message
    # The guest rewrote the fetched line after the host loaded it: its own job, listed but
    # not failing a hypervisor's run unless asked to (--strict).
    assert f.responsibility == "guest"
    assert r.failing("kvm") == [] and r.failing("kvm", strict=True) == [f]


def test_a_fetch_of_a_line_the_host_wrote_is_the_hypervisors(tmp_path):
    """The same fetch, but the line holding the new instruction came from the host (a VMM
    writing code into a running guest's RAM): invalidating it is the hypervisor's job."""
    events = _rewrite()
    events.insert(-1, load(CODE + 0x40, 64))
    r = run(tmp_path, events)
    (f,) = found(r, "kvm", "icache-not-invalidated")
    assert f.responsibility == "hypervisor" and r.failing("kvm") == [f]


def test_a_guest_write_across_a_page_boundary_makes_the_next_pages_host_code_its_own(tmp_path):
    """The host loaded code into the second of two pages only; the guest then rewrites 128
    bytes straddling the boundary (the first page's last line and the second's first) and
    fetches the second page's rewritten line without invalidating the I-cache.  That line is
    no longer what the host wrote: the stale instruction is the guest's to invalidate (seed
    point 5), though the first page never held host code."""
    second = CODE + PAGE
    fetch = {"kind": "fetch", "vcpu": 0, "ipa": second + 0x8, "pc": second + 0x8, "el": 1,
             "old": 0xD503201F, "new": 0xAA1E03E9}
    r = run(tmp_path, [load(second, PAGE), on(), *fault_map(second, "exec"), iallu(),
                       sctlr(OFF, MC_ON, pc=second), iallu(),
                       {"kind": "s2-fault", "vcpu": 0, "ipa": second - 8, "access": "write",
                        "deferred": 1},
                       {"kind": "guest-access", "vcpu": 0, "pa": second - 64, "size": 128,
                        "access": "write", "pc": CODE + 0x800},
                       fetch])
    (f,) = found(r, "kvm", "icache-not-invalidated")
    assert (f.pc, f.pa) == (second + 0x8, second)
    assert f.responsibility == "guest" and r.failing("kvm") == []


def test_icache_maintenance_of_the_rewritten_line_covers_the_fetch(tmp_path):
    """DC CVAU + IC IVAU of the line (Linux's caches_clean_inval_pou after
    aarch64_insn_patch_text_nosync), or IC IALLU, between the write and the fetch: clean."""
    ivau = {"kind": "ic-inval", "vcpu": 0, "op": "ivau", "pa": CODE + 0x40, "size": 64}
    cvau = {"kind": "cmo-va", "vcpu": 0, "op": "cvau", "pa": CODE + 0x40, "size": 64}
    assert not uncovered(run(tmp_path, _rewrite(cvau, ivau)), "icache-not-invalidated")
    assert not uncovered(run(tmp_path, _rewrite(iallu())), "icache-not-invalidated")
    other = {**ivau, "pa": CODE + 0x80}            # another line: does not cover this one
    assert uncovered(run(tmp_path, _rewrite(cvau, other)), "icache-not-invalidated") == \
        set(POLICIES)
    # The shim coalesces a loop of DC CVAU / IC IVAU by line into one record of the run's
    # size: the rewritten line is the second of such a two-line run.
    two = [{**cvau, "pa": CODE, "size": 128}, {**ivau, "pa": CODE, "size": 128}]
    assert not uncovered(run(tmp_path, _rewrite(*two)), "icache-not-invalidated")


def test_a_concurrent_modification_safe_rewrite_or_icache_off_is_not_a_hazard(tmp_path):
    """The Arm ARM's concurrent modification and execution rule: B, BL, BRK, SVC, HVC, SMC, ISB
    and NOP may be rewritten into one another and the PE executes the old or the new one
    (the shim marks such a fetch ok).  With SCTLR_EL1.I clear, fetches are non-cacheable and
    do not hit stale I-cache lines."""
    assert not uncovered(run(tmp_path, _rewrite(ok=1)), "icache-not-invalidated")
    m_and_c = MC_ON & ~I_ON
    assert not uncovered(run(tmp_path, _rewrite(sctlr_now=m_and_c)), "icache-not-invalidated")
