"""The generic VMSAv8-64 walker (gdbplugin.arch.walker) against the Arm ARM, case by case.

Every expected value is read from the Arm Architecture Reference Manual for A-profile,
DDI 0487, chapter D8 "The AArch64 Virtual Memory System Architecture", its register
descriptions (D24) and its shared pseudocode (J1), never from running the code:

* Granules, levels and strides, the stage 1 start level from TnSZ: "Translation granule
  size", "Input address size" / pseudocode AArch64.S1StartLevel(), AArch64.IASize().
* Stage 2 start level and concatenated root tables: the VTCR_EL2.SL0/SL2 tables
  ("Concatenated translation tables" / "starting level and number of concatenated tables")
  and pseudocode AArch64.S2StartLevel(), AArch64.S2InvalidSL(), AArch64.S2InconsistentSL().
* Which levels take block descriptors: "Block descriptors" / AArch64.BlockDescSupported()
  (4K: levels 1 and 2, level 0 only with DS=1; 16K: level 2, level 1 only with DS=1; 64K:
  level 2, level 1 only with a 52-bit PA).
* Descriptor layouts, D8.3 "Translation table descriptor formats": bits[1:0] (0b01 block,
  0b11 table/page, 0b01 reserved at level 3), AttrIndx[4:2], NS[5], AP[7:6], SH[9:8],
  AF[10], nG[11], nT[16], GP[50], DBM[51], Contiguous[52], PXN[53], UXN[54], software
  bits[58:55]; stage 2 MemAttr[5:2], S2AP[7:6], XN[54:53] (FEAT_XNX); table descriptor
  PXNTable[59], UXNTable[60], APTable[62:61].
* Output addresses: OA[47:n] in place; 64K with FEAT_LPA: OA[51:48] in bits[15:12];
  FEAT_LPA2 (TCR/VTCR.DS=1): OA[49:n] in place, OA[51:50] in bits[9:8], Shareability from
  TCR_ELx.SH0/SH1 or VTCR_EL2.SH0; TTBR/VTTBR BADDR[51:48] in bits[5:2] with a 52-bit OA.
* Faults: "Translation fault", "Address size fault", "Access flag fault" (AF=0 without
  hardware update, TCR/VTCR.HA), "Synchronous External abort on translation table walk",
  each reported at the level of the lookup that found it.
* Permissions: "Stage 1 data access permissions" (AP[2:1]), "Hierarchical permissions"
  (APTable/PXNTable/UXNTable, disabled by TCR_ELx.HPDn), "Stage 2 data access permissions"
  (S2AP) and "Stage 2 execute-never" (XN[1:0] with FEAT_XNX).

Descriptors and register values are built here from those bit positions, not from the
project's layout or builder modules.  Where a check is about the walker's own contract
rather than the architecture (error names, the entry budget, cycle detection, run
coalescing) the test says so.
"""
from __future__ import annotations

import struct

import pytest

from gdbplugin.arch.memory import ImageMemory, PhysMemError
from gdbplugin.arch.walker import (Fault, LeafBatch, Regime, TranslatedMemory, Visitor, Walker,
                                   WalkError)

BASE = 0x4000_0000
MASK64 = (1 << 64) - 1

# -- descriptor bits (D8.3) ---------------------------------------------------------------
BLOCK = 0b01           # bits[1:0] of a block descriptor (levels < 3); reserved at level 3
TABLE = PAGE = 0b11    # bits[1:0] of a table descriptor (levels < 3) / page descriptor (level 3)
NS = 1 << 5
AF = 1 << 10
NG = 1 << 11
NT = 1 << 16
GP = 1 << 50
DBM = 1 << 51
CONTIG = 1 << 52
PXN = 1 << 53
UXN = 1 << 54
SW = 0xF << 55         # bits[58:55], reserved for software use
PXNTABLE = 1 << 59
UXNTABLE = 1 << 60


def attrindx(i):       # stage 1 AttrIndx[2:0], bits[4:2]
    return i << 2


def ap(v):             # stage 1 AP[2:1], bits[7:6]
    return v << 6


def sh(v):             # SH[1:0], bits[9:8] (not with LPA2)
    return v << 8


def aptable(v):        # APTable[1:0], bits[62:61] of a stage 1 table descriptor
    return v << 61


def memattr(v):        # stage 2 MemAttr[3:0], bits[5:2]
    return v << 2


def s2ap(v):           # stage 2 S2AP[1:0], bits[7:6]
    return v << 6


def xn(v):             # stage 2 XN[1:0], bits[54:53] (FEAT_XNX)
    return v << 53


S2_RW_WB = AF | s2ap(3) | memattr(0b1111)

# -- registers (D24 field descriptions) -----------------------------------------------------
TG0 = {4: 0b00, 64: 0b01, 16: 0b10}      # TCR_ELx.TG0 / VTCR_EL2.TG0
TG1 = {16: 0b01, 4: 0b10, 64: 0b11}      # TCR_EL1.TG1 (0b00 is reserved)
PS = {32: 0b000, 36: 0b001, 40: 0b010, 42: 0b011, 44: 0b100, 48: 0b101, 52: 0b110}
HCR_FWB = 1 << 46


def vtcr(gran, t0sz, sl0, ps, *, ds=0, sl2=0, ha=0, sh0=0):
    """VTCR_EL2: T0SZ[5:0], SL0[7:6], SH0[13:12], TG0[15:14], PS[18:16], HA[21], RES1[31],
    DS[32], SL2[33]."""
    return (t0sz | sl0 << 6 | sh0 << 12 | TG0[gran] << 14 | PS[ps] << 16 | ha << 21 | 1 << 31
            | ds << 32 | sl2 << 33)


def tcr(gran, t0sz, ips, *, ds=0, ha=0, hpd0=0, sh0=0, epd0=0, gran1=4, t1sz=25, hpd1=0,
        sh1=0, epd1=0, tg1=None):
    """TCR_EL1: T0SZ[5:0], EPD0[7], SH0[13:12], TG0[15:14], T1SZ[21:16], EPD1[23],
    SH1[29:28], TG1[31:30], IPS[34:32], HA[39], HPD0[41], HPD1[42], DS[59]."""
    tg1 = TG1[gran1] if tg1 is None else tg1
    return (t0sz | epd0 << 7 | sh0 << 12 | TG0[gran] << 14 | t1sz << 16 | epd1 << 23
            | sh1 << 28 | tg1 << 30 | PS[ips] << 32 | ha << 39 | hpd0 << 41 | hpd1 << 42
            | ds << 59)


def s1(gran, t0sz, ips, ttbr=BASE, mair=None, **kw):
    return Regime.from_tcr(tcr(gran, t0sz, ips, **kw), ttbr, mair=mair)


def s1_upper(gran, t1sz, ips, ttbr=BASE, **kw):
    return Regime.from_tcr(tcr(4, 25, ips, gran1=gran, t1sz=t1sz, **kw), ttbr, upper=True)


def s2(gran, t0sz, sl0, ps, vttbr=BASE, hcr=0, **kw):
    return Regime.from_vtcr(vtcr(gran, t0sz, sl0, ps, **kw), vttbr, hcr=hcr)


# -- a minimal table writer -------------------------------------------------------------------
class Tables:
    """Translation tables in a memory image, written from the bit positions above.

    The geometry (granule, start level, entries of the root) is given by the test from the
    architectural rules, not read from the regime under test.  The root sits at ``base``;
    further tables follow it granule by granule.
    """

    def __init__(self, gran, start, root_entries, fmt="48", base=BASE, tables=6):
        self.shift = {4: 12, 16: 14, 64: 16}[gran]
        self.stride = self.shift - 3
        self.start, self.root_entries, self.fmt, self.base = start, root_entries, fmt, base
        root_bytes = max(root_entries * 8, 1 << self.shift)
        self.buf = bytearray(root_bytes + tables * (1 << self.shift))
        self.root = base
        self._next = base + root_bytes
        self._child: dict[int, int] = {}

    @property
    def mem(self) -> ImageMemory:
        return ImageMemory(self.buf, self.base)

    def put(self, pa, value):
        struct.pack_into("<Q", self.buf, pa - self.base, value & MASK64)

    def get(self, pa):
        return struct.unpack_from("<Q", self.buf, pa - self.base)[0]

    def level_shift(self, level):
        return self.shift + self.stride * (3 - level)

    def index(self, ia, level):
        n = self.root_entries if level == self.start else 1 << self.stride
        return (ia >> self.level_shift(level)) % n

    def oa(self, addr):
        """An output address (or next-table address) in descriptor bit positions."""
        if self.fmt == "lpa":      # 64K, FEAT_LPA: OA[47:16] in place, OA[51:48] in [15:12]
            return addr & ((1 << 48) - 1) | (addr >> 48 & 0xF) << 12
        if self.fmt == "lpa2":     # DS=1: OA[49:n] in place, OA[51:50] in bits[9:8]
            return addr & ((1 << 50) - 1) | (addr >> 50 & 0x3) << 8
        return addr                # OA[47:n] in place

    def alloc(self):
        pa, self._next = self._next, self._next + (1 << self.shift)
        return pa

    def table(self, ia, level):
        """PA of the level-``level`` table on ia's path, creating table descriptors above."""
        pa = self.root
        for lv in range(self.start, level):
            slot = pa + 8 * self.index(ia, lv)
            if slot not in self._child:
                self._child[slot] = self.alloc()
                self.put(slot, self.oa(self._child[slot]) | TABLE)
            pa = self._child[slot]
        return pa

    def slot(self, ia, level):
        return self.table(ia, level) + 8 * self.index(ia, level)

    def set(self, ia, level, desc):
        self.put(self.slot(ia, level), desc)
        return desc

    def leaf(self, ia, level, oa, bits=AF):
        return self.set(ia, level, self.oa(oa) | (PAGE if level == 3 else BLOCK) | bits)

    def point(self, ia, level, target, bits=0):
        """A table descriptor at (ia, level) pointing at ``target``."""
        return self.set(ia, level, self.oa(target) | TABLE | bits)


def kinds(w):
    return [e.kind for e in w.errors]


def runs(w):
    return [(m.ia, m.oa, m.size, m.level) for m in w.mappings()]


def outcome(t):
    """A translate() result as a comparable tuple."""
    if isinstance(t, Fault):
        return ("fault", t.kind, t.level)
    return ("ok", t.oa, t.level, t.size)


# =============================================================================================
# Regime geometry
# =============================================================================================

# (granule, TnSZ, IPS, DS) -> (input bits, start level, root entries).
# AArch64.S1StartLevel(): start = 3 - ((iasize - 1 - granulebits) DIV stride); the root holds
# 2^(iasize - shift(start)) entries.  stride = granulebits - 3 (9, 11, 13).
S1_GEOMETRY = [
    (4, 16, 48, 0, 48, 0, 512),
    (4, 24, 48, 0, 40, 0, 2),
    (4, 25, 40, 0, 39, 1, 512),
    (4, 34, 40, 0, 30, 2, 512),
    (4, 35, 40, 0, 29, 2, 256),
    (4, 43, 40, 0, 21, 3, 512),
    (4, 48, 40, 0, 16, 3, 16),         # TnSZ max 48 with FEAT_TTST
    (4, 12, 52, 1, 52, -1, 16),        # FEAT_LPA2: level -1
    (4, 15, 52, 1, 49, -1, 2),
    (16, 16, 48, 0, 48, 0, 2),
    (16, 17, 48, 0, 47, 1, 2048),
    (16, 27, 48, 0, 37, 1, 2),
    (16, 28, 48, 0, 36, 2, 2048),
    (16, 39, 48, 0, 25, 3, 2048),
    (16, 12, 52, 1, 52, 0, 32),
    (64, 16, 48, 0, 48, 1, 64),
    (64, 22, 48, 0, 42, 2, 8192),
    (64, 34, 48, 0, 30, 2, 2),
    (64, 35, 48, 0, 29, 3, 8192),
    (64, 47, 48, 0, 17, 3, 2),         # TnSZ max 47 for 64K with FEAT_TTST
    (64, 12, 52, 0, 52, 1, 1024),      # 64K, 52-bit: TnSZ down to 12
]


@pytest.mark.parametrize("gran,tsz,ips,ds,ia_bits,start,entries", S1_GEOMETRY)
def test_stage1_start_level_and_root_size(gran, tsz, ips, ds, ia_bits, start, entries):
    """AArch64.S1StartLevel(): the start level and root size follow from TnSZ and TG."""
    r = s1(gran, tsz, ips, ds=ds)
    assert not r.fatal and r.config_errors == ()
    assert (r.stage, r.granule, r.ia_bits, r.start_level, r.start_entries) == (
        1, gran << 10, ia_bits, start, entries)
    u = s1_upper(gran, tsz, ips, ds=ds)        # the same rule for TTBR1 from T1SZ/TG1
    assert (u.stage, u.granule, u.ia_bits, u.start_level, u.start_entries, u.upper) == (
        1, gran << 10, ia_bits, start, entries, True)


# (granule, T0SZ, SL0, PS, DS, SL2) -> (start level, root entries).  AArch64.S2StartLevel():
# 4K SL2:SL0 000 -> 2, 001 -> 1, 010 -> 0, 011 -> 3 (FEAT_TTST), 100 -> -1 (FEAT_LPA2, DS=1);
# 16K SL0 00 -> 3, 01 -> 2, 10 -> 1, 11 -> 0 (DS=1 only); 64K 00 -> 3, 01 -> 2, 10 -> 1.
# AArch64.S2InconsistentSL(): the start level resolves 1 .. stride+4 bits (at most 16
# concatenated tables), and entries = 2^resolved.
S2_GEOMETRY = [
    (4, 32, 0, 40, 0, 0, 2, 2048),        # 4 concatenated level-2 tables
    (4, 30, 0, 40, 0, 0, 2, 8192),        # 16 tables: the most SL0=0 allows
    (4, 42, 0, 40, 0, 0, 2, 2),           # 22-bit IPA: the fewest bits level 2 may start
    (4, 32, 0, 40, 0, 1, 2, 2048),        # VTCR_EL2.SL2 is RES0 (ignored) unless DS=1
    (4, 24, 1, 40, 0, 0, 1, 1024),
    (4, 21, 1, 44, 0, 0, 1, 8192),
    (4, 33, 1, 40, 0, 0, 1, 2),
    (4, 16, 2, 48, 0, 0, 0, 512),
    (4, 40, 3, 40, 0, 0, 3, 4096),        # FEAT_TTST level-3 start, 8 tables
    (4, 12, 0, 52, 1, 1, -1, 16),         # DS=1, SL2=1, SL0=0: level -1
    (4, 12, 2, 52, 1, 0, 0, 8192),        # DS=1 without SL2: level 0, 16 tables
    (16, 40, 0, 40, 0, 0, 3, 1024),
    (16, 24, 1, 40, 0, 0, 2, 32768),      # 16 level-2 tables
    (16, 16, 2, 48, 0, 0, 1, 4096),
    (16, 12, 3, 52, 1, 0, 0, 32),         # SL0=3 needs DS=1
    (64, 40, 0, 40, 0, 0, 3, 256),
    (64, 22, 1, 42, 0, 0, 2, 8192),
    (64, 16, 2, 48, 0, 0, 1, 64),
]


@pytest.mark.parametrize("gran,tsz,sl0,ps,ds,sl2,start,entries", S2_GEOMETRY)
def test_stage2_start_level_and_concatenation(gran, tsz, sl0, ps, ds, sl2, start, entries):
    r = s2(gran, tsz, sl0, ps, ds=ds, sl2=sl2)
    assert not r.fatal and r.config_errors == ()
    assert (r.stage, r.granule, r.ia_bits, r.oa_bits, r.start_level, r.start_entries) == (
        2, gran << 10, 64 - tsz, ps, start, entries)


# Invalid VTCR_EL2.{SL2, SL0, T0SZ} combinations: AArch64.S2InvalidSL() /
# AArch64.S2InconsistentSL() make every stage 2 access a Translation fault at level 0.
S2_INVALID = [
    (4, 29, 0, 40, 0, 0),      # 35-bit IPA from level 2 would need 17 tables
    (4, 43, 0, 40, 0, 0),      # 21-bit IPA: nothing left for level 2 to resolve
    (4, 34, 1, 40, 0, 0),      # 30-bit IPA cannot start at level 1
    (4, 20, 1, 44, 0, 0),      # 44-bit IPA from level 1 would need 32 tables
    (4, 12, 1, 52, 1, 1),      # SL2:SL0 = 101 is reserved
    (4, 12, 2, 52, 1, 1),      # SL2:SL0 = 11x is reserved
    (4, 12, 3, 52, 1, 1),
    (4, 16, 0, 48, 1, 1),      # level -1 needs more than 48 IPA bits
    (16, 16, 3, 48, 0, 0),     # 16K SL0=3 (level 0) needs DS=1
    (16, 16, 0, 48, 0, 0),     # 48-bit IPA from level 3
    (64, 16, 3, 48, 0, 0),     # 64K SL0=3 is reserved
    (64, 16, 1, 48, 0, 0),     # 48-bit IPA from level 2 would need 2^19 entries
]


@pytest.mark.parametrize("gran,tsz,sl0,ps,ds,sl2", S2_INVALID)
def test_stage2_invalid_start_level_is_a_level0_translation_fault(gran, tsz, sl0, ps, ds, sl2):
    r = s2(gran, tsz, sl0, ps, ds=ds, sl2=sl2)
    assert r.fatal and r.stage == 2
    assert [e.kind for e in r.config_errors] == ["invalid-start-level"]
    assert "SL0" in r.config_errors[0].message
    w = Walker(r, Tables(gran, 0, 1).mem)
    t = w.translate(0x1000)
    assert outcome(t) == ("fault", "translation", 0) and t.ia == 0x1000
    assert "SL0" in t.message
    assert w.mappings() == [] and kinds(w) == ["invalid-start-level"]
    assert w.errors[0].message == r.config_errors[0].message


@pytest.mark.parametrize("make,stage,kind,field", [
    (lambda: Regime.from_vtcr(vtcr(4, 32, 0, 40) | 0b11 << 14, BASE), 2, "invalid-granule",
     "TG0"),
    (lambda: Regime.from_tcr(tcr(4, 25, 40) | 0b11 << 14, BASE), 1, "invalid-granule", "TG0"),
    (lambda: Regime.from_tcr(tcr(4, 25, 40, tg1=0b00), BASE, upper=True), 1,
     "invalid-granule", "TG1"),
    (lambda: s1(4, 25, 40, epd0=1), 1, "walk-disabled", "EPD0"),
    (lambda: s1_upper(4, 25, 40, epd1=1), 1, "walk-disabled", "EPD1"),
])
def test_registers_that_describe_no_walk(make, stage, kind, field):
    """TCR_ELx.EPDn=1: a walk from TTBRn is a Translation fault at level 0 (TCR_EL1.EPD0/EPD1
    descriptions).  A reserved TGn value is the walker's own contract: one named error and a
    level-0 Translation fault (the Arm ARM lets a reserved TG act as an IMPLEMENTATION
    DEFINED choice of the others)."""
    r = make()
    assert r.fatal and r.stage == stage
    assert [e.kind for e in r.config_errors] == [kind]
    w = Walker(r, Tables(4, 0, 1).mem)
    rec = Recorder()
    w.walk(rec)
    assert rec.calls == [] and kinds(w) == [kind]
    t = w.translate(0x1000)
    assert outcome(t) == ("fault", "translation", 0) and field in t.message


# Input size limits (TnSZ): min 16, or 12 with FEAT_LPA2 (DS=1) and with 64K/52-bit (FEAT_LVA,
# which the walker assumes together with a 52-bit PS); max 48 (4K, 16K) or 47 (64K) with
# FEAT_TTST.  Out of range is CONSTRAINED UNPREDICTABLE; the walker
# documents the permitted "behave as the nearest limit" option and names the error.
TSZ_LIMITS = [
    # (granule, TnSZ, IPS, DS, input bits, error?)
    (4, 16, 48, 0, 48, False),
    (4, 15, 48, 0, 48, True),
    (4, 12, 48, 0, 48, True),
    (4, 12, 52, 1, 52, False),
    (4, 11, 52, 1, 52, True),
    (4, 48, 40, 0, 16, False),
    (4, 49, 40, 0, 16, True),
    (4, 63, 40, 0, 16, True),
    (16, 48, 40, 0, 16, False),
    (16, 50, 40, 0, 16, True),
    (64, 47, 40, 0, 17, False),
    (64, 48, 40, 0, 17, True),
    (64, 12, 52, 0, 52, False),
]


@pytest.mark.parametrize("gran,tsz,ips,ds,ia_bits,bad", TSZ_LIMITS)
def test_input_size_limits(gran, tsz, ips, ds, ia_bits, bad):
    r = s1(gran, tsz, ips, ds=ds)
    assert r.ia_bits == ia_bits and not r.fatal
    errs = [e for e in r.config_errors if e.kind == "invalid-tsz"]
    assert len(errs) == bad
    if bad:
        assert errs[0].message.startswith(f"TCR.T0SZ={tsz} ")
    u = s1_upper(gran, tsz, ips, ds=ds)
    assert u.ia_bits == ia_bits
    if bad:
        assert u.config_errors[0].message.startswith(f"TCR.T1SZ={tsz} ")


@pytest.mark.parametrize("gran,tsz,sl0,ps,ia_bits,start,entries", [
    (4, 10, 2, 48, 48, 0, 512),     # T0SZ=10 < 16: taken as 16, a 48-bit IPA from level 0
    (64, 48, 0, 40, 17, 3, 2),      # 64K: T0SZ=48 > 47: taken as 47, 17 bits from level 3
])
def test_stage2_input_size_clamp(gran, tsz, sl0, ps, ia_bits, start, entries):
    r = s2(gran, tsz, sl0, ps)
    assert not r.fatal
    assert (r.ia_bits, r.start_level, r.start_entries) == (ia_bits, start, entries)
    assert [e.kind for e in r.config_errors] == ["invalid-tsz"]
    assert r.config_errors[0].message.startswith(f"VTCR_EL2.T0SZ={tsz} ")


# An inconsistent SL0/T0SZ pair: the message names the level, the IPA size, the granule and
# the root entries the walk would need (the numbers follow AArch64.S2InconsistentSL(); the
# wording is the walker's own).
@pytest.mark.parametrize("gran,tsz,sl0,ps,text", [
    (4, 29, 0, 40, "VTCR_EL2.SL0=0 (level 2) cannot start a 35-bit IPA walk with a 4K granule:"
                   " it would need 2^14 entries"),
    (16, 16, 0, 48, "VTCR_EL2.SL0=0 (level 3) cannot start a 48-bit IPA walk with a 16K"
                    " granule: it would need 2^34 entries"),
    (64, 16, 1, 48, "VTCR_EL2.SL0=1 (level 2) cannot start a 48-bit IPA walk with a 64K"
                    " granule: it would need 2^19 entries"),
])
def test_stage2_inconsistent_start_level_message(gran, tsz, sl0, ps, text):
    assert s2(gran, tsz, sl0, ps).config_errors[0].message == text


# Output size: (V)TCR.PS/IPS 000..110 = 32, 36, 40, 42, 44, 48, 52 bits.  52 needs 64K
# (FEAT_LPA) or DS=1 (FEAT_LPA2); with a 4K/16K granule and DS=0 PS=0b110 acts as 48 bits.
# The reserved 0b111 behaves as 0b101 or 0b110 (PS/IPS field descriptions): with DS=0 and a
# 4K/16K granule both mean 48 bits.
@pytest.mark.parametrize("gran,ps_code,ds,oa_bits", [
    (4, 0, 0, 32), (4, 1, 0, 36), (4, 2, 0, 40), (4, 3, 0, 42), (4, 4, 0, 44), (4, 5, 0, 48),
    (4, 6, 0, 48), (4, 7, 0, 48), (16, 6, 0, 48), (4, 6, 1, 52), (16, 6, 1, 52),
    (4, 5, 1, 48), (64, 6, 0, 52), (64, 5, 0, 48), (64, 2, 0, 40),
])
def test_output_size(gran, ps_code, ds, oa_bits):
    t0sz = 32 if gran == 4 else 40          # level 2 (4K) or level 3 (16K, 64K) start, SL0=0
    raw = vtcr(gran, t0sz, 0, 32, ds=ds) | ps_code << 16
    assert Regime.from_vtcr(raw, BASE).oa_bits == oa_bits
    raw1 = tcr(gran, 25 if gran != 64 else 22, 32, ds=ds) | ps_code << 32
    assert Regime.from_tcr(raw1, BASE).oa_bits == oa_bits


@pytest.mark.parametrize("gran", [4, 16])
def test_reserved_ps_with_ds(gran):
    """PS/IPS=0b111 is reserved and behaves as 0b101 (48 bits) or 0b110 (52 bits): with DS=1
    both are meaningful, and nothing else is allowed."""
    raw = vtcr(gran, 40 if gran == 16 else 32, 0, 32, ds=1) | 0b111 << 16
    assert Regime.from_vtcr(raw, BASE).oa_bits in (48, 52)
    raw1 = tcr(gran, 25, 32, ds=1) | 0b111 << 32
    assert Regime.from_tcr(raw1, BASE).oa_bits in (48, 52)


def test_describe():
    assert s2(4, 32, 0, 40).describe() == (
        "stage 2, 4K granule, 32-bit input, 40-bit output, start level 2 (2048 entries),"
        " root 0x40000000")
    assert s1_upper(64, 16, 48).describe() == (
        "stage 1, 64K granule, 48-bit input, 48-bit output, start level 1 (64 entries),"
        " root 0x40000000, upper range")


# =============================================================================================
# Base address
# =============================================================================================

def test_vmid_asid_and_cnp_are_not_address_bits():
    """VTTBR_EL2.VMID[63:48] / TTBRn.ASID[63:48] and CnP[0] are not part of BADDR."""
    assert s2(4, 32, 0, 40, vttbr=0xABCD << 48 | BASE | 1).root == BASE
    assert s1(4, 25, 40, ttbr=0x1234 << 48 | BASE | 1).root == BASE
    assert s1_upper(4, 25, 40, ttbr=0xFFFF << 48 | BASE | 1).root == BASE


@pytest.mark.parametrize("make,root", [
    # 64K, 52-bit PA (FEAT_LPA): BADDR[51:48] in TTBR bits[5:2]
    (lambda: s1(64, 12, 52, ttbr=0x4001_0000 | 0x9 << 2), 0x9 << 48 | 0x4001_0000),
    (lambda: s2(64, 16, 2, 52, vttbr=0x4001_0000 | 0x3 << 2), 0x3 << 48 | 0x4001_0000),
    # DS=1 (FEAT_LPA2): the same encoding
    (lambda: s1(4, 12, 52, ds=1, ttbr=0x4000_1000 | 0xC << 2), 0xC << 48 | 0x4000_1000),
    (lambda: s2(16, 12, 3, 52, ds=1, vttbr=0x4000_4000 | 0x5 << 2), 0x5 << 48 | 0x4000_4000),
])
def test_52bit_base_address(make, root):
    r = make()
    assert r.root == root and r.config_errors == ()


def test_48bit_small_root_needs_only_its_own_alignment():
    """A root table is aligned to its size: 16K, 48-bit VA starts at level 0 with 2 entries
    (16 bytes), so TTBR = BASE+0x10 is a valid base; BASE+0x8 is not.  (The 64-byte minimum
    applies only with a 52-bit OA.)"""
    r = s1(16, 16, 48, ttbr=BASE + 0x10)
    assert (r.root, r.config_errors) == (BASE + 0x10, ())
    r = s1(16, 16, 48, ttbr=BASE + 0x8)
    assert r.root == BASE
    assert [(e.kind, e.level) for e in r.config_errors] == [("misaligned-table-base", 0)]


def test_misaligned_concatenated_root_is_taken_as_aligned():
    """4 concatenated 4K level-2 tables must be 16 KiB aligned; the low BADDR bits are treated
    as zero (a permitted behaviour) and the walker says so."""
    r = s2(4, 32, 0, 40, vttbr=BASE + 0x2000)
    assert r.root == BASE
    assert [(e.kind, e.level) for e in r.config_errors] == [("misaligned-table-base", 2)]
    assert r.config_errors[0].message == (
        "root table 0x40002000 is not aligned to 0x4000; using 0x40000000")


# =============================================================================================
# Block descriptors by granule and level
# =============================================================================================

L1_S2 = AF | s2ap(3) | memattr(0xF)
# (regime, Tables geometry, level, ia, oa, allowed) -- AArch64.BlockDescSupported().
# For 64K the Arm ARM keys level-1 blocks on a 52-bit implemented PA size (AArch64.PAMax());
# the walker has no PAMax and takes a 52-bit PS as that signal, and so do these rows.
BLOCKS = [
    ("4K", lambda: s1(4, 16, 48), (4, 0, 512, "48"), 0, 1 << 39, 3 << 39, False),
    ("4K", lambda: s1(4, 16, 48), (4, 0, 512, "48"), 1, 1 << 30, 3 << 30, True),
    ("4K", lambda: s1(4, 16, 48), (4, 0, 512, "48"), 2, 1 << 21, 3 << 21, True),
    ("4K-LPA2", lambda: s1(4, 12, 52, ds=1), (4, -1, 16, "lpa2"), -1, 1 << 48, 3 << 48, False),
    ("4K-LPA2", lambda: s1(4, 12, 52, ds=1), (4, -1, 16, "lpa2"), 0, 1 << 39, 0xC << 48, True),
    ("4K-LPA2", lambda: s1(4, 12, 52, ds=1), (4, -1, 16, "lpa2"), 1, 1 << 30,
     0x9 << 48 | 5 << 30, True),
    ("4K-LPA2", lambda: s1(4, 12, 52, ds=1), (4, -1, 16, "lpa2"), 2, 1 << 21, 3 << 21, True),
    ("16K", lambda: s1(16, 16, 48), (16, 0, 2, "48"), 0, 1 << 47, 1 << 47, False),
    ("16K", lambda: s1(16, 16, 48), (16, 0, 2, "48"), 1, 1 << 36, 3 << 36, False),
    ("16K", lambda: s1(16, 16, 48), (16, 0, 2, "48"), 2, 1 << 25, 3 << 25, True),
    ("16K-LPA2", lambda: s1(16, 12, 52, ds=1), (16, 0, 32, "lpa2"), 0, 1 << 47, 3 << 47,
     False),
    ("16K-LPA2", lambda: s1(16, 12, 52, ds=1), (16, 0, 32, "lpa2"), 1, 1 << 36,
     0x6 << 48 | 3 << 36, True),
    ("16K-LPA2", lambda: s1(16, 12, 52, ds=1), (16, 0, 32, "lpa2"), 2, 1 << 25, 3 << 25, True),
    ("64K", lambda: s1(64, 16, 48), (64, 1, 64, "48"), 1, 1 << 42, 3 << 42, False),
    ("64K", lambda: s1(64, 16, 48), (64, 1, 64, "48"), 2, 1 << 29, 3 << 29, True),
    ("64K-LPA", lambda: s1(64, 12, 52), (64, 1, 1024, "lpa"), 1, 1 << 42,
     0xA << 48 | 3 << 42, True),
    ("64K-LPA", lambda: s1(64, 12, 52), (64, 1, 1024, "lpa"), 2, 1 << 29,
     0x5 << 48 | 3 << 29, True),
    ("s2-4K", lambda: s2(4, 24, 1, 40), (4, 1, 1024, "48"), 1, 1 << 30, 3 << 30, True),
    ("s2-16K", lambda: s2(16, 16, 2, 48), (16, 1, 4096, "48"), 1, 1 << 36, 3 << 36, False),
    ("s2-16K", lambda: s2(16, 16, 2, 48), (16, 1, 4096, "48"), 2, 1 << 25, 3 << 25, True),
    ("s2-64K", lambda: s2(64, 16, 2, 48), (64, 1, 64, "48"), 1, 1 << 42, 3 << 42, False),
    ("s2-64K", lambda: s2(64, 16, 2, 48), (64, 1, 64, "48"), 2, 1 << 29, 3 << 29, True),
]


@pytest.mark.parametrize("name,make,geo,level,ia,oa,allowed", BLOCKS,
                         ids=[f"{b[0]}-L{b[3]}" for b in BLOCKS])
def test_block_descriptor_levels(name, make, geo, level, ia, oa, allowed):
    """A block is a leaf only where the granule (and DS / 52-bit PA) allows one; elsewhere
    bits[1:0]=0b01 is a Translation fault at that level."""
    r = make()
    t = Tables(*geo)
    bits = L1_S2 if r.stage == 2 else AF
    desc = t.leaf(ia, level, oa, bits)
    w = Walker(r, t.mem)
    size = 1 << t.level_shift(level)
    got = w.translate(ia + 0x1234)
    if allowed:
        assert outcome(got) == ("ok", oa + 0x1234, level, size)
        assert got.ia == ia + 0x1234 and got.descriptor == desc
        assert runs(w) == [(ia, oa, size, level)] and w.errors == []
    else:
        assert outcome(got) == ("fault", "translation", level)
        assert runs(w) == [] and kinds(w) == ["block-not-allowed"]
        e = w.errors[0]
        assert (e.level, e.ia, e.table, e.descriptor) == (level, ia, t.table(ia, level), desc)
        assert e.message.startswith(f"level {level}: no block descriptors at this level with a "
                                    f"{geo[0]}K granule")


@pytest.mark.parametrize("low,result", [(PAGE, "page"), (BLOCK, "reserved"), (0b00, "invalid"),
                                        (0b10, "invalid")])
def test_level3_descriptor_types(low, result):
    """At level 3 bits[1:0]=0b11 is a page, 0b01 is reserved (treated as invalid: a
    Translation fault), x0 is invalid."""
    t = Tables(4, 1, 512)
    desc = t.set(0x5000, 3, 0x8000_5000 | AF | low)
    w = Walker(s1(4, 25, 40), t.mem)
    got = w.translate(0x5678)
    if result == "page":
        assert outcome(got) == ("ok", 0x8000_5678, 3, 0x1000)
        assert w.errors == []
    else:
        assert outcome(got) == ("fault", "translation", 3)
        assert runs(w) == []
        if result == "reserved":
            assert kinds(w) == ["reserved-descriptor"]
            e = w.errors[0]
            assert (e.level, e.ia, e.table, e.descriptor) == (3, 0x5000, t.table(0, 3), desc)
            assert e.message == (f"level 3: bits[1:0]=0b01 is reserved at level 3 "
                                 f"(descriptor {desc:#x})")
        else:
            assert w.errors == []


# =============================================================================================
# Output addresses
# =============================================================================================

def test_lpa2_4k_walk_from_level_minus1_in_52bit_memory():
    """FEAT_LPA2, 4K: TTBR BADDR[51:48] in bits[5:2]; table and page descriptors hold
    OA[49:12] in place and OA[51:50] in bits[9:8]; Shareability is TCR_EL1.SH0."""
    hi = 0xD << 48                            # bits 51, 50 and 48 of every table address
    t = Tables(4, -1, 16, fmt="lpa2", base=hi | BASE)
    va = 5 << 48 | 3 << 39 | 7 << 30 | 9 << 21 | 0x11 << 12
    oa = 0xE_2345_6789_A000                   # OA[51:50] = 0b11, OA[49] = 1
    desc = t.leaf(va, 3, oa, AF)
    assert desc & 0x300 == 0x300 and desc >> 50 == 0
    r = s1(4, 12, 52, ds=1, sh0=0b10, ttbr=BASE | 0xD << 2)
    w = Walker(r, t.mem)
    got = w.translate(va | 0x345)
    assert outcome(got) == ("ok", oa | 0x345, 3, 0x1000)
    assert got.attrs["sh"] == "OSH"
    assert runs(w) == [(va, oa, 0x1000, 3)] and w.errors == []


def test_lpa2_16k_stage2_block_and_vtcr_sh0():
    """Stage 2, 16K, DS=1, SL0=3: level-0 start with 32 entries; a level-1 block (allowed with
    DS=1) with OA[51:50] in bits[9:8]; Shareability is VTCR_EL2.SH0 (0b11: Inner)."""
    t = Tables(16, 0, 32, fmt="lpa2")
    oa = 0x9 << 48 | 0x3 << 36
    desc = t.leaf(0x5 << 36, 1, oa, S2_RW_WB)
    assert desc >> 8 & 3 == 0b10
    w = Walker(s2(16, 12, 3, 52, ds=1, sh0=0b11), t.mem)
    got = w.translate(0x5 << 36 | 0x7_6543_2100)
    assert outcome(got) == ("ok", oa | 0x7_6543_2100, 1, 1 << 36)
    assert (got.attrs["sh"], got.attrs["s2ap"], got.attrs["memtype"]) == ("ISH", "RW",
                                                                          "Normal-WB")
    assert w.errors == []


def test_lpa2_upper_range_shareability_is_tcr_sh1():
    """DS=1, TTBR1 (T1SZ=12, 52-bit VA from level -1): Shareability is TCR_EL1.SH1."""
    t = Tables(4, -1, 16, fmt="lpa2")
    t.leaf(0, 3, 0x8000_0000, AF)
    r = Regime.from_tcr(tcr(4, 16, 52, ds=1, sh0=0b10, gran1=4, t1sz=12, sh1=0b11), BASE,
                        upper=True)
    w = Walker(r, t.mem)
    got = w.translate(0xFFF0_0000_0000_0000)
    assert outcome(got) == ("ok", 0x8000_0000, 3, 0x1000)
    assert got.attrs["sh"] == "ISH"


def test_lpa2_oa_bits_51_50_are_not_shareability():
    """With DS=1, bits[9:8] are OA[51:50]: SH=0b01 there is OA bit 50, not a reserved
    Shareability; a run that crosses 2^50 in OA stays one run."""
    t = Tables(4, 0, 512, fmt="lpa2")
    t.leaf(0x1000, 3, (1 << 50) - 0x1000, AF)
    t.leaf(0x2000, 3, 1 << 50, AF)
    r = s1(4, 16, 52, ds=1, sh0=0b11)
    w = Walker(r, t.mem)
    assert runs(w) == [(0x1000, (1 << 50) - 0x1000, 0x2000, 3)]
    assert w.errors == []
    assert outcome(w.translate(0x2008)) == ("ok", (1 << 50) + 8, 3, 0x1000)


def test_lpa2_with_48bit_ps_is_an_address_size_fault():
    """DS=1 with PS=48: an OA with bit 50 set (bits[9:8]=0b01) exceeds the output size: an
    Address size fault at the level of the leaf."""
    t = Tables(4, 0, 512, fmt="lpa2")
    t.leaf(0x1000, 3, 1 << 50, AF)
    t.leaf(0x2000, 3, (1 << 48) - 0x1000, AF)
    t.leaf(1 << 39, 0, 1 << 39, AF)           # DS=1: a level-0 block is allowed
    w = Walker(s1(4, 16, 48, ds=1), t.mem)
    assert outcome(w.translate(0x1000)) == ("fault", "address-size", 3)
    assert outcome(w.translate(0x2fff)) == ("ok", (1 << 48) - 1, 3, 0x1000)
    assert outcome(w.translate((1 << 39) + 5)) == ("ok", (1 << 39) + 5, 0, 1 << 39)


def test_lpa_64k_walk_in_52bit_memory():
    """64K with a 52-bit PA (FEAT_LPA): BADDR[51:48] in TTBR bits[5:2]; table, block and page
    descriptors hold OA[51:48] in bits[15:12]."""
    hi = 0x5 << 48
    t = Tables(64, 1, 1024, fmt="lpa", base=hi | BASE, tables=2)
    va = 0x3FF << 42 | 0x1FFF << 29 | 0x1234 << 16
    oa = 0xA_BCDE_F012_0000
    desc = t.leaf(va, 3, oa, AF)
    assert desc >> 48 == 0 and desc >> 12 & 0xF == 0xA
    blk = 0x7 << 48 | 0x1 << 42
    t.leaf(0x5 << 42, 1, blk, AF)
    w = Walker(s1(64, 12, 52, ttbr=BASE | 0x5 << 2), t.mem)
    assert outcome(w.translate(va | 0xBEEF)) == ("ok", oa | 0xBEEF, 3, 1 << 16)
    assert outcome(w.translate(0x5 << 42 | 0x123_4567)) == ("ok", blk | 0x123_4567, 1, 1 << 42)
    assert runs(w) == [(0x5 << 42, blk, 1 << 42, 1), (va, oa, 1 << 16, 3)]
    assert w.errors == []


def test_table_descriptor_output_address_is_checked_against_ps():
    """A next-level table address beyond the output size is an Address size fault at the
    level of the table descriptor; just below it the walk goes on."""
    t = Tables(4, 1, 512)
    bad = t.point(0x20_0000, 2, 1 << 40)
    t.point(0x40_0000, 2, (1 << 40) - 0x1000)          # valid PA, but no memory there
    w = Walker(s1(4, 25, 40), t.mem)
    assert outcome(w.translate(0x20_0000)) == ("fault", "address-size", 2)
    assert outcome(w.translate(0x40_0000)) == ("fault", "external-walk", 3)
    w.mappings()
    e = [e for e in w.errors if e.kind == "address-size"]
    assert [(x.level, x.ia, x.table, x.descriptor) for x in e] == [
        (2, 0x20_0000, t.table(0, 2), bad)]
    assert e[0].message.startswith("level 2: next-level table beyond the 40-bit output size")


# =============================================================================================
# translate(): one table of outcomes over one image
# =============================================================================================

def _mixed_image():
    """4K, 39-bit VA (level 1 start), 40-bit PA (TCR.IPS=0b010)."""
    t = Tables(4, 1, 512, tables=4)
    d = {}
    d["page"] = t.leaf(0x1000, 3, 0x8000_1000, AF)
    d["noaf"] = t.leaf(0x2000, 3, 0x8000_2000, 0)
    d["l3blk"] = t.set(0x3000, 3, 0x8000_3000 | AF | BLOCK)
    d["big"] = t.leaf(0x4000, 3, 1 << 40, AF)
    d["top"] = t.leaf(0x5000, 3, (1 << 40) - 0x1000, AF)
    d["blk2"] = t.leaf(0x20_0000, 2, 0x8020_0000, AF)
    d["outside"] = t.point(0x40_0000, 2, 0x9000_0000)
    d["bigtable"] = t.point(0x60_0000, 2, 1 << 40)
    d["blk1"] = t.leaf(0x4000_0000, 1, 0xC000_0000, AF)
    return t, d


INVALID = "invalid descriptor"               # fault messages: the walker's own wording
NO_AF = "AF=0 and hardware AF update is off"
MIXED = [
    # (input address, outcome, fault message when the test pins it)
    (0x1123, ("ok", 0x8000_1123, 3, 0x1000), None),
    (0x0FFF, ("fault", "translation", 3), INVALID),      # last byte before the page: no leaf
    (0x2000, ("fault", "access-flag", 3), NO_AF),        # AF=0, TCR.HA=0
    (0x3000, ("fault", "translation", 3), None),         # 0b01 at level 3
    (0x4008, ("fault", "address-size", 3), None),        # OA = 2^40 with a 40-bit PA
    (0x5FFF, ("ok", (1 << 40) - 1, 3, 0x1000), None),    # the last byte a 40-bit PA reaches
    (0x0, ("fault", "translation", 3), INVALID),         # invalid entry in a level-3 table
    (0x6000, ("fault", "translation", 3), INVALID),
    (0x21_2345, ("ok", 0x8021_2345, 2, 0x20_0000), None),
    (0x40_0010, ("fault", "external-walk", 3), None),    # level-3 table read fails
    (0x60_0000, ("fault", "address-size", 2), None),     # level-2 table descriptor beyond PS
    (0xA0_0000, ("fault", "translation", 2), INVALID),
    (0x5234_5678, ("ok", 0xD234_5678, 1, 1 << 30), None),
    (0x8000_0000, ("fault", "translation", 1), INVALID),
    (0x7F_FFFF_FFFF, ("fault", "translation", 1), INVALID),
]


@pytest.mark.parametrize("ia,expected,message", MIXED)
def test_translate_outcomes(ia, expected, message):
    t, d = _mixed_image()
    w = Walker(s1(4, 25, 40), t.mem)
    got = w.translate(ia)
    assert outcome(got) == expected
    assert got.ia == ia
    if isinstance(got, Fault):
        assert got.message == message if message else got.message
    if ia == 0x1123:
        assert got.descriptor == d["page"] and got.attrs["af"] is True


def test_hardware_access_flag_update_removes_the_access_flag_fault():
    """TCR_EL1.HA=1 / VTCR_EL2.HA=1 (FEAT_HAFDBS): AF=0 is no longer an Access flag fault."""
    t, _ = _mixed_image()
    got = Walker(s1(4, 25, 40, ha=1), t.mem).translate(0x2010)
    assert outcome(got) == ("ok", 0x8000_2010, 3, 0x1000) and got.attrs["af"] is False
    t2 = Tables(4, 2, 2048)
    t2.leaf(0x1000, 3, 0x8000_1000, s2ap(3) | memattr(0xF))          # AF=0
    assert outcome(Walker(s2(4, 32, 0, 40), t2.mem).translate(0x1000)) == (
        "fault", "access-flag", 3)
    assert outcome(Walker(s2(4, 32, 0, 40, ha=1), t2.mem).translate(0x1000)) == (
        "ok", 0x8000_1000, 3, 0x1000)


def test_mappings_and_errors_of_the_mixed_image():
    """mappings() lists the leaves that translate; each problem is one error naming its
    level, input address, table PA and descriptor (the walker's error contract)."""
    t, d = _mixed_image()
    w = Walker(s1(4, 25, 40), t.mem)
    assert runs(w) == [
        (0x1000, 0x8000_1000, 0x1000, 3),
        (0x2000, 0x8000_2000, 0x1000, 3),             # AF=0 differs in attributes: own run
        (0x5000, (1 << 40) - 0x1000, 0x1000, 3),
        (0x20_0000, 0x8020_0000, 0x20_0000, 2),
        (0x4000_0000, 0xC000_0000, 1 << 30, 1),
    ]
    l2, l3 = t.table(0, 2), t.table(0, 3)
    assert [(e.kind, e.level, e.ia, e.table, e.descriptor) for e in w.errors] == [
        ("address-size", 2, 0x60_0000, l2, d["bigtable"]),
        ("table-outside-memory", 3, 0x40_0000, 0x9000_0000, None),
        ("reserved-descriptor", 3, 0x3000, l3, d["l3blk"]),
        ("address-size", 3, 0x4000, l3, d["big"]),
    ]
    assert w.errors[1].message == "level 3: table at 0x90000000 is not in the memory given"
    assert w.errors[3].message == (f"level 3: output address beyond the 40-bit output size "
                                   f"(descriptor {d['big']:#x})")
    assert w.error_counts == {"address-size": 2, "table-outside-memory": 1,
                              "reserved-descriptor": 1}
    assert w.error_dicts() == [e.as_dict() for e in w.errors]
    assert w.error_dicts()[1] == {"kind": "table-outside-memory", "level": 3, "ia": 0x40_0000,
                                  "table": 0x9000_0000, "descriptor": None,
                                  "message": w.errors[1].message}


@pytest.mark.parametrize("make,ia", [
    (lambda: s1(4, 25, 40), 1 << 39),                         # starts at level 1
    (lambda: s2(4, 32, 0, 40), 1 << 32),                      # starts at level 2
    (lambda: s1_upper(4, 25, 40), 0x1000),                    # lower address, TTBR1 regime
])
def test_input_address_out_of_range_faults_at_level0(make, ia):
    """An input address outside the TnSZ range is a Translation fault at level 0 (pseudocode
    AArch64.S1Translate/AArch64.S2Translate: VAIsOutOfRange/IPAIsOutOfRange -> level 0)."""
    t, _ = _mixed_image()
    assert outcome(Walker(make(), t.mem).translate(ia)) == ("fault", "translation", 0)


@pytest.mark.parametrize("make,ia", [
    (lambda: s1(4, 25, 40), 1 << 39),
    (lambda: s1(4, 25, 40), MASK64),
    (lambda: s2(4, 32, 0, 40), 1 << 32),
    (lambda: s1_upper(4, 25, 40), 0x1000),
    (lambda: s1_upper(4, 25, 40), 0xFFFF_FF7F_FFFF_FFFF),     # just below the TTBR1 range
    (lambda: s1(4, 16, 48), 1 << 48),                         # level-0 start
])
def test_input_address_out_of_range_is_a_translation_fault(make, ia):
    """Addresses outside the TnSZ range (top bits not all 0 for TTBR0 / all 1 for TTBR1)
    never translate."""
    t, _ = _mixed_image()
    r = make()
    got = Walker(r, t.mem).translate(ia)
    assert isinstance(got, Fault) and got.kind == "translation" and got.ia == ia
    assert got.message == (f"{ia:#x} is outside the {r.ia_bits}-bit "
                           f"{'upper' if r.upper else 'lower'} range")
    if make().start_level == 0:
        assert got.level == 0


@pytest.mark.parametrize("stage", [1, 2])
def test_base_address_beyond_output_size(stage):
    """The root table sits at 4 GiB with a 32-bit PA (PS=0b000) and holds a block at the start
    level whose OA is below 4 GiB: only the base address is out of range, an Address size
    fault at level 0 whatever the start level (Arm ARM R_BFHQH; pseudocode
    AArch64.S1Walk/AArch64.S2Walk: OAOutOfRange(baseaddress) -> Fault_AddressSize, level 0),
    and a full walk reports it and maps nothing."""
    hi = 1 << 32
    if stage == 1:
        t = Tables(4, 1, 512, base=hi)
        t.leaf(1 << 30, 1, 1 << 30, AF)
        r = s1(4, 25, 32, ttbr=hi)
    else:
        t = Tables(4, 2, 2048, base=hi)
        t.leaf(1 << 21, 2, 1 << 21, S2_RW_WB)
        r = s2(4, 32, 0, 32, vttbr=hi)
    got = Walker(r, t.mem).translate((1 << 30 if stage == 1 else 1 << 21) + 0x10)
    assert outcome(got) == ("fault", "address-size", 0)
    assert got.message == f"root table {hi:#x} is beyond the 32-bit output size"
    w = Walker(r, t.mem)
    assert w.mappings() == []
    assert [(e.kind, e.level, e.table) for e in w.errors] == [("address-size", 0, hi)]


# =============================================================================================
# Attributes
# =============================================================================================

S1_AP_NAME = {0b00: "RW-EL1", 0b01: "RW", 0b10: "RO-EL1", 0b11: "RO"}   # AP[2:1]
S1_BASE_ATTRS = {"attr_index": 0, "memtype": None, "ap": "RW-EL1", "sh": "NSH", "af": True,
                 "ng": False, "ns": False, "pxn": False, "uxn": False, "contiguous": False,
                 "dbm": False}
S1_ATTRS = [
    (attrindx(5), {"attr_index": 5}),
    (NS, {"ns": True}),
    (ap(0b01), {"ap": "RW"}),          # AP[2:1]=01: read/write at EL1 and EL0
    (ap(0b10), {"ap": "RO-EL1"}),      # 10: read-only at EL1, no EL0 access
    (ap(0b11), {"ap": "RO"}),          # 11: read-only at EL1 and EL0
    (sh(0b10), {"sh": "OSH"}),
    (sh(0b11), {"sh": "ISH"}),
    (NG, {"ng": True}),
    (CONTIG, {"contiguous": True}),
    (DBM, {"dbm": True}),
    (PXN, {"pxn": True}),
    (UXN, {"uxn": True}),
    (PXN | UXN | NG | ap(3) | attrindx(7),
     {"pxn": True, "uxn": True, "ng": True, "ap": "RO", "attr_index": 7}),
    (SW, {}),                          # software bits: no attribute
]


@pytest.mark.parametrize("bits,changed", S1_ATTRS)
def test_stage1_leaf_attributes(bits, changed):
    t = Tables(4, 1, 512)
    t.leaf(0x1000, 3, 0x8000_1000, AF | bits)
    w = Walker(s1(4, 25, 40), t.mem)
    want = S1_BASE_ATTRS | changed
    assert w.translate(0x1000).attrs == want
    (m,) = w.mappings()
    assert m.attrs == want
    assert m.as_dict() == {"ia": 0x1000, "oa": 0x8000_1000, "size": 0x1000, "level": 3,
                           "attrs": want}


def test_stage1_reserved_shareability():
    """SH=0b01 is reserved (D8.6.2); the walker keeps the mapping and names the problem."""
    t = Tables(4, 1, 512)
    desc = t.leaf(0x1000, 3, 0x8000_1000, AF | sh(0b01))
    w = Walker(s1(4, 25, 40), t.mem)
    assert w.translate(0x1000).attrs["sh"] == "reserved"
    assert runs(w) == [(0x1000, 0x8000_1000, 0x1000, 3)]
    assert [(e.kind, e.level, e.ia, e.table, e.descriptor) for e in w.errors] == [
        ("reserved-shareability", 3, 0x1000, t.table(0, 3), desc)]
    assert w.errors[0].message == f"level 3: SH=0b01 is reserved (descriptor {desc:#x})"


def test_software_bits_and_nt_do_not_split_runs():
    """Bits[58:55] are for software and nT (bit 16 of a block, FEAT_BBM) is no memory
    attribute; neither is an output-address bit of a 2MB block (OA[47:21])."""
    t = Tables(4, 1, 512)
    t.leaf(0x1000, 3, 0x8000_1000, AF | 0x5 << 55)
    t.leaf(0x2000, 3, 0x8000_2000, AF | 0xA << 55)
    t.leaf(0x20_0000, 2, 0x8040_0000, AF | NT)
    t.leaf(0x40_0000, 2, 0x8060_0000, AF)
    w = Walker(s1(4, 25, 40), t.mem)
    assert runs(w) == [(0x1000, 0x8000_1000, 0x2000, 3), (0x20_0000, 0x8040_0000, 0x40_0000, 2)]
    assert outcome(w.translate(0x20_0000)) == ("ok", 0x8040_0000, 2, 0x20_0000)


def test_stage2_software_bits_do_not_split_runs():
    t = Tables(4, 2, 2048)
    t.leaf(0x1000, 3, 0x8000_1000, S2_RW_WB | 0x5 << 55)
    t.leaf(0x2000, 3, 0x8000_2000, S2_RW_WB | 0xA << 55 | 0xF << 59)   # and PBHA[62:59]
    w = Walker(s2(4, 32, 0, 40), t.mem)
    assert runs(w) == [(0x1000, 0x8000_1000, 0x2000, 3)]


@pytest.mark.parametrize("index,attr,name", [
    (5, 0xFF, "Normal-WB"),          # Normal, Inner/Outer Write-Back RW-allocate
    (7, 0x00, "Device-nGnRnE"),
    (3, 0x44, "Normal-NC"),          # Normal, Inner/Outer Non-cacheable
    (1, 0x04, "Device-nGnRE"),
])
def test_stage1_memory_type_from_mair(index, attr, name):
    """AttrIndx selects MAIR_ELx.Attr<n>, bits[8n+7:8n] (MAIR_EL1 description)."""
    mair = 0x4444_4444_4444_4444 & ~(0xFF << 8 * index) | attr << 8 * index
    t = Tables(4, 1, 512)
    t.leaf(0x1000, 3, 0x8000_1000, AF | attrindx(index) | sh(3))
    w = Walker(s1(4, 25, 40, mair=mair), t.mem)
    attrs = w.translate(0x1000).attrs
    assert (attrs["attr_index"], attrs["memtype"]) == (index, name)


S2_BASE_ATTRS = {"memattr": 0xF, "memtype": "Normal-WB", "s2ap": "none", "sh": "NSH",
                 "af": True, "xn": 0, "exec_el1": True, "exec_el0": True, "contiguous": False,
                 "dbm": False}
S2_ATTRS = [
    # S2AP[1:0]: 00 no access, 01 read-only, 10 write-only, 11 read/write
    (s2ap(1), {"s2ap": "RO"}),
    (s2ap(2), {"s2ap": "WO"}),
    (s2ap(3), {"s2ap": "RW"}),
    (sh(0b10), {"sh": "OSH"}),
    (sh(0b11), {"sh": "ISH"}),
    # XN[1:0] with FEAT_XNX: 00 exec at EL1 and EL0, 01 not at EL1, 10 at neither,
    # 11 not at EL0.  (Without FEAT_XNX only XN[1] exists; 00 and 10 mean the same there.)
    (xn(0b01), {"xn": 1, "exec_el1": False, "exec_el0": True}),
    (xn(0b10), {"xn": 2, "exec_el1": False, "exec_el0": False}),
    (xn(0b11), {"xn": 3, "exec_el1": True, "exec_el0": False}),
    (CONTIG, {"contiguous": True}),
    (DBM, {"dbm": True}),
    (SW, {}),
]


@pytest.mark.parametrize("bits,changed", S2_ATTRS)
def test_stage2_leaf_attributes(bits, changed):
    t = Tables(4, 2, 2048)
    t.leaf(0x1000, 3, 0x8000_1000, AF | memattr(0xF) | bits)
    w = Walker(s2(4, 32, 0, 40), t.mem)
    want = S2_BASE_ATTRS | changed
    assert w.translate(0x1000).attrs == want
    assert [m.attrs for m in w.mappings()] == [want]


# MemAttr[3:0] (FWB=0): [3:2]=00 Device ([1:0] = nGnRnE, nGnRE, nGRE, GRE); otherwise Normal
# with Outer [3:2] and Inner [1:0] = 01 NC, 10 WT, 11 WB, 00 reserved.
# FWB=1 (FEAT_S2FWB): MemAttr[2]=0 Device ([1:0]); 0b100 reserved, 0b101 Normal NC,
# 0b110 Normal WB (stage 1 overridden), 0b111 Normal with the stage-1 type.
S2_MEMATTR = [
    (0, 0b1111, "Normal-WB", False),
    (0, 0b0101, "Normal-NC", False),
    (0, 0b1010, "Normal-WT", False),
    (0, 0b0000, "Device-nGnRnE", False),
    (0, 0b0001, "Device-nGnRE", False),
    (0, 0b0011, "Device-GRE", False),
    (0, 0b0100, None, True),
    (0, 0b1000, None, True),
    (0, 0b1100, None, True),
    (1, 0b0110, "Normal-WB (forced)", False),
    (1, 0b0111, "stage-1 type", False),
    (1, 0b0101, "Normal-NC", False),
    (1, 0b0001, "Device-nGnRE", False),
    (1, 0b0100, "reserved", True),
]


@pytest.mark.parametrize("fwb,value,name,reserved", S2_MEMATTR)
def test_stage2_memattr(fwb, value, name, reserved):
    t = Tables(4, 2, 2048)
    desc = t.leaf(0x1000, 3, 0x8000_1000, AF | s2ap(3) | memattr(value))
    # HCR_EL2.FWB is bit 46; other HCR bits (VM, FIEN at 47) do not enable it.
    hcr = (HCR_FWB if fwb else 0) | 1 | 1 << 47
    w = Walker(s2(4, 32, 0, 40, hcr=hcr), t.mem)
    attrs = w.translate(0x1000).attrs
    assert attrs["memattr"] == value
    if name is not None:
        assert attrs["memtype"] == name
    assert runs(w) == [(0x1000, 0x8000_1000, 0x1000, 3)]     # still a mapping
    if reserved:
        assert [(e.kind, e.level, e.ia, e.descriptor) for e in w.errors] == [
            ("reserved-memattr", 3, 0x1000, desc)]
        assert w.errors[0].message == (f"level 3: reserved stage-2 MemAttr encoding "
                                       f"(descriptor {desc:#x})")
    else:
        assert w.errors == []


def test_stage2_table_descriptor_has_no_hierarchical_attributes():
    """Stage 2 table descriptors have no APTable/XNTable (bits[63:59] are ignored)."""
    t = Tables(4, 2, 2048)
    t.leaf(0x1000, 3, 0x8000_1000, S2_RW_WB)
    slot = t.slot(0x1000, 2)
    t.put(slot, t.get(slot) | aptable(3) | PXNTABLE | UXNTABLE)
    got = Walker(s2(4, 32, 0, 40), t.mem).translate(0x1000)
    assert got.attrs == S2_BASE_ATTRS | {"s2ap": "RW"}


# Hierarchical permissions (stage 1): APTable[0] (bit 61) removes EL0 access (clears AP[1]),
# APTable[1] (bit 62) removes write access (sets AP[2]); PXNTable/UXNTable force PXN/UXN;
# the restrictions of every table on the path accumulate; TCR_EL1.HPDn=1 disables them.
HIER = [
    # (level-1 table bits, level-2 table bits, leaf AP, expected ap, pxn, uxn)
    (0, 0, 0b01, "RW", False, False),
    (aptable(0b01), 0, 0b01, "RW-EL1", False, False),
    (0, aptable(0b10), 0b01, "RO", False, False),
    (aptable(0b01), aptable(0b10), 0b01, "RO-EL1", False, False),
    (aptable(0b11), 0, 0b00, "RO-EL1", False, False),
    (aptable(0b10), 0, 0b10, "RO-EL1", False, False),
    (aptable(0b01), 0, 0b11, "RO-EL1", False, False),
    (PXNTABLE, 0, 0b01, "RW", True, False),
    (0, UXNTABLE, 0b01, "RW", False, True),
    (PXNTABLE, UXNTABLE, 0b11, "RO", True, True),
]


@pytest.mark.parametrize("t1,t2,leaf_ap,want_ap,want_pxn,want_uxn", HIER)
def test_hierarchical_permissions(t1, t2, leaf_ap, want_ap, want_pxn, want_uxn):
    t = Tables(4, 1, 512)
    t.leaf(0x1000, 3, 0x8000_1000, AF | ap(leaf_ap))
    for level, bits in ((1, t1), (2, t2)):
        slot = t.slot(0x1000, level)
        t.put(slot, t.get(slot) | bits)
    w = Walker(s1(4, 25, 40), t.mem)
    want = (want_ap, want_pxn, want_uxn)
    a = w.translate(0x1000).attrs
    assert (a["ap"], a["pxn"], a["uxn"]) == want
    (m,) = w.mappings()
    assert (m.attrs["ap"], m.attrs["pxn"], m.attrs["uxn"]) == want
    # TCR_EL1.HPD0=1: the table bits are ignored, the leaf's AP stands alone
    h = Walker(s1(4, 25, 40, hpd0=1), t.mem).translate(0x1000).attrs
    assert (h["ap"], h["pxn"], h["uxn"]) == (S1_AP_NAME[leaf_ap], False, False)


def test_hierarchical_permissions_upper_range_and_hpd1():
    t = Tables(4, 1, 512)
    off = 0x7F_FFFF_F000
    t.leaf(off, 3, 0x8000_1000, AF | ap(0b01))
    slot = t.slot(off, 1)
    t.put(slot, t.get(slot) | aptable(0b10) | UXNTABLE)
    va = 0xFFFF_FF80_0000_0000 | off
    a = Walker(s1_upper(4, 25, 40), t.mem).translate(va).attrs
    assert (a["ap"], a["uxn"]) == ("RO", True)
    a = Walker(s1_upper(4, 25, 40, hpd1=1), t.mem).translate(va).attrs
    assert (a["ap"], a["uxn"]) == ("RW", False)
    a = Walker(s1_upper(4, 25, 40, hpd0=1), t.mem).translate(va).attrs   # HPD0: TTBR0 only
    assert (a["ap"], a["uxn"]) == ("RO", True)


def test_table_restrictions_split_runs_at_a_table_boundary():
    """Two pages adjacent in IA and OA with equal leaf bits are one run only if the tables
    above them restrict them alike (run coalescing is the walker's contract)."""
    t = Tables(4, 1, 512)
    t.leaf(0x1F_F000, 3, 0x8000_0000, AF | ap(0b01))
    t.leaf(0x20_0000, 3, 0x8000_1000, AF | ap(0b01))
    w = Walker(s1(4, 25, 40), t.mem)
    assert runs(w) == [(0x1F_F000, 0x8000_0000, 0x2000, 3)]
    slot = t.slot(0x20_0000, 2)
    t.put(slot, t.get(slot) | aptable(0b10))
    w = Walker(s1(4, 25, 40), t.mem)
    assert runs(w) == [(0x1F_F000, 0x8000_0000, 0x1000, 3), (0x20_0000, 0x8000_1000, 0x1000, 3)]
    assert [m.attrs["ap"] for m in w.mappings()] == ["RW", "RO"]


def test_inherited_restrictions_follow_the_right_leaves():
    """Leaves dropped for an Address size fault must not shift table restrictions or error
    table addresses onto other leaves."""
    t = Tables(4, 1, 512)
    t.leaf(0x0, 3, 1 << 40, AF | ap(0b01))                 # too big: dropped
    t.leaf(0x1000, 3, 0x8000_1000, AF | ap(0b01))
    d = t.leaf(0x20_0000, 3, 0x8000_2000, AF | ap(0b01) | sh(0b01))
    slot = t.slot(0x20_0000, 2)
    t.put(slot, t.get(slot) | aptable(0b10))
    w = Walker(s1(4, 25, 40), t.mem)
    got = [(m.ia, m.oa, m.attrs["ap"]) for m in w.mappings()]
    assert got == [(0x1000, 0x8000_1000, "RW"), (0x20_0000, 0x8000_2000, "RO")]
    assert [(e.kind, e.ia, e.table) for e in w.errors] == [
        ("address-size", 0x0, t.table(0, 3)),
        ("reserved-shareability", 0x20_0000, t.table(0x20_0000, 3))]
    assert w.errors[1].descriptor == d


def test_inherited_restrictions_after_an_unreadable_table():
    """The first level-2 table is outside memory; the restriction on the second one must still
    reach its leaves (and only them)."""
    t = Tables(4, 1, 512)
    t.point(0x0, 1, 0x9000_0000)
    t.leaf(1 << 30, 2, 0x8000_0000, AF | ap(0b01))
    t.leaf(2 << 30, 2, 0x8020_0000, AF | ap(0b01))
    for ia, bits in ((1 << 30, aptable(0b10)), (2 << 30, PXNTABLE)):
        slot = t.slot(ia, 1)
        t.put(slot, t.get(slot) | bits)
    w = Walker(s1(4, 25, 40), t.mem)
    got = [(m.ia, m.attrs["ap"], m.attrs["pxn"]) for m in w.mappings()]
    assert got == [(1 << 30, "RO", False), (2 << 30, "RW", True)]
    assert kinds(w) == ["table-outside-memory"]


# =============================================================================================
# Runs, visitors, ranges
# =============================================================================================

def test_runs_coalesce_contiguous_equal_leaves_of_one_level():
    """Run coalescing (walker contract): IA and OA contiguous, same level, same attributes."""
    t = Tables(4, 1, 512)
    t.leaf(0x1000, 3, 0x8000_1000, AF)
    t.leaf(0x2000, 3, 0x8000_2000, AF)
    t.leaf(0x3000, 3, 0x8001_0000, AF)                    # OA jumps
    t.leaf(0x4000, 3, 0x8001_1000, AF | attrindx(1))      # attributes change
    t.leaf(0x6000, 3, 0x8001_3000, AF | attrindx(1))      # IA gap, same IA-OA delta
    w = Walker(s1(4, 25, 40), t.mem)
    assert runs(w) == [(0x1000, 0x8000_1000, 0x2000, 3), (0x3000, 0x8001_0000, 0x1000, 3),
                       (0x4000, 0x8001_1000, 0x1000, 3), (0x6000, 0x8001_3000, 0x1000, 3)]


def test_runs_across_levels():
    t = Tables(4, 1, 512, tables=4)
    t.leaf(0x1000, 3, 0x8000_1000, AF)
    t.leaf(0x2000, 3, 0x8000_2000, AF)
    t.leaf(0x20_0000, 2, 0x8060_0000, AF)
    t.leaf(0x40_0000, 2, 0x8080_0000, AF)
    t.leaf(0x7F_F000, 3, 0x809F_F000, AF)                 # last page of a level-3 table...
    t.leaf(0x80_0000, 2, 0x80A0_0000, AF)                 # ...then a block right after it
    t.leaf(0x4000_0000, 1, 0xC000_0000, AF)
    t.leaf(0x8000_0000, 1, 0x1_0000_0000, AF)
    w = Walker(s1(4, 25, 40), t.mem)
    assert runs(w) == [
        (0x1000, 0x8000_1000, 0x2000, 3),
        (0x20_0000, 0x8060_0000, 0x40_0000, 2),
        (0x7F_F000, 0x809F_F000, 0x1000, 3),
        (0x80_0000, 0x80A0_0000, 0x20_0000, 2),
        (0x4000_0000, 0xC000_0000, 0x8000_0000, 1),
    ]


def test_runs_when_a_level_reads_no_table():
    """The only level-3 table is outside memory: that level contributes no leaf."""
    t = Tables(4, 1, 512)
    t.point(0x0, 2, 0x9000_0000)
    w = Walker(s1(4, 25, 40), t.mem)
    assert w.mappings() == [] and kinds(w) == ["table-outside-memory"]
    t.leaf(0x20_0000, 2, 0x8020_0000, AF)
    w = Walker(s1(4, 25, 40), t.mem)
    assert runs(w) == [(0x20_0000, 0x8020_0000, 0x20_0000, 2)]
    assert kinds(w) == ["table-outside-memory"]


class Recorder(Visitor):
    def __init__(self):
        self.calls = []

    def leaves(self, batch: LeafBatch) -> None:
        inh = None if batch.inherited is None else batch.inherited.tolist()
        self.calls.append(("leaves", batch.level, batch.ia.tolist(), batch.oa.tolist(),
                           batch.desc.tolist(), inh))

    def tables(self, level, ia, desc, next_table) -> None:
        self.calls.append(("tables", level, ia.tolist(), desc.tolist(), next_table.tolist()))


def test_visitor_sees_tables_and_leaves_per_level():
    t, d = _mixed_image()
    w = Walker(s1(4, 25, 40), t.mem)
    rec = Recorder()
    w.walk(rec)
    l2, l3 = t.table(0, 2), t.table(0, 3)
    assert rec.calls == [
        ("leaves", 1, [0x4000_0000], [0xC000_0000], [d["blk1"]], [0]),
        ("tables", 1, [0], [l2 | TABLE], [l2]),
        ("leaves", 2, [0x20_0000], [0x8020_0000], [d["blk2"]], [0]),
        ("tables", 2, [0, 0x40_0000], [l3 | TABLE, d["outside"]], [l3, 0x9000_0000]),
        ("leaves", 3, [0x1000, 0x2000, 0x5000], [0x8000_1000, 0x8000_2000, (1 << 40) - 0x1000],
         [d["page"], d["noaf"], d["top"]], [0, 0, 0]),
    ]
    rec = Recorder()
    Walker(s1(4, 25, 40, hpd0=1), t.mem).walk(rec)
    assert all(c[5] is None for c in rec.calls if c[0] == "leaves")


@pytest.mark.parametrize("start,end,leaves,errs", [
    (0x2000, 0x20_0001, [(2, [0x20_0000]), (3, [0x2000, 0x5000])],
     ["reserved-descriptor", "address-size"]),
    (0x2800, 0x2801, [(3, [0x2000])], []),
    (0x1000, 0x2000, [(3, [0x1000])], []),
    (0x40_0000, 0x60_0001, [], ["address-size", "table-outside-memory"]),
    (0x3FFF_FFFF, 0x4000_0001, [(1, [0x4000_0000])], []),
    (0x3000_0000, None, [(1, [0x4000_0000])], []),
    (0x0, 1 << 39, [(1, [0x4000_0000]), (2, [0x20_0000]), (3, [0x1000, 0x2000, 0x5000])],
     ["address-size", "table-outside-memory", "reserved-descriptor", "address-size"]),
])
def test_walk_a_subrange(start, end, leaves, errs):
    """walk(start, end) visits exactly the leaves overlapping [start, end)."""
    t, _ = _mixed_image()
    w = Walker(s1(4, 25, 40), t.mem)
    rec = Recorder()
    w.walk(rec, start, end)
    assert [(c[1], c[2]) for c in rec.calls if c[0] == "leaves" and c[2]] == leaves
    assert kinds(w) == errs


def test_upper_range_addresses():
    """TTBR1 (T1SZ=25): input addresses 0xFFFF_FF80_0000_0000 .. all ones; the table index
    comes from the low 39 bits."""
    fill = 0xFFFF_FF80_0000_0000
    t = Tables(4, 1, 512)
    t.leaf(0x7F_FFFF_F000, 3, 0x8000_1000, AF)
    bad = t.set(0x7F_FFFF_E000, 3, 0x8000_2000 | AF | BLOCK)
    t.point(0x7F_FFC0_0000, 2, 0x9000_0000)
    w = Walker(s1_upper(4, 25, 40), t.mem)
    assert outcome(w.translate(MASK64 - 0xFFF + 0x123)) == ("ok", 0x8000_1123, 3, 0x1000)
    assert outcome(w.translate(fill | 0x7F_FFFF_E000)) == ("fault", "translation", 3)
    assert outcome(w.translate(fill | 0x7F_FFC0_0000)) == ("fault", "external-walk", 3)
    assert runs(w) == [(MASK64 - 0xFFF, 0x8000_1000, 0x1000, 3)]
    assert [(e.kind, e.ia) for e in w.errors] == [
        ("table-outside-memory", fill | 0x7F_FFC0_0000), ("reserved-descriptor", MASK64 - 0x1FFF)]
    assert w.errors[1].descriptor == bad
    l3 = t.table(0x7F_FFFF_F000, 3)
    assert [e.table for e in w.errors] == [0x9000_0000, l3]
    # the same from a walk of part of the range (the unreadable table is still in it)
    w = Walker(s1_upper(4, 25, 40), t.mem)
    w.walk(Recorder(), fill | 0x7F_FFC0_0000, MASK64)
    assert [(e.kind, e.ia, e.table) for e in w.errors] == [
        ("table-outside-memory", fill | 0x7F_FFC0_0000, 0x9000_0000),
        ("reserved-descriptor", MASK64 - 0x1FFF, l3)]
    rec = Recorder()
    Walker(s1_upper(4, 25, 40), t.mem).walk(rec, MASK64 - 0xFFF, MASK64)
    assert [(c[1], c[2]) for c in rec.calls if c[0] == "leaves"] == [(3, [0x7F_FFFF_F000])]


# =============================================================================================
# Walker contract: cycles, budgets, error caps, memory back-ends
# =============================================================================================

def test_table_cycles():
    """A table descriptor pointing back at a table on its own path (itself, its parent, the
    root) is reported as a table-cycle and not followed; a table reached twice from different
    parents (aliasing) is walked twice.  This is the walker's contract: the hardware would
    re-read such a table as the next level, which the walker refuses to do."""
    t = Tables(4, 0, 512)                        # 48-bit VA, level 0 start
    l1 = t.table(0, 1)
    l2 = t.table(0, 2)
    blk = t.leaf(0x0, 2, 0x8000_0000, AF)
    d_l1_root = t.point(1 << 30, 1, t.root)      # level 1 -> root (its parent)
    t.point(2 << 30, 1, l2)                      # alias: not a cycle
    d_l2_l1 = t.point(3 << 21, 2, l1)            # level 2 -> its parent
    d_l2_root = t.point(4 << 21, 2, t.root)      # level 2 -> root
    d_l2_self = t.point(5 << 21, 2, l2)          # level 2 -> itself
    w = Walker(s1(4, 16, 48), t.mem)
    assert runs(w) == [(0, 0x8000_0000, 0x20_0000, 2), (2 << 30, 0x8000_0000, 0x20_0000, 2)]
    cyc = [(e.level, e.ia, e.table, e.descriptor) for e in w.errors]
    assert kinds(w) == ["table-cycle"] * 7
    assert cyc == [(1, 1 << 30, l1, d_l1_root),
                   (2, 3 << 21, l2, d_l2_l1), (2, 4 << 21, l2, d_l2_root),
                   (2, 5 << 21, l2, d_l2_self),
                   (2, (2 << 30) + (3 << 21), l2, d_l2_l1),
                   (2, (2 << 30) + (4 << 21), l2, d_l2_root),
                   (2, (2 << 30) + (5 << 21), l2, d_l2_self)]
    assert w.errors[3].message == ("level 2: table descriptor points back to a table on its "
                                   f"own path (descriptor {d_l2_self:#x})")
    assert outcome(w.translate(5 << 21)) == ("fault", "table-cycle", 2)
    assert outcome(w.translate(1 << 30)) == ("fault", "table-cycle", 1)
    assert outcome(w.translate((2 << 30) + 0x1234)) == ("ok", 0x8000_1234, 2, 0x20_0000)
    assert w.translate(0x1234).descriptor == blk


@pytest.mark.parametrize("max_entries,walked", [(1536, 3), (1024, 2), (512, 1), (100, 1)])
def test_entry_budget(max_entries, walked):
    """The per-level entry budget (walker contract): at most max_entries // entries tables of
    a level are read, never fewer than one; the rest is one named error."""
    t = Tables(4, 1, 512)
    for i in range(3):
        t.leaf(i << 30, 2, (i + 1) << 30, AF | ap(0b01))
    slot = t.slot(0, 1)
    t.put(slot, t.get(slot) | aptable(0b10))     # table 0 is read-only below
    w = Walker(s1(4, 25, 40), t.mem, max_entries=max_entries)
    maps = w.mappings()
    assert [(m.ia, m.oa, m.size, m.level) for m in maps] == [
        (i << 30, (i + 1) << 30, 0x20_0000, 2) for i in range(walked)]
    assert [m.attrs["ap"] for m in maps] == ["RO", "RW", "RW"][:walked]
    if walked == 3:
        assert w.errors == []
    else:
        assert [(e.kind, e.level) for e in w.errors] == [("walk-too-large", 2)]
        assert w.errors[0].message.startswith(f"level 2: 3 tables to read; only the first "
                                              f"{walked} are walked")
    assert outcome(w.translate((2 << 30) + 5)) == ("ok", (3 << 30) + 5, 2, 0x20_0000)


def test_error_list_is_capped_and_the_rest_counted():
    """Walker contract: 1000 errors are kept one by one, further ones only counted, and
    error_dicts() ends with one "truncated" entry saying how many were left out.  16K with a
    47-bit VA starts at level 1 (2048 entries) where 16K has no blocks."""
    t = Tables(16, 1, 2048)
    for i in range(2048):
        t.put(t.root + 8 * i, i << 36 | AF | BLOCK)
    r = s1(16, 17, 48, ttbr=BASE + 0x2000)     # 16 KiB root misaligned by 8 KiB
    w = Walker(r, t.mem)
    assert w.mappings() == []
    assert len(w.errors) == 1000
    assert (w.errors[0].kind, w.errors[0].level) == ("misaligned-table-base", 1)
    assert w.errors[-1].ia == 998 << 36
    assert w.error_counts == {"misaligned-table-base": 1, "block-not-allowed": 2048}
    out = w.error_dicts()
    assert len(out) == 1001 and out[-1]["kind"] == "truncated"
    assert out[-1]["message"].startswith("1049 more errors not listed")
    w.mappings()
    assert len(w.errors) == 1000
    assert w.error_counts == {"misaligned-table-base": 2, "block-not-allowed": 4096}
    assert w.error_dicts()[-1]["message"].startswith("3098 more errors not listed")


def test_one_error_over_the_cap():
    t = Tables(16, 1, 2048)
    for i in range(1001):
        t.put(t.root + 8 * i, i << 36 | AF | BLOCK)
    w = Walker(s1(16, 17, 48), t.mem)
    w.mappings()
    assert len(w.errors) == 1000 and w.error_counts == {"block-not-allowed": 1001}
    out = w.error_dicts()
    assert len(out) == 1001
    assert out[-1]["kind"] == "truncated" and out[-1]["message"].startswith("1 more errors")


def test_walk_error_as_dict():
    e = WalkError("address-size", "msg", 2, 0x1000, 0x4000_0000, 0x3)
    assert e.as_dict() == {"kind": "address-size", "level": 2, "ia": 0x1000,
                           "table": 0x4000_0000, "descriptor": 0x3, "message": "msg"}


class ReadOnly:
    """A memory back-end with only read(pa, n) (the minimum the interface asks for)."""

    def __init__(self, mem):
        self.mem = mem
        self.reads = 0

    def read(self, pa, n):
        self.reads += 1
        return self.mem.read(pa, n)


class Spy(ImageMemory):
    def __init__(self, buf, base):
        super().__init__(buf, base)
        self.calls = {"read": 0, "read_tables": 0}

    def read(self, pa, n):
        self.calls["read"] += 1
        return super().read(pa, n)

    def read_tables(self, pas, entries):
        self.calls["read_tables"] += 1
        return super().read_tables(pas, entries)


def test_one_read_tables_call_per_level():
    """Walker contract (module docstring): every table of a level is read in one
    read_tables call when the back-end has one."""
    t, _ = _mixed_image()
    spy = Spy(t.buf, BASE)
    Walker(s1(4, 25, 40), spy).mappings()
    assert spy.calls == {"read": 0, "read_tables": 3}      # levels 1, 2 and 3


def test_memory_with_only_read():
    t, _ = _mixed_image()
    ro = ReadOnly(t.mem)
    w = Walker(s1(4, 25, 40), ro)
    full = Walker(s1(4, 25, 40), t.mem)
    assert runs(w) == runs(full) and kinds(w) == kinds(full)
    assert outcome(w.translate(0x1123)) == ("ok", 0x8000_1123, 3, 0x1000)
    assert ro.reads > 0


def _stage2_for_nesting():
    """Stage 2, 4K, 32-bit IPA (level 2 start, 4 concatenated tables)."""
    return Tables(4, 2, 2048, tables=10)


def test_translated_memory_reads_through_stage2():
    """IPA -> PA one granule page at a time: a read that crosses a page boundary takes each
    part from its own PA; an unmapped IPA is not memory."""
    t = _stage2_for_nesting()
    a, b = t.alloc(), t.alloc()
    t.leaf(0x1000, 3, b, S2_RW_WB)              # IPA 0x1000 -> b, IPA 0x2000 -> a (reversed)
    t.leaf(0x2000, 3, a, S2_RW_WB)
    t.buf[b - BASE + 0xFF8:b - BASE + 0x1000] = b"ABCDEFGH"
    t.buf[a - BASE:a - BASE + 8] = b"IJKLMNOP"
    ro = ReadOnly(t.mem)
    tm = TranslatedMemory(Walker(s2(4, 32, 0, 40), ro), t.mem)
    assert tm.read(0x2FF8, 8) == bytes(8)       # ends exactly where unmapped IPA 0x3000 starts
    assert tm.read(0x1FFB, 3) == b"DEF"
    assert tm.read(0x1FF8, 16) == b"ABCDEFGHIJKLMNOP"
    assert tm.read(0x1000, 0x2000) == bytes(t.buf[b - BASE:b - BASE + 0x1000]) + bytes(
        t.buf[a - BASE:a - BASE + 0x1000])
    walks = ro.reads
    assert tm.read(0x1FFC, 8) == b"EFGHIJKL"    # pages already translated: no new walk
    assert ro.reads == walks
    with pytest.raises(PhysMemError) as err:
        tm.read(0x2FF8, 16)
    assert "IPA 0x3000 is not mapped at stage 2: translation fault at level 3" in str(err.value)
    walks = ro.reads
    with pytest.raises(PhysMemError):
        tm.read(0x3000, 1)
    assert ro.reads == walks                    # the fault is remembered too


def test_stage1_walk_through_stage2():
    """A guest's stage-1 tables sit at IPAs: a stage-1 walk reads them through stage 2."""
    t = _stage2_for_nesting()
    s1_root, s1_l2, s1_l3 = t.alloc(), t.alloc(), t.alloc()
    # stage 2: IPA 0x10000 + i*0x1000 -> the three stage-1 tables, scattered
    for i, pa in enumerate((s1_l3, s1_root, s1_l2)):
        t.leaf(0x1_0000 + i * 0x1000, 3, pa, S2_RW_WB)
    ipa_root, ipa_l2, ipa_l3 = 0x1_1000, 0x1_2000, 0x1_0000
    # stage 1 (4K, 39-bit VA, level 1 start): VA 0x4020_3000 -> IPA 0x7777_7000
    t.put(s1_root + 8 * 1, ipa_l2 | TABLE)
    t.put(s1_l2 + 8 * 1, ipa_l3 | TABLE)
    t.put(s1_l3 + 8 * 3, 0x7777_7000 | AF | PAGE)
    tm = TranslatedMemory(Walker(s2(4, 32, 0, 40), t.mem), t.mem)
    w = Walker(s1(4, 25, 40, ttbr=ipa_root), tm)
    assert outcome(w.translate(0x4020_3ABC)) == ("ok", 0x7777_7ABC, 3, 0x1000)
    assert runs(w) == [(0x4020_3000, 0x7777_7000, 0x1000, 3)]
    # a stage-1 table at an IPA stage 2 does not map: the walk cannot read it
    t.put(s1_root + 8 * 2, 0x5_0000 | TABLE)
    w = Walker(s1(4, 25, 40, ttbr=ipa_root), TranslatedMemory(Walker(s2(4, 32, 0, 40), t.mem),
                                                                t.mem))
    # (walker contract: the back-end says the IPA is no memory, so this is reported like a
    # table outside memory, not as the stage-2 fault on a stage-1 walk hardware would take)
    assert outcome(w.translate(0x8000_0000)) == ("fault", "external-walk", 2)

