/* Hazard icache-not-invalidated: the guest writes code into CODE (MMU off), turns M, C and I
 * on and runs it without invalidating the I-cache first. */
#include "scenario.h"

static void write_code(void)
{
    volatile u32 *code = (volatile u32 *)CODE;
    code[0] = 0x52800540;           /* mov w0, #42 */
    code[1] = 0xd65f03c0;           /* ret */
}

int main(u64 x0)
{
    (void)x0;
    write_code();
    mmu_on(SCTLR_M | SCTLR_C | SCTLR_I);
    u64 r = ((u64 (*)(void))CODE)();
    puts_(r == 42 ? "code ran\n" : "code returned garbage\n");
    done("SCENARIO-DONE icache_not_invalidated");
}
