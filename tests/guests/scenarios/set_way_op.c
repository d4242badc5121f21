/* Hazard set-way-op: the guest cleans its caches by set/way (DC CISW over every set and way)
 * before turning them off; under a hypervisor that only reaches this CPU's caches, so the
 * hypervisor must trap (TSW) and flush by VA (kvm: flush the VM, arm TVM). */
#include "scenario.h"

int main(u64 x0)
{
    (void)x0;
    mmu_on(SCTLR_M | SCTLR_C | SCTLR_I);
    fill(BUF, 4096, 0x5e7);
    setway_clean_inval_all();
    sctlr_set(sctlr_get() & ~(SCTLR_M | SCTLR_C));
    puts_("buf sum ");
    puthex(sum(BUF, 4096));
    puts_("\n");
    done("SCENARIO-DONE set_way_op");
}
