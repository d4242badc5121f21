"""The shadow cache: what may be true of each 64-byte line of guest RAM in the cache hierarchy.

TCG has no caches, so nothing here is observed: it is what *may* be the case on silicon, given
who wrote what through which kind of mapping and which maintenance was done since.  Three
facts per line, each one bit, kept as bitmaps with one uint64 word per 4 KiB page (a page is
exactly 64 lines), so page-granular work is whole-word numpy work:

- ``dirty``: a cache may hold data newer than RAM (a cacheable write not yet cleaned to PoC).
- ``stale``: RAM is newer than a clean copy a cache may hold (a non-cacheable write, while any
  cacheable alias — the host's linear map at least — can speculatively allocate the line).
- ``code``: written since the last I-cache invalidation that covered it.

Set/way operations do not appear here: under virtualization they act on the issuing CPU's
caches only and bring nothing to PoC for other CPUs or system caches (the seed thread).
"""
from __future__ import annotations

import numpy as np

LINE_SHIFT = 6
PAGE_SHIFT = 12
LINES_PER_PAGE = 1 << (PAGE_SHIFT - LINE_SHIFT)   # 64: one uint64 word per page
FULL = np.uint64((1 << 64) - 1)
STATES = ("dirty", "stale", "code")
# Which line states each maintenance operation clears: the guest's DC by VA (to PoC; CVAU
# only to PoU, no help to a non-cacheable observer; IVAC at EL1 with HCR_EL2.VM set is
# performed as CIVAC), the hypervisor's maintenance, and I-cache invalidation.  The one place
# this is said: the engine looks every operation up here.
CLEARS: dict[str, tuple[str, ...]] = {
    "civac": ("dirty", "stale"), "ivac": ("dirty", "stale"), "cvac": ("dirty",),
    "cvap": ("dirty",), "cvadp": ("dirty",), "cvau": (),
    "clean": ("dirty",), "inval": ("dirty", "stale"), "clean-inval": ("dirty", "stale"),
    "icache-inval": ("code",),
}


_NO_PIECES = (np.zeros(0, dtype=np.int64),) * 4


class RamMap:
    """Guest RAM ranges (base, size) laid out as one index space of pages."""

    def __init__(self, ranges: list[tuple[int, int]]):
        ranges = sorted(ranges)
        self.bases = np.array([b for b, _ in ranges], dtype=np.uint64)
        self.ends = np.array([b + s for b, s in ranges], dtype=np.uint64)
        sizes = [((b + s + 0xFFF) >> PAGE_SHIFT) - (b >> PAGE_SHIFT) for b, s in ranges]
        self.first_page = np.cumsum([0] + sizes[:-1]).astype(np.int64)
        self.base_pages = (self.bases >> np.uint64(PAGE_SHIFT)).astype(np.int64)
        self.pages = int(sum(sizes))
        self.ranges = ranges
        self.single = len(ranges) == 1

    def page_index(self, pa):
        """Global page index of PA(s) (int or array), -1 where not RAM."""
        arr = np.asarray(pa, dtype=np.uint64)
        slot = np.searchsorted(self.bases, arr, side="right") - 1
        slot_c = np.clip(slot, 0, None)
        inside = (slot >= 0) & (arr < self.ends[slot_c])
        idx = (arr >> np.uint64(PAGE_SHIFT)).astype(np.int64) - self.base_pages[slot_c] \
            + self.first_page[slot_c]
        out = np.where(inside, idx, -1)
        return int(out) if np.ndim(pa) == 0 else out

    def pieces(self, pa: np.ndarray, size: np.ndarray):
        """Vectorized ``clip`` for many ranges: (range index, page, first line, last line)
        for every RAM page each range touches, in range order."""
        pa = np.asarray(pa, dtype=np.uint64)
        if not pa.size:
            return _NO_PIECES
        end = pa + np.maximum(np.asarray(size, dtype=np.uint64), np.uint64(1))
        # The engine's ranges lie inside one RAM range each: one step for all of them.
        slot = np.searchsorted(self.bases, pa, side="right") - 1
        if slot.min() >= 0 and (end <= self.ends[slot]).all():
            return self._expand(np.arange(pa.size), pa, end,
                                self.first_page[slot] - self.base_pages[slot])
        out = []
        for (b, s_), fp in zip(self.ranges, self.first_page.tolist()):
            lo = np.maximum(pa, np.uint64(b))
            hi = np.minimum(end, np.uint64(b + s_))
            ok = np.flatnonzero(lo < hi)
            if ok.size:
                out.append(self._expand(ok, lo[ok], hi[ok], fp - (b >> PAGE_SHIFT)))
        if not out:
            return _NO_PIECES
        if len(out) == 1:                  # one RAM range: already in range order
            return out[0]
        parts = [np.concatenate(x) for x in zip(*out)]
        order = np.argsort(parts[0], kind="stable")
        return tuple(x[order] for x in parts)

    @staticmethod
    def _expand(idx: np.ndarray, lo: np.ndarray, hi: np.ndarray, offset):
        """``pieces`` of ranges [lo, hi) inside RAM (ranges ``idx``; ``offset``: global page
        index minus PA page number, per range or for all)."""
        first = (lo >> np.uint64(PAGE_SHIFT)).astype(np.int64)
        last = ((hi - np.uint64(1)) >> np.uint64(PAGE_SHIFT)).astype(np.int64)
        first_line = ((lo >> np.uint64(LINE_SHIFT))
                      & np.uint64(LINES_PER_PAGE - 1)).astype(np.int64)
        last_line = (((hi - np.uint64(1)) >> np.uint64(LINE_SHIFT))
                     & np.uint64(LINES_PER_PAGE - 1)).astype(np.int64)
        count = last - first + 1
        if (count == 1).all():             # every range inside one page: no expansion
            return idx, first + offset, first_line, last_line
        rep, page = segments(first, count)
        step = page - first[rep]
        page += offset[rep] if np.ndim(offset) else offset
        return (idx[rep], page, np.where(step == 0, first_line[rep], 0),
                np.where(step == count[rep] - 1, last_line[rep], LINES_PER_PAGE - 1))

    def page_pa(self, index: int) -> int:
        slot = int(np.searchsorted(self.first_page, index, side="right") - 1)
        return int(self.base_pages[slot] + index - self.first_page[slot]) << PAGE_SHIFT

    def clip(self, pa: int, size: int) -> list[tuple[int, int, int, int]]:
        """The RAM parts of [pa, pa+size) as (first_page, first_line, last_page, last_line)
        in global indices, inclusive line bounds within their pages."""
        out = []
        for (b, s), fp in zip(self.ranges, self.first_page.tolist()):
            lo, hi = max(pa, b), min(pa + size, b + s)
            if lo >= hi:
                continue
            base_page = b >> PAGE_SHIFT
            first, last = lo, hi - 1
            out.append((fp + (first >> PAGE_SHIFT) - base_page,
                        (first >> LINE_SHIFT) & (LINES_PER_PAGE - 1),
                        fp + (last >> PAGE_SHIFT) - base_page,
                        (last >> LINE_SHIFT) & (LINES_PER_PAGE - 1)))
        return out


def segments(start: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segments [start[i], start[i] + count[i]) laid end to end: for each position, its
    segment i and its index start[i] + k."""
    owner = np.repeat(np.arange(count.size), count)
    return owner, start[owner] + (np.arange(owner.size) - (np.cumsum(count) - count)[owner])


def line_masks(first_line: np.ndarray, last_line: np.ndarray) -> np.ndarray:
    """Vectorized ``line_mask``."""
    width = (last_line - first_line + 1).astype(np.uint64)
    low = np.where(width >= np.uint64(64), FULL,
                   (np.uint64(1) << np.minimum(width, np.uint64(63))) - np.uint64(1))
    return low << first_line.astype(np.uint64)


def line_mask(first_line: int, last_line: int) -> np.uint64:
    """Bits first_line..last_line (inclusive) of a page word."""
    width = last_line - first_line + 1
    return np.uint64(((1 << width) - 1) << first_line)


class ShadowCache:
    """The three line bitmaps of one world (one hypothesis about the hypervisor); with other
    ``states``, line bitmaps of any other fact (the engine's record of host-written code)."""

    def __init__(self, ram: RamMap, states: tuple[str, ...] = STATES):
        self.ram = ram
        self.bits = {name: np.zeros(ram.pages, dtype=np.uint64) for name in states}

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.bits.values())

    # -- ranges ---------------------------------------------------------------------------
    def _apply(self, name: str, pa: int, size: int, set_bits: bool) -> None:
        arr = self.bits[name]
        for fp, fl, lp, ll in self.ram.clip(pa, size):
            if fp == lp:
                m = line_mask(fl, ll)
                arr[fp] = arr[fp] | m if set_bits else arr[fp] & ~m
                continue
            head, tail = line_mask(fl, LINES_PER_PAGE - 1), line_mask(0, ll)
            if set_bits:
                arr[fp] |= head
                arr[fp + 1:lp] = FULL
                arr[lp] |= tail
            else:
                arr[fp] &= ~head
                arr[fp + 1:lp] = 0
                arr[lp] &= ~tail

    def set(self, names, pa: int, size: int) -> None:
        for name in names:
            self._apply(name, pa, size, True)

    def clear(self, names, pa: int, size: int) -> None:
        for name in names:
            self._apply(name, pa, size, False)

    def any(self, name: str, pa: int, size: int) -> bool:
        arr = self.bits[name]
        for fp, fl, lp, ll in self.ram.clip(pa, size):
            if fp == lp:
                if arr[fp] & line_mask(fl, ll):
                    return True
                continue
            if arr[fp] & line_mask(fl, LINES_PER_PAGE - 1) or arr[lp] & line_mask(0, ll) \
                    or arr[fp + 1:lp].any():
                return True
        return False

    # -- pages (vectorized) ---------------------------------------------------------------
    def set_pages(self, names, pages: np.ndarray) -> None:
        for name in names:
            self.bits[name][pages] = FULL

    def clear_pages(self, names, pages: np.ndarray) -> None:
        for name in names:
            self.bits[name][pages] = 0

    def pages_with(self, name: str, pages: np.ndarray) -> np.ndarray:
        """Boolean per page: some line of it has ``name`` set."""
        return self.bits[name][pages] != 0

    # -- reports --------------------------------------------------------------------------
    def lines(self, name: str, pages: np.ndarray | None = None) -> int:
        """How many lines have ``name`` set (over ``pages`` or all RAM)."""
        words = self.bits[name] if pages is None else self.bits[name][pages]
        return int(np.bitwise_count(words).sum())
