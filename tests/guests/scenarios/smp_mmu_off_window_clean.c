/* Twin of smp_mmu_off_window: vCPU 0 turns its MMU on before starting vCPU 1, so the window is
 * over before the second vCPU maps anything. */
#include "scenario.h"

static volatile u64 flag __attribute__((aligned(64)));

void secondary_main(u64 context)
{
    mmu_on(SCTLR_M | SCTLR_C | SCTLR_I);
    fill(BUF2, 64, context);
    flag = 1;
    dsb(sy);
}

int main(u64 x0)
{
    (void)x0;
    mmu_on(SCTLR_M | SCTLR_C | SCTLR_I);
    if (cpu_on(1, secondary_start, 7))
        done("SCENARIO-FAIL cpu_on");
    while (!flag)
        ;
    fill(BUF3, 64, 3);
    done("SCENARIO-DONE smp_mmu_off_window_clean");
}
