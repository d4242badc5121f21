/*
 * s1: runs at EL1 on `-M virt`, builds stage-1 tables for TTBR0 and TTBR1 as
 * the parameter block says, turns the MMU and caches on and returns to spin at
 * `done`.  The lower range holds the identity map, blocks and thousands of
 * random pages; the upper range a few blocks and pages.
 */
#include "mmu.h"

/*
 * attr0 Normal WB RW-allocate, attr1 Device-nGnRnE, attr2 Normal NC,
 * attr3 Normal WT, attr4 Device-nGnRE, attr5 Normal outer NC inner WB,
 * attr6 Device-GRE, attr7 Normal outer WB inner NC.
 */
#define MAIR_VALUE      0xf40c4f04bb4400ffUL
#define SCTLR_RES1      0x30d00800UL
#define SCTLR_M         (1UL << 0)
#define SCTLR_C         (1UL << 2)
#define SCTLR_I         (1UL << 12)
#define TTBR0_ASID      0x5aUL
#define TTBR1_ASID      0xa5UL          /* ignored: TCR_EL1.A1 = 0 */

static unsigned granule_shift(u64 granule)
{
    if (granule != 4096 && granule != 16384 && granule != 65536)
        panic(PANIC_GRANULE);
    return __builtin_ctzl(granule);
}

/* The start level a stage-1 walk of an `ia_bits` range uses. */
static int start_level(unsigned gshift, unsigned ia_bits)
{
    return 4 - (ia_bits - 4) / (gshift - 3);
}

static u64 tcr_value(unsigned gshift, u64 t0sz, u64 t1sz)
{
    u64 tg0 = gshift == 12 ? 0 : gshift == 16 ? 1 : 2;
    u64 tg1 = gshift == 12 ? 2 : gshift == 16 ? 3 : 1;

    return t0sz | 1UL << 8 | 1UL << 10 | 3UL << 12 | tg0 << 14 |  /* WBWA, inner shareable */
           t1sz << 16 | 1UL << 24 | 1UL << 26 | 3UL << 28 | tg1 << 30 |
           5UL << 32;                                              /* IPS 48 bits */
}

void setup(void)
{
    struct regime lo, hi;
    unsigned gshift, max_tsz;

    if (params.magic != PARAMS_MAGIC)
        panic(PANIC_MAGIC);
    gshift = granule_shift(params.granule);
    max_tsz = gshift == 16 ? 47 : 48;
    /* The lower range must reach the identity map just above 1 GiB. */
    if (params.t0sz < 16 || params.t0sz > 33 || params.t1sz < 16 || params.t1sz > max_tsz)
        panic(PANIC_TSZ);
    rng_seed(params.seed);
    fill_pool();

    regime_init(&lo, 1, gshift, start_level(gshift, 64 - params.t0sz),
                64 - params.t0sz, 0);
    map_identity(&lo);
    map_blocks(&lo, 2);
    map_random(&lo, 24, 256);

    regime_init(&hi, 1, gshift, start_level(gshift, 64 - params.t1sz),
                64 - params.t1sz, -(1UL << (64 - params.t1sz)));
    map_blocks(&hi, 1);
    map_random(&hi, 4, 64);

    write_sysreg(mair_el1, MAIR_VALUE);
    write_sysreg(tcr_el1, tcr_value(gshift, params.t0sz, params.t1sz));
    write_sysreg(ttbr0_el1, lo.root | TTBR0_ASID << 48);
    write_sysreg(ttbr1_el1, hi.root | TTBR1_ASID << 48 | 1);      /* CnP */
    dsb(ish);
    __asm__ volatile("tlbi vmalle1\n\tic iallu" : : : "memory");
    dsb(ish);
    isb();
    write_sysreg(sctlr_el1, SCTLR_RES1 | SCTLR_M | SCTLR_C | SCTLR_I);
    isb();
}
