/* Twin of icache_not_invalidated: IC IALLU (+DSB, ISB) after writing the code, before the
 * I-cache and MMU go on. */
#include "scenario.h"

int main(u64 x0)
{
    (void)x0;
    volatile u32 *code = (volatile u32 *)CODE;
    code[0] = 0x52800540;           /* mov w0, #42 */
    code[1] = 0xd65f03c0;           /* ret */
    dsb(sy);
    ic_iallu();
    mmu_on(SCTLR_M | SCTLR_C | SCTLR_I);
    u64 r = ((u64 (*)(void))CODE)();
    puts_(r == 42 ? "code ran\n" : "code returned garbage\n");
    done("SCENARIO-DONE icache_not_invalidated_clean");
}
