/* Twin of caches_off_after_boot: BUF is cleaned+invalidated to PoC by VA before the caches go
 * off (the guest's job). */
#include "scenario.h"

int main(u64 x0)
{
    (void)x0;
    mmu_on(SCTLR_M | SCTLR_C | SCTLR_I);
    fill(BUF, 4096, 0xc0ff);
    dc_civac_range(BUF, 4096);
    sctlr_set(sctlr_get() & ~(SCTLR_M | SCTLR_C));
    puts_("buf sum ");
    puthex(sum(BUF, 4096));
    puts_("\n");
    done("SCENARIO-DONE caches_off_after_boot_clean");
}
