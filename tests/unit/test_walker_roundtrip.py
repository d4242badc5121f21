"""Round trip: tables built from the construct layouts, for every granule, start level and
address format, walk back to exactly the mappings they were built from.

The expected runs are coalesced here by a deliberately naive pure-Python loop over the leaves
the test itself chose, so the walker's vectorized coalescing is checked against an independent
computation, not against itself.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gdbplugin.arch import descriptors as D
from gdbplugin.arch.builder import TableBuilder
from gdbplugin.arch.memtype import s2_memattr_name
from gdbplugin.arch.sysregs import TCR_EL1, VTCR_EL2
from gdbplugin.arch.walker import Fault, Regime, Translation, Walker

BASE = 0x4000_0000
TG0 = {12: 0, 16: 1, 14: 2}
TG1 = {14: 1, 12: 2, 16: 3}

# (name, regime factory, expected start level, expected root entries)
REGIMES = {
    "s1-4k-39": (lambda: Regime.from_tcr(TCR_EL1.build(T0SZ=25, TG0=TG0[12], IPS=2), BASE), 1,
                 512),
    "s1-4k-48": (lambda: Regime.from_tcr(TCR_EL1.build(T0SZ=16, TG0=TG0[12], IPS=5), BASE), 0,
                 512),
    "s1-4k-52-lpa2": (lambda: Regime.from_tcr(
        TCR_EL1.build(T0SZ=12, TG0=TG0[12], IPS=6, DS=True, SH0=3), BASE), -1, 16),
    "s1-16k-47": (lambda: Regime.from_tcr(TCR_EL1.build(T0SZ=17, TG0=TG0[14], IPS=5), BASE),
                  1, 2048),
    "s1-16k-48": (lambda: Regime.from_tcr(TCR_EL1.build(T0SZ=16, TG0=TG0[14], IPS=5), BASE),
                  0, 2),
    "s1-16k-52-lpa2": (lambda: Regime.from_tcr(
        TCR_EL1.build(T0SZ=12, TG0=TG0[14], IPS=6, DS=True, SH0=2), BASE), 0, 32),
    "s1-64k-42": (lambda: Regime.from_tcr(TCR_EL1.build(T0SZ=22, TG0=TG0[16], IPS=5), BASE),
                  2, 8192),
    "s1-64k-48": (lambda: Regime.from_tcr(TCR_EL1.build(T0SZ=16, TG0=TG0[16], IPS=5), BASE),
                  1, 64),
    "s1-64k-52-lpa": (lambda: Regime.from_tcr(TCR_EL1.build(T0SZ=12, TG0=TG0[16], IPS=6),
                                              BASE), 1, 1024),
    "s1-ttbr1-4k-39": (lambda: Regime.from_tcr(
        TCR_EL1.build(T1SZ=25, TG1=TG1[12], IPS=2, T0SZ=25), BASE, upper=True), 1, 512),
    "s1-ttbr1-64k-48": (lambda: Regime.from_tcr(
        TCR_EL1.build(T1SZ=16, TG1=TG1[16], IPS=5), BASE, upper=True), 1, 64),
    # Stage 2 with concatenated initial tables (KVM's nested 0x80243520 shape).
    "s2-4k-32-concat4": (lambda: Regime.from_vtcr(
        VTCR_EL2.build(T0SZ=32, SL0=0, TG0=TG0[12], PS=2, RES1=True), BASE), 2, 2048),
    "s2-4k-40-concat2": (lambda: Regime.from_vtcr(
        VTCR_EL2.build(T0SZ=24, SL0=1, TG0=TG0[12], PS=2, RES1=True), BASE), 1, 1024),
    "s2-4k-48": (lambda: Regime.from_vtcr(
        VTCR_EL2.build(T0SZ=16, SL0=2, TG0=TG0[12], PS=5, RES1=True), BASE), 0, 512),
    "s2-16k-40-concat16": (lambda: Regime.from_vtcr(
        VTCR_EL2.build(T0SZ=24, SL0=1, TG0=TG0[14], PS=2, RES1=True), BASE), 2, 32768),
    "s2-64k-42-concat": (lambda: Regime.from_vtcr(
        VTCR_EL2.build(T0SZ=22, SL0=1, TG0=TG0[16], PS=3, RES1=True), BASE), 2, 8192),
    "s2-64k-48": (lambda: Regime.from_vtcr(
        VTCR_EL2.build(T0SZ=16, SL0=2, TG0=TG0[16], PS=5, RES1=True), BASE), 1, 64),
    "s2-4k-fwb": (lambda: Regime.from_vtcr(
        VTCR_EL2.build(T0SZ=32, SL0=0, TG0=TG0[12], PS=2, RES1=True), BASE,
        hcr=1 << 46), 2, 2048),
}


@pytest.mark.parametrize("name", REGIMES)
def test_regime_shape(name):
    """Start level and root size follow from TnSZ/SL0/TG (Arm ARM D8.2): e.g. 4K with a
    32-bit IPA and SL0=0 starts at level 2 with 2^(32-21) = 2048 entries = 4 tables."""
    factory, level, entries = REGIMES[name]
    r = factory()
    assert not r.fatal and not r.config_errors
    assert (r.start_level, r.start_entries) == (level, entries)


def _leaf_strategy(r: Regime):
    levels = sorted(r.block_levels | {3})
    levels = [lv for lv in levels if lv >= r.start_level]

    @st.composite
    def leaf(draw):
        level = draw(st.sampled_from(levels))
        shift = r.level_shift(level)
        ia = draw(st.integers(0, (1 << r.ia_bits) - 1)) >> shift << shift
        count = 1 if level < 3 else draw(st.integers(1, 40))
        oa = draw(st.integers(0, (1 << r.oa_bits) - 1 - count * (1 << shift))) >> shift << shift
        if r.stage == 2:
            memattr = draw(st.sampled_from(
                [0x0, 0x1, 0x2, 0x3, 0x5, 0x6, 0x7] if r.fwb
                else [0x0, 0x1, 0x5, 0xA, 0xF, 0x7, 0xD]))
            fields = dict(MemAttr=memattr, S2AP=draw(st.integers(0, 3)),
                          XN=draw(st.integers(0, 3)), DBM=draw(st.booleans()))
        else:
            fields = dict(AttrIndx=draw(st.integers(0, 7)), AP=draw(st.integers(0, 3)),
                          nG=draw(st.booleans()), PXN=draw(st.booleans()),
                          UXN=draw(st.booleans()), NS=draw(st.booleans()))
        if r.fmt.shareability_in_descriptor():
            fields["SH"] = draw(st.sampled_from([0, 2, 3]))
        return level, ia, oa, count, fields

    return leaf()


def _expected_runs(r: Regime, leaves):
    """Naive coalescing of the chosen leaves into (ia, oa, size, level, fields) runs."""
    pages = []
    for level, ia, oa, count, fields in leaves:
        size = 1 << r.level_shift(level)
        for i in range(count):
            pages.append((ia + i * size, oa + i * size, size, level, fields))
    pages.sort(key=lambda p: p[0])
    runs = []
    for ia, oa, size, level, fields in pages:
        if runs:
            pia, poa, psize, plevel, pfields = runs[-1]
            if (pia + psize == ia and poa + psize == oa and plevel == level
                    and pfields == fields):
                runs[-1] = (pia, poa, psize + size, plevel, pfields)
                continue
        runs.append((ia, oa, size, level, fields))
    return runs


def _non_overlapping(r: Regime, leaves):
    taken, out = [], []
    for level, ia, oa, count, fields in leaves:
        size = (1 << r.level_shift(level)) * count
        if ia + size > 1 << r.ia_bits:
            continue
        if any(ia < e and s < ia + size for s, e in taken):
            continue
        taken.append((ia, ia + size))
        out.append((level, ia, oa, count, fields))
    return out


def _expected_attrs(r: Regime, fields: dict) -> dict:
    sh = D.SHAREABILITY[fields["SH"] if "SH" in fields else r.sh_from_tcr]
    if r.stage == 2:
        xn = fields["XN"]
        return {"memattr": fields["MemAttr"],
                "memtype": s2_memattr_name(fields["MemAttr"], r.fwb),
                "s2ap": D.S2_AP[fields["S2AP"]], "sh": sh, "af": True, "xn": xn,
                "exec_el1": xn in (0, 3), "exec_el0": xn in (0, 1), "contiguous": False,
                "dbm": fields["DBM"]}
    return {"attr_index": fields["AttrIndx"], "memtype": None, "ap": D.S1_AP[fields["AP"]],
            "sh": sh, "af": True, "ng": fields["nG"], "ns": fields["NS"],
            "pxn": fields["PXN"], "uxn": fields["UXN"], "contiguous": False, "dbm": False}


def _build(r: Regime, leaves, seed: int) -> TableBuilder:
    root_bytes = max(r.start_entries * 8, r.granule)
    size = root_bytes + 4 * len(leaves) * 4 * r.granule + r.granule
    b = TableBuilder(r, BASE, size, pool=(BASE + root_bytes, BASE + size), seed=seed)
    for level, ia, oa, count, fields in leaves:
        if level == 3:
            b.map_pages(ia, oa, count, **fields)
        else:
            b.map(ia, oa, level, **fields)
    return b


@pytest.mark.parametrize("name", REGIMES)
def test_roundtrip(name):
    r = REGIMES[name][0]()

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(_leaf_strategy(r), min_size=1, max_size=12), st.integers(0, 1000))
    def check(leaves, seed):
        leaves = _non_overlapping(r, leaves)
        b = _build(r, leaves, seed)
        w = Walker(r, b.memory)
        got = [(m.ia, m.oa, m.size, m.level, m.attrs) for m in w.mappings()]
        fill = r.ia_fill
        want = [(ia | fill, oa, size, level, _expected_attrs(r, fields))
                for ia, oa, size, level, fields in _expected_runs(r, leaves)]
        assert w.errors == []
        assert got == want
        # translate() agrees with the runs at their first and last byte.
        for ia, oa, size, level, _ in want[:6]:
            for off in (0, size - 1):
                t = w.translate(ia + off)
                assert isinstance(t, Translation), t
                assert (t.oa, t.level) == (oa + off, level)

    check()


@pytest.mark.parametrize("name", ["s1-4k-39", "s2-4k-32-concat4", "s1-64k-52-lpa"])
def test_translate_faults_in_holes(name):
    """An address with no leaf faults at the level where the walk found an invalid entry."""
    r = REGIMES[name][0]()
    leaf_shift = r.level_shift(3)
    mapped = 1 << r.level_shift(r.start_level)   # start-level entry 1; entry 0 stays empty
    b = _build(r, [(3, mapped, 0x4000_0000, 1,
                    {"MemAttr": 0xF, "S2AP": 3, "XN": 0, "DBM": False} if r.stage == 2 else
                    {"AttrIndx": 0, "AP": 0, "nG": False, "PXN": False, "UXN": False,
                     "NS": False})], seed=0)
    w = Walker(r, b.memory)
    hole_in_table = mapped + (1 << leaf_shift)
    t = w.translate(hole_in_table)
    assert isinstance(t, Fault) and (t.kind, t.level) == ("translation", 3)
    t = w.translate(0)
    assert isinstance(t, Fault) and (t.kind, t.level) == ("translation", r.start_level)
    assert isinstance(w.translate(mapped + 5), Translation)


def test_table_attributes_restrict_stage1_leaves():
    """APTable[1] makes everything below read-only, APTable[0] removes EL0 access, and
    UXNTable/PXNTable force XN (Arm ARM D8.4.2, hierarchical permissions)."""
    r = REGIMES["s1-4k-39"][0]()
    b = TableBuilder(r, BASE, 1 << 20, pool=(BASE + 0x1000, BASE + (1 << 20)))
    b.map(0x1000_0000, 0x4020_0000, 3, table_fields={"APTable": 3, "UXNTable": True},
          AP=1, AttrIndx=0)
    attrs = Walker(r, b.memory).mappings()[0].attrs
    assert (attrs["ap"], attrs["uxn"], attrs["pxn"]) == ("RO-EL1", True, False)
    hpd = Regime.from_tcr(TCR_EL1.build(T0SZ=25, TG0=0, IPS=2, HPD0=True), BASE)
    attrs = Walker(hpd, b.memory).mappings()[0].attrs
    assert (attrs["ap"], attrs["uxn"]) == ("RW", False)   # TCR.HPD0 disables them


def test_el2_regimes_label_privileged_permissions_el2():
    """Under VHE (EL2&0) and at EL2 the privileged permissions are EL2's, not EL1's."""
    tcr = TCR_EL1.build(T0SZ=25, TG0=0, IPS=2)
    r1, r2 = Regime.from_tcr(tcr, BASE), Regime.from_tcr(tcr, BASE, el=2)
    b = TableBuilder(r1, BASE, 1 << 20, pool=(BASE + 0x1000, BASE + (1 << 20)))
    b.map(0x1000_0000, 0x4020_0000, 3, AP=0, AttrIndx=0)
    b.map(0x1000_2000, 0x4020_0000, 3, AP=2, AttrIndx=0)
    assert [m.attrs["ap"] for m in Walker(r1, b.memory).mappings()] == ["RW-EL1", "RO-EL1"]
    assert [m.attrs["ap"] for m in Walker(r2, b.memory).mappings()] == ["RW-EL2", "RO-EL2"]


def test_mair_names_stage1_memory_types():
    mair = 0x00_44_04_FF   # Attr0 Normal WB, Attr1 Device-nGnRE, Attr2 Normal NC, Attr3 nGnRnE
    r = Regime.from_tcr(TCR_EL1.build(T0SZ=25, TG0=0, IPS=2), BASE, mair=mair)
    b = TableBuilder(r, BASE, 1 << 20, pool=(BASE + 0x1000, BASE + (1 << 20)))
    for i in range(4):
        b.map(0x1000_0000 + i * 0x2000, 0x4000_0000, 3, AttrIndx=i, SH=3)
    types = [m.attrs["memtype"] for m in Walker(r, b.memory).mappings()]
    assert types == ["Normal-WB", "Device-nGnRE", "Normal-NC", "Device-nGnRnE"]
