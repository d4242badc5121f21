/*
 * s2cache shim: guest accesses the shim performs itself instead of mapping them -- what KVM
 * hands to the VMM as an MMIO exit (kvm_handle_guest_abort -> io_mem_abort, arch/arm64/kvm/
 * mmu.c and mmio.c): a write to a cfi-flash window (KVM: a read-only memslot, QEMU's pflash
 * emulates the command) and any data access to QEMU's fw_cfg window.
 *
 * The data abort's syndrome (ESR_EL2.ISV = 1: SAS, SSE, SRT, SF) says what the instruction
 * did; the shim repeats it from EL2 on the same address through its own identity stage 1,
 * which maps everything outside RAM Device-nGnRE, so QEMU's device model sees the access.
 * A load's value goes to the guest's register (sign-extended as SSE and SF say), then the
 * instruction is skipped.  No syndrome (a load/store pair, writeback addressing...): fatal, as
 * KVM fails the vCPU run ("no valid syndrome info").
 *
 * fw_cfg (QEMU docs/specs/fw_cfg.rst, hw/nvram/fw_cfg.c): selector register at +8 (16-bit
 * big-endian), DMA address register at +0x10 (64-bit big-endian, or two 32-bit halves, the
 * write of the low half at +0x14 starting the transfer).  QEMU performs the transfer
 * synchronously inside the doorbell write, through its own mapping of guest RAM: for the
 * guest that is a write by the host.  The shim reads the FWCfgDmaAccess {be32 control; be32
 * length; be64 address} from guest RAM before performing the doorbell write (QEMU rewrites
 * control on completion) and records a READ transfer into guest RAM as K_HOST_DMA afterwards.
 * QEMU also writes the control word back into the descriptor (4 bytes at the record's va).
 */
#include "shim.h"

#define ESR_ISV     (1UL << 24)
#define ESR_SSE     (1UL << 21)
#define ESR_SF      (1UL << 15)
#define ESR_FNV     (1UL << 10)
#define ESR_CM      (1UL << 8)
#define ESR_WNR     (1UL << 6)

#define FWCFG_SEL   0x08
#define FWCFG_DMA   0x10

static spinlock_t fwcfg_lock;
static u64 fwcfg_dma_high;              /* the high half written at +0x10 (32-bit doorbell) */
static u64 fwcfg_selector;              /* the item QEMU has selected (0 after its reset) */

static u64 dev_read(u64 pa, u64 size)
{
    switch (size) {
    case 1: return *(volatile u8 *)pa;
    case 2: return *(volatile u16 *)pa;
    case 4: return *(volatile u32 *)pa;
    default: return *(volatile u64 *)pa;
    }
}

static void dev_write(u64 pa, u64 size, u64 val)
{
    switch (size) {
    case 1: *(volatile u8 *)pa = (u8)val; break;
    case 2: *(volatile u16 *)pa = (u16)val; break;
    case 4: *(volatile u32 *)pa = (u32)val; break;
    default: *(volatile u64 *)pa = val; break;
    }
    dsb(sy);                            /* complete before we look at what it did */
}

static u64 ram_be(u64 pa, u64 n)        /* big-endian bytes of guest RAM (any alignment) */
{
    u64 v = 0;
    for (u64 i = 0; i < n; i++)
        v = v << 8 | *(volatile u8 *)(pa + i);
    return v;
}

static bool in_ram(u64 pa, u64 size)
{
    return size && ipa_is_ram(pa) && pa + size > pa && pa + size <= cfg.ram_end;
}

static bool hits_shim(u64 pa, u64 size)
{
    return size && pa < cfg.carve_base + cfg.carve_size && pa + size > cfg.carve_base;
}

/* A write to fw_cfg's registers (caller holds fwcfg_lock): performed, and a DMA doorbell
 * recorded.  `val` is the guest's register, byte-swapped by the guest for the big-endian
 * registers. */
static void fwcfg_write(struct vcpu *v, u64 off, u64 size, u64 val, u64 pa, u64 esr, u64 pc,
                        u8 el)
{
    u64 desc = ~0UL;
    if (off == FWCFG_SEL && size == 2)
        fwcfg_selector = __builtin_bswap16((u16)val);
    else if (off == FWCFG_DMA && size == 4)
        fwcfg_dma_high = (u64)__builtin_bswap32((u32)val) << 32;
    else if (off == FWCFG_DMA + 4 && size == 4)
        desc = fwcfg_dma_high | __builtin_bswap32((u32)val);
    else if (off == FWCFG_DMA && size == 8)
        desc = __builtin_bswap64(val);
    if (desc == ~0UL) {
        dev_write(pa, size, val);
        return;
    }
    /* the doorbell: what QEMU is about to do, read before it rewrites the control word */
    if (hits_shim(desc, 16))
        fatal(v, D_SHIM_MEMORY, pc, esr, desc, pa, 16);
    u64 control = 0, length = 0, address = 0;
    if (in_ram(desc, 16)) {
        control = ram_be(desc, 4);
        length = ram_be(desc + 4, 4);
        address = ram_be(desc + 8, 8);
    }
    bool host_writes = (control & FWCFG_READ) && length;
    if (host_writes && hits_shim(address, length))
        fatal(v, D_SHIM_MEMORY, pc, esr, address, pa, length);
    dev_write(pa, size, val);
    if (control & FWCFG_SELECT)
        fwcfg_selector = control >> 16;
    if (host_writes && in_ram(address, length)) {
        u64 done = in_ram(desc, 16) ? ram_be(desc, 4) : 0;
        stat_add(ST_HOST_DMA, 1);
        stat_add(ST_HOST_DMA_BYTES, length);
        emit(K_HOST_DMA, v, el, A_WRITE, (u8)((control & 0x1e) | (done & FWCFG_ERROR)),
             (u16)fwcfg_selector, pc, esr, address, address, length, desc);
    }
}

void mmio_emulate(struct vcpu *v, struct frame *f, u64 esr, u64 ipa, u64 pc)
{
    u64 spsr = read_sysreg(spsr_el2);
    u8 el = (spsr & 0x10) ? 0 : (spsr >> 2) & 3;
    if (esr & ESR_CM) {
        /* DC by VA on it: kvm_handle_guest_abort skips the instruction outside memslots */
        write_sysreg(elr_el2, pc + 4);
        return;
    }
    if (!(esr & ESR_ISV) || (esr & ESR_FNV))
        fatal(v, D_MMIO, pc, esr, ipa, read_sysreg(far_el2), 0);
    u64 size = 1UL << ((esr >> 22) & 3);
    u64 rt = (esr >> 16) & 0x1f;
    if (ipa & (size - 1))               /* would take an alignment fault at EL2 */
        fatal(v, D_MMIO, pc, esr, ipa, read_sysreg(far_el2), size);
    bool fwcfg = cfg.fwcfg_size && ipa >= cfg.fwcfg_base &&
                 ipa + size <= cfg.fwcfg_base + cfg.fwcfg_size;
    stat_add(ipa_is_rom(ipa) ? ST_ROM_WRITES : ST_FWCFG, 1);
    if (esr & ESR_WNR) {
        u64 val = rt == 31 ? 0 : f->x[rt];
        if (size < 8)
            val &= (1UL << (8 * size)) - 1;
        if (fwcfg) {
            spin_lock(&fwcfg_lock);
            fwcfg_write(v, ipa - cfg.fwcfg_base, size, val, ipa, esr, pc, el);
            spin_unlock(&fwcfg_lock);
        } else {
            dev_write(ipa, size, val);
        }
    } else {
        u64 val = dev_read(ipa, size);
        if ((esr & ESR_SSE) && size < 8) {
            u64 shift = 64 - 8 * size;
            val = (u64)((s64)(val << shift) >> shift);
        }
        if (!(esr & ESR_SF))
            val &= 0xffffffffUL;
        if (rt != 31)
            f->x[rt] = val;
    }
    write_sysreg(elr_el2, pc + 4);
}
