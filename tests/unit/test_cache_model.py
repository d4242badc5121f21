"""The shadow cache (gdbplugin/model/cache.py) against its documented contract, one small
hand-built RAM map at a time.

The contract, from the module: guest RAM is laid out as one index space of 4 KiB pages in PA
order (RamMap); a page is exactly 64 lines of 64 bytes and bit k of a page's word is line k
(line_mask: "bits first_line..last_line of a page word"); a range [pa, pa+size) touches every
line that holds one of its bytes, and only RAM; and CLEARS says which line states each
maintenance operation clears, argued from the Arm ARM.  Every expected value below is worked
out by hand from those rules.
"""
from __future__ import annotations

import numpy as np
import pytest

from gdbplugin.model.cache import (CLEARS, FULL, LINES_PER_PAGE, STATES, RamMap, ShadowCache,
                                   line_mask, line_masks)

PAGE = 4096
LINE = 64
A, B, C = 0x4000_0000, 0x8000_0000, 0x1_0000_0000
# Three RAM ranges with gaps between them, given out of order: A has 3 pages (global pages
# 0..2), B 2 pages (3..4), C 1 page (5).
THREE = [(B, 2 * PAGE), (A, 3 * PAGE), (C, PAGE)]


def three():
    return RamMap(THREE)


def word(cache, name, page):
    return int(cache.bits[name][page])


# -- RamMap: the page index space ---------------------------------------------------------

def test_rammap_orders_ranges_by_pa_and_counts_pages():
    """Ranges may come in any order (a trace header lists them as the VMM does); the index
    space must still follow PA order so that consecutive indices inside a range are
    consecutive PAs, which the engine relies on when it reports runs of pages."""
    ram = three()
    assert ram.ranges == sorted(THREE)
    assert ram.pages == 6
    assert not ram.single
    assert RamMap([(A, PAGE)]).single


def test_rammap_partial_last_page_counts_as_a_page():
    """A range whose size is not a page multiple still occupies its last, partial page: the
    page exists (lines in it can be cached) but bytes past the range are not RAM."""
    ram = RamMap([(A, PAGE + 0x800), (B, PAGE)])
    assert ram.pages == 3
    assert ram.page_index(A + PAGE + 0x7FF) == 1
    assert ram.page_index(A + PAGE + 0x800) == -1      # first byte past the range
    assert ram.page_index(B) == 2


def test_page_index_of_each_range():
    """Global page index of a PA: the pages of earlier ranges come first, then the offset
    inside the range.  The first byte of each range belongs to that range."""
    ram = three()
    assert ram.page_index(A) == 0
    assert ram.page_index(A + 2 * PAGE + 0xFFF) == 2
    assert ram.page_index(B) == 3
    assert ram.page_index(B + PAGE) == 4
    assert ram.page_index(B + 2 * PAGE - 1) == 4
    assert ram.page_index(C) == 5
    assert ram.page_index(C + 0x123) == 5


def test_page_index_outside_ram_is_minus_one():
    """Below the lowest range, in a gap, and from the end of a range on, a PA is not RAM:
    the documented answer is -1 (the engine uses it to tell device memory from RAM)."""
    ram = three()
    for pa in (0, A - 1, A + 3 * PAGE, B - 1, B + 2 * PAGE, C - 1, C + PAGE, (1 << 63)):
        assert ram.page_index(pa) == -1, hex(pa)


def test_page_index_scalar_is_a_python_int():
    """A scalar PA gives a plain int (callers use it as an index and compare it with >= 0),
    an array of PAs gives an array, -1 where not RAM."""
    ram = three()
    got = ram.page_index(B + 5)
    assert type(got) is int and got == 3
    assert type(ram.page_index(0)) is int
    arr = ram.page_index(np.array([A, A - 1, B + PAGE, C, C + PAGE], dtype=np.uint64))
    assert isinstance(arr, np.ndarray)
    assert arr.tolist() == [0, -1, 4, 5, -1]


def test_page_pa_inverts_page_index():
    """page_pa is the PA of a global page index: the first page of each range is that
    range's base, and the index of a page's PA is the page again."""
    ram = three()
    assert [ram.page_pa(i) for i in range(ram.pages)] == [
        A, A + PAGE, A + 2 * PAGE, B, B + PAGE, C]
    for i in range(ram.pages):
        assert ram.page_index(ram.page_pa(i)) == i


# -- RamMap.clip: the RAM parts of one range ---------------------------------------------

def test_clip_inside_one_page():
    """A range inside one page: the lines holding its first and last bytes."""
    ram = three()
    assert ram.clip(B + PAGE + 3 * LINE + 5, 2 * LINE) == [(4, 3, 4, 5)]
    assert ram.clip(A, 1) == [(0, 0, 0, 0)]


def test_clip_across_pages_ends_on_the_last_byte():
    """A range ending exactly at a page boundary does not touch the next page; one byte more
    does, at its line 0."""
    ram = three()
    assert ram.clip(A + 63 * LINE, LINE + PAGE) == [(0, 63, 1, 63)]
    assert ram.clip(A + 63 * LINE, LINE + PAGE + 1) == [(0, 63, 2, 0)]


def test_clip_drops_what_is_not_ram_and_spans_ranges():
    """Only RAM is cached state: a range covering a gap yields one part per RAM range it
    overlaps, in PA order, and a range lying wholly outside RAM yields nothing."""
    ram = three()
    assert ram.clip(A + 2 * PAGE + 62 * LINE, B - A - 2 * PAGE - 62 * LINE + LINE + 1) == [
        (2, 62, 2, 63), (3, 0, 3, 1)]
    assert ram.clip(A - PAGE, C + PAGE - A + 2 * PAGE) == [
        (0, 0, 2, 63), (3, 0, 4, 63), (5, 0, 5, 63)]
    assert ram.clip(A + 3 * PAGE, B - A - 3 * PAGE) == []       # exactly the gap
    assert ram.clip(0, A) == []
    # Not overlapping the first range must not stop the search in the later ones.
    assert ram.clip(C + 2 * LINE, LINE) == [(5, 2, 5, 2)]


# -- RamMap.pieces: the vectorized clip ---------------------------------------------------

def pieces(ram, pa, size):
    return [tuple(int(x) for x in t)
            for t in zip(*ram.pieces(np.array(pa), np.array(size)))]


def test_pieces_single_page_ranges():
    """Each range inside one page gives one (range index, page, first line, last line)."""
    ram = three()
    assert pieces(ram, [A + 5 * LINE, C + 63 * LINE], [LINE, LINE]) == [
        (0, 0, 5, 5), (1, 5, 63, 63)]


def test_pieces_accepts_plain_integer_arrays():
    """Addresses and sizes as ordinary (signed) integer arrays or lists, as a caller builds
    them, mean the same as uint64 ones."""
    ram = three()
    want = [(0, 3, 1, 2)]
    assert pieces(ram, [B + LINE], [2 * LINE]) == want
    got = ram.pieces([B + LINE], [2 * LINE])
    assert [tuple(int(x) for x in t) for t in zip(*got)] == want
    got = ram.pieces(np.array([B + LINE], dtype=np.int64), np.array([2 * LINE], dtype=np.int64))
    assert [tuple(int(x) for x in t) for t in zip(*got)] == want


def test_pieces_expands_multi_page_ranges_in_range_order():
    """A range over several pages gives one piece per page: its first page from the first
    line, middle pages whole, its last page up to the line of its last byte; ranges come
    out in their own order even when they lie in different RAM ranges."""
    ram = three()
    got = pieces(ram, [B + PAGE - LINE, A + 62 * LINE, C + LINE],
                 [LINE + 1, 2 * PAGE - 61 * LINE, LINE])
    assert got == [(0, 3, 63, 63), (0, 4, 0, 0),
                   (1, 0, 62, 63), (1, 1, 0, 63), (1, 2, 0, 0),
                   (2, 5, 1, 1)]


def test_pieces_last_byte_on_a_page_start():
    """A range whose last byte is the first byte of a page touches that page's line 0."""
    ram = three()
    assert pieces(ram, [A + PAGE - LINE], [LINE + 1]) == [(0, 0, 63, 63), (0, 1, 0, 0)]


def test_pieces_drops_what_is_not_ram():
    """A range starting exactly at the end of a RAM range, or lying in a gap, touches no RAM;
    one crossing a range's end is cut there."""
    ram = three()
    assert pieces(ram, [A + 3 * PAGE, B + 2 * PAGE, 0], [LINE, PAGE, LINE]) == []
    assert pieces(ram, [B + 2 * PAGE - LINE], [2 * LINE]) == [(0, 4, 63, 63)]
    # A range that misses the first RAM range is still found in the last one.
    assert pieces(ram, [C + 2 * LINE], [LINE]) == [(0, 5, 2, 2)]


def test_pieces_last_byte_on_a_line_start():
    """Inside one page, a range whose last byte is the first byte of a line touches that
    line too; one byte less does not."""
    ram = three()
    assert pieces(ram, [A + 5 * LINE, B + 5 * LINE], [LINE + 1, LINE]) == [
        (0, 0, 5, 6), (1, 3, 5, 5)]


def test_pieces_at_the_end_of_a_partial_last_page():
    """RAM whose size is not a page multiple ends inside its last page: a range starting at
    that end touches no RAM, in a batch with ranges that do (mixed one- and multi-page)."""
    ram = RamMap([(A, PAGE + 0x800)])
    assert pieces(ram, [A + PAGE + 0x800], [LINE]) == []
    assert pieces(ram, [A + PAGE + 0x800, A + PAGE - LINE, A + PAGE + 0x7C0],
                  [LINE, 2 * LINE, 2 * LINE]) == [(1, 0, 63, 63), (1, 1, 0, 0), (2, 1, 31, 31)]


def test_pieces_are_integer_indices():
    """Pages and lines are indices (the engine indexes its per-page arrays with them and
    shifts masks by them): integer arrays in both the one-page and the multi-page case."""
    ram = three()
    for pa, size in (([A + LINE], [LINE]), ([A + LINE, B], [2 * PAGE, LINE])):
        out = ram.pieces(np.array(pa, dtype=np.uint64), np.array(size, dtype=np.uint64))
        for part in out:
            assert part.dtype.kind in "iu", part.dtype
        np.zeros(ram.pages)[out[1]]          # usable as an index
        np.zeros(LINES_PER_PAGE)[out[2]]
        np.zeros(LINES_PER_PAGE)[out[3]]


def test_pieces_zero_size_is_the_line_of_pa():
    """A zero size is taken as the byte at pa: a DC or IC by VA acts on the one line that
    holds the address (Arm ARM, data cache maintenance by VA), never on the next line."""
    ram = three()
    assert pieces(ram, [A + LINE - 1, B + PAGE - 1], [0, 0]) == [(0, 0, 0, 0), (1, 3, 63, 63)]


# -- line masks -----------------------------------------------------------------------------

def test_line_mask_bits():
    """Bits first..last inclusive of a page word; the whole page is every bit."""
    assert int(line_mask(0, 0)) == 1
    assert int(line_mask(3, 5)) == 0b111000
    assert int(line_mask(63, 63)) == 1 << 63
    assert int(line_mask(0, 63)) == (1 << 64) - 1
    assert int(line_mask(1, 63)) == (1 << 64) - 2


def test_line_masks_vectorized_equals_line_mask():
    """line_masks is documented as the vectorized line_mask: same bits for every pair,
    including the whole-page and single-line extremes."""
    first = np.array([0, 3, 63, 0, 1, 0, 10], dtype=np.int64)
    last = np.array([0, 5, 63, 63, 63, 62, 10], dtype=np.int64)
    got = line_masks(first, last)
    assert got.dtype == np.uint64
    assert [int(x) for x in got] == [1, 0b111000, 1 << 63, (1 << 64) - 1, (1 << 64) - 2,
                                     (1 << 63) - 1, 1 << 10]
    assert [int(x) for x in got] == [int(line_mask(int(f), int(l))) for f, l in zip(first, last)]


# -- ShadowCache ranges -----------------------------------------------------------------------

def test_new_cache_is_clean():
    """A new world knows of no dirty, stale or code line anywhere; every state has a word per
    RAM page (8 bytes each)."""
    ram = three()
    c = ShadowCache(ram)
    assert set(c.bits) == set(STATES)
    for name in STATES:
        assert c.bits[name].shape == (6,) and c.lines(name) == 0
        assert not c.any(name, A, C + PAGE - A)
    assert c.nbytes == 3 * 6 * 8


def test_set_marks_exactly_the_lines_of_the_range():
    """A write of [pa, pa+size) makes every line holding one of its bytes (and no other)
    dirty: partial first and last pages, whole pages between."""
    c = ShadowCache(three())
    c.set(["dirty"], A + 62 * LINE + 1, 2 * PAGE)    # lines 62.. of page 0 to line 62 of page 2
    assert word(c, "dirty", 0) == 0b11 << 62
    assert word(c, "dirty", 1) == (1 << 64) - 1
    assert word(c, "dirty", 2) == (1 << 63) - 1
    assert c.lines("dirty") == 2 + 64 + 63
    assert c.lines("stale") == 0 and c.lines("code") == 0


def test_set_two_names_and_small_range():
    """Setting two states at once sets both; a range within one line marks one bit, and
    setting is idempotent and cumulative (OR)."""
    c = ShadowCache(three())
    c.set(["dirty", "code"], B + PAGE + 7 * LINE + 3, 4)
    c.set(["dirty"], B + PAGE + 7 * LINE, LINE)
    c.set(["dirty"], B + PAGE + 9 * LINE, LINE)
    assert word(c, "dirty", 4) == (1 << 7) | (1 << 9)
    assert word(c, "code", 4) == 1 << 7
    assert c.lines("dirty") == 2 and c.lines("code") == 1


def test_set_two_adjacent_pages():
    """Across exactly one page boundary: the head of the first page and the tail of the
    second, nothing in between to fill."""
    c = ShadowCache(three())
    c.set(["stale"], B + PAGE - 2 * LINE, 3 * LINE)
    assert word(c, "stale", 3) == 0b11 << 62
    assert word(c, "stale", 4) == 1
    assert c.lines("stale") == 3


def test_set_ignores_what_is_not_ram_and_spans_ranges():
    """Only RAM lines carry state; a range over a gap marks the RAM on both sides."""
    c = ShadowCache(three())
    c.set(["dirty"], A + 3 * PAGE - LINE, B - A - 3 * PAGE + 2 * LINE)
    assert word(c, "dirty", 2) == 1 << 63
    assert word(c, "dirty", 3) == 1
    assert c.lines("dirty") == 2
    c.set(["dirty"], 0, A)
    assert c.lines("dirty") == 2


def test_clear_removes_exactly_the_lines_of_the_range():
    """Maintenance of [pa, pa+size) clears the lines it covers, leaving the neighbours (the
    line before its first byte and after its last) as they were."""
    c = ShadowCache(three())
    c.set(["dirty", "stale"], A, 3 * PAGE)
    c.clear(["dirty", "stale"], A + LINE, 2 * PAGE)   # line 1 of page 0 .. line 0 of page 2
    for name in ("dirty", "stale"):
        assert word(c, name, 0) == 1
        assert word(c, name, 1) == 0
        assert word(c, name, 2) == (1 << 64) - 2
        assert c.lines(name) == 1 + 63
    c.clear(["dirty"], A + 2 * PAGE + 5 * LINE, 1)
    assert word(c, "dirty", 2) == (1 << 64) - 2 - (1 << 5)
    assert word(c, "stale", 2) == (1 << 64) - 2


def test_clear_one_page_boundary_and_other_states_untouched():
    """Clearing across one page boundary clears the head and the tail; a state not named
    stays set."""
    c = ShadowCache(three())
    c.set(["dirty", "code"], B, 2 * PAGE)
    c.clear(["dirty"], B + PAGE - LINE, 2 * LINE)
    assert word(c, "dirty", 3) == (1 << 63) - 1
    assert word(c, "dirty", 4) == (1 << 64) - 2
    assert c.lines("code") == 128


def test_any_single_page():
    """any() answers whether some line of the range has the state: the lines of the range
    only, not their neighbours."""
    c = ShadowCache(three())
    c.set(["code"], B + 10 * LINE, 1)
    assert c.any("code", B + 10 * LINE + 63, 1)
    assert c.any("code", B, PAGE)
    assert not c.any("code", B + 11 * LINE, LINE)
    assert not c.any("code", B + 9 * LINE, LINE)
    assert not c.any("dirty", B, PAGE)


@pytest.mark.parametrize("line, hit", [
    (63, True),        # last line of the first page: the head of the range
    (64 + 0, True),    # first line of a middle page
    (128 + 63, True),  # last line of the second middle page
    (192 + 2, True),   # last line of the range, in its last page
    (192 + 3, False),  # just past the range
    (0, False),        # just before the range (page 0 line 0, range starts at line 63)
])
def test_any_over_several_pages(line, hit):
    """A range from line 63 of page 0 to line 2 of page 3 sees a state set on any of its
    lines, whichever page holds it, and none outside it."""
    c = ShadowCache(RamMap([(A, 8 * PAGE)]))
    c.set(["stale"], A + (line // 64) * PAGE + (line % 64) * LINE, 1)
    assert c.any("stale", A + 63 * LINE, 3 * PAGE + 3 * LINE - 63 * LINE) is hit


def test_any_two_pages_tail_line_zero():
    """Across one page boundary the tail's line 0 is in the range."""
    c = ShadowCache(three())
    c.set(["dirty"], B + PAGE, 1)
    assert c.any("dirty", B + PAGE - LINE, 2 * LINE)
    assert not c.any("dirty", B + PAGE - 2 * LINE, 2 * LINE)


def test_any_looks_in_every_ram_range():
    """A range over several RAM ranges: a state set only in a later one is found, after
    single-page parts of earlier ranges that have nothing."""
    c = ShadowCache(three())
    c.set(["dirty"], C + 5 * LINE, 1)
    # Part 1: one line of page 2 (range A), part 2: B whole, part 3: C's page.
    assert c.any("dirty", A + 3 * PAGE - LINE, C + PAGE - (A + 3 * PAGE - LINE))
    assert c.any("dirty", A + 3 * PAGE - LINE, C + 6 * LINE - (A + 3 * PAGE - LINE))
    assert not c.any("dirty", A + 3 * PAGE - LINE, C + 5 * LINE - (A + 3 * PAGE - LINE))


# -- ShadowCache pages and reports ----------------------------------------------------------

def test_page_operations():
    """Page-granular work: a whole page set or cleared at once, and a page counted as having
    a state when any one of its lines does."""
    c = ShadowCache(three())
    pages = np.array([1, 4])
    c.set_pages(["dirty", "code"], pages)
    assert word(c, "dirty", 1) == word(c, "code", 4) == (1 << 64) - 1
    assert c.lines("dirty") == c.lines("code") == 128
    c.set(["stale"], B + 3 * LINE, 1)
    assert c.pages_with("stale", np.array([2, 3, 4])).tolist() == [False, True, False]
    assert c.pages_with("dirty", np.array([0, 1, 4, 5])).tolist() == [False, True, True, False]
    c.clear_pages(["dirty"], np.array([4]))
    assert c.pages_with("dirty", pages).tolist() == [True, False]
    assert c.lines("code") == 128                # a state not named stays
    c.clear_pages(["dirty", "code"], pages)
    assert c.lines("dirty") == c.lines("code") == 0
    assert c.lines("stale") == 1


def test_lines_over_some_pages():
    """lines() counts set lines over the given pages only, or over all RAM without them."""
    c = ShadowCache(three())
    c.set(["dirty"], A + PAGE + 4 * LINE, 3 * LINE)   # page 1: 3 lines
    c.set(["dirty"], C, PAGE)                          # page 5: 64 lines
    assert c.lines("dirty") == 67
    assert c.lines("dirty", np.array([1])) == 3
    assert c.lines("dirty", np.array([0, 2, 3])) == 0
    assert c.lines("dirty", np.array([5, 1])) == 67
    assert type(c.lines("dirty")) is int


def test_full_constant_and_page_geometry():
    """A 4 KiB page is exactly 64 lines of 64 bytes: one uint64 word per page."""
    assert LINES_PER_PAGE == 64 and int(FULL) == (1 << 64) - 1


# -- CLEARS: what each maintenance operation clears (Arm ARM) -------------------------------

def test_clears_follow_the_arm_arm():
    """DC CIVAC cleans and invalidates to PoC: a dirty line is written back and a stale clean
    copy dropped.  DC CVAC/CVAP/CVADP clean (to PoC or beyond): dirty data reaches RAM but a
    clean stale copy stays.  DC CVAU only reaches PoU, no help to a non-cacheable observer.
    DC IVAC executed at EL1 while HCR_EL2.VM is 1 is performed as a clean and invalidate
    (Arm ARM, virtualization of data cache invalidate by VA), so it clears both.  The
    hypervisor's clean, invalidate and clean+invalidate follow the same rules (an invalidate
    drops the line, dirty or stale: afterwards no cache holds it), and an I-cache
    invalidation drops only the code state."""
    assert set(CLEARS["civac"]) == {"dirty", "stale"}
    assert set(CLEARS["ivac"]) == {"dirty", "stale"}
    for op in ("cvac", "cvap", "cvadp", "clean"):
        assert set(CLEARS[op]) == {"dirty"}, op
    assert set(CLEARS["cvau"]) == set()
    assert set(CLEARS["inval"]) == {"dirty", "stale"}
    assert set(CLEARS["clean-inval"]) == {"dirty", "stale"}
    assert set(CLEARS["icache-inval"]) == {"code"}
