/*
 * Builds stage-1 and stage-2 translation tables (VMSAv8-64, 4K/16K/64K
 * granules, no FEAT_LPA/LPA2) with random content drawn from the seeded PRNG.
 * Every leaf has AF=1 and read permission at EL1, so a debugger read through
 * a mapped address succeeds exactly when the walk finds a valid leaf.
 */
#include "mmu.h"

#define OA_MASK     0x0000fffffffff000UL
#define DESC_TABLE  3UL
#define DESC_PAGE   3UL
#define DESC_BLOCK  1UL

static u64 arena_next;

static u64 alloc_table(u64 size)
{
    u64 t;

    if (!arena_next)
        arena_next = (u64)tables_start;
    t = (arena_next + size - 1) & ~(size - 1);
    if (t + size > (u64)tables_end)
        panic(PANIC_ARENA);
    arena_next = t + size;
    for (u64 *p = (u64 *)t; p < (u64 *)(t + size); p++)
        *p = 0;
    return t;
}

static unsigned level_shift(const struct regime *r, int level)
{
    return r->gshift + r->stride * (3 - level);
}

/* Entries a contiguous run must span: 16 (4K), 128 (16K), 32 (64K). */
static u64 cont_entries(const struct regime *r)
{
    return r->gshift == 12 ? 16 : r->gshift == 14 ? 128 : 32;
}

void regime_init(struct regime *r, int stage, unsigned gshift, int start,
                 unsigned ia_bits, u64 ia_base)
{
    u64 root_size;

    r->stage = stage;
    r->gshift = gshift;
    r->stride = gshift - 3;
    r->start = start;
    r->ia_bits = ia_bits;
    r->ia_base = ia_base;
    r->root_entries = 1UL << (ia_bits - level_shift(r, start));
    root_size = r->root_entries * 8;
    if (root_size < (1UL << gshift))
        root_size = 1UL << gshift;
    r->root = alloc_table(root_size);
}

/*
 * The entry for `ia` at `level`, creating the tables above it.  NULL when a
 * block or page at a higher level already covers `ia`.
 */
static u64 *slot(struct regime *r, u64 ia, int level)
{
    u64 off = ia - r->ia_base;
    u64 table = r->root;

    for (int l = r->start;; l++) {
        u64 mask = l == r->start ? r->root_entries - 1 : (1UL << r->stride) - 1;
        u64 *e = (u64 *)table + ((off >> level_shift(r, l)) & mask);

        if (l == level)
            return e;
        if (!*e)
            *e = alloc_table(1UL << r->gshift) | DESC_TABLE;
        else if ((*e & 3) != DESC_TABLE)
            return 0;
        table = *e & OA_MASK & ~((1UL << r->gshift) - 1);
    }
}

static int slot_free(struct regime *r, u64 ia, int level)
{
    u64 *e = slot(r, ia, level);

    return e && !*e;
}

static void set_leaf(struct regime *r, u64 ia, u64 oa, int level, u64 attrs)
{
    *slot(r, ia, level) = oa | attrs | (level == 3 ? DESC_PAGE : DESC_BLOCK);
}

static int map_leaf(struct regime *r, u64 ia, u64 oa, int level, u64 attrs)
{
    if (ia == oa || !slot_free(r, ia, level))
        return 0;
    set_leaf(r, ia, oa, level, attrs);
    return 1;
}

/* Stage 1: any AttrIndx, any AP (EL1 may read all four), random nG/PXN/UXN and
 * software bits [58:55], which a walker must ignore. */
static u64 s1_attrs(void)
{
    return DESC_AF | (rnd() & 7) << 2 | (rnd() & 3) << 6 | 3UL << 8 |
           (rnd() & 1) << 11 | (rnd() & 3) << 53 | (rnd() & 15) << 55;
}

/* Stage 2: any valid MemAttr (FWB=0), S2AP read-only or read-write, random
 * XN[1:0] and software bits. */
static u64 s2_attrs(void)
{
    static const u8 memattr[] = { 0, 1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15 };

    return DESC_AF | (u64)memattr[rnd_below(sizeof(memattr))] << 2 |
           (rnd() & 1 ? 3UL : 1UL) << 6 | 3UL << 8 | (rnd() & 3) << 53 |
           (rnd() & 15) << 55;
}

static u64 random_attrs(const struct regime *r)
{
    return r->stage == 1 ? s1_attrs() : s2_attrs();
}

/* Pages mapping [idmap_start, idmap_end) to itself: code, stack, parameters
 * and tables stay where they are when the MMU (or stage 2) comes on. */
void map_identity(struct regime *r)
{
    u64 attrs = r->stage == 1 ? DESC_AF | 3UL << 8            /* AttrIndx 0, EL1 RW */
                              : DESC_AF | 15UL << 2 | 3UL << 6 | 3UL << 8;

    for (u64 a = (u64)idmap_start; a < (u64)idmap_end; a += 1UL << r->gshift)
        set_leaf(r, a, a, 3, attrs);
}

/*
 * Blocks at every level the granule allows without FEAT_LPA: 1 GiB and 2 MiB
 * (4K), 32 MiB (16K), 512 MiB (64K).  Blocks of 512 MiB or more map the GiB
 * holding RAM, smaller ones land in the pool.
 */
void map_blocks(struct regime *r, int per_level)
{
    u64 pool = (u64)pool_end - (u64)pool_start;
    int first = r->gshift == 12 ? 1 : 2;

    for (int level = first > r->start ? first : r->start; level <= 2; level++) {
        u64 size = 1UL << level_shift(r, level);

        /* A few tries each: in a small range most slots hold the identity map. */
        for (int done = 0, tries = 0; done < per_level && tries < 8 * per_level; tries++) {
            u64 oa = size > pool ? RAM_BASE & ~(size - 1)
                                 : (u64)pool_start + rnd_below(pool / size) * size;
            u64 ia = r->ia_base + rnd_below((1UL << r->ia_bits) / size) * size;

            done += map_leaf(r, ia, oa, level, random_attrs(r));
        }
    }
}

static u64 pool_page(const struct regime *r, u64 npages)
{
    u64 pages = ((u64)pool_end - (u64)pool_start) >> r->gshift;

    return (u64)pool_start + (rnd_below(pages - npages + 1) << r->gshift);
}

/* A run of contiguous-bit entries: aligned in IA and OA, same attributes. */
static void map_contiguous(struct regime *r, u64 ia)
{
    u64 pg = 1UL << r->gshift, n = cont_entries(r);
    u64 oa = (u64)pool_start +
             rnd_below(((u64)pool_end - (u64)pool_start) / (n * pg)) * n * pg;
    u64 attrs = random_attrs(r) | DESC_CONT;

    for (u64 k = 0; k < n; k++)
        if (!slot_free(r, ia + k * pg, 3))
            return;
    for (u64 k = 0; k < n; k++)
        set_leaf(r, ia + k * pg, oa + k * pg, 3, attrs);
}

/*
 * `regions` runs of pages at random places in the range (so at random root
 * indexes), each cut into stretches: holes, contiguous-bit runs, stretches
 * mapping consecutive pool pages with one set of attributes (a walker should
 * coalesce them), and scattered pages with their own attributes.
 */
void map_random(struct regime *r, int regions, int max_pages)
{
    u64 pg = 1UL << r->gshift;
    u64 span = 1UL << r->ia_bits;
    u64 top = 1UL << level_shift(r, r->start);
    u64 run = cont_entries(r) * pg;

    for (int i = 0; i < regions; i++) {
        u64 off = rnd_below(r->root_entries) * top + rnd_below(top / pg) * pg;
        u64 end = off + (16 + rnd_below(max_pages)) * pg;

        if (end > span)
            end = span;
        while (off < end) {
            u64 n = 1 + rnd_below(32), kind = rnd_below(8);

            if (n > (end - off) / pg)
                n = (end - off) / pg;
            if (kind == 0) {                        /* hole */
            } else if (kind <= 2) {                 /* contiguous run */
                off = (off + run - 1) & ~(run - 1);
                if (off + run > span)
                    break;
                map_contiguous(r, r->ia_base + off);
                n = run / pg;
            } else if (kind <= 5) {                 /* linear stretch */
                u64 oa = pool_page(r, n), attrs = random_attrs(r);

                for (u64 k = 0; k < n; k++)
                    map_leaf(r, r->ia_base + off + k * pg, oa + k * pg, 3, attrs);
            } else {                                /* scattered pages */
                for (u64 k = 0; k < n; k++)
                    map_leaf(r, r->ia_base + off + k * pg, pool_page(r, 1), 3,
                             random_attrs(r));
            }
            off += n * pg;
        }
    }
}
