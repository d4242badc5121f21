/* Twin of set_way_op: the guest cleans what it wrote by VA instead of by set/way. */
#include "scenario.h"

int main(u64 x0)
{
    (void)x0;
    mmu_on(SCTLR_M | SCTLR_C | SCTLR_I);
    fill(BUF, 4096, 0x5e7);
    dc_civac_range(BUF, 4096);
    sctlr_set(sctlr_get() & ~(SCTLR_M | SCTLR_C));
    puts_("buf sum ");
    puthex(sum(BUF, 4096));
    puts_("\n");
    done("SCENARIO-DONE set_way_op_clean");
}
