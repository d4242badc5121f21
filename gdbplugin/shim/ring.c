/*
 * s2cache shim: the event ring.
 *
 * Multi-producer, one consumer outside the guest (s2cache reading the shared RAM file).  A
 * writer reserves index i by CAS on write_index, fills record i % capacity and stores its seq
 * (i + 1) last with release semantics: the reader takes record i once seq == i + 1.  A full
 * ring (write_index - read_index == capacity; read_index is written by a live consumer, else
 * stays 0) halts with a diagnostic, waits for the consumer, or drops and counts, as
 * params.ring_full says.  Diagnostics also go to ring_header.diag, which is never full.
 */
#include "shim.h"

static struct record *recs;
static u64 mask;
static volatile u32 fatal_entered;
static spinlock_t uart_lock;

void ring_init(u64 pa, u64 cap)
{
    struct ring_header *h = &shim_ring;
    recs = (struct record *)pa;
    mask = cap - 1;
    memset(recs, 0, cap * sizeof(struct record));
    h->version = RING_VERSION;
    h->record_size = sizeof(struct record);
    h->capacity = cap;
    h->records = pa;
    h->write_index = 0;
    h->read_index = 0;
    dsb(ish);
    __atomic_store_n(&h->magic, RING_MAGIC, __ATOMIC_RELEASE);
}

void stat_add(int which, u64 n)
{
    __atomic_fetch_add(&shim_ring.stat[which], n, __ATOMIC_RELAXED);
}

/* A free record index, or false (dropped).  `wait_ok`: may wait/halt when full. */
static bool reserve(u64 *out, struct vcpu *v, bool wait_ok)
{
    struct ring_header *h = &shim_ring;
    for (;;) {
        u64 w = __atomic_load_n(&h->write_index, __ATOMIC_RELAXED);
        u64 r = __atomic_load_n(&h->read_index, __ATOMIC_ACQUIRE);
        if (w - r > mask) {
            if (!wait_ok || cfg.ring_full == FULL_DROP) {
                __atomic_fetch_add(&h->overflow, 1, __ATOMIC_RELAXED);
                return false;
            }
            if (cfg.ring_full == FULL_WAIT) {
                __atomic_fetch_add(&h->stalls, 1, __ATOMIC_RELAXED);
                while (__atomic_load_n(&h->read_index, __ATOMIC_ACQUIRE) == r &&
                       !h->halted)
                    __asm__ volatile("yield");
                if (h->halted)
                    shim_halted();
                continue;
            }
            __atomic_fetch_add(&h->overflow, 1, __ATOMIC_RELAXED);
            fatal(v, D_RING_FULL, 0, 0, w, r, mask + 1);
        }
        if (__atomic_compare_exchange_n(&h->write_index, &w, w + 1, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED)) {
            *out = w;
            return true;
        }
    }
}

static void put(u64 i, u16 kind, struct vcpu *v, u8 el, u8 access, u8 op, u16 flags, u64 pc,
                u64 esr, u64 ipa, u64 pa, u64 size, u64 va)
{
    struct record *r = &recs[i & mask];
    r->kind = kind;
    r->vcpu = v ? (u8)v->slot : 0xff;
    r->el = el;
    r->access = access;
    r->op = op;
    r->flags = flags;
    r->pc = pc;
    r->esr = esr;
    r->ipa = ipa;
    r->pa = pa;
    r->size = size;
    r->va = va;
    __atomic_store_n(&r->seq, i + 1, __ATOMIC_RELEASE);
    if ((shim_ring.hook_mask >> kind) & 1)
        shim_hook(r);
}

void emit(u16 kind, struct vcpu *v, u8 el, u8 access, u8 op, u16 flags, u64 pc, u64 esr,
          u64 ipa, u64 pa, u64 size, u64 va)
{
    if (!recs)
        return;
    if (v && v->sw_count && kind != K_SET_WAY)
        sw_flush(v);
    if (v && v->cmo_bytes && kind != K_GUEST_CMO)
        cmo_flush(v);
    u64 i;
    if (reserve(&i, v, true))
        put(i, kind, v, el, access, op, flags, pc, esr, ipa, pa, size, va);
}

/* The end of a coalesced run of trapped set/way operations (same op, same PC). */
void sw_flush(struct vcpu *v)
{
    u64 n = v->sw_count;
    if (!n)
        return;
    v->sw_count = 0;
    emit(K_SET_WAY, v, 1, A_NONE, (u8)v->sw_op, 0, v->sw_pc, v->sw_esr, v->sw_first,
         v->sw_last, n, 0);
}

/* The end of a coalesced run of the guest's own cache maintenance (same op and PC, VAs
 * following each other within one page). */
void cmo_flush(struct vcpu *v)
{
    u64 n = v->cmo_bytes;
    if (!n)
        return;
    v->cmo_bytes = 0;
    emit(K_GUEST_CMO, v, (u8)v->cmo_el, A_NONE, (u8)v->cmo_op, (u16)v->cmo_flags, v->cmo_pc,
         v->cmo_esr, v->cmo_ipa, v->cmo_ipa, n, v->cmo_va);
}

/* The tool plants a breakpoint here for a synchronous stop on the kinds in hook_mask. */
void __attribute__((noinline)) shim_hook(struct record *r)
{
    __asm__ volatile("" : : "r"(r) : "memory");
}

static const char *diag_name(int reason)
{
    switch (reason) {
    case D_UNKNOWN_TRAP: return "unknown trap";
    case D_OUTSIDE: return "guest access outside RAM and MMIO";
    case D_RING_FULL: return "event ring full";
    case D_EL2_EXCEPTION: return "exception at EL2 (shim bug)";
    case D_PARAMS: return "bad parameter block";
    case D_NO_DTB: return "no DTB";
    case D_POOL: return "stage-2 table pool exhausted";
    case D_FAULT_STATUS: return "unexpected stage-2 fault status";
    case D_SYSREG: return "unexpected trapped system register access";
    case D_VCPUS: return "vCPU outside the supported MPIDR range";
    case D_MEMORY: return "memory layout";
    case D_SHIM_MEMORY: return "guest access to the shim's memory";
    case D_EL2_INTERRUPT: return "interrupt or SError taken to EL2";
    case D_FWB_MISSING: return "policy fwb without FEAT_S2FWB: running kvm";
    case D_CPU: return "CPU lacks a 40-bit physical address range";
    case D_MMIO: return "access to emulate without a usable syndrome (ESR_EL2.ISV)";
    }
    return "?";
}

void diag(struct vcpu *v, int reason, bool is_fatal, u64 pc, u64 esr, u64 ipa, u64 va, u64 extra)
{
    struct ring_header *h = &shim_ring;
    struct record *d = &h->diag;
    d->kind = K_DIAG;
    d->vcpu = v ? (u8)v->slot : 0xff;
    d->el = 2;
    d->access = A_NONE;
    d->op = (u8)reason;
    d->flags = is_fatal ? DIAG_FATAL : 0;
    d->pc = pc;
    d->esr = esr;
    d->ipa = ipa;
    d->pa = extra;
    d->size = 0;
    d->va = va;
    __atomic_store_n(&d->seq, h->write_index + 1, __ATOMIC_RELEASE);
    if (recs) {
        if (v && v->sw_count)
            sw_flush(v);
        if (v && v->cmo_bytes)
            cmo_flush(v);
        u64 i;
        if (reserve(&i, v, false))
            put(i, K_DIAG, v, 2, A_NONE, (u8)reason, is_fatal ? DIAG_FATAL : 0, pc, esr, ipa,
                extra, 0, va);
    }
    if (cfg.uart) {
        if (recs)
            spin_lock(&uart_lock);
        puts_(is_fatal ? "s2cache-shim: FATAL: " : "s2cache-shim: note: ");
        puts_(diag_name(reason));
        puts_(" vcpu ");
        putdec(v ? v->slot : 255);
        puts_(" pc ");
        puthex(pc);
        puts_(" esr ");
        puthex(esr);
        puts_(" ipa ");
        puthex(ipa);
        puts_(" va ");
        puthex(va);
        puts_(" info ");
        puthex(extra);
        puts_("\n");
        if (recs)
            spin_unlock(&uart_lock);
    }
}

#define PSCI_SYSTEM_OFF 0x84000008UL

void fatal(struct vcpu *v, int reason, u64 pc, u64 esr, u64 ipa, u64 va, u64 extra)
{
    if (__atomic_exchange_n(&fatal_entered, 1, __ATOMIC_ACQ_REL))
        shim_halted();                  /* another vCPU (or a nested fault) got here first */
    diag(v, reason, true, pc, esr, ipa, va, extra);
    __atomic_store_n(&shim_ring.halted, (u32)reason, __ATOMIC_RELEASE);
    dsb(sy);
    if (cfg.flags & PF_POWEROFF) {
        u64 x[4] = {PSCI_SYSTEM_OFF, 0, 0, 0};
        smc_call(x);
    }
    shim_halted();
}
