/* Hazard icache-not-invalidated at a fetch: with M, C and I on, the guest writes a function
 * into CODE, cleans and invalidates it properly and runs it; then it rewrites one instruction
 * and runs it again with no I-cache maintenance (a JIT's or a loader's bug; kvm-unit-tests'
 * cache test does this on purpose).  The shim's write-xor-execute observer sees the write and
 * the fetch; the old or the new instruction may run. */
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
    dsb(ish);
    isb();
    u64 second = ((u64 (*)(void))CODE)();
    puts_(first == 42 && (second == 42 || second == 43) ? "code ran\n" : "code returned garbage\n");
    done("SCENARIO-DONE code_rewritten");
}
