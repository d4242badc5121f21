/*
 * s2cache shim: synchronous traps from the guest.
 *
 *   EC 0x20/0x24  stage-2 instruction/data abort         -> s2.c
 *   EC 0x18       TVM register write (emulated), DC ISW/CSW/CISW (TSW, coalesced)
 *   EC 0x17       SMC (TSC): PSCI forwarded to QEMU with an SMC from EL2, CPU_ON rewritten
 *   EC 0x16       HVC: PSCI function ids as SMC, anything else NOT_SUPPORTED
 * Any other class is a fatal diagnostic (never a silent hang).
 */
#include "shim.h"

u64 psci_cpu_on(struct vcpu *caller, u64 *x, u64 pc);

#define EC_HVC64    0x16
#define EC_SMC64    0x17
#define EC_SYS64    0x18
#define EC_IABT_LOW 0x20
#define EC_DABT_LOW 0x24

#define PSCI_CPU_OFF        0x84000002UL
#define PSCI_CPU_ON_32      0x84000003UL
#define PSCI_CPU_ON_64      0xc4000003UL
#define PSCI_SYSTEM_OFF     0x84000008UL
#define PSCI_SYSTEM_RESET   0x84000009UL
#define PSCI_SYSTEM_RESET2  0xc4000012UL

static u64 xreg(struct frame *f, u64 rt)
{
    return rt == 31 ? 0 : f->x[rt];
}

static void skip_insn(void)
{
    write_sysreg(elr_el2, read_sysreg(elr_el2) + 4);
}

static u8 guest_el(void)
{
    u64 spsr = read_sysreg(spsr_el2);
    return (spsr & 0x10) ? 0 : (spsr >> 2) & 3;
}

/* The EL1 registers HCR_EL2.TVM traps, by (op1, CRn, CRm, op2) with op0 = 3 (ids match
 * ring.py SYSREGS): emulate the write; *now is what the register holds after it (bits the
 * CPU fixes, e.g. SCTLR_EL1.ATA without tag memory), so that consecutive records chain. */
static int tvm_write(u64 key, u64 val, u64 *old, u64 *now)
{
#define TVM(id, o1, n, m, o2, name) \
    case ((o1) << 12 | (n) << 8 | (m) << 4 | (o2)): \
        *old = read_sysreg(name); write_sysreg(name, val); *now = read_sysreg(name); \
        return id;
    switch (key) {
    TVM(1, 0, 1, 0, 0, sctlr_el1)
    TVM(2, 0, 2, 0, 0, ttbr0_el1)
    TVM(3, 0, 2, 0, 1, ttbr1_el1)
    TVM(4, 0, 2, 0, 2, tcr_el1)
    TVM(5, 0, 5, 2, 0, esr_el1)
    TVM(6, 0, 6, 0, 0, far_el1)
    TVM(7, 0, 5, 1, 0, afsr0_el1)
    TVM(8, 0, 5, 1, 1, afsr1_el1)
    TVM(9, 0, 10, 2, 0, mair_el1)
    TVM(10, 0, 10, 3, 0, amair_el1)
    TVM(11, 0, 13, 0, 1, contextidr_el1)
    }
#undef TVM
    return 0;
}

/* The guest's own cache maintenance by VA (PF_TRAP_CMO): which op, or 0. */
static u64 cmo_op(u64 op1, u64 crn, u64 crm, u64 op2)
{
    if (crn != 7)
        return 0;
    if (op1 == 0 && crm == 6 && op2 == 1) return G_DC_IVAC;
    if (op1 == 3 && crm == 10 && op2 == 1) return G_DC_CVAC;
    if (op1 == 3 && crm == 14 && op2 == 1) return G_DC_CIVAC;
    if (op1 == 3 && crm == 11 && op2 == 1) return G_DC_CVAU;
    if (op1 == 3 && (crm == 12 || crm == 13) && op2 == 1) return G_DC_CVAP;
    if (op1 == 3 && crm == 5 && op2 == 1) return G_IC_IVAU;
    if (op1 == 0 && crm == 5 && op2 == 0) return G_IC_IALLU;
    if (op1 == 0 && crm == 1 && op2 == 0) return G_IC_IALLUIS;
    return 0;
}

/* Guest VA -> IPA through the guest's stage 1 (AT from EL2, PAR_EL1 preserved); ~0: none. */
static u64 guest_ipa(u64 va, u8 el)
{
    u64 sctlr = read_sysreg(sctlr_el1);
    if (!(sctlr & SCTLR_M))
        return va;
    u64 saved = read_sysreg(par_el1);
    if (el == 0)
        __asm__ volatile("at s1e0r, %0" : : "r"(va) : "memory");
    else
        __asm__ volatile("at s1e1r, %0" : : "r"(va) : "memory");
    isb();
    u64 par = read_sysreg(par_el1);
    write_sysreg(par_el1, saved);
    if (par & 1)
        return ~0UL;
    return (par & 0x0000fffffffff000UL) | (va & 0xfff);
}

static void do_cmo(u64 op, u64 pa)
{
    switch (op) {
    case G_DC_IVAC: __asm__ volatile("dc ivac, %0" : : "r"(pa) : "memory"); break;
    case G_DC_CVAC: __asm__ volatile("dc cvac, %0" : : "r"(pa) : "memory"); break;
    case G_DC_CIVAC: __asm__ volatile("dc civac, %0" : : "r"(pa) : "memory"); break;
    case G_DC_CVAU: __asm__ volatile("dc cvau, %0" : : "r"(pa) : "memory"); break;
    case G_DC_CVAP: __asm__ volatile("dc cvac, %0" : : "r"(pa) : "memory"); break;
    case G_IC_IVAU: __asm__ volatile("ic ivau, %0" : : "r"(pa) : "memory"); break;
    }
    dsb(ish);
}

static void handle_guest_cmo(struct vcpu *v, struct frame *f, u64 esr, u64 op, u64 rt)
{
    u64 pc = read_sysreg(elr_el2);
    u8 el = guest_el();
    stat_add(ST_GUEST_CMO, 1);
    if (op == G_IC_IALLU || op == G_IC_IALLUIS) {
        s2_icache_maintenance(0, ~0UL);        /* lines written before it: recorded first */
        __asm__ volatile("ic ialluis" : : : "memory");
        dsb(ish);
        isb();
        cmo_flush(v);
        emit(K_GUEST_CMO, v, el, A_NONE, (u8)op, 0, pc, esr, 0, 0, 0, 0);
        return;
    }
    bool icache = op == G_IC_IVAU;
    u64 line = icache ? cfg.iminline : cfg.dminline;
    u64 va = xreg(f, rt) & ~(line - 1);
    u64 ipa = guest_ipa(va, el);
    bool ok = ipa != ~0UL && (ipa_is_ram(ipa) || mmio_find(ipa) >= 0);
    if (ok && ipa_is_ram(ipa)) {
        if (op == G_IC_IVAU)
            s2_icache_maintenance(ipa, line);
        do_cmo(op, ipa);
        /* a clean to PoC ends the page's write epoch: its next write is observed again */
        if (track_writes() && !(cfg.flags & PF_BLOCKS) &&
            (op == G_DC_IVAC || op == G_DC_CVAC || op == G_DC_CIVAC || op == G_DC_CVAP))
            s2_wrprotect(v, ipa & ~(PAGE_SIZE - 1), PAGE_SIZE, pc, false);
    }
    if (v->cmo_bytes && v->cmo_op == op && v->cmo_pc == pc && v->cmo_next == va &&
        (va & 0xfff) && v->cmo_flags == (ok ? 0 : CMO_NO_IPA)) {
        v->cmo_bytes += line;
        v->cmo_next = va + line;
        return;
    }
    cmo_flush(v);
    v->cmo_op = op;
    v->cmo_pc = pc;
    v->cmo_esr = esr;
    v->cmo_va = va;
    v->cmo_ipa = ok ? ipa : 0;
    v->cmo_next = va + line;
    v->cmo_bytes = line;
    v->cmo_flags = ok ? 0 : CMO_NO_IPA;
    v->cmo_el = el;
}

static void handle_sys(struct vcpu *v, struct frame *f, u64 esr)
{
    u64 iss = esr & 0x1ffffff;
    u64 op0 = (iss >> 20) & 3, op2 = (iss >> 17) & 7, op1 = (iss >> 14) & 7;
    u64 crn = (iss >> 10) & 0xf, rt = (iss >> 5) & 0x1f, crm = (iss >> 1) & 0xf;
    bool read = iss & 1;
    u64 pc = read_sysreg(elr_el2);
    u64 val = xreg(f, rt);

    if (op0 == 1 && op1 == 0 && crn == 7 && op2 == 2 && !read &&
        (crm == 6 || crm == 10 || crm == 14)) {
        u64 op = crm == 6 ? SW_ISW : crm == 10 ? SW_CSW : SW_CISW;
        stat_add(ST_SET_WAY, 1);
        if (v->sw_count && v->sw_op == op && v->sw_pc == pc) {
            v->sw_count++;
            v->sw_last = val;
        } else {
            sw_flush(v);
            v->sw_op = op;
            v->sw_pc = pc;
            v->sw_esr = esr;
            v->sw_count = 1;
            v->sw_first = v->sw_last = val;
        }
        policy_on_set_way(v, pc);
        skip_insn();
        return;
    }
    if (op0 == 1 && !read && (cfg.flags & PF_TRAP_CMO)) {
        u64 op = cmo_op(op1, crn, crm, op2);
        if (op) {
            handle_guest_cmo(v, f, esr, op, rt);
            skip_insn();
            return;
        }
    }
    if (op0 == 3 && !read) {
        u64 old;
        u64 key = op1 << 12 | crn << 8 | crm << 4 | op2;
        u64 written;
        int id = tvm_write(key, val, &old, &written);
        val = written;
        if (id) {
            stat_add(ST_SYSREG, 1);
            /* the vCPU's writes change cacheability: the write epoch ends before the write
             * is recorded (what was written so far is recorded first) and a new one starts */
            if (id == 1 && track_writes() && ((old ^ val) & (SCTLR_M | SCTLR_C)))
                s2_wrprotect(v, 0, ~0UL, pc, true);
            u64 enc = op0 << 14 | op1 << 11 | crn << 7 | crm << 3 | op2;
            emit(K_SYSREG, v, guest_el(), A_WRITE, (u8)id, 0, pc, esr, old, val, 8, enc);
            u64 sctlr = read_sysreg(sctlr_el1);
            if (id == 1) {
                policy_on_sysreg(v, old, val, pc);
                bool was_on = (old & (SCTLR_M | SCTLR_C)) == (SCTLR_M | SCTLR_C);
                bool now_on = (val & (SCTLR_M | SCTLR_C)) == (SCTLR_M | SCTLR_C);
                if (now_on)
                    v->caches_seen_on = true;
                /* caches off: observe the first access to each page from here on */
                if ((cfg.flags & PF_TRACK_ACCESS) && was_on != now_on)
                    s2_hide(v, !now_on, pc);
            } else {
                policy_on_sysreg(v, sctlr, sctlr, pc);
            }
            skip_insn();
            return;
        }
    }
    fatal(v, D_SYSREG, pc, esr, 0, 0, iss);
}

static bool is_psci(u64 fid)
{
    fid &= 0xffffffffUL;
    return (fid >= 0x84000000UL && fid <= 0x8400001fUL) ||
           (fid >= 0xc4000000UL && fid <= 0xc400001fUL);
}

/* PSCI/SMCCC call from the guest: forward to QEMU's firmware with an SMC from EL2. */
static void forward(struct vcpu *v, struct frame *f, u64 esr, u16 kind)
{
    u64 pc = read_sysreg(elr_el2);
    u64 x[4] = {f->x[0], f->x[1], f->x[2], f->x[3]};
    u64 fid = x[0] & 0xffffffffUL;
    u8 el = guest_el();

    if (fid == PSCI_CPU_ON_64 || fid == PSCI_CPU_ON_32) {
        x[0] = psci_cpu_on(v, x, pc);
    } else if (fid == PSCI_SYSTEM_OFF || fid == PSCI_SYSTEM_RESET ||
               fid == PSCI_SYSTEM_RESET2 || fid == PSCI_CPU_OFF) {
        /* no return: record first */
        emit(kind, v, el, A_NONE, 0, 0, pc, esr, fid, 0, x[2], x[1]);
        dsb(sy);
        smc_call(x);
        return;
    } else {
        smc_call(x);
    }
    emit(kind, v, el, A_NONE, 0, 1, pc, esr, fid, x[0], f->x[2], f->x[1]);
    f->x[0] = x[0];
    f->x[1] = x[1];
    f->x[2] = x[2];
    f->x[3] = x[3];
}

void handle_sync(struct frame *f)
{
    struct vcpu *v = this_vcpu();
    if (shim_ring.halted)
        shim_halted();
    u64 esr = read_sysreg(esr_el2);
    u64 ec = esr >> 26;
    stat_add(ST_TRAPS, 1);

    switch (ec) {
    case EC_DABT_LOW:
    case EC_IABT_LOW:
        s2_handle_abort(v, f, esr, ec == EC_IABT_LOW);
        break;
    case EC_SYS64:
        handle_sys(v, f, esr);
        break;
    case EC_SMC64:
        stat_add(ST_SMC, 1);
        forward(v, f, esr, K_SMC);
        skip_insn();                    /* a trapped SMC returns to itself */
        break;
    case EC_HVC64:
        stat_add(ST_HVC, 1);
        if (is_psci(f->x[0])) {
            forward(v, f, esr, K_HVC);
        } else {
            emit(K_HVC, v, guest_el(), A_NONE, 0, 2, read_sysreg(elr_el2), esr, f->x[0],
                 (u64)-1, f->x[2], f->x[1]);
            f->x[0] = (u64)-1;          /* SMCCC NOT_SUPPORTED */
        }
        break;
    default:
        fatal(v, D_UNKNOWN_TRAP, read_sysreg(elr_el2), esr, 0, read_sysreg(far_el2), ec);
    }
    policy_before_return(v);
}

/* Anything at EL2 itself, or an interrupt/SError routed to EL2: a fatal diagnostic. */
void handle_el2_exception(struct frame *f, u64 kind)
{
    (void)f;
    struct vcpu *v = (struct vcpu *)read_sysreg(tpidr_el2);
    bool sync = kind == 0 || kind == 4;
    fatal(v, sync ? D_EL2_EXCEPTION : D_EL2_INTERRUPT, read_sysreg(elr_el2),
          read_sysreg(esr_el2), 0, read_sysreg(far_el2), kind);
}
