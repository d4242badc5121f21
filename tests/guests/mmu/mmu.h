/* Shared declarations of the s1/s2 translation-table test programs. */
#ifndef MMU_H
#define MMU_H

typedef unsigned long u64;
typedef unsigned int u32;
typedef unsigned char u8;

/*
 * Parameter block at the linker symbol `params` (PA 0x40100000), filled by the
 * test with one `-device loader,addr=...,data=...,data-len=8` per word.
 */
struct params {
    u64 magic;      /* +0x00 PARAMS_MAGIC */
    u64 granule;    /* +0x08 4096, 16384 or 65536 */
    u64 seed;       /* +0x10 xorshift64 seed, non-zero */
    u64 t0sz;       /* +0x18 TCR_EL1.T0SZ (s1) or VTCR_EL2.T0SZ (s2) */
    u64 t1sz;       /* +0x20 TCR_EL1.T1SZ (s1 only) */
    u64 sl0;        /* +0x28 VTCR_EL2.SL0 (s2 only) */
};

#define PARAMS_MAGIC 0x6d61726170633273UL   /* "s2cparam" */

/* Reasons for panic(), left in `panic_code` when the program stops at `fault`. */
enum panic_reason {
    PANIC_MAGIC = 1,        /* no parameter block */
    PANIC_GRANULE = 2,      /* granule not 4K/16K/64K */
    PANIC_TSZ = 3,          /* T0SZ/T1SZ out of range */
    PANIC_SL0 = 4,          /* SL0 invalid or root not 1..16 concatenated tables */
    PANIC_ARENA = 5,        /* table arena exhausted */
    PANIC_SEED = 6,         /* seed is zero */
};

extern struct params params;
extern char tables_start[], tables_end[], pool_start[], pool_end[];
extern char idmap_start[], idmap_end[];

/* One translation regime being built: a stage-1 range or a stage 2. */
struct regime {
    int stage;              /* 1 or 2 */
    unsigned gshift;        /* 12, 14 or 16 */
    unsigned stride;        /* gshift - 3: index bits per level */
    int start;              /* start level */
    unsigned ia_bits;       /* input-address bits of this range */
    u64 ia_base;            /* first input address: 0, or the TTBR1 range's base */
    u64 root;               /* PA of the (possibly concatenated) root table */
    u64 root_entries;       /* entries in the root, all concatenated tables together */
};

#define DESC_AF         (1UL << 10)
#define DESC_CONT       (1UL << 52)
#define RAM_BASE        0x40000000UL

void panic(u64 reason) __attribute__((noreturn));
void rng_seed(u64 seed);
u64 rnd(void);
u64 rnd_below(u64 n);
void fill_pool(void);
void regime_init(struct regime *r, int stage, unsigned gshift, int start,
                 unsigned ia_bits, u64 ia_base);
void map_identity(struct regime *r);
void map_blocks(struct regime *r, int per_level);
void map_random(struct regime *r, int regions, int max_pages);
void *memset(void *s, int c, unsigned long n);
void setup(void);              /* s1.c or s2.c */

#include "aarch64.h"

#endif
