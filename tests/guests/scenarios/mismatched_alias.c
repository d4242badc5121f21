/* Hazard mismatched-alias: DMA_BUF is already mapped and used non-cacheably (MMU off) when the
 * host writes it cacheably (QEMU's fw_cfg DMA: device emulation), then the guest reads it. */
#include "scenario.h"

int main(u64 x0)
{
    (void)x0;
    fill(DMA_BUF, 64, 0);
    fw_cfg_dma_read(0 /* FW_CFG_SIGNATURE */, DMA_BUF, 4);
    puts_("fw_cfg signature ");
    puthex(*(volatile u32 *)DMA_BUF);
    puts_("\n");
    done("SCENARIO-DONE mismatched_alias");
}
