"""Hypervisor cache-maintenance policies (README.md, the model section).

Each policy is one small class of named rules.  A rule id names what the hypervisor does and
the docstring of the hook that applies it cites the upstream function it mirrors.  Hooks return
``Action``s; the engine carries them out on that policy's own shadow cache, so replaying one
trace under every policy shows what each would have left uncovered and what it would cost.
"""
from __future__ import annotations

from dataclasses import dataclass

# Operations an action performs and the scopes it acts on.
CLEAN_INVAL, CLEAN, INVAL, ICACHE_INVAL = "clean-inval", "clean", "inval", "icache-inval"
# range: pa/size; pages: the event's pages; vm: every mapped page; all: all of guest RAM (a
# whole I-cache invalidation reaches every line, mapped or not).
SCOPE_RANGE, SCOPE_PAGES, SCOPE_VM, SCOPE_ALL = "range", "pages", "vm", "all"
MT_S2_FWB_NORMAL = 0b0110          # KVM's stage-2 MemAttr for memory with FEAT_S2FWB


@dataclass(frozen=True)
class Action:
    rule: str
    op: str
    scope: str                      # range (pa/size), pages (the event's pages), vm (all mapped)
    pa: int = 0
    size: int = 0


class Policy:
    """No maintenance at all: the baseline every finding is measured against."""

    name = "none"
    RULES: dict[str, str] = {}
    fwb = False                     # HCR_EL2.FWB set by this hypervisor
    # Leaves are mapped non-executable until the guest fetches from them (KVM): a page becomes
    # executable at an instruction fault, whatever the traced hypervisor's permissions were.
    # Otherwise a page is executable as soon as it is mapped.
    exec_on_demand = False

    def __init__(self, vcpus: int):
        self.tvm = [False] * vcpus  # HCR_EL2.TVM armed, per vCPU

    @property
    def hcr(self) -> int:
        """The HCR_EL2 bits this hypervisor runs its guest with that change memory types
        (the traced HCR_EL2 belongs to the traced hypervisor only)."""
        from ..arch.sysregs import HCR_EL2
        return HCR_EL2.fields["VM"].mask | (HCR_EL2.fields["FWB"].mask if self.fwb else 0)

    def stage2_memattr(self, recorded: int, is_ram: bool) -> int:
        """The stage-2 MemAttr this hypervisor would install for a page."""
        return recorded

    def on_vcpu_on(self, vcpu: int, first: bool, reinit: bool) -> list[Action]:
        """A vCPU starts: ``first`` time since the VM was created (the VMM initialised it),
        or again after a ``reinit`` by the VMM, or (neither) a guest PSCI CPU_ON after
        CPU_OFF, which no hypervisor treats as a reset of its traps."""
        return []

    def on_host_write(self, source: str, pa: int, size: int) -> list[Action]:
        return []

    def on_map(self, vcpu_caches_on: bool) -> list[Action]:
        """Maintenance on each page a stage-2 fault maps (SCOPE_PAGES)."""
        return []

    def on_exec_grant(self) -> list[Action]:
        """Maintenance on the pages of a leaf that becomes executable (SCOPE_PAGES)."""
        return []

    def on_unmap(self, pa: int, size: int) -> list[Action]:
        return []

    def on_sctlr(self, vcpu: int, was_on: bool, now_on: bool, mmu_now: bool) -> list[Action]:
        """A trapped SCTLR_EL1 write; ``*_on`` is SCTLR_EL1.M&C (vcpu_has_cache_enabled)."""
        return []

    def on_set_way(self, vcpu: int) -> list[Action]:
        return []

    def traps_set_way(self) -> str | None:
        """The rule that traps guest set/way operations (HCR_EL2.TSW), if any."""
        return None

    def type_rule(self) -> str | None:
        """The rule that makes guest accesses cacheable whatever stage 1 says, if any."""
        return None


class Rfc2013(Policy):
    """The 2013 RFC as posted (seed points 1, 2 and 4)."""

    name = "rfc2013"
    RULES = {
        "rfc2013.clean-first-map-uncached":
            "user_mem_abort: flush the page to PoC when !vcpu_has_cache_enabled(vcpu)",
        "rfc2013.flush-on-stage1-enable":
            "seed point 2: trap MMU registers, clean+invalidate all mapped pages when stage 1 "
            "is enabled",
    }

    def __init__(self, vcpus: int):
        super().__init__(vcpus)
        self.stage1_enabled = False     # some vCPU turned M&C on: the expensive path ends

    def on_map(self, vcpu_caches_on):
        """Seed point 1 with point 4: only until the first vCPU enables stage 1 (M&C, the
        same condition that triggers point 2, so a guest that sets M before C still gets its
        flush)."""
        if not vcpu_caches_on and not self.stage1_enabled:
            return [Action("rfc2013.clean-first-map-uncached", CLEAN_INVAL, SCOPE_PAGES)]
        return []

    def on_sctlr(self, vcpu, was_on, now_on, mmu_now):
        """Seed point 2, trapped only until the first vCPU enables stage 1 (point 4)."""
        out = []
        if now_on and not was_on and not self.stage1_enabled:
            out = [Action("rfc2013.flush-on-stage1-enable", CLEAN_INVAL, SCOPE_VM)]
        self.stage1_enabled |= now_on
        return out


class _TrapsVmRegisters(Policy):
    """What KVM and Xen share: guest set/way operations trapped (HCR_EL2.TSW) and turned into
    a flush of the whole VM that arms HCR_EL2.TVM, and, while TVM traps SCTLR_EL1 writes, a
    flush whenever M&C change, TVM being dropped once the caches are on."""

    TOGGLE_RULE = SET_WAY_RULE = ""
    FLUSH_INVALIDATES_ICACHE = False    # the VM flush ends with a whole I-cache invalidation

    def _flush_vm(self, rule: str) -> list[Action]:
        out = [Action(rule, CLEAN_INVAL, SCOPE_VM)]
        if self.FLUSH_INVALIDATES_ICACHE:
            out.append(Action(rule, ICACHE_INVAL, SCOPE_ALL))
        return out

    def on_sctlr(self, vcpu, was_on, now_on, mmu_now):
        out = []
        if self.tvm[vcpu]:
            if was_on != now_on:
                out = self._flush_vm(self.TOGGLE_RULE)
            if now_on:
                self.tvm[vcpu] = False
        return out

    def on_set_way(self, vcpu):
        if self.tvm[vcpu]:
            return []
        self.tvm[vcpu] = True
        return self._flush_vm(self.SET_WAY_RULE)

    def traps_set_way(self):
        return self.SET_WAY_RULE


class Kvm(_TrapsVmRegisters):
    """Upstream KVM/arm64 without FEAT_S2FWB (arch/arm64/kvm).  The set/way and toggle
    behaviour is kvm_set_way_flush and kvm_toggle_cache (arch/arm64/kvm/mmu.c)."""

    TOGGLE_RULE, SET_WAY_RULE = "kvm.flush-on-cache-toggle", "kvm.trap-set-way"

    name = "kvm"
    exec_on_demand = True
    RULES = {
        "kvm.clean-on-translation-fault":
            "hyp/pgtable.c stage2_map_walker_try_leaf: dcache_clean_inval_poc on every new "
            "cacheable leaf",
        "kvm.icache-inval-on-exec-fault":
            "hyp/pgtable.c stage2_map_walker_try_leaf (a new leaf installed executable) and "
            "stage2_attr_walker (a permission fault that adds X): icache_inval_pou whenever a "
            "leaf becomes executable; data faults map non-executable (user_mem_abort)",
        "kvm.clean-on-unmap": "hyp/pgtable.c stage2_unmap_walker: dcache_clean_inval_poc",
        "kvm.flush-on-cache-toggle":
            "sys_regs.c access_vm_reg -> kvm_toggle_cache -> stage2_flush_vm while TVM is set",
        "kvm.trap-set-way": "sys_regs.c access_dcsw -> kvm_set_way_flush -> stage2_flush_vm",
        "kvm.unmap-on-vcpu-reinit":
            "arm.c kvm_arch_vcpu_ioctl_vcpu_init -> stage2_unmap_vm on a vCPU that ran before",
    }

    def on_vcpu_on(self, vcpu, first, reinit):
        """kvm_arch_vcpu_ioctl_vcpu_init -> vcpu_reset_hcr arms HCR_EL2.TVM (non-FWB) until
        the guest's caches are on; a PSCI CPU_ON (kvm_psci_vcpu_on -> kvm_reset_vcpu) does
        not touch HCR_EL2.  A re-init of a vCPU that ran unmaps the whole stage 2."""
        if first or reinit:
            self.tvm[vcpu] = True
        if reinit:
            return [Action("kvm.unmap-on-vcpu-reinit", CLEAN_INVAL, SCOPE_VM)]
        return []

    def on_map(self, vcpu_caches_on):
        return [Action("kvm.clean-on-translation-fault", CLEAN_INVAL, SCOPE_PAGES)]

    def on_exec_grant(self):
        return [Action("kvm.icache-inval-on-exec-fault", ICACHE_INVAL, SCOPE_PAGES)]

    def on_unmap(self, pa, size):
        return [Action("kvm.clean-on-unmap", CLEAN_INVAL, SCOPE_RANGE, pa, size)]


class Xen(_TrapsVmRegisters):
    """Xen on Arm (xen/arch/arm).  Set/way and toggles: p2m_set_way_flush and
    p2m_toggle_cache (arch/arm/p2m.c); TVM is armed only by a set/way operation."""

    TOGGLE_RULE, SET_WAY_RULE = "xen.flush-on-toggle", "xen.trap-set-way"
    # p2m_flush_vm -> p2m_cache_flush_range, which ends with invalidate_icache().
    FLUSH_INVALIDATES_ICACHE = True

    name = "xen"
    RULES = {
        "xen.flush-on-alloc":
            "common/page_alloc.c alloc_heap_pages -> flush_page_to_ram(mfn, sync_icache) for "
            "new pages: clean+invalidate to PoC and invalidate the I-cache",
        "xen.builder-flush":
            "XEN_DOMCTL_cacheflush -> p2m_cache_flush_range for what the domain builder copies "
            "in (copy_to_guest_phys_flush_dcache for dom0): flush_page_to_ram per page, then "
            "invalidate_icache()",
        "xen.trap-set-way": "p2m.c p2m_set_way_flush: arm TVM, p2m_flush_vm before re-entry",
        "xen.flush-on-toggle": "p2m.c p2m_toggle_cache: p2m_flush_vm when M&C change under TVM",
    }

    def on_host_write(self, source, pa, size):
        """Pages are flushed when Xen allocates them, and what the builder loads is flushed;
        both invalidate the whole I-cache too (flush_page_to_ram: "we just flush the entire
        cache here", invalidate_icache(); the builder's p2m_cache_flush_range ends with it)."""
        rule = {"host-zero": "xen.flush-on-alloc", "load": "xen.builder-flush"}.get(source)
        if rule is None:
            return []
        return [Action(rule, CLEAN_INVAL, SCOPE_RANGE, pa, size),
                Action(rule, ICACHE_INVAL, SCOPE_ALL, pa, size)]


class Fwb(Kvm):
    """KVM on a CPU with FEAT_S2FWB: stage 2 forces Write-Back, so no D-side maintenance,
    no TVM and set/way become NOPs; I-side maintenance stays."""

    name = "fwb"
    fwb = True
    RULES = {
        "fwb.force-write-back":
            "kvm_pgtable_stage2_init with KVM_PGTABLE_S2_FWB: MemAttr MT_S2_FWB_NORMAL and "
            "HCR_EL2.FWB make guest accesses to memory Normal WB",
        "fwb.set-way-nop": "sys_regs.c access_dcsw: no kvm_set_way_flush with FWB",
        "kvm.icache-inval-on-exec-fault": Kvm.RULES["kvm.icache-inval-on-exec-fault"],
        "fwb.icache-inval-on-vcpu-reinit":
            "arm.c kvm_arch_vcpu_ioctl_vcpu_init: icache_inval_all_pou instead of "
            "stage2_unmap_vm on a vCPU that ran before (FWB does not imply DIC)",
    }

    def stage2_memattr(self, recorded, is_ram):
        return MT_S2_FWB_NORMAL if is_ram else recorded

    def on_vcpu_on(self, vcpu, first, reinit):
        if reinit:
            return [Action("fwb.icache-inval-on-vcpu-reinit", ICACHE_INVAL, SCOPE_ALL)]
        return []

    def on_map(self, vcpu_caches_on):
        return []

    def on_unmap(self, pa, size):
        return []

    def on_sctlr(self, vcpu, was_on, now_on, mmu_now):
        return []

    def on_set_way(self, vcpu):
        return []

    def traps_set_way(self):
        return "fwb.set-way-nop"

    def type_rule(self):
        return "fwb.force-write-back"


POLICIES: dict[str, type[Policy]] = {p.name: p for p in (Policy, Rfc2013, Kvm, Xen, Fwb)}
