/*
 * s2: runs at EL2 on `-M virt,virtualization=on`, builds a stage 2 whose root
 * is 2..16 concatenated tables as the parameter block says, enables it with
 * HCR_EL2.VM and returns; start.S then drops to EL1 (stage 1 off) to spin at
 * `done`.
 */
#include "mmu.h"

#define HCR_VM          (1UL << 0)
#define HCR_RW          (1UL << 31)
#define HCR_APK         (1UL << 40)
#define HCR_API         (1UL << 41)
#define SCTLR_EL1_RES1  0x30d00800UL
#define VTTBR_VMID      0x2aUL

static unsigned granule_shift(u64 granule)
{
    if (granule != 4096 && granule != 16384 && granule != 65536)
        panic(PANIC_GRANULE);
    return __builtin_ctzl(granule);
}

void setup(void)
{
    struct regime s2;
    unsigned gshift, stride, ia_bits, root_bits;
    int start;
    u64 tg0;

    if (params.magic != PARAMS_MAGIC)
        panic(PANIC_MAGIC);
    gshift = granule_shift(params.granule);
    stride = gshift - 3;
    ia_bits = 64 - params.t0sz;
    /* The IPA space must reach the identity map just above 1 GiB. */
    if (params.t0sz < 16 || ia_bits < 31)
        panic(PANIC_TSZ);
    if (params.sl0 > 2)
        panic(PANIC_SL0);
    start = (gshift == 12 ? 2 : 3) - (int)params.sl0;
    /* Index bits the root resolves: more than one table's worth means
     * concatenated tables, at most 16 (AArch64.S2InconsistentSL). */
    root_bits = ia_bits - (gshift + stride * (3 - start));
    if (root_bits < 1 || root_bits > stride + 4)
        panic(PANIC_SL0);
    rng_seed(params.seed);
    fill_pool();

    regime_init(&s2, 2, gshift, start, ia_bits, 0);
    map_identity(&s2);
    map_blocks(&s2, 2);
    map_random(&s2, 24, 256);

    tg0 = gshift == 12 ? 0 : gshift == 16 ? 1 : 2;
    write_sysreg(vtcr_el2, params.t0sz | params.sl0 << 6 | 1UL << 8 | 1UL << 10 |
                           3UL << 12 | tg0 << 14 | 5UL << 16 | 1UL << 31);
    write_sysreg(vttbr_el2, s2.root | VTTBR_VMID << 48 | 1);     /* CnP */
    write_sysreg(hcr_el2, HCR_VM | HCR_RW | HCR_APK | HCR_API);
    write_sysreg(sctlr_el1, SCTLR_EL1_RES1);
    dsb(ish);
    __asm__ volatile("tlbi vmalls12e1" : : : "memory");
    dsb(ish);
    isb();
}
