/* probe: read the 8 bytes at the address the test passes as x0 (params.entry_x0), then print
 * PROBE-OK.  The shim must stop with a diagnostic for an address outside RAM and MMIO or
 * inside its own carve-out. */
#include "scenario.h"

int main(u64 x0)
{
    u64 v = *(volatile u64 *)x0;
    puts_("PROBE-OK ");
    puthex(v);
    puts_("\n");
    psci_off();
}
