/* Twin of stage1_enable_stale: after writing BUF with the MMU off the guest invalidates it to
 * PoC by VA (what Linux does for the tables it built with the MMU off) before enabling M&C. */
#include "scenario.h"

int main(u64 x0)
{
    (void)x0;
    fill(BUF, 4096, 0x5a00);
    dc_ivac_range(BUF, 4096);
    mmu_on(SCTLR_M | SCTLR_C | SCTLR_I);
    puts_("buf sum ");
    puthex(sum(BUF, 4096));
    puts_("\n");
    done("SCENARIO-DONE stage1_enable_stale_clean");
}
