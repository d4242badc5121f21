/*
 * Entry for the s1 (entered at EL1) and s2 (entered at EL2) test programs.
 * setup() builds the tables; from EL2 we then drop to EL1 with ERET.  Either
 * way the program ends spinning at `done`, where the test stops it.  Any
 * exception, and any panic(), ends at `fault` instead.
 */
    .section .text.boot, "ax"
    .global _start
_start:
    adrp    x1, stack_top
    add     x1, x1, :lo12:stack_top
    mov     sp, x1
    adr     x1, vectors
    mrs     x0, CurrentEL
    cmp     x0, #(2 << 2)
    b.ne    1f
    msr     vbar_el2, x1
1:  msr     vbar_el1, x1
    isb

    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
2:  cmp     x1, x2
    b.hs    3f
    str     xzr, [x1], #8
    b       2b

3:  bl      setup
    mrs     x0, CurrentEL
    cmp     x0, #(2 << 2)
    b.ne    done
    adr     x1, done
    msr     elr_el2, x1
    mov     x1, #0x3c5              /* EL1h, DAIF masked */
    msr     spsr_el2, x1
    adrp    x1, stack_top
    add     x1, x1, :lo12:stack_top
    msr     sp_el1, x1
    eret

    .global done
    .type   done, %function
done:
    b       done
    .size   done, . - done

    .global fault
    .type   fault, %function
fault:
    b       fault
    .size   fault, . - fault

    .balign 2048
vectors:
    .rept   16
    .balign 128
    b       fault
    .endr
