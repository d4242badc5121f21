"""Build translation tables into a memory image, from the same construct layouts the walker
reads with.  Used to synthesize test and benchmark tables (and by anyone who wants a known
stage 1 or stage 2 to point a tool at)."""
from __future__ import annotations

import random

import numpy as np

from . import descriptors as D
from .memory import ImageMemory
from .walker import Regime


class TableBuilder:
    """Allocates tables for ``regime`` inside an image of ``size`` bytes at PA ``base``.

    The root table(s) sit at ``regime.root``; further tables are taken granule by granule from
    ``pool`` (a PA range inside the image), in order or shuffled with ``seed`` so that tables
    are scattered as in a long-running hypervisor.
    """

    def __init__(self, regime: Regime, base: int, size: int, pool: tuple[int, int],
                 seed: int | None = None):
        if regime.fatal:
            raise ValueError(regime.config_errors[0].message)
        self.r = regime
        self.base = base
        self.image = bytearray(size)
        self.u64 = np.frombuffer(self.image, dtype="<u8")
        slots = list(range(pool[0], pool[1], regime.granule))
        if seed is not None:
            random.Random(seed).shuffle(slots)
        self._free = slots[::-1]
        self.tables = 0

    @property
    def memory(self) -> ImageMemory:
        return ImageMemory(self.image, self.base)

    def _alloc(self) -> int:
        if not self._free:
            raise MemoryError("table pool exhausted")
        self.tables += 1
        return self._free.pop()

    def _slot(self, table: int, index: int) -> int:
        return (table - self.base) // 8 + index

    def _index(self, ia: int, level: int) -> int:
        width = self.r.stride if level != self.r.start_level else \
            self.r.ia_bits - self.r.level_shift(level)
        return (ia >> self.r.level_shift(level)) & ((1 << width) - 1)

    def table_for(self, ia: int, level: int, table_fields: dict | None = None) -> int:
        """PA of the level-``level`` table covering ``ia``, creating tables on the way."""
        table = self.r.root
        for lv in range(self.r.start_level, level):
            slot = self._slot(table, self._index(ia, lv))
            desc = int(self.u64[slot])
            if desc & 3 == 3:
                table = self.r.fmt.output_address(desc, self.r.granule_shift)
                continue
            if desc & 1:
                raise ValueError(f"{ia:#x}: a block already maps this at level {lv}")
            new = self._alloc()
            layout = D.S1_TABLE if self.r.stage == 1 else D.S2_TABLE
            fields = table_fields if (table_fields and self.r.stage == 1) else {}
            self.u64[slot] = layout.build(valid=True, table_or_page=True, **fields) \
                | self.r.fmt.encode(new)
            table = new
        return table

    def leaf_template(self, level: int, **fields) -> int:
        """The attribute bits of a leaf, built by construct (output address excluded)."""
        layout = D.S1_LEAF if self.r.stage == 1 else D.S2_LEAF
        fields.setdefault("AF", True)
        return layout.build(valid=True, table_or_page=level == 3, **fields)

    def map(self, ia: int, oa: int, level: int, table_fields: dict | None = None, **fields
            ) -> None:
        """One leaf: a page at level 3 or a block above it."""
        table = self.table_for(ia, level, table_fields)
        self.u64[self._slot(table, self._index(ia, level))] = \
            self.leaf_template(level, **fields) | self.r.fmt.encode(oa)

    def map_pages(self, ia: int, oa: int, count: int, **fields) -> None:
        """``count`` consecutive level-3 pages, each table's entries written with numpy."""
        page = self.r.granule
        per_table = 1 << self.r.stride
        template = np.uint64(self.leaf_template(3, **fields))
        done = 0
        while done < count:
            cur = ia + done * page
            first = self._index(cur, 3)
            n = min(per_table - first, count - done)
            table = self.table_for(cur, 3)
            oas = np.uint64(oa + done * page) + np.arange(n, dtype=np.uint64) * np.uint64(page)
            slot = self._slot(table, first)
            self.u64[slot:slot + n] = self.r.fmt.encode(oas) | template
            done += n

