/* Hazard stage1-enable-stale: with the MMU off the guest writes BUF (non-cacheably, after the
 * hypervisor's clean on the fault), then turns M&C on and reads BUF: stale clean lines
 * (speculation through the host's cacheable alias) may shadow what it wrote. */
#include "scenario.h"

int main(u64 x0)
{
    (void)x0;
    fill(BUF, 4096, 0x5a00);
    mmu_on(SCTLR_M | SCTLR_C | SCTLR_I);
    puts_("buf sum ");
    puthex(sum(BUF, 4096));
    puts_("\n");
    done("SCENARIO-DONE stage1_enable_stale");
}
