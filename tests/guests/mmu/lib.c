/* PRNG, panic and the data pool shared by the s1/s2 test programs. */
#include "mmu.h"

u64 panic_code;
static u64 rng_state;

void panic(u64 reason)
{
    extern void fault(void) __attribute__((noreturn));

    panic_code = reason;
    fault();
}

void rng_seed(u64 seed)
{
    if (!seed)
        panic(PANIC_SEED);
    rng_state = seed;
}

/* xorshift64 (Marsaglia): deterministic for a seed, so a test can replay it. */
u64 rnd(void)
{
    u64 x = rng_state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return x;
}

u64 rnd_below(u64 n)
{
    return rnd() % n;
}

/* Every 8-byte word of the pool holds its own PA: a wrong translation shows. */
void fill_pool(void)
{
    for (u64 *p = (u64 *)pool_start; p < (u64 *)pool_end; p++)
        *p = (u64)p;
}

/* GCC may emit calls to memset even when freestanding. */
void *memset(void *s, int c, unsigned long n)
{
    u8 *p = s;

    while (n--)
        *p++ = (u8)c;
    return s;
}
