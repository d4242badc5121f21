/*
 * s2cache shim: boot (parameter block, DTB, carve-out), EL2 set-up of every vCPU, guest entry.
 *
 * boot_main() runs where QEMU loaded us, with the MMU off, and may only write `cfg` (.data):
 * start.S then copies the image to the carve-out it returned and zeroes the bss there.
 * shim_main() runs in the carve-out and never returns: it enters the payload at EL1.
 */
#include "shim.h"

struct config cfg __attribute__((section(".data")));
struct ring_header shim_ring __attribute__((aligned(4096)));
struct vcpu vcpus[MAX_VCPUS];
u8 stacks[MAX_VCPUS][STACK_SIZE] __attribute__((aligned(16)));
static u64 el2_l1[512] __attribute__((aligned(4096)));   /* EL2 stage 1: 1 GiB blocks */
volatile u64 any_mmu_on;
/* Why the shim stopped before its ring existed (enum diag); shown by gdb, printed on the UART. */
u64 early_error __attribute__((section(".data")));

#define LINK_BASE       0x40200000UL
#define SCTLR_EL2_RES1  0x30c50830UL
#define RAM_BASE_VIRT   0x40000000UL
#define PSCI_SYSTEM_OFF 0x84000008UL

/* ID registers by encoding (older assemblers lack some names) */
#define ID_AA64PFR0     "S3_0_C0_C4_0"
#define rd_id(enc) ({ u64 __v; __asm__ volatile("mrs %0, " enc : "=r"(__v)); __v; })
#define field(v, lsb)   (((v) >> (lsb)) & 0xf)

static const char *policy_name(u64 p)
{
    switch (p) {
    case POL_NONE: return "none";
    case POL_RFC2013: return "rfc2013";
    case POL_KVM: return "kvm";
    case POL_XEN: return "xen";
    case POL_FWB: return "fwb";
    }
    return "?";
}

static void __attribute__((noreturn)) early_fatal(int reason, const char *what)
{
    early_error = (u64)reason;
    if (!cfg.uart)
        cfg.uart = 0x09000000UL;        /* virt's PL011, when the DTB could not tell */
    puts_("s2cache-shim: FATAL before start: ");
    puts_(what);
    puts_("\n");
    if (cfg.flags & PF_POWEROFF) {
        u64 x[4] = {PSCI_SYSTEM_OFF, 0, 0, 0};
        smc_call(x);
    }
    shim_halted();
}

static bool is_pow2(u64 x)
{
    return x && !(x & (x - 1));
}

/* Called where QEMU put us, MMU off: validate the parameters, read the DTB, choose and hide
 * the carve-out.  Returns the carve-out base (where start.S copies the image). */
u64 boot_main(u64 x0)
{
    struct params *p = &shim_params;

    if (p->magic != PARAMS_MAGIC || p->version != PARAMS_VERSION)
        early_fatal(D_PARAMS, "no parameter block at shim_params (see gdbplugin/shim/README.md)");
    cfg.flags = p->flags;
    if (p->policy >= POL_COUNT)
        early_fatal(D_PARAMS, "unknown policy in the parameter block");
    /* entry 0 is legitimate: U-Boot runs from virt's flash at 0 */
    cfg.policy = cfg.effective = p->policy;
    cfg.entry = p->entry;
    cfg.entry_x0 = p->entry_x0;
    cfg.ring_records = p->ring_records ? p->ring_records : DEFAULT_RING_RECORDS;
    if (!is_pow2(cfg.ring_records) || cfg.ring_records < 64 || cfg.ring_records > (1UL << 24))
        early_fatal(D_PARAMS, "ring_records must be a power of two in 64..2^24");
    cfg.ring_full = p->ring_full;
    if (cfg.ring_full > FULL_DROP)
        early_fatal(D_PARAMS, "bad ring_full mode");
    cfg.observe = p->observe;
    cfg.hook_mask = p->hook_mask;
    cfg.pool_size = p->pool_size;

    u64 dtb = p->dtb ? p->dtb : x0 ? x0 : RAM_BASE_VIRT;
    cfg.dtb = dtb;
    int err = fdt_scan(dtb);
    if (err == D_NO_DTB)
        early_fatal(err, "no DTB (x0, params.dtb and the base of RAM hold none)");
    if (err)
        early_fatal(err, "the DTB has no usable memory node");

    /* carve-out: [image + bss][ring records][stage-2 table pool], 2 MiB aligned, top of RAM */
    u64 ram_size = cfg.ram_end - cfg.ram_base;
    u64 image = ALIGN_UP((u64)(_end - _start), 0x10000);
    u64 ring = ALIGN_UP(cfg.ring_records * sizeof(struct record), 0x10000);  /* pool: 64K aligned */
    u64 pool = (cfg.pool_size ? ALIGN_UP(cfg.pool_size, PAGE_SIZE)
                              : ALIGN_UP(ram_size / 256 + (1UL << 20), PAGE_SIZE)) +
               (cfg.flags & PF_TRACK_WRITES ? SNAP_BYTES : 0);
    u64 base = ALIGN_DOWN(cfg.ram_end - (image + ring + pool), BLOCK_SIZE);
    if (base < cfg.ram_base + (16UL << 20) || base > cfg.ram_end)
        early_fatal(D_MEMORY, "RAM too small for the shim's carve-out");
    cfg.carve_base = base;
    cfg.carve_size = cfg.ram_end - base;
    cfg.pool_size = cfg.ram_end - (base + image + ring);    /* whatever the alignment left */
    u64 here = (u64)_start;
    if (here + 0x200000 > base || dtb + fdt_totalsize(dtb) > base || cfg.initrd_end > base ||
        cfg.entry >= base)
        early_fatal(D_MEMORY, "the DTB, initrd, payload or shim overlap the carve-out");
    if (fdt_shrink_memory(dtb, base))
        early_fatal(D_MEMORY, "cannot shrink the DTB memory node");
    cfg.ram_end = base;
    return base;
}

/* ---- EL2 stage 1: identity, RAM Normal WB, everything else Device-nGnRE --------------- */
static void el2_tables(void)
{
    for (u64 i = 0; i < 512; i++) {
        u64 pa = i << 30;
        bool ram = pa + (1UL << 30) > cfg.ram_base && pa < cfg.carve_base + cfg.carve_size;
        el2_l1[i] = pa | 1 | (1UL << 10) |                          /* block, AF */
                    (ram ? (0UL << 2) | (3UL << 8)                  /* attr 0, inner shareable */
                         : (1UL << 2) | (1UL << 54));               /* attr 1 (Device), XN */
    }
}

static void el2_mmu_on(void)
{
    write_sysreg(mair_el2, 0x04ffUL);           /* 0: Normal WB RA WA, 1: Device-nGnRE */
    write_sysreg(tcr_el2, (1UL << 31) | (1UL << 23) | (2UL << 16) | (3UL << 12) | (1UL << 10) |
                          (1UL << 8) | 25);     /* 39-bit VA, 4K, WB IS walks, 40-bit PA */
    write_sysreg(ttbr0_el2, (u64)el2_l1);
    dsb(sy);
    __asm__ volatile("tlbi alle2" : : : "memory");
    dsb(sy);
    isb();
    write_sysreg(sctlr_el2, SCTLR_EL2_RES1 | SCTLR_M | SCTLR_C | (1UL << 3) | SCTLR_I);
    isb();
}

/* ---- per-vCPU EL2 registers (what QEMU resets kindly and hardware does not) */
static u64 hcr_base;

u64 hcr_for(struct vcpu *v)
{
    bool observe = cfg.observe == 2 || (cfg.observe == 1 && !v->caches_seen_on);
    return hcr_base | (v->policy_tvm || observe ? HCR_TVM : 0);
}

/* HCR_EL2.TVM as policy and observation want it; a K_TVM record whenever the bit or the
 * policy's wish changes (op: the bit; flags: bit 0 the policy wants it, bit 1 observation). */
void update_tvm(struct vcpu *v, u64 pc)
{
    u64 hcr = hcr_for(v);
    if (hcr == v->hcr && v->policy_tvm == v->policy_tvm_recorded)
        return;
    bool armed = hcr & HCR_TVM;
    if (hcr != v->hcr) {
        v->hcr = hcr;
        write_sysreg(hcr_el2, hcr);
        isb();
    }
    v->policy_tvm_recorded = v->policy_tvm;
    emit(K_TVM, v, 1, A_NONE, armed, (v->policy_tvm ? 1 : 0) |
         (armed && !v->policy_tvm ? 2 : 0), pc, 0, 0, 0, 0, hcr);
}

void vcpu_el2_init(struct vcpu *v)
{
    u64 pfr0 = rd_id("S3_0_C0_C4_0"), pfr1 = rd_id("S3_0_C0_C4_1");
    u64 dfr0 = rd_id("S3_0_C0_C5_0"), mmfr1 = rd_id("S3_0_C0_C7_1");
    u64 smfr0 = rd_id("S3_0_C0_C4_5");
    bool sve = field(pfr0, 32), sme = field(pfr1, 24), gicv3 = field(pfr0, 24);

    /* CPTR_EL2 (E2H=0): RES1 13, 9, 7:0; TZ (8) and TSM (12) are RES1 without SVE/SME */
    u64 cptr = (1UL << 13) | (1UL << 9) | 0xff | (sve ? 0 : 1UL << 8) | (sme ? 0 : 1UL << 12);
    write_sysreg(cptr_el2, cptr);
    isb();
    if (sve)
        write_sysreg(S3_4_C1_C2_0, 0xfUL);           /* ZCR_EL2.LEN: the maximum */
    if (sme) {
        bool fa64 = (smfr0 >> 63) & 1;
        write_sysreg(S3_4_C1_C2_6, 0xfUL | (fa64 ? 1UL << 31 : 0));   /* SMCR_EL2 */
    }
    if (field(mmfr1, 40))
        write_sysreg(S3_4_C1_C2_2, 0UL);             /* HCRX_EL2 */
    write_sysreg(cnthctl_el2, 3UL);                  /* EL1PCTEN | EL1PCEN: no timer traps */
    write_sysreg(cntvoff_el2, 0UL);
    u64 pmuver = field(dfr0, 8);
    u64 hpmn = (pmuver && pmuver != 0xf) ? (read_sysreg(pmcr_el0) >> 11) & 0x1f : 0;
    write_sysreg(mdcr_el2, hpmn);                    /* all counters to EL1, no debug traps */
    write_sysreg(hstr_el2, 0UL);
    write_sysreg(vpidr_el2, read_sysreg(midr_el1));
    write_sysreg(vmpidr_el2, read_sysreg(mpidr_el1));
    if (gicv3) {
        write_sysreg(S3_4_C12_C9_5, 0x9UL);          /* ICC_SRE_EL2: SRE | Enable */
        isb();
        write_sysreg(S3_4_C12_C11_0, 0UL);           /* ICH_HCR_EL2 */
    }
    write_sysreg(vtcr_el2, shim_ring.vtcr);
    write_sysreg(vttbr_el2, shim_ring.vttbr);
    write_sysreg(sctlr_el1, SCTLR_EL1_RESET);
    v->hcr = hcr_base;                  /* TVM comes with update_tvm(), which records it */
    v->policy_tvm_recorded = false;
    write_sysreg(hcr_el2, v->hcr);
    isb();
    __asm__ volatile("tlbi alle1" : : : "memory");
    dsb(nsh);
    isb();
}

static u64 slot_of(u64 mpidr)
{
    return (mpidr & 0xff) + 16 * ((mpidr >> 8) & 0xff) + ((mpidr >> 16) & 0xff ? 1000 : 0);
}

static void __attribute__((noreturn)) vcpu_start(struct vcpu *v, u64 entry, u64 x0)
{
    write_sysreg(tpidr_el2, (u64)v);
    policy_vcpu_reset(v);
    v->started = true;
    vcpu_el2_init(v);
    stat_add(ST_VCPUS, 1);
    emit(K_VCPU_START, v, 2, A_NONE, v->slot, 0, entry, 0, 0, 0, 0, x0);
    update_tvm(v, entry);
    enter_guest(entry, x0, v->stack_top);
}

void __attribute__((noreturn)) shim_main(void)
{
    u64 mpidr = read_sysreg(mpidr_el1);
    u64 slot = slot_of(mpidr);
    u64 image = ALIGN_UP((u64)(_end - _start), 0x10000);
    u64 ring_bytes = ALIGN_UP(cfg.ring_records * sizeof(struct record), 0x10000);

    /* Data written before the move went to memory with caches off: drop stale lines first. */
    for (u64 a = cfg.carve_base; a < cfg.carve_base + image; a += 64)
        __asm__ volatile("dc ivac, %0" : : "r"(a) : "memory");
    dsb(sy);
    el2_tables();
    el2_mmu_on();

    struct ring_header *h = &shim_ring;
    h->record_size = sizeof(struct record);
    h->full_mode = cfg.ring_full;
    h->shim_base = (u64)_start;
    h->link_base = LINK_BASE;
    h->carve_base = cfg.carve_base;
    h->carve_size = cfg.carve_size;
    h->ram_base = cfg.ram_base;
    h->ram_end = cfg.ram_end;
    h->policy = cfg.policy;
    h->flags = cfg.flags;
    h->dtb = cfg.dtb;
    h->entry = cfg.entry;
    h->hook_mask = cfg.hook_mask;
    h->observe = cfg.observe;
    h->mmio_count = cfg.mmio_count;
    h->fw_cfg[0] = cfg.fwcfg_base;
    h->fw_cfg[1] = cfg.fwcfg_size;
    h->ctr_el0 = read_sysreg(ctr_el0);
    h->clidr_el1 = read_sysreg(clidr_el1);
    h->midr_el1 = read_sysreg(midr_el1);
    h->rom_count = cfg.rom_count;
    for (u64 i = 0; i < cfg.rom_count && i < 8; i++) {
        h->rom[i][0] = cfg.rom[i][0];
        h->rom[i][1] = cfg.rom[i][1];
    }
    for (u64 i = 0; i < cfg.mmio_count && i < 64; i++) {
        h->mmio[i][0] = cfg.mmio[i][0];
        h->mmio[i][1] = cfg.mmio[i][1];
    }
    h->pool_base = cfg.carve_base + image + ring_bytes;
    h->pool_size = cfg.pool_size;
    ring_init(cfg.carve_base + image, cfg.ring_records);   /* sets magic last */

    u64 ctr = read_sysreg(ctr_el0);
    cfg.dminline = 4UL << ((ctr >> 16) & 0xf);
    cfg.iminline = 4UL << (ctr & 0xf);
    u64 mmfr0 = rd_id("S3_0_C0_C7_0"), mmfr2 = rd_id("S3_0_C0_C7_2");
    u64 isar1 = rd_id("S3_0_C0_C6_1"), isar2 = rd_id("S3_0_C0_C6_2");
    cfg.s2fwb = field(mmfr2, 40) != 0;

    if (slot >= MAX_VCPUS)
        fatal(NULL, D_VCPUS, 0, 0, 0, 0, mpidr);
    struct vcpu *v = &vcpus[slot];
    v->slot = slot;
    v->mpidr = mpidr;
    v->stack_top = (u64)&stacks[slot][STACK_SIZE];
    h->mpidr[slot] = mpidr | (1UL << 63);
    write_sysreg(tpidr_el2, (u64)v);

    if ((mmfr0 & 0xf) < 2)                           /* PARange: we need a 40-bit IPA/PA */
        fatal(v, D_CPU, 0, 0, 0, 0, mmfr0);
    if (cfg.policy == POL_FWB && !cfg.s2fwb) {
        cfg.effective = POL_KVM;
        diag(v, D_FWB_MISSING, false, 0, 0, 0, 0, mmfr2);
    }
    h->policy_effective = cfg.effective;

    hcr_base = HCR_VM | HCR_SWIO | HCR_PTW | HCR_FB | HCR_BSU_IS | HCR_TSC | HCR_TSW | HCR_RW;
    if ((isar1 & 0xff0UL) || (isar1 & (0xffUL << 24)) || field(isar2, 12))
        hcr_base |= HCR_APK | HCR_API;               /* no pointer-auth traps */
    if (cfg.effective == POL_FWB)
        hcr_base |= HCR_FWB;
    if (cfg.flags & PF_TRAP_CMO)
        hcr_base |= HCR_TPCP | HCR_TPU;
    h->hcr = hcr_base;

    s2_init();                                       /* sets h->vttbr, h->vtcr */

    if (!(cfg.flags & PF_QUIET)) {
        puts_("s2cache-shim: policy ");
        puts_(policy_name(cfg.effective));
        puts_(cfg.flags & PF_BLOCKS ? ", 2M blocks" : ", 4K pages");
        puts_(", ring ");
        puthex((u64)h);
        puts_(" (");
        putdec(cfg.ring_records);
        puts_(" records), guest RAM ");
        puthex(cfg.ram_base);
        puts_("-");
        puthex(cfg.ram_end);
        puts_(", shim ");
        puthex(cfg.carve_base);
        puts_("-");
        puthex(cfg.carve_base + cfg.carve_size);
        puts_(", entry ");
        puthex(cfg.entry);
        puts_(" at EL1\n");
    }

    emit(K_SHIM_START, v, 2, A_NONE, cfg.effective, cfg.policy, cfg.entry, 0,
         cfg.ram_base, cfg.carve_base, cfg.carve_size, cfg.dtb);
    __asm__ volatile("tlbi alle1is" : : : "memory");
    dsb(ish);
    isb();
    policy_boot();
    vcpu_start(v, cfg.entry, cfg.entry_x0 ? cfg.entry_x0 : cfg.dtb);
}

/* A secondary vCPU, started by our forwarded PSCI CPU_ON; x0 (slot) checked by start.S. */
void __attribute__((noreturn)) secondary_main(u64 slot)
{
    el2_mmu_on();
    struct vcpu *v = &vcpus[slot];
    u64 mpidr = read_sysreg(mpidr_el1);
    v->slot = slot;
    v->mpidr = mpidr;
    v->stack_top = (u64)&stacks[slot][STACK_SIZE];
    write_sysreg(tpidr_el2, (u64)v);
    if (slot_of(mpidr) != slot)
        fatal(v, D_VCPUS, 0, 0, 0, 0, mpidr);
    shim_ring.mpidr[slot] = mpidr | (1UL << 63);
    v->caches_seen_on = false;
    v->need_flush = false;
    v->sw_count = 0;
    v->cmo_bytes = 0;
    __atomic_store_n(&v->pending, 0, __ATOMIC_RELEASE);
    vcpu_start(v, v->entry, v->context);
}

/* PSCI CPU_ON: remember the guest's entry, start the target at ours (slot as context). */
u64 psci_cpu_on(struct vcpu *caller, u64 *x, u64 pc)
{
    u64 slot = slot_of(x[1]);
    if (slot >= MAX_VCPUS)
        return (u64)-2;                              /* INVALID_PARAMETERS */
    struct vcpu *t = &vcpus[slot];
    t->entry = x[2];
    t->context = x[3];
    u64 call[4] = {x[0], x[1], (u64)secondary_entry, slot};
    /* recorded before: the target may run (and record) before QEMU's CPU_ON returns; the
     * K_SMC record that follows carries the result */
    emit(K_PSCI_ON, caller, 1, A_NONE, slot, 0, pc, 0, x[2], (u64)secondary_entry, 0, x[1]);
    smc_call(call);
    return call[0];
}
