/* Twin of mismatched_alias: the guest's caches are on, so the host's cacheable write and the
 * guest's accesses agree. */
#include "scenario.h"

int main(u64 x0)
{
    (void)x0;
    mmu_on(SCTLR_M | SCTLR_C | SCTLR_I);
    fill(DMA_BUF, 64, 0);
    fw_cfg_dma_read(0 /* FW_CFG_SIGNATURE */, DMA_BUF, 4);
    puts_("fw_cfg signature ");
    puthex(*(volatile u32 *)DMA_BUF);
    puts_("\n");
    done("SCENARIO-DONE mismatched_alias_clean");
}
