/* Entry of the scenario guests (EL1, MMU off, x0 from the shim): stack, vectors, main(). */
    .section .text.boot, "ax"
    .global _start
_start:
    msr     daifset, #0xf
    adrp    x1, stack_top
    add     x1, x1, :lo12:stack_top
    mov     sp, x1
    adrp    x1, vectors
    add     x1, x1, :lo12:vectors
    msr     vbar_el1, x1
    isb
    mov     x19, x0
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    str     xzr, [x1], #8
    b       1b
2:  mov     x0, x19
    bl      main
    b       psci_off

/* Secondary vCPUs (PSCI CPU_ON from a scenario): own stack, secondary_main(x0). */
    .global secondary_start
secondary_start:
    msr     daifset, #0xf
    adrp    x1, stack2_top
    add     x1, x1, :lo12:stack2_top
    mov     sp, x1
    adrp    x1, vectors
    add     x1, x1, :lo12:vectors
    msr     vbar_el1, x1
    isb
    bl      secondary_main
    b       cpu_off

    .global el1_fault
el1_fault:
    bl      report_fault
    b       psci_off

    .balign 2048
vectors:
    .rept   16
    .balign 128
    b       el1_fault
    .endr
