/*
 * s2cache shim: the cache-maintenance policy, chosen at load time (params.policy).
 *
 * Every maintenance operation is recorded with the id of the rule that asked for it (enum rule,
 * ring.py RULES); the upstream function each rule mirrors is named next to it.
 *
 *  none     no maintenance at all (traps are still recorded).
 *  rfc2013  the seed's proposal as posted (Catalin Marinas, 2013-10-17):
 *           1. clean+invalidate a page mapped while the vCPU's caches are off (M&C not both on)
 *              -- only while no vCPU has enabled them yet (point 4);
 *           2. trap the MMU registers (TVM) and flush every mapped page when a vCPU turns its
 *              stage 1 (M&C) on; then stop trapping (point 4).
 *           Set/way and the I-cache are left to the guest (point 3 open, point 5).
 *  kvm      upstream KVM arm64 (torvalds/linux), no FWB:
 *           - arch/arm64/kvm/hyp/pgtable.c stage2_map_walker_try_leaf: clean+invalidate every new
 *             Normal leaf to PoC; invalidate the I-cache for a new executable leaf (pages are
 *             mapped XN until an exec fault: stage2_relax_perms does the same on a permission
 *             fault);
 *           - arch/arm64/kvm/reset.c / kvm_reset_vcpu (vcpu_reset_hcr): TVM armed at reset;
 *           - arch/arm64/kvm/mmu.c kvm_toggle_cache: flush the VM (stage2_flush_vm) when
 *             SCTLR_EL1.M&C change, clear TVM once caches are on;
 *           - arch/arm64/kvm/mmu.c kvm_set_way_flush (access_dcsw): first set/way op while TVM
 *             is clear flushes the VM and arms TVM; later ones are coalesced (no-op).
 *  xen      Xen on Arm (xen-project/xen):
 *           - xen/common/page_alloc.c alloc_heap_pages -> flush_page_to_ram: guest RAM is
 *             cleaned+invalidated (and the I-cache invalidated) when allocated: at start;
 *           - xen/arch/arm/p2m.c p2m_set_way_flush: arm TVM, defer p2m_flush_vm to the return to
 *             the guest; p2m_toggle_cache: flush when M&C change while TVM is armed; TVM cleared
 *             once caches are on.  No TVM by default, no FWB.
 *  fwb      KVM with FEAT_S2FWB: HCR_EL2.FWB, stage-2 Normal forced write-back, no D-side
 *           maintenance, no TVM, set/way no-ops; I-cache invalidated on exec faults.  A CPU
 *           without FEAT_S2FWB runs kvm instead (non-fatal diagnostic, policy_effective).
 */
#include "shim.h"

static int xen_flush_rule[MAX_VCPUS];     /* why a deferred Xen flush is pending */

static bool caches_on(u64 sctlr)
{
    return (sctlr & (SCTLR_M | SCTLR_C)) == (SCTLR_M | SCTLR_C);
}

bool policy_fwb(void)
{
    return cfg.effective == POL_FWB;
}

bool policy_exec_on_demand(void)
{
    return cfg.effective == POL_KVM || cfg.effective == POL_FWB;
}

static void clean(struct vcpu *v, u64 ipa, u64 size, int rule, u64 pc)
{
    dcache_clean_inval(ipa, size);
    emit(K_DC, v, 2, A_NONE, DC_CIVAC, (u16)rule, pc, 0, ipa, ipa, size, 0);
}

static void icinval(struct vcpu *v, u64 ipa, u64 size, int rule, u64 pc)
{
    icache_inval(ipa, size);
    emit(K_IC, v, 2, A_NONE, IC_IVAU, (u16)rule, pc, 0, ipa, ipa, size, 0);
}

/* Before the first vCPU enters the guest. */
void policy_boot(void)
{
    if (cfg.effective != POL_XEN)
        return;
    struct vcpu *v = this_vcpu();
    /* alloc_heap_pages -> flush_page_to_ram(mfn, sync_icache): every page of the domain */
    dcache_clean_inval(cfg.ram_base, cfg.ram_end - cfg.ram_base);
    emit(K_DC, v, 2, A_NONE, DC_CIVAC, R_XEN_ALLOC, cfg.entry, 0, cfg.ram_base, cfg.ram_base,
         cfg.ram_end - cfg.ram_base, 0);
    __asm__ volatile("ic ialluis" : : : "memory");
    dsb(ish);
    isb();
    stat_add(ST_IC_OPS, 1);
    emit(K_IC, v, 2, A_NONE, IC_IALLUIS, R_XEN_ALLOC, cfg.entry, 0, cfg.ram_base,
         cfg.ram_base, cfg.ram_end - cfg.ram_base, 0);
}

/* A vCPU starts: HCR_EL2.TVM as the hypervisor's reset would set it.  KVM arms TVM at
 * KVM_ARM_VCPU_INIT (vcpu_reset_hcr), which the VMM does once per vCPU; a guest's PSCI CPU_ON
 * after CPU_OFF (kvm_psci_vcpu_on -> kvm_reset_vcpu) leaves HCR_EL2 alone. */
void policy_vcpu_reset(struct vcpu *v)
{
    if (v->started)
        return;
    v->policy_tvm = cfg.effective == POL_KVM ||
                    (cfg.effective == POL_RFC2013 && !any_mmu_on);
}

/* A new leaf: `exec` when it is executable because the guest executed from it. */
void policy_on_map(struct vcpu *v, u64 ipa, u64 size, bool normal, bool exec, u64 pc)
{
    switch (cfg.effective) {
    case POL_KVM:
        if (normal)
            clean(v, ipa, size, R_KVM_CLEAN_ON_FAULT, pc);
        if (exec)
            icinval(v, ipa, size, R_KVM_ICACHE_ON_EXEC, pc);
        break;
    case POL_FWB:
        if (exec)
            icinval(v, ipa, size, R_FWB_ICACHE_ON_EXEC, pc);
        break;
    case POL_RFC2013:
        if (normal && !any_mmu_on && !caches_on(read_sysreg(sctlr_el1)))
            clean(v, ipa, size, R_RFC_CLEAN_UNCACHED, pc);
        break;
    default:
        break;
    }
}

/* An existing leaf turned executable (exec fault on an XN page). */
void policy_on_exec(struct vcpu *v, u64 ipa, u64 size, u64 pc)
{
    if (cfg.effective == POL_KVM)
        icinval(v, ipa, size, R_KVM_ICACHE_ON_EXEC, pc);
    else if (cfg.effective == POL_FWB)
        icinval(v, ipa, size, R_FWB_ICACHE_ON_EXEC, pc);
}

/* Any trapped TVM register write (SCTLR_EL1 old -> new; equal for the other registers). */
void policy_on_sysreg(struct vcpu *v, u64 old, u64 new, u64 pc)
{
    if (!v->policy_tvm)
        return;                         /* trapped only for observation: the policy saw nothing */
    bool was = caches_on(old), now = caches_on(new);
    switch (cfg.effective) {
    case POL_KVM:                       /* kvm_toggle_cache */
        if (was != now)
            flush_vm(v, R_KVM_TOGGLE, pc);
        if (now)
            v->policy_tvm = false;
        break;
    case POL_XEN:                       /* p2m_toggle_cache */
        if (was != now) {
            v->need_flush = true;
            if (!xen_flush_rule[v->slot])
                xen_flush_rule[v->slot] = R_XEN_TOGGLE;
        }
        if (now)
            v->policy_tvm = false;
        break;
    case POL_RFC2013:                   /* points 2 and 4 */
        if (!was && now) {
            flush_vm(v, R_RFC_STAGE1_ENABLE, pc);
            any_mmu_on = 1;
        }
        if (any_mmu_on)
            v->policy_tvm = false;
        break;
    default:
        break;
    }
}

void policy_on_set_way(struct vcpu *v, u64 pc)
{
    switch (cfg.effective) {
    case POL_KVM:                       /* kvm_set_way_flush */
        if (!v->policy_tvm) {
            flush_vm(v, R_KVM_SET_WAY, pc);
            v->policy_tvm = true;
        }
        break;
    case POL_XEN:                       /* p2m_set_way_flush */
        if (!v->policy_tvm) {
            v->need_flush = true;
            xen_flush_rule[v->slot] = R_XEN_SET_WAY;
            v->policy_tvm = true;
        }
        break;
    default:                            /* fwb: NOP; rfc2013, none: left to the guest */
        break;
    }
}

/* Last thing before ERET to the guest. */
void policy_before_return(struct vcpu *v)
{
    u64 pc = read_sysreg(elr_el2);
    if (v->need_flush) {                /* xen: check_for_vcpu_work -> p2m_flush_vm */
        v->need_flush = false;
        int rule = xen_flush_rule[v->slot] ? xen_flush_rule[v->slot] : R_XEN_TOGGLE;
        xen_flush_rule[v->slot] = 0;
        flush_vm(v, rule, pc);
    }
    if (cfg.effective == POL_RFC2013 && any_mmu_on)
        v->policy_tvm = false;
    update_tvm(v, pc);
}
