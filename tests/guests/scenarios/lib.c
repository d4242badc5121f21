/* Runtime of the scenario guests: UART, PSCI, cache maintenance, a 1 GiB identity stage 1. */
#include "scenario.h"

static void putc_(char c)
{
    volatile u32 *fr = (volatile u32 *)(UART_BASE + 0x18);
    while (*fr & (1U << 5))
        ;
    *(volatile u32 *)UART_BASE = (u8)c;
}

void puts_(const char *s)
{
    for (; *s; s++) {
        if (*s == '\n')
            putc_('\r');
        putc_(*s);
    }
}

void puthex(u64 v)
{
    puts_("0x");
    for (int i = 60; i >= 0; i -= 4) {
        u64 d = (v >> i) & 0xf;
        putc_((char)(d < 10 ? '0' + d : 'a' + d - 10));
    }
}

void psci_off(void)
{
    register u64 x0 __asm__("x0") = 0x84000008UL;   /* SYSTEM_OFF */
    __asm__ volatile("smc #0" : "+r"(x0) : : "memory");
    for (;;)
        __asm__ volatile("wfi");
}

void done(const char *marker)
{
    puts_(marker);
    puts_("\n");
    psci_off();
}

void report_fault(void)
{
    puts_("SCENARIO-FAULT esr ");
    puthex(read_sysreg(esr_el1));
    puts_(" elr ");
    puthex(read_sysreg(elr_el1));
    puts_(" far ");
    puthex(read_sysreg(far_el1));
    puts_("\n");
}

static u64 dline(void)
{
    return 4UL << ((read_sysreg(ctr_el0) >> 16) & 0xf);
}

void dc_civac_range(u64 start, u64 size)
{
    for (u64 a = start & ~(dline() - 1); a < start + size; a += dline())
        __asm__ volatile("dc civac, %0" : : "r"(a) : "memory");
    dsb(sy);
}

void dc_cvac_range(u64 start, u64 size)
{
    for (u64 a = start & ~(dline() - 1); a < start + size; a += dline())
        __asm__ volatile("dc cvac, %0" : : "r"(a) : "memory");
    dsb(sy);
}

void dc_ivac_range(u64 start, u64 size)
{
    for (u64 a = start & ~(dline() - 1); a < start + size; a += dline())
        __asm__ volatile("dc ivac, %0" : : "r"(a) : "memory");
    dsb(sy);
}

/* Make code written at [start, start + size) what instruction fetches see (the Arm ARM's
 * sequence for self-modifying code: DC CVAU, DSB ISH, IC IVAU, DSB ISH, ISB). */
void sync_code(u64 start, u64 size)
{
    u64 iline = 4UL << (read_sysreg(ctr_el0) & 0xf);
    for (u64 a = start & ~(dline() - 1); a < start + size; a += dline())
        __asm__ volatile("dc cvau, %0" : : "r"(a) : "memory");
    dsb(ish);
    for (u64 a = start & ~(iline - 1); a < start + size; a += iline)
        __asm__ volatile("ic ivau, %0" : : "r"(a) : "memory");
    dsb(ish);
    isb();
}

void ic_iallu(void)
{
    __asm__ volatile("ic iallu" : : : "memory");
    dsb(nsh);
    isb();
}

/* The classic set/way loop (as U-Boot and Linux's old __flush_dcache_all do it). */
void setway_clean_inval_all(void)
{
    u64 clidr = read_sysreg(clidr_el1);
    u64 loc = (clidr >> 24) & 7;
    u64 ccidx = (read_sysreg(id_aa64mmfr2_el1) >> 20) & 0xf;
    for (u64 level = 0; level < loc; level++) {
        if (((clidr >> (level * 3)) & 7) < 2)
            continue;                               /* no data cache at this level */
        write_sysreg(csselr_el1, level << 1);
        isb();
        u64 ccsidr = read_sysreg(ccsidr_el1);
        u64 line_shift = (ccsidr & 7) + 4;
        u64 ways = (ccidx ? (ccsidr >> 3) & 0x1fffff : (ccsidr >> 3) & 0x3ff) + 1;
        u64 sets = (ccidx ? (ccsidr >> 32) & 0xffffff : (ccsidr >> 13) & 0x7fff) + 1;
        u64 way_shift = ways > 1 ? (u64)__builtin_clz((u32)(ways - 1)) : 0;
        for (u64 w = 0; w < ways; w++)
            for (u64 s = 0; s < sets; s++)
                __asm__ volatile("dc cisw, %0" : :
                                 "r"((w << way_shift) | (s << line_shift) | (level << 1))
                                 : "memory");
    }
    dsb(sy);
    isb();
}

static u64 l1[512] __attribute__((aligned(4096)));

/* Identity stage 1 over the low 512 GiB with 1 GiB blocks: the first GiB Device-nGnRnE,
 * the rest Normal WB; T0SZ 25, MAIR attr0 Device, attr1 Normal WB. */
void mmu_on(u64 sctlr_bits)
{
    for (u64 i = 0; i < 512; i++)
        l1[i] = (i << 30) | 1 | (1UL << 10) | (i ? (1UL << 2) | (3UL << 8) : (1UL << 54));
    dsb(sy);
    write_sysreg(mair_el1, 0xff00UL);
    write_sysreg(tcr_el1, (2UL << 32) | (1UL << 23) | (3UL << 12) | (1UL << 10) | (1UL << 8) | 25);
    write_sysreg(ttbr0_el1, (u64)l1);
    isb();
    __asm__ volatile("tlbi vmalle1" : : : "memory");
    dsb(nsh);
    isb();
    write_sysreg(sctlr_el1, read_sysreg(sctlr_el1) | sctlr_bits);
    isb();
}

void sctlr_set(u64 value)
{
    write_sysreg(sctlr_el1, value);
    isb();
}

u64 sctlr_get(void)
{
    return read_sysreg(sctlr_el1);
}

void *memset(void *s, int c, unsigned long n)
{
    u8 *p = s;
    while (n--)
        *p++ = (u8)c;
    return s;
}

void fill(u64 addr, u64 bytes, u64 seed)
{
    for (u64 i = 0; i < bytes / 8; i++)
        ((volatile u64 *)addr)[i] = seed + i;
}

u64 sum(u64 addr, u64 bytes)
{
    u64 s = 0;
    for (u64 i = 0; i < bytes / 8; i++)
        s += ((volatile u64 *)addr)[i];
    return s;
}

static u64 smc4(u64 fn, u64 a, u64 b, u64 c)
{
    register u64 x0 __asm__("x0") = fn;
    register u64 x1 __asm__("x1") = a;
    register u64 x2 __asm__("x2") = b;
    register u64 x3 __asm__("x3") = c;
    __asm__ volatile("smc #0" : "+r"(x0), "+r"(x1), "+r"(x2), "+r"(x3) : : "memory");
    return x0;
}

u64 cpu_on(u64 mpidr, void (*entry)(void), u64 context)
{
    return smc4(0xc4000003UL, mpidr, (u64)entry, context);
}

void cpu_off(void)
{
    smc4(0x84000002UL, 0, 0, 0);
    for (;;)
        __asm__ volatile("wfi");
}

void __attribute__((weak)) secondary_main(u64 context)
{
    (void)context;
}

static u32 bswap32(u32 v)
{
    return __builtin_bswap32(v);
}

/* QEMU's fw_cfg DMA interface: the host writes `length` bytes of item `selector` at `dest`. */
void fw_cfg_dma_read(u16 selector, u64 dest, u32 length)
{
    static volatile struct { u32 control, length; u64 address; } access
        __attribute__((aligned(16)));
    access.control = bswap32(((u32)selector << 16) | 0x08 | 0x02);     /* SELECT | READ */
    access.length = bswap32(length);
    access.address = __builtin_bswap64(dest);
    dsb(sy);
    u64 a = (u64)&access;
    *(volatile u32 *)(FW_CFG_BASE + 0x10) = bswap32((u32)(a >> 32));
    *(volatile u32 *)(FW_CFG_BASE + 0x14) = bswap32((u32)a);
    while (bswap32(access.control) & ~0x01U)
        ;
    dsb(sy);
}
