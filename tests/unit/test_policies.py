"""The hypervisor policies (gdbplugin/model/policies.py), hook by hook, against what the
upstream code each rule cites does.

KVM (arch/arm64/kvm): vcpu_reset_hcr sets HCR_EL2.TVM on non-FWB CPUs; kvm_toggle_cache
flushes the VM (stage2_flush_vm) when M&C change and clears TVM once they are on;
kvm_set_way_flush flushes and sets TVM only when TVM is clear; stage2_map_walker_try_leaf
cleans+invalidates every new cacheable leaf and invalidates the I-cache when the leaf is
executable; stage2_unmap_walker cleans+invalidates what it unmaps; a VCPU_INIT of a vCPU that
ran unmaps the whole stage 2 (stage2_unmap_vm), or with FEAT_S2FWB only invalidates the
I-cache (icache_inval_all_pou), FWB not implying DIC; with FWB, access_dcsw does nothing and
no D-side maintenance is done.

Xen (xen/arch/arm/p2m.c): p2m_set_way_flush and p2m_toggle_cache behave as KVM's, the flush
(p2m_flush_vm -> p2m_cache_flush_range) ending with invalidate_icache(), a whole I-cache
invalidation; TVM is only ever set by a set/way operation (Xen's vCPU starts without it).

The 2013 RFC: seed points 1, 2 and 4 as the policy's docstrings state them.
"""
from __future__ import annotations

import pytest

from gdbplugin.model import policies as P
from gdbplugin.model.policies import (CLEAN_INVAL, ICACHE_INVAL, MT_S2_FWB_NORMAL, POLICIES,
                                      SCOPE_ALL, SCOPE_PAGES, SCOPE_RANGE, SCOPE_VM, Action,
                                      Fwb, Kvm, Policy, Rfc2013, Xen)

HCR_VM = 1 << 0        # Arm ARM: HCR_EL2.VM, stage 2 translation enable
HCR_FWB = 1 << 46      # Arm ARM: HCR_EL2.FWB, stage 2 forced write-back


def rules(actions):
    return [a.rule for a in actions]


def assert_known_rules(policy, actions):
    """Every action a hook returns is one of the policy's named rules."""
    for a in actions:
        assert a.rule in type(policy).RULES, a.rule


# -- registry and static properties ---------------------------------------------------------

def test_registry_names():
    """The policies are looked up by the names the CLI and reports use."""
    assert POLICIES == {"none": Policy, "rfc2013": Rfc2013, "kvm": Kvm, "xen": Xen, "fwb": Fwb}
    for name, cls in POLICIES.items():
        assert cls.name == name


def test_hcr_bits():
    """Every hypervisor runs its guest with stage 2 on (HCR_EL2.VM); only the FWB policy
    adds HCR_EL2.FWB (KVM's vcpu_reset_hcr sets HCR_FWB on CPUs with FEAT_S2FWB)."""
    for cls in (Policy, Rfc2013, Kvm, Xen):
        assert cls(1).hcr == HCR_VM, cls.name
    assert Fwb(1).hcr == HCR_VM | HCR_FWB


def test_stage2_memattr():
    """Without FWB the hypervisor installs what it installs (the recorded MemAttr); KVM with
    FWB installs MT_S2_FWB_NORMAL (0b0110, Normal Write-Back with FWB) for memory and keeps
    device mappings as they were."""
    for cls in (Policy, Rfc2013, Kvm, Xen):
        assert cls(1).stage2_memattr(0x5, True) == 0x5
        assert cls(1).stage2_memattr(0x1, False) == 0x1
    f = Fwb(1)
    assert MT_S2_FWB_NORMAL == 0b0110
    assert f.stage2_memattr(0x1, True) == 0b0110
    assert f.stage2_memattr(0xF, True) == 0b0110
    assert f.stage2_memattr(0x1, False) == 0x1
    assert f.stage2_memattr(0x0, False) == 0x0


def test_exec_on_demand_and_fwb_flags():
    """KVM maps data faults non-executable (user_mem_abort), so pages become executable at an
    instruction fault; Xen and the others map executable at once.  Only FWB sets HCR.FWB."""
    assert Kvm.exec_on_demand and Fwb.exec_on_demand
    assert not Policy.exec_on_demand and not Xen.exec_on_demand
    assert not Rfc2013.exec_on_demand
    assert Fwb.fwb and not Kvm.fwb and not Xen.fwb and not Policy.fwb


def test_tvm_starts_clear_per_vcpu():
    """HCR_EL2.TVM is per vCPU and starts clear until the hypervisor arms it."""
    for cls in POLICIES.values():
        assert cls(3).tvm == [False, False, False]


# -- the baseline -----------------------------------------------------------------------------

def test_none_does_nothing():
    """The baseline does no maintenance whatever happens and traps nothing."""
    p = Policy(2)
    assert p.on_vcpu_on(0, True, False) == []
    assert p.on_vcpu_on(0, False, True) == []
    assert p.on_host_write("load", 0x4000_0000, 4096) == []
    assert p.on_host_write("host-zero", 0x4000_0000, 4096) == []
    assert p.on_map(False) == [] and p.on_map(True) == []
    assert p.on_exec_grant() == []
    assert p.on_unmap(0x4000_0000, 4096) == []
    assert p.on_sctlr(0, False, True, True) == []
    assert p.on_set_way(0) == []
    assert p.traps_set_way() is None
    assert p.type_rule() is None
    assert p.tvm == [False, False]


# -- rfc2013 ----------------------------------------------------------------------------------

def test_rfc2013_cleans_maps_while_caches_off():
    """Seed point 1: a page mapped while the faulting vCPU's caches are off is flushed to
    PoC (the page's own pages scope); with the vCPU's caches on nothing is done."""
    p = Rfc2013(2)
    assert p.on_map(False) == [Action("rfc2013.clean-first-map-uncached", CLEAN_INVAL,
                                      SCOPE_PAGES)]
    assert p.on_map(True) == []
    assert_known_rules(p, p.on_map(False))


def test_rfc2013_flush_on_first_stage1_enable_only():
    """Seed point 2 with point 4: the first M&C enable flushes the whole VM; from then on
    the expensive path is over, for every vCPU: no more flush on enable, no more clean on
    map, even if a vCPU turns its caches off again later."""
    p = Rfc2013(2)
    # Writes that do not turn M&C on change nothing.
    assert p.on_sctlr(0, False, False, True) == []
    assert p.on_sctlr(0, True, False, False) == []
    assert p.on_map(False) != []
    out = p.on_sctlr(0, False, True, True)
    assert out == [Action("rfc2013.flush-on-stage1-enable", CLEAN_INVAL, SCOPE_VM)]
    assert_known_rules(p, out)
    assert p.on_map(False) == []
    assert p.on_sctlr(1, False, True, True) == []           # another vCPU: trap gone
    assert p.on_sctlr(0, True, False, False) == []          # off again: no flush ...
    assert p.on_map(False) == []                            # ... and still no clean
    assert p.on_sctlr(0, False, True, True) == []


def test_rfc2013_no_flush_when_already_on():
    """A trapped write that leaves M&C on (was on, still on) is not an enable."""
    p = Rfc2013(1)
    assert p.on_sctlr(0, True, True, True) == []
    # ... but being on, it still ends the expensive path (point 4: stage 1 is enabled).
    assert p.on_map(False) == []


def test_rfc2013_traps_nothing_else():
    """The RFC did not trap set/way operations nor touch the I-cache or unmaps."""
    p = Rfc2013(1)
    assert p.traps_set_way() is None
    assert p.on_set_way(0) == []
    assert p.on_exec_grant() == [] and p.on_unmap(0, 4096) == []
    assert p.on_vcpu_on(0, True, False) == [] and p.tvm == [False]


# -- kvm --------------------------------------------------------------------------------------

def test_kvm_vcpu_init_arms_tvm_psci_does_not():
    """vcpu_reset_hcr (KVM_ARM_VCPU_INIT) sets TVM; a PSCI CPU_ON (kvm_reset_vcpu) leaves
    HCR_EL2 alone, so a vCPU whose caches went on keeps TVM clear across CPU_OFF/CPU_ON."""
    p = Kvm(3)
    assert p.on_vcpu_on(1, True, False) == []
    assert p.tvm == [False, True, False]
    assert p.on_sctlr(1, False, True, True) != []     # caches on: TVM dropped
    assert p.tvm == [False, False, False]
    assert p.on_vcpu_on(1, False, False) == []        # PSCI CPU_ON
    assert p.tvm == [False, False, False]


def test_kvm_vcpu_reinit_unmaps_the_vm():
    """VCPU_INIT of a vCPU that ran: stage2_unmap_vm (clean+invalidate of every mapped
    page), and TVM armed again by vcpu_reset_hcr."""
    p = Kvm(2)
    out = p.on_vcpu_on(0, False, True)
    assert out == [Action("kvm.unmap-on-vcpu-reinit", CLEAN_INVAL, SCOPE_VM)]
    assert_known_rules(p, out)
    assert p.tvm == [True, False]


def test_kvm_toggle_cache():
    """kvm_toggle_cache while TVM is set: a change of M&C flushes the VM (on or off), a write
    that changes neither does not; TVM is cleared only once the caches are on, so turning
    them off keeps the trap and the later re-enable is flushed too.  Without TVM, SCTLR_EL1
    writes are not trapped at all."""
    p = Kvm(2)
    p.on_vcpu_on(0, True, False)
    flush = [Action("kvm.flush-on-cache-toggle", CLEAN_INVAL, SCOPE_VM)]
    assert p.on_sctlr(0, False, False, True) == []       # M without C: no change of M&C
    assert p.tvm[0]
    assert p.on_sctlr(0, True, False, False) == flush    # switching off: clean
    assert p.tvm[0]
    assert p.on_sctlr(0, False, True, True) == flush     # switching on: invalidate
    assert p.tvm == [False, False]
    assert p.on_sctlr(0, True, False, False) == []       # no longer trapped
    assert p.on_sctlr(1, False, True, True) == []        # vCPU 1 never had TVM
    assert_known_rules(p, flush)


def test_kvm_toggle_already_on_drops_tvm():
    """A trapped write with the caches on before and after: no flush, but TVM is cleared
    (kvm_toggle_cache clears it whenever the caches are now enabled)."""
    p = Kvm(1)
    p.on_vcpu_on(0, True, False)
    assert p.on_sctlr(0, True, True, True) == []
    assert p.tvm == [False]


def test_kvm_set_way():
    """kvm_set_way_flush: with TVM clear, flush the VM and set TVM; with TVM set, nothing
    (the flush waits for the next cache toggle).  TSW is always set: the trap rule."""
    p = Kvm(2)
    out = p.on_set_way(1)
    assert out == [Action("kvm.trap-set-way", CLEAN_INVAL, SCOPE_VM)]
    assert_known_rules(p, out)
    assert p.tvm == [False, True]
    assert p.on_set_way(1) == []
    assert p.tvm == [False, True]
    # the next toggle of vCPU 1 flushes, and a set/way after caches on flushes again
    assert rules(p.on_sctlr(1, False, True, True)) == ["kvm.flush-on-cache-toggle"]
    assert p.on_set_way(1) == out
    assert p.traps_set_way() == "kvm.trap-set-way"
    assert p.traps_set_way() in Kvm.RULES


def test_kvm_stage2_maintenance():
    """Every new leaf is cleaned+invalidated to PoC whatever the vCPU's caches (KVM has
    done so on every translation fault since it stopped looking at the guest's state); a
    leaf becoming executable gets an I-cache invalidation of its pages; an unmap cleans
    exactly the unmapped range."""
    p = Kvm(1)
    for on in (False, True):
        assert p.on_map(on) == [Action("kvm.clean-on-translation-fault", CLEAN_INVAL,
                                       SCOPE_PAGES)]
    assert p.on_exec_grant() == [Action("kvm.icache-inval-on-exec-fault", ICACHE_INVAL,
                                        SCOPE_PAGES)]
    assert p.on_unmap(0x4020_0000, 0x3000) == [
        Action("kvm.clean-on-unmap", CLEAN_INVAL, SCOPE_RANGE, 0x4020_0000, 0x3000)]
    for acts in (p.on_map(False), p.on_exec_grant(), p.on_unmap(0, 1)):
        assert_known_rules(p, acts)
    assert p.on_host_write("load", 0x4000_0000, 4096) == []   # KVM never flushes host writes
    assert p.type_rule() is None


# -- xen --------------------------------------------------------------------------------------

def test_xen_vcpu_start_does_not_arm_tvm():
    """Xen's vCPUs start without HCR_EL2.TVM: only a set/way operation arms it, so SCTLR_EL1
    writes before any set/way are not trapped and a re-init does nothing either."""
    p = Xen(2)
    assert p.on_vcpu_on(0, True, False) == []
    assert p.on_vcpu_on(1, False, True) == []
    assert p.tvm == [False, False]
    assert p.on_sctlr(0, False, True, True) == []
    assert p.on_map(False) == [] and p.on_unmap(0, 4096) == []


def test_xen_set_way_then_toggle():
    """p2m_set_way_flush arms TVM and flushes the VM, the flush ending with a whole I-cache
    invalidation (p2m_cache_flush_range -> invalidate_icache); p2m_toggle_cache flushes the
    same way when M&C change and drops TVM once they are on."""
    p = Xen(2)
    flush_sw = [Action("xen.trap-set-way", CLEAN_INVAL, SCOPE_VM),
                Action("xen.trap-set-way", ICACHE_INVAL, SCOPE_ALL)]
    assert p.on_set_way(0) == flush_sw
    assert p.tvm == [True, False]
    assert p.on_set_way(0) == []
    toggle = [Action("xen.flush-on-toggle", CLEAN_INVAL, SCOPE_VM),
              Action("xen.flush-on-toggle", ICACHE_INVAL, SCOPE_ALL)]
    assert p.on_sctlr(0, False, False, True) == []
    assert p.on_sctlr(0, True, False, False) == toggle
    assert p.tvm == [True, False]
    assert p.on_sctlr(0, False, True, True) == toggle
    assert p.tvm == [False, False]
    assert p.traps_set_way() == "xen.trap-set-way"
    for acts in (flush_sw, toggle):
        assert_known_rules(p, acts)


def test_xen_builder_flush():
    """What the domain builder loads is flushed to PoC (XEN_DOMCTL_cacheflush ->
    p2m_cache_flush_range over the loaded range) and the whole I-cache is invalidated at the
    end (invalidate_icache)."""
    p = Xen(1)
    out = p.on_host_write("load", 0x4008_0000, 0x2_0000)
    assert out == [Action("xen.builder-flush", CLEAN_INVAL, SCOPE_RANGE, 0x4008_0000, 0x2_0000),
                   Action("xen.builder-flush", ICACHE_INVAL, SCOPE_ALL, 0x4008_0000,
                          0x2_0000)]
    assert_known_rules(p, out)


def test_xen_flush_on_alloc():
    """Pages Xen allocates are cleaned+invalidated to PoC one by one (alloc_heap_pages ->
    flush_page_to_ram) with an I-cache invalidation (sync_icache), which must cover at
    least the allocated range."""
    p = Xen(1)
    out = p.on_host_write("host-zero", 0x4000_0000, 0x10_0000)
    assert_known_rules(p, out)
    assert rules(out) == ["xen.flush-on-alloc", "xen.flush-on-alloc"]
    assert out[0] == Action("xen.flush-on-alloc", CLEAN_INVAL, SCOPE_RANGE, 0x4000_0000,
                            0x10_0000)
    assert out[1].op == ICACHE_INVAL
    assert out[1].scope == SCOPE_ALL or (out[1].scope, out[1].pa, out[1].size) == (
        SCOPE_RANGE, 0x4000_0000, 0x10_0000)


@pytest.mark.parametrize("source", ["device", "other"])
def test_xen_other_host_writes_are_not_flushed(source):
    """Only allocation and the builder's copy are flushed by Xen; a device model's or any
    other host write is not."""
    assert Xen(1).on_host_write(source, 0x4000_0000, 4096) == []


# -- fwb --------------------------------------------------------------------------------------

def test_fwb_no_d_side_maintenance():
    """With FEAT_S2FWB, KVM does no D-side maintenance: no clean on map or unmap
    (stage2_pte_cacheable && !stage2_has_fwb), no TVM (vcpu_reset_hcr sets FWB instead), so
    no flush on toggles, and set/way operations are NOPs (access_dcsw)."""
    p = Fwb(2)
    assert p.on_vcpu_on(0, True, False) == []
    assert p.tvm == [False, False]
    assert p.on_map(False) == [] and p.on_map(True) == []
    assert p.on_unmap(0x4000_0000, 4096) == []
    assert p.on_set_way(0) == [] and p.tvm == [False, False]
    p.tvm[0] = True           # even if it were armed, FWB KVM does no toggle flush
    assert p.on_sctlr(0, False, True, True) == []
    assert p.on_sctlr(0, True, False, False) == []
    assert p.traps_set_way() == "fwb.set-way-nop"
    assert p.type_rule() == "fwb.force-write-back"
    assert {p.traps_set_way(), p.type_rule()} <= set(Fwb.RULES)


def test_fwb_keeps_i_side_maintenance():
    """FWB does not imply CTR_EL0.DIC: the exec-fault I-cache invalidation stays, and a
    re-init of a vCPU that ran invalidates the whole I-cache (icache_inval_all_pou) instead
    of unmapping the VM; a first start or a PSCI CPU_ON does nothing."""
    p = Fwb(2)
    assert p.on_exec_grant() == [Action("kvm.icache-inval-on-exec-fault", ICACHE_INVAL,
                                        SCOPE_PAGES)]
    out = p.on_vcpu_on(1, False, True)
    assert out == [Action("fwb.icache-inval-on-vcpu-reinit", ICACHE_INVAL, SCOPE_ALL)]
    assert p.on_vcpu_on(1, False, False) == []
    for acts in (out, p.on_exec_grant()):
        assert_known_rules(p, acts)


def test_rule_tables_cite_upstream():
    """Every rule a policy names carries a citation (the upstream function it mirrors)."""
    for cls in POLICIES.values():
        for rule, cite in cls.RULES.items():
            assert rule and cite, (cls.name, rule)
    assert P.Policy.RULES == {}
