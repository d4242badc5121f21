"""bench-walk: the vectorized walker against a plain per-descriptor construct walk.

Both enumerate the same in-memory stage 2 (4 GiB of IPA, 1,048,576 4K pages, the 2,048 leaf
tables scattered in a shuffled order as a long-running hypervisor leaves them) and must produce
identical runs; the ratio is reported from one run of each.
"""
from __future__ import annotations

import argparse
import statistics
import time

from gdbplugin.arch import descriptors as D
from gdbplugin.arch.builder import TableBuilder
from gdbplugin.arch.sysregs import VTCR_EL2
from gdbplugin.arch.walker import Regime, Walker, _decode_attrs

BASE = 0x4000_0000


def build():
    vtcr = VTCR_EL2.build(T0SZ=32, SL0=1, TG0=0, PS=2, RES1=True)  # 4 GiB IPA, start at L1
    r = Regime.from_vtcr(vtcr, BASE)
    size = 12 << 20
    b = TableBuilder(r, BASE, size, pool=(BASE + 0x1000, BASE + size), seed=7)
    b.map_pages(0, 0x1_0000_0000, 1 << 20, MemAttr=0xF, S2AP=3, SH=3)
    return r, b


def construct_walk(r: Regime, mem) -> list[tuple]:
    """The straightforward walk: every descriptor parsed by construct, one at a time."""
    leaves = []

    def visit(table: int, level: int, ia_base: int, entries: int):
        data = mem.read(table, entries * 8)
        shift = r.level_shift(level)
        for i in range(entries):
            raw = int.from_bytes(data[i * 8:i * 8 + 8], "little")
            kind = D.DESC_TYPE.parse(raw)
            if not kind.valid:
                continue
            ia = ia_base + (i << shift)
            if kind.table_or_page and level < 3:
                visit(r.fmt.output_address(raw, r.granule_shift), level + 1, ia, 1 << r.stride)
                continue
            leaf = D.S2_LEAF.parse(raw)
            attrs = {k: leaf[k] for k in D.S2_ATTR_FIELDS}
            leaves.append((ia, r.fmt.output_address(raw, shift), 1 << shift, level,
                           tuple(sorted(attrs.items()))))

    visit(r.root, r.start_level, 0, r.start_entries)
    runs = []
    for ia, oa, size, level, attrs in leaves:
        if runs and runs[-1][0] + runs[-1][2] == ia and runs[-1][1] + runs[-1][2] == oa \
                and runs[-1][3:] == (level, attrs):
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + size, level, attrs)
        else:
            runs.append((ia, oa, size, level, attrs))
    return [(ia, oa, size, level, _decode_attrs(r, D.S2_LEAF.build(**dict(attrs))))
            for ia, oa, size, level, attrs in runs]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=7, help="vectorized walks to time")
    args = ap.parse_args()
    r, b = build()
    mem = b.memory
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        runs = Walker(r, mem).mappings()
        times.append(time.perf_counter() - t0)
    fast = statistics.median(times)
    t0 = time.perf_counter()
    slow_runs = construct_walk(r, mem)
    slow = time.perf_counter() - t0
    same = [(m.ia, m.oa, m.size, m.level, m.attrs) for m in runs] == slow_runs
    print(f"stage 2: {r.describe()}")
    print(f"leaves: {1 << 20}, leaf tables: {b.tables - 1}, runs: {len(runs)}")
    print(f"vectorized walk: median {fast * 1e3:.1f} ms, best {min(times) * 1e3:.1f} ms "
          f"over {args.repeat} (target <= 50 ms)")
    print(f"construct per-descriptor walk: {slow:.2f} s")
    print(f"ratio (construct / vectorized median): {slow / fast:.0f}x")
    print(f"identical runs: {same}")
    if not same:
        raise SystemExit("bench-walk: the two walks disagree")


if __name__ == "__main__":
    main()
