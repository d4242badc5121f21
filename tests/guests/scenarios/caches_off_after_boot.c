/* Hazard caches-off-after-boot: caches on, the guest writes BUF (the lines may stay dirty in
 * the cache), then turns M and C off (kexec-like) and reads BUF from memory without cleaning. */
#include "scenario.h"

int main(u64 x0)
{
    (void)x0;
    mmu_on(SCTLR_M | SCTLR_C | SCTLR_I);
    fill(BUF, 4096, 0xc0ff);
    sctlr_set(sctlr_get() & ~(SCTLR_M | SCTLR_C));
    puts_("buf sum ");
    puthex(sum(BUF, 4096));
    puts_("\n");
    done("SCENARIO-DONE caches_off_after_boot");
}
