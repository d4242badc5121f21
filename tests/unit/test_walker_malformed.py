"""Malformed tables and registers: every problem is a named error and the walk goes on."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from gdbplugin.arch import descriptors as D
from gdbplugin.arch.builder import TableBuilder
from gdbplugin.arch.memory import ImageMemory
from gdbplugin.arch.sysregs import TCR_EL1, VTCR_EL2
from gdbplugin.arch.walker import Fault, Regime, Translation, Walker
from gdbplugin.cli import main

BASE = 0x4000_0000
VTCR_4K_32 = VTCR_EL2.build(T0SZ=32, SL0=0, TG0=0, PS=2, RES1=True)   # L2 start, 4 tables
TCR_4K_39 = TCR_EL1.build(T0SZ=25, TG0=0, IPS=2)                       # L1 start


def _stage2_with_good_mapping():
    r = Regime.from_vtcr(VTCR_4K_32, BASE)
    b = TableBuilder(r, BASE, 1 << 20, pool=(BASE + 0x8000, BASE + (1 << 20)))
    b.map_pages(0x8000_0000, 0x4800_0000, 4, MemAttr=0xF, S2AP=3, SH=3)
    return r, b


def _kinds(walker):
    return [e.kind for e in walker.errors]


def _slot(b, table, index):
    return (table - BASE) // 8 + index


def test_cycle_is_reported_and_the_rest_still_walks():
    r, b = _stage2_with_good_mapping()
    l3 = b.table_for(0x8000_0000, 3)
    # An L2 entry pointing at the root: the root holds L2 entries, so following it re-enters a
    # table already on the path.
    b.u64[_slot(b, r.root, 5)] = D.S2_TABLE.build(valid=True, table_or_page=True) | r.root
    # An L3 table entry pointing... at level 3 there are no tables; put a self-loop one level up.
    l2_of_other = b.table_for(0xC000_0000, 3)
    b.u64[_slot(b, r.root, 0x600)] = D.S2_TABLE.build(valid=True, table_or_page=True) | l3
    w = Walker(r, b.memory)
    maps = w.mappings()
    assert "table-cycle" in _kinds(w)
    assert any(m.ia == 0x8000_0000 and m.size == 0x4000 for m in maps)
    assert l2_of_other  # the table built for 0xC0000000 exists and is walked without error
    assert isinstance(w.translate(0x8000_1234), Translation)


def test_table_outside_the_image():
    r, b = _stage2_with_good_mapping()
    b.u64[_slot(b, r.root, 7)] = D.S2_TABLE.build(valid=True, table_or_page=True) | 0x9000_0000
    w = Walker(r, b.memory)
    maps = w.mappings()
    assert _kinds(w) == ["table-outside-memory"]
    assert w.errors[0].table == 0x9000_0000 and w.errors[0].level == 3
    assert [m.ia for m in maps] == [0x8000_0000]
    t = w.translate(7 << 21)
    assert isinstance(t, Fault) and t.kind == "external-walk"


def test_reserved_encodings():
    r, b = _stage2_with_good_mapping()
    l3 = b.table_for(0x8000_0000, 3)
    b.u64[_slot(b, l3, 10)] = 0x4900_0000 | 0b01 | 0x400          # level-3 "block": reserved
    b.u64[_slot(b, l3, 11)] = D.S2_LEAF.build(valid=True, table_or_page=True, MemAttr=0b1100,
                                              AF=True) | 0x4900_1000   # reserved MemAttr
    b.u64[_slot(b, l3, 12)] = D.S2_LEAF.build(valid=True, table_or_page=True, MemAttr=0xF,
                                              SH=1, AF=True) | 0x4900_2000  # reserved SH
    w = Walker(r, b.memory)
    maps = w.mappings()
    assert sorted(_kinds(w)) == ["reserved-descriptor", "reserved-memattr",
                                 "reserved-shareability"]
    # The reserved attribute encodings are still mappings (the MMU walks them); the reserved
    # level-3 type is not.
    assert {m.ia for m in maps} >= {0x8000_0000, 0x8000_B000, 0x8000_C000}
    assert not any(m.ia <= 0x8000_A000 < m.ia + m.size for m in maps)


def test_block_where_the_granule_has_none():
    """4K without LPA2 has no level-0 blocks; 64K without 52-bit PA has no level-1 blocks."""
    r = Regime.from_tcr(TCR_EL1.build(T0SZ=16, TG0=0, IPS=5), BASE)
    b = TableBuilder(r, BASE, 1 << 20, pool=(BASE + 0x1000, BASE + (1 << 20)))
    b.map(0x1000, 0x4000_0000, 3, AF=True)
    b.u64[_slot(b, r.root, 3)] = D.S1_LEAF.build(valid=True, AF=True) | 0
    w = Walker(r, b.memory)
    assert [m.ia for m in w.mappings()] == [0x1000]
    assert _kinds(w) == ["block-not-allowed"]
    assert w.translate(3 << 39).kind == "translation"


def test_misaligned_base_and_output_beyond_ps():
    r, b = _stage2_with_good_mapping()
    # PS=2: 40-bit PA; an OA at 2^41 is an address-size fault.
    l3 = b.table_for(0x8000_0000, 3)
    b.u64[_slot(b, l3, 20)] = D.S2_LEAF.build(valid=True, table_or_page=True, MemAttr=0xF,
                                              AF=True) | (1 << 41)
    # The concatenated root must be 16 KiB aligned; 0x2000 off is misaligned.
    r2 = Regime.from_vtcr(VTCR_4K_32, BASE + 0x2000)
    w = Walker(r2, b.memory)
    maps = w.mappings()
    assert _kinds(w) == ["misaligned-table-base", "address-size"]
    assert [m.ia for m in maps] == [0x8000_0000]


@pytest.mark.parametrize("vtcr,kind", [
    (VTCR_EL2.build(T0SZ=32, TG0=3, RES1=True), "invalid-granule"),
    (VTCR_EL2.build(T0SZ=32, SL0=2, TG0=0, PS=2, RES1=True), "invalid-start-level"),
    (VTCR_EL2.build(T0SZ=16, SL0=0, TG0=0, PS=5, RES1=True), "invalid-start-level"),
    (VTCR_EL2.build(T0SZ=32, SL0=3, TG0=1, PS=2, RES1=True), "invalid-start-level"),
])
def test_impossible_registers_are_one_named_error(vtcr, kind):
    r = Regime.from_vtcr(vtcr, BASE)
    w = Walker(r, None)
    assert w.mappings() == []
    assert _kinds(w) == [kind]
    assert isinstance(w.translate(0x1000), Fault)


def test_cli_reports_errors_in_json_and_exits_1(tmp_path):
    r, b = _stage2_with_good_mapping()
    b.u64[_slot(b, r.root, 7)] = D.S2_TABLE.build(valid=True, table_or_page=True) | 0x9000_0000
    img = tmp_path / "mem.bin"
    img.write_bytes(bytes(b.image))
    out = tmp_path / "walk.json"
    rc = main(["walk", "--mem", str(img), "--mem-base", hex(BASE), "--vttbr", hex(BASE),
               "--vtcr", hex(VTCR_4K_32), "--json", str(out)])
    report = json.loads(out.read_text())
    assert rc == 1
    assert [e["kind"] for e in report["errors"]] == ["table-outside-memory"]
    assert report["mappings"][0] == {
        "ia": 0x8000_0000, "oa": 0x4800_0000, "size": 0x4000, "level": 3,
        "attrs": report["mappings"][0]["attrs"]}
    assert report["mappings"][0]["attrs"]["memtype"] == "Normal-WB"


@pytest.mark.parametrize("argv,needle", [
    (["walk", "--mem", "/nonexistent/x", "--mem-base", "0", "--vttbr", "0", "--vtcr", "0"],
     "cannot read memory image"),
    (["walk", "--mem", "{img}", "--mem-base", "zz", "--vttbr", "0", "--vtcr", "0"],
     "not an integer"),
    (["walk", "--mem", "{img}", "--mem-base", "0", "--vttbr", "0"], "needs both"),
    (["walk", "--mem", "{img}", "--mem-base", "0", "--vttbr", "0", "--vtcr", "0",
      "--ttbr", "0", "--tcr", "0"], "either"),
    (["walk", "--mem", "{empty}", "--mem-base", "0", "--vttbr", "0", "--vtcr", "0"], "empty"),
    (["bogus"], "invalid choice"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, needle):
    img = tmp_path / "m.bin"
    img.write_bytes(b"\0" * 4096)
    empty = tmp_path / "e.bin"
    empty.write_bytes(b"")
    argv = [a.format(img=img, empty=empty) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


# -- fuzz ---------------------------------------------------------------------------------
FUZZ_IMAGES = int(os.environ.get("S2CACHE_FUZZ_IMAGES", "100000"))


def _random_registers(rng):
    """Half plausible configurations, half raw random register values."""
    if rng.random() < 0.5:
        return int(rng.integers(0, 1 << 63, dtype=np.uint64)) | int(rng.integers(0, 2)) << 63
    tg = int(rng.integers(0, 4))
    stage2 = rng.random() < 0.5
    if stage2:
        return VTCR_EL2.build(T0SZ=int(rng.integers(12, 42)), SL0=int(rng.integers(0, 4)),
                              TG0=tg, PS=int(rng.integers(0, 8)), RES1=True,
                              DS=bool(rng.random() < 0.2), SL2=bool(rng.random() < 0.1))
    return TCR_EL1.build(T0SZ=int(rng.integers(10, 50)), TG0=tg, IPS=int(rng.integers(0, 8)),
                         T1SZ=int(rng.integers(10, 50)), TG1=int(rng.integers(0, 4)),
                         DS=bool(rng.random() < 0.2), HPD0=bool(rng.random() < 0.2))


def _random_image(rng, size):
    """Descriptors biased towards valid tables/leaves pointing in and around the image."""
    n = size // 8
    kind = rng.integers(0, 6, n)
    targets = BASE + rng.integers(-2, size // 0x1000 + 2, n) * 0x1000
    raw = rng.integers(0, np.iinfo(np.int64).max, n, dtype=np.int64).astype(np.uint64)
    attrs = rng.integers(0, 1 << 12, n).astype(np.uint64) | (
        rng.integers(0, 1 << 12, n).astype(np.uint64) << np.uint64(51))
    words = np.where(kind == 0, raw, (targets.astype(np.uint64) & np.uint64((1 << 48) - 1))
                     | (attrs & np.uint64(~0xFFF_FFFF_F000 & ((1 << 64) - 1)))
                     | np.where(kind < 3, np.uint64(3), np.where(kind == 3, np.uint64(1),
                                                                    np.uint64(0))))
    return words.astype("<u8").tobytes()


def test_fuzz_no_exception_escapes():
    """≥ 100,000 random images × random registers: walk, enumerate and translate must never
    raise (S2CACHE_FUZZ_IMAGES can raise the count; lowering it is for local runs only).
    The entry budget is lowered so that aliased random tables (every entry pointing at the
    same few tables) stay cheap; the budget path itself is part of what is fuzzed."""
    rng = np.random.default_rng(2026)
    seen_errors = set()
    walked = 0
    for _ in range(FUZZ_IMAGES):
        size = int(rng.choice([0x1000, 0x2000, 0x4000]))
        img = _random_image(rng, size)
        reg = _random_registers(rng)
        base_reg = BASE + int(rng.integers(-1, 3)) * 0x1000 + int(rng.integers(0, 2)) * 0x18
        if rng.random() < 0.5:
            r = Regime.from_vtcr(reg, base_reg, hcr=int(rng.integers(0, 2)) << 46)
        else:
            r = Regime.from_tcr(reg, base_reg, upper=bool(rng.random() < 0.3),
                                mair=int(rng.integers(0, 1 << 63, dtype=np.uint64)))
        w = Walker(r, ImageMemory(img, BASE), max_entries=1 << 13)
        for m in w.mappings():
            assert m.size > 0
        walked += not r.fatal
        seen_errors.update(w.error_counts)
        w.translate(int(rng.integers(0, 1 << 63, dtype=np.uint64)))
        w.error_dicts()
    # The generator must actually reach the interesting paths, or the test proves nothing.
    assert walked > FUZZ_IMAGES // 4
    assert {"table-cycle", "table-outside-memory", "reserved-descriptor", "address-size",
            "invalid-granule"} <= seen_errors
