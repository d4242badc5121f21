/*
 * s2cache shim: the little of the flattened device tree we need, read with the MMU off
 * (byte and aligned 32-bit loads only): RAM (memory nodes), MMIO windows (every `reg` and
 * `ranges` translated up to the root, reserved-memory excluded), the PL011, the cfi-flash
 * windows (mapped like KVM's read-only memslots, s2.c), QEMU's fw_cfg window (emulated, mmio.c),
 * the initrd, and the in-place shrink of the memory node that hides the carve-out from the
 * guest.
 *
 * Runs before the relocation: writes `cfg` (.data) only.
 */
#include "shim.h"

#define FDT_MAGIC       0xd00dfeedU
#define FDT_BEGIN_NODE  1
#define FDT_END_NODE    2
#define FDT_PROP        3
#define FDT_NOP         4
#define FDT_END         9
#define MAX_DEPTH       8

static u32 be32(u64 addr)
{
    const volatile u8 *b = (const volatile u8 *)addr;
    return (u32)b[0] << 24 | (u32)b[1] << 16 | (u32)b[2] << 8 | b[3];
}

static void put_be32(u64 addr, u32 v)
{
    volatile u8 *b = (volatile u8 *)addr;
    b[0] = v >> 24;
    b[1] = v >> 16;
    b[2] = v >> 8;
    b[3] = v;
}

static u64 cells(u64 addr, u32 n)     /* the last two cells, big-endian, as a u64 */
{
    u64 v = 0;
    for (u32 i = 0; i < n; i++)
        v = (v << 32) | be32(addr + 4 * i);
    return v;
}

static bool str_eq(u64 addr, const char *s)
{
    const volatile u8 *p = (const volatile u8 *)addr;
    while (*s)
        if (*p++ != (u8)*s++)
            return false;
    return *p == 0;
}

static bool prefix(u64 addr, const char *s)    /* node name `s` or `s@...` */
{
    const volatile u8 *p = (const volatile u8 *)addr;
    while (*s)
        if (*p++ != (u8)*s++)
            return false;
    return *p == 0 || *p == '@';
}

static bool list_has(u64 addr, u32 len, const char *s)   /* string list contains s */
{
    u64 end = addr + len;
    while (addr < end) {
        if (str_eq(addr, s))
            return true;
        while (addr < end && *(const volatile u8 *)addr)
            addr++;
        addr++;
    }
    return false;
}

u64 fdt_totalsize(u64 dtb)
{
    return be32(dtb + 4);
}

struct level {
    u32 ac, sc;                 /* #address-cells / #size-cells for this node's children */
    bool has_ranges;
    u64 ranges;                 /* property value address */
    u32 ranges_len;
    u64 reg;
    u32 reg_len;
    bool skip;                  /* reserved-memory and cpus subtrees */
    bool memory;                /* device_type = "memory" (or a depth-1 memory@ node) */
    bool uart;                  /* compatible with arm,pl011 */
    bool rom;                   /* cfi-flash */
    bool fwcfg;                 /* qemu,fw-cfg-mmio */
};

/* Translate `addr` from the address space of children of the node at depth d up to the root;
 * false when some ancestor does not map its children into its parent's space. */
static bool translate(struct level *lv, int d, u64 *addr)
{
    for (; d >= 1; d--) {
        struct level *n = &lv[d], *parent = &lv[d - 1];
        if (!n->has_ranges)
            return false;
        if (!n->ranges_len)
            continue;                       /* empty ranges: identity */
        u32 stride = 4 * (n->ac + parent->ac + n->sc);
        bool hit = false;
        for (u32 off = 0; stride && off + stride <= n->ranges_len; off += stride) {
            u64 e = n->ranges + off;
            u64 child = cells(e + (n->ac > 2 ? 4 * (n->ac - 2) : 0), n->ac > 2 ? 2 : n->ac);
            u64 par = cells(e + 4 * n->ac, parent->ac);
            u64 size = cells(e + 4 * (n->ac + parent->ac), n->sc);
            if (*addr >= child && *addr - child < size) {
                *addr = par + (*addr - child);
                hit = true;
                break;
            }
        }
        if (!hit)
            return false;
    }
    return true;
}

static void add_mmio(u64 base, u64 size)
{
    if (!size)
        return;
    for (u64 i = 0; i < cfg.mmio_count; i++) {      /* merge touching windows */
        u64 b = cfg.mmio[i][0], e = b + cfg.mmio[i][1];
        if (base <= e && base + size >= b) {
            u64 nb = base < b ? base : b, ne = base + size > e ? base + size : e;
            cfg.mmio[i][0] = nb;
            cfg.mmio[i][1] = ne - nb;
            return;
        }
    }
    if (cfg.mmio_count < 64) {
        cfg.mmio[cfg.mmio_count][0] = base;
        cfg.mmio[cfg.mmio_count][1] = size;
        cfg.mmio_count++;
    }
}

/* the memory node's size cells we shrink (found before the relocation, used before it too) */
static u64 mem_size_addr __attribute__((section(".data")));
static u64 mem_size_cells __attribute__((section(".data")));

/* A node ends: all its properties are known now. */
static void node_done(struct level *lv, int d, u64 *ram_best_end)
{
    struct level *n = &lv[d], *par = &lv[d - 1];
    if (n->skip)
        return;
    if (n->reg_len) {
        u32 stride = 4 * (par->ac + par->sc);
        if (stride && par->ac <= 3 && par->sc <= 2) {
            for (u32 off = 0; off + stride <= n->reg_len; off += stride) {
                u64 v = n->reg + off;
                u64 a = cells(v + (par->ac > 2 ? 4 * (par->ac - 2) : 0),
                              par->ac > 2 ? 2 : par->ac);
                u64 s = cells(v + 4 * par->ac, par->sc);
                if (n->memory && d == 1) {
                    if (s && a + s > *ram_best_end) {
                        *ram_best_end = a + s;
                        cfg.ram_base = a;
                        cfg.ram_end = a + s;
                        mem_size_addr = v + 4 * par->ac;
                        mem_size_cells = par->sc;
                    }
                    continue;
                }
                if (!translate(lv, d - 1, &a))
                    continue;
                if (n->uart && !cfg.uart)
                    cfg.uart = a;
                if (n->rom && s && cfg.rom_count < 8) {
                    cfg.rom[cfg.rom_count][0] = a;
                    cfg.rom[cfg.rom_count][1] = s;
                    cfg.rom_count++;
                }
                if (n->fwcfg && s && !cfg.fwcfg_size) {
                    cfg.fwcfg_base = a;
                    cfg.fwcfg_size = s;
                }
                add_mmio(a, s);
            }
        }
    }
    if (n->ranges_len && !n->memory) {
        u32 stride = 4 * (n->ac + par->ac + n->sc);
        if (stride && par->ac <= 2 && n->sc <= 2) {
            for (u32 off = 0; off + stride <= n->ranges_len; off += stride) {
                u64 a = cells(n->ranges + off + 4 * n->ac, par->ac);
                u64 s = cells(n->ranges + off + 4 * (n->ac + par->ac), n->sc);
                if (translate(lv, d - 1, &a))
                    add_mmio(a, s);
            }
        }
    }
}

int fdt_scan(u64 dtb)
{
    if (!dtb || (dtb & 7) || be32(dtb) != FDT_MAGIC || be32(dtb + 20) < 16)
        return D_NO_DTB;
    u64 total = be32(dtb + 4);
    if (total < 40 || total > (2UL << 20))
        return D_NO_DTB;
    u64 st = dtb + be32(dtb + 8), strings = dtb + be32(dtb + 12);
    u64 end = st + be32(dtb + 36);

    struct level lv[MAX_DEPTH + 1];
    int depth = -1;
    u64 p = st;
    u64 ram_best_end = 0;
    cfg.mmio_count = 0;
    cfg.uart = 0;
    cfg.rom_count = 0;
    cfg.fwcfg_base = cfg.fwcfg_size = 0;
    cfg.initrd_start = cfg.initrd_end = 0;
    mem_size_addr = 0;

    while (p < end) {
        u32 tok = be32(p);
        p += 4;
        if (tok == FDT_BEGIN_NODE) {
            u64 name = p;
            while (*(const volatile u8 *)p)
                p++;
            p = ALIGN_UP(p + 1, 4);
            if (++depth > MAX_DEPTH)
                return D_NO_DTB;
            struct level *n = &lv[depth];
            memset(n, 0, sizeof(*n));
            n->ac = 2;
            n->sc = 1;
            n->skip = depth > 0 && lv[depth - 1].skip;
            if (depth == 1 && (prefix(name, "reserved-memory") || prefix(name, "cpus")))
                n->skip = true;
            if (depth == 1 && prefix(name, "memory"))
                n->memory = true;
        } else if (tok == FDT_END_NODE) {
            if (depth < 0)
                return D_NO_DTB;
            if (depth >= 1)
                node_done(lv, depth, &ram_best_end);
            depth--;
        } else if (tok == FDT_PROP) {
            u32 len = be32(p), nameoff = be32(p + 4);
            u64 val = p + 8, pname = strings + nameoff;
            p = ALIGN_UP(val + len, 4);
            if (depth < 0)
                return D_NO_DTB;
            struct level *n = &lv[depth];
            if (str_eq(pname, "#address-cells") && len == 4)
                n->ac = be32(val);
            else if (str_eq(pname, "#size-cells") && len == 4)
                n->sc = be32(val);
            else if (str_eq(pname, "device_type") && str_eq(val, "memory"))
                n->memory = true;
            else if (str_eq(pname, "ranges")) {
                n->has_ranges = true;
                n->ranges = val;
                n->ranges_len = len;
            } else if (str_eq(pname, "reg")) {
                n->reg = val;
                n->reg_len = len;
            } else if (str_eq(pname, "compatible")) {
                n->uart = list_has(val, len, "arm,pl011");
                n->rom = list_has(val, len, "cfi-flash");
                n->fwcfg = list_has(val, len, "qemu,fw-cfg-mmio");
            } else if (depth == 1 && str_eq(pname, "linux,initrd-start") && len <= 8)
                cfg.initrd_start = cells(val, len / 4);
            else if (depth == 1 && str_eq(pname, "linux,initrd-end") && len <= 8)
                cfg.initrd_end = cells(val, len / 4);
        } else if (tok == FDT_NOP) {
            continue;
        } else if (tok == FDT_END) {
            break;
        } else {
            return D_NO_DTB;
        }
    }
    if (!ram_best_end || !mem_size_addr)
        return D_MEMORY;
    cfg.ram_size_dtb = cfg.ram_end - cfg.ram_base;
    return 0;
}

/* Make the memory region we carve from end at new_end (same property length: in place). */
int fdt_shrink_memory(u64 dtb, u64 new_end)
{
    (void)dtb;
    u64 addr = mem_size_addr;
    u64 size = new_end - cfg.ram_base;
    if (!addr)
        return 1;
    if (mem_size_cells == 2) {
        put_be32(addr, size >> 32);
        put_be32(addr + 4, (u32)size);
    } else if (mem_size_cells == 1 && size >> 32 == 0) {
        put_be32(addr, (u32)size);
    } else {
        return 1;
    }
    return 0;
}
