/* Runtime of the scenario guests: raw AArch64 programs the shim enters at EL1 (x0 = DTB, or
 * params.entry_x0).  They print on virt's PL011 and power off through PSCI SYSTEM_OFF. */
#ifndef SCENARIO_H
#define SCENARIO_H

typedef unsigned long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

#define UART_BASE   0x09000000UL
#define FW_CFG_BASE 0x09020000UL

/* Fixed guest-physical places the tests know (tests/integration/test_shim_scenarios.py). */
#define BUF         0x41000000UL    /* a data page the scenario writes and reads */
#define BLOB        0x41100000UL    /* a page the host (QEMU's -device loader) wrote */
#define CODE        0x41200000UL    /* a page the scenario writes code into and runs */
#define DMA_BUF     0x41300000UL    /* a page the host writes by fw_cfg DMA */
#define BUF2        0x41400000UL    /* a page the secondary vCPU touches */
#define BUF3        0x41500000UL    /* a page the primary touches at the end */
#define SCTLR_M     (1UL << 0)
#define SCTLR_C     (1UL << 2)
#define SCTLR_I     (1UL << 12)

void puts_(const char *s);
void puthex(u64 v);
void psci_off(void) __attribute__((noreturn));
void done(const char *marker) __attribute__((noreturn));   /* prints marker, powers off */
void dc_civac_range(u64 start, u64 size);
void dc_cvac_range(u64 start, u64 size);
void dc_ivac_range(u64 start, u64 size);
void ic_iallu(void);
void sync_code(u64 start, u64 size);     /* DC CVAU, DSB, IC IVAU, DSB, ISB over the range */
void setway_clean_inval_all(void);       /* DC CISW over every level and set/way */
void mmu_on(u64 sctlr_bits);             /* identity stage 1 (1 GiB blocks), then SCTLR |= bits */
void sctlr_set(u64 value);
u64 sctlr_get(void);
void *memset(void *s, int c, unsigned long n);
void fill(u64 addr, u64 bytes, u64 seed);      /* 8-byte words seed, seed+1, ... */
u64 sum(u64 addr, u64 bytes);
u64 cpu_on(u64 mpidr, void (*entry)(void), u64 context);   /* PSCI CPU_ON */
void cpu_off(void) __attribute__((noreturn));
void fw_cfg_dma_read(u16 selector, u64 dest, u32 length);
int main(u64 x0);
void secondary_main(u64 context);               /* weak default: power off */
void secondary_start(void);                     /* start.S */

#include "aarch64.h"

#endif
