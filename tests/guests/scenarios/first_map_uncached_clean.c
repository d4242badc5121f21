/* Twin of first_map_uncached: the guest turns its MMU and caches on first, so the host-written
 * page is first accessed cacheably (no hazard whatever the hypervisor does). */
#include "scenario.h"

int main(u64 x0)
{
    (void)x0;
    mmu_on(SCTLR_M | SCTLR_C | SCTLR_I);
    puts_("blob sum ");
    puthex(sum(BLOB, 4096));
    puts_("\n");
    done("SCENARIO-DONE first_map_uncached_clean");
}
