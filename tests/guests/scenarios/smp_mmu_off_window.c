/* smp-mmu-off-window (info): vCPU 1 is started and touches BUF2 while every vCPU still has its
 * MMU off (a first map inside the window); then vCPU 0 turns its MMU on and touches BUF3 (a
 * first map outside it).  Run with -smp 2. */
#include "scenario.h"

static volatile u64 flag __attribute__((aligned(64)));

void secondary_main(u64 context)
{
    fill(BUF2, 64, context);
    flag = 1;
    dsb(sy);
}

int main(u64 x0)
{
    (void)x0;
    if (cpu_on(1, secondary_start, 7))
        done("SCENARIO-FAIL cpu_on");
    while (!flag)
        ;
    mmu_on(SCTLR_M | SCTLR_C | SCTLR_I);
    fill(BUF3, 64, 3);
    done("SCENARIO-DONE smp_mmu_off_window");
}
