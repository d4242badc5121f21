/* Twin of code_rewritten: DC CVAU and IC IVAU over the rewritten instruction (then DSB, ISB)
 * before running it again. */
#include "scenario.h"

#define MOV_W0(imm) (0x52800000u | ((u32)(imm) << 5))
#define RET 0xd65f03c0u

int main(u64 x0)
{
    (void)x0;
    mmu_on(SCTLR_M | SCTLR_C | SCTLR_I);
    volatile u32 *code = (volatile u32 *)CODE;
    code[0] = MOV_W0(42);
    code[1] = RET;
    sync_code(CODE, 8);
    u64 first = ((u64 (*)(void))CODE)();
    code[0] = MOV_W0(43);
    sync_code(CODE, 4);
    u64 second = ((u64 (*)(void))CODE)();
    puts_(first == 42 && second == 43 ? "code ran\n" : "code returned garbage\n");
    done("SCENARIO-DONE code_rewritten_clean");
}
