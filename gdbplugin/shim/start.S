/*
 * s2cache shim: arm64 Image header, EL2 entry, self-relocation to the top of RAM, exception
 * vectors, trap frames, guest entry, PSCI forwarding and the halt spin.
 *
 * QEMU's -kernel loads an Image with text_offset 0x200000 at RAM base + 2 MiB (0x40200000 on
 * virt, the link address) and enters it at EL2 with x0 = DTB.  The code only uses PC-relative
 * addressing (scripts/build-shim refuses absolute relocations), so it runs wherever it is
 * copied; boot_main() decides where (the carve-out at the top of RAM) and we copy ourselves
 * there before anything but `cfg` (.data) has been written.
 */
#define FRAME_SIZE  256
#define STACK_SHIFT 14                  /* STACK_SIZE in shim.h */
#define STACK_TOP0  (1 << STACK_SHIFT)
#define MAX_VCPUS_ASM 16                /* MAX_VCPUS in shim.h */
#define SCTLR_EL2_RES1  0x30c50830

    .macro adr_l, reg, sym
    adrp    \reg, \sym
    add     \reg, \reg, :lo12:\sym
    .endm

    .macro mov_q, reg, val
    movz    \reg, #((\val) & 0xffff)
    movk    \reg, #(((\val) >> 16) & 0xffff), lsl #16
    .endm

    .section .text.head, "ax"
    .global _start
_start:
    b       primary_entry               /* code0 */
    .long   0                           /* code1 */
    .quad   0x200000                    /* text_offset: loaded at RAM base + 2 MiB */
    .quad   0x200000                    /* image_size: our footprint (link.ld asserts) */
    .quad   0xa                         /* flags: little-endian, 4K pages, anywhere */
    .quad   0, 0, 0                     /* res2..res4 */
    .ascii  "ARM\x64"                   /* magic */
    .long   0                           /* res5 (no PE header) */

    .text
primary_entry:
    msr     daifset, #0xf
    msr     tpidr_el2, xzr              /* no vCPU yet (handle_el2_exception checks) */
    mov     x19, x0                     /* DTB (boot protocol); 0 when loaded as an ELF */
    mrs     x1, CurrentEL
    cmp     x1, #(2 << 2)
    b.ne    not_el2
    mov_q   x1, SCTLR_EL2_RES1          /* MMU and caches off, little-endian */
    msr     sctlr_el2, x1
    isb
    adr_l   x1, vectors
    msr     vbar_el2, x1
    /* Zero our bss where we were loaded: boot_main may use it (only .data survives the move) */
    adr_l   x1, __bss_start
    adr_l   x2, __bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:  adr_l   x1, stacks
    add     sp, x1, #STACK_TOP0
    mov     x0, x19
    bl      boot_main                   /* -> x0: destination of the copy (carve-out base) */
    mov     x20, x0

    /* copy [_start, _edata) to x20, zero the destination's bss */
    adr_l   x1, _start
    adr_l   x2, _edata
    mov     x3, x20
3:  cmp     x1, x2
    b.hs    4f
    ldp     x4, x5, [x1], #16
    stp     x4, x5, [x3], #16
    b       3b
4:  adr_l   x1, _start
    adr_l   x2, __bss_start
    sub     x2, x2, x1
    add     x2, x2, x20                 /* destination __bss_start */
    adr_l   x3, __bss_end
    sub     x3, x3, x1
    add     x3, x3, x20                 /* destination __bss_end */
5:  cmp     x2, x3
    b.hs    6f
    stp     xzr, xzr, [x2], #16
    b       5b
6:  dsb     sy
    ic      iallu
    dsb     sy
    isb
    adr_l   x2, relocated
    sub     x2, x2, x1
    add     x2, x2, x20
    br      x2

relocated:                              /* now running in the carve-out */
    adr_l   x1, vectors
    msr     vbar_el2, x1
    adr_l   x1, stacks
    add     sp, x1, #STACK_TOP0
    isb
    bl      shim_main                   /* does not return */
    b       shim_halted

not_el2:                                /* nothing we can do below EL2: spin where gdb sees */
    b       shim_halted

/*
 * Secondary vCPUs: QEMU's PSCI CPU_ON (forwarded by us from EL2) starts them here at EL2 with
 * the MMU off and x0 = the slot we passed as context_id.
 */
    .global secondary_entry
secondary_entry:
    msr     daifset, #0xf
    msr     tpidr_el2, xzr
    mov_q   x1, SCTLR_EL2_RES1
    msr     sctlr_el2, x1
    isb
    adr_l   x1, vectors
    msr     vbar_el2, x1
    cmp     x0, #MAX_VCPUS_ASM
    b.hs    shim_halted
    adr_l   x1, stacks
    add     x2, x0, #1
    lsl     x2, x2, #STACK_SHIFT
    add     sp, x1, x2
    bl      secondary_main              /* does not return */
    b       shim_halted

/* enter_guest(entry, x0, sp_el2): ERET to EL1h, DAIF masked, every other GPR zero. */
    .global enter_guest
enter_guest:
    msr     elr_el2, x0
    mov     x3, #0x3c5
    msr     spsr_el2, x3
    mov     sp, x2
    mov     x0, x1
    mov     x1, xzr
    mov     x2, xzr
    mov     x3, xzr
    mov     x4, xzr
    mov     x5, xzr
    mov     x6, xzr
    mov     x7, xzr
    mov     x8, xzr
    mov     x9, xzr
    mov     x10, xzr
    mov     x11, xzr
    mov     x12, xzr
    mov     x13, xzr
    mov     x14, xzr
    mov     x15, xzr
    mov     x16, xzr
    mov     x17, xzr
    mov     x18, xzr
    mov     x19, xzr
    mov     x20, xzr
    mov     x21, xzr
    mov     x22, xzr
    mov     x23, xzr
    mov     x24, xzr
    mov     x25, xzr
    mov     x26, xzr
    mov     x27, xzr
    mov     x28, xzr
    mov     x29, xzr
    mov     x30, xzr
    eret

/* smc_call(u64 x[4]): SMC #0 from EL2 with x0..x3 from/to the array (QEMU's PSCI). */
    .global smc_call
smc_call:
    stp     x0, x30, [sp, #-16]!
    mov     x8, x0
    ldp     x0, x1, [x8]
    ldp     x2, x3, [x8, #16]
    smc     #0
    ldr     x8, [sp]
    stp     x0, x1, [x8]
    stp     x2, x3, [x8, #16]
    ldp     x8, x30, [sp], #16
    ret

/*
 * Where the shim stops when it cannot go on: a fatal diagnostic has been written to the ring
 * header (and the ring).  gdb sees the vCPU spinning here.
 */
    .global shim_halted
    .type   shim_halted, %function
shim_halted:
    msr     daifset, #0xf
1:  wfe
    b       1b
    .size   shim_halted, . - shim_halted

/* ---- exception vectors ------------------------------------------------------------- */
    .macro  save_frame
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #0]
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    str     x30, [sp, #240]
    .endm

    .macro  restore_frame
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    add     sp, sp, #FRAME_SIZE
    .endm

    .macro  ventry, label
    .balign 128
    b       \label
    .endm

    .macro  el2_unexpected, name, kind
\name:
    save_frame
    mov     x0, sp
    mov     x1, #\kind
    bl      handle_el2_exception
    b       shim_halted
    .endm

    .balign 2048
    .global vectors
vectors:
    ventry  el2t_sync                   /* current EL, SP_EL0 */
    ventry  el2t_irq
    ventry  el2t_fiq
    ventry  el2t_serror
    ventry  el2h_sync                   /* current EL, SP_EL2: a shim bug */
    ventry  el2h_irq
    ventry  el2h_fiq
    ventry  el2h_serror
    ventry  lower_sync                  /* lower EL, AArch64: the guest */
    ventry  lower_irq
    ventry  lower_fiq
    ventry  lower_serror
    ventry  lower_sync                  /* lower EL, AArch32 (compat EL0) */
    ventry  lower_irq
    ventry  lower_fiq
    ventry  lower_serror

    el2_unexpected el2t_sync, 0
    el2_unexpected el2t_irq, 1
    el2_unexpected el2t_fiq, 2
    el2_unexpected el2t_serror, 3
    el2_unexpected el2h_sync, 4
    el2_unexpected el2h_irq, 5
    el2_unexpected el2h_fiq, 6
    el2_unexpected el2h_serror, 7
    el2_unexpected lower_irq, 9
    el2_unexpected lower_fiq, 10
    el2_unexpected lower_serror, 11

lower_sync:
    save_frame
    mov     x0, sp
    bl      handle_sync
    restore_frame
    eret
