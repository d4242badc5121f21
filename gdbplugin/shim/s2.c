/*
 * s2cache shim: the guest's stage 2, built on demand.
 *
 * VTCR_EL2: 40-bit IPA (covers virt's whole map, high PCIe included), 4K granule, start level 1
 * with two concatenated root tables.  A translation fault maps the faulting IPA identity:
 * a 4 KiB page (or, with PF_BLOCKS, the 2 MiB block of RAM around it), RAM Normal WB
 * (FWB: forced WB), MMIO Device-nGnRE.  Under kvm and fwb, a page is mapped non-executable
 * until the guest executes from it (as KVM does), which is when the I-cache gets invalidated.
 *
 * Two kinds of MMIO window are treated as KVM and QEMU treat them, not as Device pages:
 *  - cfi-flash (QEMU's pflash, a ROM device): KVM sees it as a read-only memslot while QEMU
 *    keeps it in ROMD mode, so stage 2 maps it Normal and read-only.  A stage-1 walk may read
 *    tables there (EDK2 keeps its early ones in flash: with HCR_EL2.PTW a walk into a Device
 *    page faults) and the guest may execute from it; a write is emulated from EL2 (mmio.c).
 *    Reads while QEMU's pflash is in programming mode still reach its device callbacks under
 *    TCG, whatever stage 2 says (a rom_device outside ROMD mode is I/O to the TLB).
 *  - QEMU's fw_cfg: never mapped, every access emulated (mmio.c), so the shim sees the DMA
 *    doorbell and records what QEMU then writes into guest RAM (K_HOST_DMA).
 * Anything else -- an IPA outside RAM and the DTB's MMIO windows, a permission or access-flag
 * fault we did not cause -- is a fatal diagnostic.
 */
#include "shim.h"

spinlock_t s2_lock;

#define D_VALID     1UL
#define D_TABLE     3UL             /* table (levels 1-2) or page (level 3) */
#define D_BLOCK     1UL
#define S2_AP_RW    (3UL << 6)
#define S2_AP_RO    (1UL << 6)
#define S2_SH_IS    (3UL << 8)
#define S2_AF       (1UL << 10)
#define S2_XN       (2UL << 53)     /* XN[1:0] = 0b10: not executable at EL1 nor EL0 */
#define S2_SW_XOK   (1UL << 55)     /* software bit: executable for the policy (write-xor-
                                       execute observation may hold XN while the leaf is W) */
#define S2_SW_HIDDEN (1UL << 56)    /* software bit: a valid leaf hidden to observe an access */
#define S2_SW_WX_SHIFT 57           /* software bits 58:57: observed write->fetch cycles */
#define S2_SW_WX    (3UL << S2_SW_WX_SHIFT)
#define WX_CYCLES   3               /* then code and data share the page: left W and X */
#define S2_ATTR(x)  ((u64)(x) << 2)
#define OA_MASK     0x0000fffffffff000UL
#define ATTR_NORMAL 0xfUL           /* Outer WB, Inner WB */
#define ATTR_FWB_WB 0x6UL           /* FWB: force Normal WB */
#define ATTR_DEVICE 0x1UL           /* Device-nGnRE (same with FWB) */

static u64 *root;                   /* 2 concatenated level-1 tables (8 KiB) */
static u64 pool_next, pool_end;
static u8 (*snap_data)[PAGE_SIZE];          /* page copies (SNAP_SLOTS each, s2_init) */
static u8 (*snap_fetch)[PAGE_SIZE];

static u64 *alloc_table(void)
{
    if (pool_next + PAGE_SIZE > pool_end)
        return NULL;
    u64 *t = (u64 *)pool_next;
    pool_next += PAGE_SIZE;
    memset(t, 0, PAGE_SIZE);
    shim_ring.pool_used = pool_next - shim_ring.pool_base;
    stat_add(ST_TABLES, 1);
    return t;
}

void s2_init(void)
{
    pool_next = shim_ring.pool_base;
    pool_end = shim_ring.pool_base + shim_ring.pool_size;
    if (track_writes()) {               /* the page copies (main.c sized the pool for them) */
        pool_end -= SNAP_BYTES;
        snap_data = (u8 (*)[PAGE_SIZE])pool_end;
        snap_fetch = snap_data + SNAP_SLOTS;
    }
    root = alloc_table();
    u64 *second = alloc_table();        /* the pool starts 8 KiB aligned: concatenated */
    if (!root || second != root + 512 || ((u64)root & 0x1fff))
        fatal(this_vcpu(), D_POOL, 0, 0, 0, 0, (u64)root);
    shim_ring.vtcr = (1UL << 31) | (2UL << 16) | (0UL << 14) | (3UL << 12) | (1UL << 10) |
                     (1UL << 8) | (1UL << 6) | 24;
    shim_ring.vttbr = (u64)root | (1UL << 48);          /* VMID 1 */
    dsb(ish);
}

/* Entry for `ipa` at `level` (2 or 3), creating the tables above it; NULL: pool exhausted.
 * *block_above is set when a level-2 walk meets a block (level 3 impossible). */
static u64 *walk(u64 ipa, int level, bool *block_above)
{
    u64 *e = &root[(ipa >> 30) & 0x3ff];
    *block_above = false;
    for (int lv = 1; lv < level; lv++) {
        u64 d = *e;
        if (!(d & D_VALID)) {
            u64 *t = alloc_table();
            if (!t)
                return NULL;
            dsb(ishst);
            *e = (u64)t | D_TABLE;
            d = *e;
        } else if ((d & 3) == D_BLOCK) {
            *block_above = true;
            return e;
        }
        u64 *next = (u64 *)(d & OA_MASK);
        e = &next[(ipa >> (lv == 1 ? 21 : 12)) & 0x1ff];
    }
    return e;
}

/* Leaf entry mapping `ipa` (any level), or NULL; with `hidden`, a hidden leaf (never a
 * table: only leaves are hidden, and a hidden level-2 entry is a block). */
static u64 *leaf_lookup(u64 ipa, u64 *size, bool hidden)
{
    u64 *e = &root[(ipa >> 30) & 0x3ff];
    for (int lv = 1; lv <= 3; lv++) {
        u64 d = *e;
        if (hidden && !(d & D_VALID) && (d & S2_SW_HIDDEN)) {
            *size = lv == 3 ? PAGE_SIZE : lv == 2 ? BLOCK_SIZE : 1UL << 30;
            return e;
        }
        if (!(d & D_VALID))
            return NULL;
        if (hidden && (lv == 3 || (d & 3) == D_BLOCK))
            return NULL;
        if (lv == 3 || (d & 3) == D_BLOCK) {
            *size = lv == 3 ? PAGE_SIZE : lv == 2 ? BLOCK_SIZE : 1UL << 30;
            return e;
        }
        u64 *next = (u64 *)(d & OA_MASK);
        e = &next[(ipa >> (lv == 1 ? 21 : 12)) & 0x1ff];
    }
    return NULL;
}

static u64 *leaf_of(u64 ipa, u64 *size)
{
    return leaf_lookup(ipa, size, false);
}

bool ipa_is_ram(u64 ipa)
{
    return ipa >= cfg.ram_base && ipa < cfg.ram_end;
}

bool ipa_is_rom(u64 ipa)
{
    for (u64 i = 0; i < cfg.rom_count; i++)
        if (ipa >= cfg.rom[i][0] && ipa - cfg.rom[i][0] < cfg.rom[i][1])
            return true;
    return false;
}

/* The page(s) of the fw_cfg window: nothing else there may be mapped either. */
bool ipa_is_fwcfg_page(u64 ipa)
{
    return cfg.fwcfg_size && ipa >= ALIGN_DOWN(cfg.fwcfg_base, PAGE_SIZE) &&
           ipa < ALIGN_UP(cfg.fwcfg_base + cfg.fwcfg_size, PAGE_SIZE);
}

int mmio_find(u64 ipa)
{
    for (u64 i = 0; i < cfg.mmio_count; i++)
        if (ipa >= cfg.mmio[i][0] && ipa - cfg.mmio[i][0] < cfg.mmio[i][1])
            return (int)i;
    return -1;
}

void dcache_clean_inval(u64 pa, u64 size)
{
    u64 line = cfg.dminline;
    for (u64 a = ALIGN_DOWN(pa, line); a < pa + size; a += line)
        __asm__ volatile("dc civac, %0" : : "r"(a) : "memory");
    dsb(sy);
    stat_add(ST_DC_BYTES, size);
}

void icache_inval(u64 pa, u64 size)
{
    u64 line = cfg.iminline;
    for (u64 a = ALIGN_DOWN(pa, line); a < pa + size; a += line)
        __asm__ volatile("ic ivau, %0" : : "r"(a) : "memory");
    dsb(ish);
    isb();
    stat_add(ST_IC_OPS, 1);
}

/* After restricting a leaf (W or X taken away): every vCPU's combined entries must go. */
static void tlb_inval_ipa_all(u64 ipa)
{
    dsb(ishst);
    __asm__ volatile("tlbi ipas2e1is, %0" : : "r"(ipa >> 12) : "memory");
    dsb(ish);
    __asm__ volatile("tlbi vmalle1is" : : : "memory");
    dsb(ish);
    isb();
}

/* After relaxing permissions (XN -> X) where a stage-2 entry alone was not enough: local
 * invalidation, as KVM's kvm_pgtable_stage2_relax_perms (__kvm_tlb_flush_vmid_ipa_nsh):
 * another vCPU holding the old entry takes a spurious permission fault at worst, which
 * s2_handle_abort resolves. */
static void tlb_inval_ipa_local(u64 ipa)
{
    dsb(ishst);
    __asm__ volatile("tlbi ipas2e1, %0" : : "r"(ipa >> 12) : "memory");
    dsb(nsh);
    __asm__ volatile("tlbi vmalle1" : : : "memory");
    dsb(nsh);
    isb();
}

/* After a relaxation (RO -> RW, XN -> X): the stage-2 entry only.  A combined stage 1+2 TLB
 * entry that still denies the access makes it fault again; that fault finds the permission
 * granted and does the full tlb_inval_ipa_local (s2_handle_abort).  KVM invalidates the
 * stage-1 entries too (VMALLE1) at once; skipping that here matters under TCG, where it
 * empties the whole softmmu TLB (and where a permission miss re-walks instead of faulting):
 * ~18k write grants and ~1.4k exec grants per Linux boot each cost a refill of every page the
 * guest touches next (bench-shim KVM-like: 1.167 -> 1.136 at 1 vCPU, 1.262 -> 1.183 at 2).
 * Only TLB maintenance differs from KVM: the policy's cache maintenance is the same. */
static void tlb_inval_ipa_s2_local(u64 ipa)
{
    dsb(ishst);
    __asm__ volatile("tlbi ipas2e1, %0" : : "r"(ipa >> 12) : "memory");
    dsb(nsh);
    isb();
}

static u8 el_of(u64 spsr)
{
    return (spsr & 0x10) ? 0 : (spsr >> 2) & 3;       /* AArch32 state: EL0 under us */
}

/* Write-xor-execute holds XN on a leaf the policy made executable (a write since the last
 * fetch, observation only). */
static bool wx_held(u64 d)
{
    return (d & S2_SW_XOK) && (d & S2_XN);
}

static u16 perms_of(u64 d)
{
    return PERM_R | ((d & S2_AP_RW) == S2_AP_RW ? PERM_W : 0) | (d & S2_SW_XOK ? PERM_X : 0);
}

/* The guest executes from a leaf with XN.  The policy's (S2_SW_XOK clear): make it
 * executable, the policy's exec-fault rule.  The observer's (a fetch after a write, under
 * write-xor-execute): give X back and take W away (the next write starts a new cycle), no
 * policy action. */
static void grant_exec(struct vcpu *v, u64 *e, u64 base, u64 size, u8 el, u64 pc, u8 memtype)
{
    if (wx_held(*e)) {
        u64 cycles = ((*e & S2_SW_WX) >> S2_SW_WX_SHIFT) + 1;
        *e = (*e & ~(S2_XN | S2_AP_RW | S2_SW_WX)) | S2_AP_RO | (cycles << S2_SW_WX_SHIFT);
        tlb_inval_ipa_all(base);
        stat_add(ST_REFETCH, 1);
        emit(K_S2_PERM, v, el, A_EXEC, memtype, perms_of(*e) | PERM_OBSERVER, pc, 0, base,
             *e & OA_MASK, size, 0);
        return;
    }
    bool ram = ipa_is_ram(base);
    if (ram && size == PAGE_SIZE && track_writes() && !(cfg.flags & PF_BLOCKS) &&
        (*e & S2_AP_RW) == S2_AP_RW) {
        /* write-xor-execute: code the guest can fetch is not writable; the next write to it
         * is seen (the page's write epoch ended before the fault was recorded) */
        *e = (*e & ~(S2_XN | S2_AP_RW)) | S2_AP_RO | S2_SW_XOK;
        tlb_inval_ipa_all(base);
    } else {
        *e = (*e & ~S2_XN) | S2_SW_XOK;
        tlb_inval_ipa_s2_local(base);
    }
    stat_add(ST_EXEC_GRANT, 1);
    emit(K_S2_PERM, v, el, A_EXEC, memtype, perms_of(*e), pc, 0, base, *e & OA_MASK, size, 0);
    emit(K_TLBI, v, 2, A_NONE, 1, 0, pc, 0, base, 0, size, 0);
    policy_on_exec(v, base, size, pc);
}

bool track_writes(void)
{
    return cfg.flags & PF_TRACK_WRITES;
}

/* Line-precise write evidence.  A page written while the writer's caches are off, or code
 * under write-xor-execute, is copied when the write fault opens its epoch; the lines whose
 * content changed are recorded (K_S2_WRITTEN) when the epoch ends (the page is write-protected
 * again), and for code also at the guest's I-cache maintenance and at the next fetch.  A write
 * that leaves RAM as it was cannot make a cached copy stale, so "changed" is exactly what the
 * model needs.  Two copies: snap_data, the content as last recorded; snap_fetch, for code, the
 * content an instruction fetch may still see (as when the page was last fetchable, line by line
 * as the guest invalidated the I-cache since), kept across epochs until the next fetch.  When
 * the slots run out the write fault is whole-page evidence and write-xor-execute is skipped. */
#define SNAP_HINTS 1024
static u64 snap_page[SNAP_SLOTS];           /* page + 1; 0: free */
static u64 snap_pc[SNAP_SLOTS];             /* PC of the write fault that took the copy */
static u8 snap_vcpu[SNAP_SLOTS];
static u16 snap_hint[SNAP_HINTS];           /* page hash -> slot + 1 last taken there */

static u64 snap_hash(u64 page)
{
    return (page >> 12) & (SNAP_HINTS - 1);
}

static int snap_find(u64 page)
{
    u16 h = snap_hint[snap_hash(page)];
    if (h && snap_page[h - 1] == page + 1)
        return h - 1;
    for (int i = 0; i < SNAP_SLOTS; i++)
        if (snap_page[i] == page + 1)
            return i;
    return -1;
}

/* Caller holds s2_lock.  A page that still has its copy (code kept for its next fetch) keeps
 * it: the recorded content is current, the writer is this one. */
static int snap_take(struct vcpu *v, u64 page, u64 pc)
{
    int i = snap_find(page);
    for (int j = 0; i < 0 && j < SNAP_SLOTS; j++) {
        if (!snap_page[j]) {
            memcpy(snap_data[j], (void *)page, PAGE_SIZE);
            memcpy(snap_fetch[j], (void *)page, PAGE_SIZE);
            snap_page[j] = page + 1;
            snap_hint[snap_hash(page)] = (u16)(j + 1);
            stat_add(ST_SNAPSHOTS, 1);
            i = j;
        }
    }
    if (i < 0) {
        stat_add(ST_SNAPSHOT_FULL, 1);
        return -1;
    }
    snap_vcpu[i] = (u8)v->slot;
    snap_pc[i] = pc;
    return i;
}

/* Lines of `page` in [lo, hi) (byte offsets) that differ from slot i's copy, as a mask of
 * 64-byte lines; with `refresh`, the copy takes their new content. */
static u64 snap_changed(int i, u64 page, u64 lo, u64 hi, bool refresh)
{
    const u64 *now = (const u64 *)page;
    u64 *then = (u64 *)snap_data[i];
    u64 mask = 0;
    for (u64 line = lo / 64; line < hi / 64; line++)
        for (u64 w = 0; w < 8; w++)
            if (now[line * 8 + w] != then[line * 8 + w]) {
                mask |= 1UL << line;
                if (refresh)
                    memcpy(&then[line * 8], &now[line * 8], 64);
                break;
            }
    return mask;
}

static void snap_report(int i, u64 page, u64 mask)
{
    if (mask)
        emit(K_S2_WRITTEN, &vcpus[snap_vcpu[i]], 2, A_WRITE, 0, 0, snap_pc[i], 0, page, page,
             PAGE_SIZE, mask);
}

/* The epoch of `page` ends: record which lines changed.  `keep`: the page is code held by
 * write-xor-execute, whose copy must last until its next fetch (recorded content refreshed);
 * else the slot is freed.  Caller holds s2_lock. */
static void snap_end(u64 page, bool keep)
{
    int i = snap_find(page);
    if (i < 0)
        return;
    u64 mask = snap_changed(i, page, 0, PAGE_SIZE, keep);
    if (!keep)
        snap_page[i] = 0;
    snap_report(i, page, mask);
}

/* Concurrent modification and execution (Arm ARM, "Concurrent modification and execution of
 * instructions"): B, BL, BRK, SVC, HVC, SMC, ISB and NOP may be rewritten into one another
 * while another PE executes them, which then executes either the old or the new one. */
static bool cmodx_safe(u32 w)
{
    return (w & 0x7c000000) == 0x14000000 ||            /* B, BL */
           (w & 0xffe0001c) == 0xd4000000 ||            /* SVC, HVC, SMC (LL = 1..3) */
           (w & 0xffe0001f) == 0xd4200000 ||            /* BRK */
           (w & 0xfffff0ff) == 0xd50330df ||            /* ISB */
           w == 0xd503201f;                             /* NOP */
}

/* An observed fetch from the line of `ipa`: harmless whatever the I-cache holds when every
 * instruction word of the 64-byte line is as a fetch could still see it, or old and new are
 * both concurrent-modification safe.  *words: the first word that is neither (else the
 * fetched one), copy << 32 | now; 0 without a copy. */
static bool fetch_ok(u64 ipa, u64 *words)
{
    int i = snap_find(ALIGN_DOWN(ipa, PAGE_SIZE));
    *words = 0;
    if (i < 0)
        return false;
    const u32 *then = (const u32 *)&snap_fetch[i][ipa & (PAGE_SIZE - 64)];
    const u32 *now = (const u32 *)ALIGN_DOWN(ipa, 64);
    u64 at = (ipa & 63) / 4;
    *words = (u64)then[at] << 32 | now[at];
    for (u64 w = 0; w < 16; w++) {
        if (then[w] != now[w] && !(cmodx_safe(then[w]) && cmodx_safe(now[w]))) {
            *words = (u64)then[w] << 32 | now[w];
            return false;
        }
    }
    return true;
}

/* The guest invalidates the I-cache for [ipa, ipa + size) (IC IVAU; ~0 size: IC IALLU).
 * Lines written before it in an open epoch (code under write-xor-execute, or a page written
 * with the caches off) are recorded before it and their recorded copy refreshed: a write
 * reported only at the epoch's end would look as if it came after the invalidation.  For
 * code, a fetch after it then checks only what was written after it. */
static void icache_slot(int i, u64 lo, u64 hi)
{
    u64 page = snap_page[i] - 1, leaf_size, *e = leaf_of(page, &leaf_size);
    if (!e)
        return;
    snap_report(i, page, snap_changed(i, page, lo, hi, true));
    if (wx_held(*e))
        memcpy(&snap_fetch[i][lo], (const void *)(page + lo), hi - lo);    /* now fetchable */
}

void s2_icache_maintenance(u64 ipa, u64 size)
{
    if (!track_writes() || (cfg.flags & PF_BLOCKS))
        return;
    spin_lock(&s2_lock);
    if (size == ~0UL) {
        for (int i = 0; i < SNAP_SLOTS; i++)
            if (snap_page[i])
                icache_slot(i, 0, PAGE_SIZE);
    } else {                                        /* by VA: one line, inside one page */
        u64 page = ALIGN_DOWN(ipa, PAGE_SIZE);
        int i = snap_find(page);
        u64 hi = ALIGN_UP(ipa + size - page, 64);
        if (i >= 0)
            icache_slot(i, ALIGN_DOWN(ipa - page, 64), hi < PAGE_SIZE ? hi : PAGE_SIZE);
    }
    spin_unlock(&s2_lock);
}

/* The guest writes a RAM leaf the shim write-protected to observe writes (PF_TRACK_WRITES):
 * give it W.  A permission relaxation, as KVM's stage2_attr_walker: no D-side maintenance,
 * a local TLB invalidation (another vCPU takes a spurious fault at worst). */
static void grant_write(struct vcpu *v, u64 *e, u64 base, u64 size, u8 el, u64 pc, bool wx)
{
    *e |= S2_AP_RW | (wx ? S2_XN : 0);
    if (wx)
        tlb_inval_ipa_all(base);                /* X taken away: no stale executable entry */
    else
        tlb_inval_ipa_s2_local(base);
    stat_add(ST_WRITE_GRANT, 1);
    emit(K_S2_PERM, v, el, A_WRITE, MT_NORMAL, perms_of(*e), pc, 0, base, *e & OA_MASK,
         size, 0);
}

void s2_handle_abort(struct vcpu *v, struct frame *f, u64 esr, bool iabt)
{
    u64 far = read_sysreg(far_el2), hpfar = read_sysreg(hpfar_el2);
    u64 pc = read_sysreg(elr_el2), spsr = read_sysreg(spsr_el2);
    u8 el = el_of(spsr);
    u64 fsc = esr & 0x3f;
    bool s1ptw = esr & (1UL << 7);
    bool fnv = !iabt && (esr & (1UL << 10));
    bool wnr = !iabt && (esr & (1UL << 6));
    u64 page = ((hpfar >> 4) & ((1UL << 40) - 1)) << 12;
    u64 ipa = page | ((s1ptw || fnv) ? 0 : (far & 0xfff));
    u64 type = fsc & 0x3c;
    /* kvm_is_write_fault: a stage-1 walk is a write only when it faults on permission (a
     * hardware AF/DBM update); QEMU reports WnR of the instruction behind a walk */
    u8 access = s1ptw ? (type == 0x0c ? A_WRITE : A_READ) : iabt ? A_EXEC :
                wnr ? A_WRITE : A_READ;
    u16 flags = (s1ptw ? FAULT_S1PTW : 0) | (fnv ? FAULT_FNV : 0) | (wnr ? FAULT_WRITE : 0);
    int problem = 0;

    stat_add(iabt ? ST_IABT : ST_DABT, 1);
    bool ram = ipa_is_ram(page);
    bool rom = !ram && ipa_is_rom(page);
    u64 s1 = read_sysreg(sctlr_el1);
    bool nc_writer = (s1 & (SCTLR_M | SCTLR_C)) != (SCTLR_M | SCTLR_C);
    /* What KVM sends to the VMM as MMIO (kvm_handle_guest_abort -> io_mem_abort): any data
     * access to fw_cfg, a write to a read-only memslot.  Not a stage-2 event: no record. */
    if (!iabt && !s1ptw && (type == 0x04 || type == 0x0c) &&
        ((!ram && ipa_is_fwcfg_page(page)) || (rom && wnr))) {
        mmio_emulate(v, f, esr, page | (far & 0xfff), pc);
        return;
    }
    spin_lock(&s2_lock);
    u64 hsize;
    u64 *hidden = type == 0x04 ? leaf_lookup(page, &hsize, true) : NULL;
    if (hidden) {                       /* observation only (PF_TRACK_ACCESS): restore it */
        *hidden = (*hidden & ~S2_SW_HIDDEN) | D_VALID;
        dsb(ishst);
        stat_add(ST_ACCESS, 1);
        emit(K_S2_ACCESS, v, el, access, MT_NORMAL, perms_of(*hidden), pc, esr, ipa,
             ALIGN_DOWN(page, hsize), hsize, fnv ? 0 : far);
        spin_unlock(&s2_lock);
        return;
    }
    bool pages = track_writes() && !(cfg.flags & PF_BLOCKS);
    u64 cur_size = 0;
    u64 *cur = ram && pages ? leaf_of(page, &cur_size) : NULL;
    if (cur && cur_size != PAGE_SIZE)
        cur = NULL;
    u64 words = 0;                      /* a fetch after a write: old << 32 | new word */
    if (access == A_EXEC && cur &&
        (wx_held(*cur) || ((*cur & S2_XN) && (*cur & S2_AP_RW) == S2_AP_RW))) {
        /* a fetch after a write (write-xor-execute), or the policy's exec grant on a page in
         * a write epoch (which ends it): the lines written since the copy (or since the
         * I-cache maintenance that covered them) are recorded before the fault */
        if (wx_held(*cur))
            flags |= FAULT_FETCH | (fetch_ok(ipa, &words) ? FAULT_FETCH_OK : 0);
        snap_end(page, false);
    }
    /* write-xor-execute: a write to a leaf the guest can fetch from (or one the policy maps
     * executable at once) by a vCPU whose I-cache is on holds XN until the next fetch; the
     * page is copied so that the lines written come out exactly */
    bool wx = access == A_WRITE && pages && ram && (read_sysreg(sctlr_el1) & SCTLR_I) &&
              (cur ? (*cur & S2_SW_XOK) && ((*cur & S2_SW_WX) >> S2_SW_WX_SHIFT) < WX_CYCLES
                   : type == 0x04 && !policy_exec_on_demand());
    if (access == A_WRITE && ram && (nc_writer || wx) && pages) {
        if (snap_take(v, page, pc) >= 0)            /* before the write lands */
            flags |= FAULT_DEFERRED;
        else
            wx = false;                             /* no copy: whole-page evidence, no W^X */
    }
    emit(K_S2_FAULT, v, el, access, fsc, flags, pc, esr, ipa, ipa, words, fnv ? 0 : far);

    bool normal = ram || rom;                           /* Normal at stage 2 */
    bool device = !normal && mmio_find(page) >= 0 && !ipa_is_fwcfg_page(page);
    u8 memtype = ram ? MT_NORMAL : rom ? MT_ROM : MT_DEVICE;
    if (type == 0x04) {                                 /* translation fault, levels 0-3 */
        if (!normal && !device) {
            problem = page >= cfg.carve_base && page < cfg.carve_base + cfg.carve_size
                      ? D_SHIM_MEMORY : ipa_is_fwcfg_page(page) ? D_MMIO : D_OUTSIDE;
            goto out;
        }
        bool blocks = ram && (cfg.flags & PF_BLOCKS) &&
                      ALIGN_DOWN(page, BLOCK_SIZE) >= cfg.ram_base &&
                      ALIGN_DOWN(page, BLOCK_SIZE) + BLOCK_SIZE <= cfg.ram_end;
        int level = blocks ? 2 : 3;
        bool block_above;
        u64 *e = walk(page, level, &block_above);
        if (e && level == 2 && (*e & 3) == D_TABLE) {  /* pages there already: stay pages */
            level = 3;
            e = walk(page, 3, &block_above);
        }
        if (!e) {
            problem = D_POOL;
            goto out;
        }
        u64 size = level == 2 ? BLOCK_SIZE : PAGE_SIZE;
        if (block_above) {
            size = BLOCK_SIZE;
            level = 2;
        }
        u64 base = ALIGN_DOWN(page, size);
        if (*e & D_VALID) {                             /* another vCPU was first */
            stat_add(ST_SPURIOUS, 1);
            if (access == A_EXEC && (*e & S2_XN))
                grant_exec(v, e, base, size, el, pc, memtype);
            else if (access == A_WRITE && ram && (*e & S2_AP_RW) != S2_AP_RW)
                grant_write(v, e, base, size, el, pc, wx && (*e & S2_SW_XOK));
            goto out;
        }
        bool exec = access == A_EXEC || !policy_exec_on_demand();
        u64 attr = normal ? (policy_fwb() ? ATTR_FWB_WB : ATTR_NORMAL) : ATTR_DEVICE;
        /* flash: KVM's read-only memslot (user_mem_abort maps it without write permission;
         * a translation fault of a stage-1 walk reading it is a read: kvm_is_write_fault) */
        bool writable = !rom && !(ram && track_writes() && access != A_WRITE);
        u64 d = base | S2_AF | S2_SH_IS | (writable ? S2_AP_RW : S2_AP_RO) | S2_ATTR(attr) |
                (exec ? S2_SW_XOK : 0) | (exec && !(wx && level == 3) ? 0 : S2_XN) |
                (level == 3 ? D_TABLE : D_BLOCK);
        *e = d;
        dsb(ishst);
        stat_add(ram ? ST_MAP_NORMAL : rom ? ST_MAP_ROM : ST_MAP_DEVICE, 1);
        emit(K_S2_MAP, v, el, access, memtype, perms_of(d), pc, esr, base, base, size, 0);
        /* KVM cleans every new cacheable leaf, read-only memslots included */
        policy_on_map(v, base, size, normal, exec && access == A_EXEC, pc);
    } else if (type == 0x0c) {                          /* permission fault */
        u64 size;
        u64 *e = leaf_of(page, &size);
        if (e && access == A_EXEC && (*e & S2_XN)) {
            grant_exec(v, e, ALIGN_DOWN(page, size), size, el, pc, memtype);
        } else if (e && access == A_EXEC) {
            stat_add(ST_SPURIOUS, 1);                   /* another vCPU granted it: our */
            tlb_inval_ipa_local(page);                  /* TLB may still hold XN */
        } else if (e && ram && access == A_WRITE && (*e & S2_AP_RW) != S2_AP_RW) {
            grant_write(v, e, ALIGN_DOWN(page, size), size, el, pc, wx);
        } else if (e && ram && access == A_WRITE) {
            stat_add(ST_SPURIOUS, 1);                   /* granted meanwhile */
            tlb_inval_ipa_local(page);
        } else {
            /* includes a stage-1 walk that wants to write (hardware AF/DBM) tables in flash:
             * KVM's kvm_is_write_fault calls an S1PTW permission fault a write, and a write
             * to a read-only memslot from a walk injects a data abort into the guest
             * (kvm_handle_guest_abort); the shim stops instead */
            problem = D_FAULT_STATUS;
        }
    } else if (type == 0x00) {                          /* address size: beyond 40 bits */
        problem = D_OUTSIDE;
    } else {
        problem = D_FAULT_STATUS;
    }
out:
    spin_unlock(&s2_lock);
    if (problem)
        fatal(v, problem, pc, esr, ipa, far, fsc);
}

/* Visit every valid leaf of the stage 2 inside [lo, hi): fn(entry, base, size, ctx).  One
 * walker for the sweeps (the shim's tables: two concatenated level-1 roots, level-2 blocks,
 * level-3 pages).  Caller holds s2_lock. */
static void for_each_leaf(u64 lo, u64 hi, void (*fn)(u64 *, u64, u64, void *), void *ctx)
{
    for (u64 i = lo >> 30; i < 1024 && (i << 30) < hi; i++) {
        u64 d1 = root[i];
        if (!(d1 & D_VALID) || (d1 & 3) == D_BLOCK)     /* level-1 blocks: never made by us */
            continue;
        u64 *l2 = (u64 *)(d1 & OA_MASK);
        for (u64 j = 0; j < 512; j++) {
            u64 base2 = (i << 30) | (j << 21);
            if (!(l2[j] & (D_VALID | S2_SW_HIDDEN)) || base2 + BLOCK_SIZE <= lo || base2 >= hi)
                continue;
            if ((l2[j] & 3) != D_TABLE) {               /* a block, maybe hidden */
                fn(&l2[j], base2, BLOCK_SIZE, ctx);
                continue;
            }
            u64 *l3 = (u64 *)(l2[j] & OA_MASK);
            for (u64 k = 0; k < 512; k++) {
                u64 base3 = base2 | (k << 12);
                if ((l3[k] & (D_VALID | S2_SW_HIDDEN)) && base3 + PAGE_SIZE > lo && base3 < hi)
                    fn(&l3[k], base3, PAGE_SIZE, ctx);
            }
        }
    }
}

struct sweep { u64 lo, hi, bytes, leaves; };

static void sweep_add(struct sweep *s, u64 base, u64 size)
{
    s->lo = base < s->lo ? base : s->lo;
    s->hi = base + size > s->hi ? base + size : s->hi;
    s->bytes += size;
    s->leaves++;
}

static void flush_leaf(u64 *e, u64 base, u64 size, void *ctx)
{
    if (((*e >> 2) & 0xf) == ATTR_DEVICE)
        return;
    dcache_clean_inval(base, size);
    sweep_add(ctx, base, size);
}

/* Clean+invalidate every mapped Normal leaf to PoC (KVM stage2_flush_vm, Xen p2m_flush_vm):
 * one K_FLUSH_VM record for the sweep.  Caller holds no lock.  Under write tracking the
 * flush ends the write epoch (the writes before it are recorded first) and starts a new one:
 * writes after it are observed again. */
void flush_vm(struct vcpu *v, int rule, u64 pc)
{
    struct sweep sw = {~0UL, 0, 0, 0};
    if (track_writes())
        s2_wrprotect(v, 0, ~0UL, pc, true);
    spin_lock(&s2_lock);
    for_each_leaf(0, ~0UL, flush_leaf, &sw);
    stat_add(ST_FLUSH_VM, 1);
    emit(K_FLUSH_VM, v, 2, A_NONE, DC_CIVAC, (u16)rule, pc, 0, sw.leaves ? sw.lo : 0, sw.hi,
         sw.bytes, sw.leaves);
    spin_unlock(&s2_lock);
}

static void wrprotect_leaf(u64 *e, u64 base, u64 size, void *ctx)
{
    if (!ipa_is_ram(base) || (*e & S2_AP_RW) != S2_AP_RW)
        return;
    *e = (*e & ~S2_AP_RW) | S2_AP_RO;   /* an observer's XN stays: the next fetch is seen */
    sweep_add(ctx, base, size);
    if (size == PAGE_SIZE)
        snap_end(base, wx_held(*e));
}

/* Write-protect the RAM leaves in [ipa, ipa + size) (observation only, PF_TRACK_WRITES): the
 * next write to each faults and is recorded.  `record`: one K_S2_WRPROTECT for the sweep (a
 * guest clean by VA re-protects its page silently, so runs of its records stay coalesced). */
void s2_wrprotect(struct vcpu *v, u64 ipa, u64 size, u64 pc, bool record)
{
    struct sweep sw = {~0UL, 0, 0, 0};
    spin_lock(&s2_lock);
    if (size == PAGE_SIZE) {                    /* a guest clean by VA: its page's leaf */
        u64 leaf_size;
        u64 *e = leaf_lookup(ipa, &leaf_size, false);
        if (!e)
            e = leaf_lookup(ipa, &leaf_size, true);
        if (e)
            wrprotect_leaf(e, ALIGN_DOWN(ipa, leaf_size), leaf_size, &sw);
    } else {
        for_each_leaf(ipa, ipa + size < ipa ? ~0UL : ipa + size, wrprotect_leaf, &sw);
    }
    if (sw.leaves == 1) {
        tlb_inval_ipa_all(sw.lo);
    } else if (sw.leaves) {
        dsb(ishst);
        __asm__ volatile("tlbi vmalls12e1is" : : : "memory");
        dsb(ish);
        isb();
    }
    stat_add(ST_WRPROTECT, sw.leaves);
    if (record && sw.leaves)
        emit(K_S2_WRPROTECT, v, 2, A_NONE, 0, 0, pc, 0, sw.leaves ? sw.lo : 0, sw.hi,
             sw.bytes, sw.leaves);
    spin_unlock(&s2_lock);
}

static void hide_leaf(u64 *e, u64 base, u64 size, void *ctx)
{
    if (!ipa_is_ram(base) || !(*e & D_VALID))
        return;
    *e = (*e & ~D_VALID) | S2_SW_HIDDEN;
    sweep_add(ctx, base, size);
}

static void unhide_leaf(u64 *e, u64 base, u64 size, void *ctx)
{
    if (!(*e & S2_SW_HIDDEN))
        return;
    *e = (*e & ~S2_SW_HIDDEN) | D_VALID;
    sweep_add(ctx, base, size);
}

/* Hide every RAM leaf (a vCPU turned its caches off: its first access to each page is then
 * observed, PF_TRACK_ACCESS) or restore the hidden ones (caches on again).  Observation
 * only: the leaves stay mapped for the policy (flushes and write-protection visit them). */
void s2_hide(struct vcpu *v, bool hide, u64 pc)
{
    struct sweep sw = {~0UL, 0, 0, 0};
    spin_lock(&s2_lock);
    for_each_leaf(0, ~0UL, hide ? hide_leaf : unhide_leaf, &sw);
    dsb(ishst);
    if (hide && sw.leaves) {
        __asm__ volatile("tlbi vmalls12e1is" : : : "memory");
        dsb(ish);
        isb();
    }
    if (sw.leaves)
        emit(K_S2_HIDE, v, 2, A_NONE, hide, 0, pc, 0, sw.lo, sw.hi, sw.leaves, 0);
    spin_unlock(&s2_lock);
}
