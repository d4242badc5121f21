/* Hazard first-map-uncached: with its MMU off (data accesses Device-nGnRnE, non-cacheable),
 * the guest reads a page the host wrote (BLOB, loaded by QEMU) -- the page enters stage 2 on
 * that access.  The hypervisor must clean+invalidate it (kvm: on the translation fault). */
#include "scenario.h"

int main(u64 x0)
{
    (void)x0;
    puts_("blob sum ");
    puthex(sum(BLOB, 4096));
    puts_("\n");
    done("SCENARIO-DONE first_map_uncached");
}
