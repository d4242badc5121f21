/* s2cache shim: PL011 output (banner, diagnostics) and the few libc functions GCC may call. */
#include "shim.h"

#define UART_DR 0x00
#define UART_FR 0x18
#define FR_TXFF (1U << 5)

static void putc_(char c)
{
    if (!cfg.uart)
        return;
    volatile u32 *fr = (volatile u32 *)(cfg.uart + UART_FR);
    volatile u32 *dr = (volatile u32 *)(cfg.uart + UART_DR);
    for (int spins = 0; (*fr & FR_TXFF) && spins < 1000000; spins++)
        ;
    *dr = (u8)c;
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
    char buf[19];
    buf[0] = '0';
    buf[1] = 'x';
    int n = 0;
    for (u64 t = v; t; t >>= 4)
        n++;
    if (!n)
        n = 1;
    for (int i = 0; i < n; i++) {
        u64 d = (v >> (4 * (n - 1 - i))) & 0xf;
        buf[2 + i] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
    }
    buf[2 + n] = 0;
    puts_(buf);
}

void putdec(u64 v)
{
    char buf[21];
    int i = 20;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    puts_(&buf[i]);
}

void *memset(void *s, int c, unsigned long n)
{
    u8 *p = s;
    if (!((u64)p & 7) && !(n & 7) && !c) {
        for (u64 *q = (u64 *)p; n; n -= 8)
            *q++ = 0;
        return s;
    }
    while (n--)
        *p++ = (u8)c;
    return s;
}

void *memcpy(void *d, const void *s, unsigned long n)
{
    u8 *dp = d;
    const u8 *sp = s;
    while (n--)
        *dp++ = *sp++;
    return d;
}
