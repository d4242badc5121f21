"""Memory-type decoding and combination (gdbplugin.arch.memtype) against the Arm ARM.

Every expected value below is read from the Arm Architecture Reference Manual for A-profile,
DDI 0487 (section names and numbers of issue M.a), never from running the code:

* MAIR_EL1 Attr<n> encodings: D24.2 "MAIR_EL1, Memory Attribute Indirection Register (EL1)".
* Stage 2 MemAttr without FWB: D8.6.5 "Stage 2 memory type and Cacheability attributes when
  FWB is disabled" (Table D8-96), combined by D8.6.5.1/D8.6.5.2 (Tables D8-97, D8-98).
* Stage 2 MemAttr with FEAT_S2FWB: D8.6.6 "... when FWB is enabled" (Tables D8-100, D8-101)
  and the pseudocode J1.1.4.45 AArch64.S2ApplyFWBMemAttrs().
* Shareability: D8.6.2 "Stage 1 Shareability attributes", D8.6.7 "Stage 2 Shareability
  attributes", D8.6.7.1 "Combining the stage 1 and stage 2 Shareability attributes for Normal
  memory" (Table D8-103).
* Stage 1 off / HCR_EL2.DC: D8.2.12.1 "Behavior when stage 1 address translation is disabled"
  and the HCR_EL2.DC description (D24.2 "HCR_EL2, Hypervisor Configuration Register").
* SCTLR_EL1.{C, I}, HCR_EL2.{CD, ID}: D7.5.5 "Enabling and disabling the caching of memory
  accesses", and the SCTLR_EL1 / HCR_EL2 field descriptions.

MemType is the module's public result type; an expected MemType written here is just the
architectural answer spelled in that type (Device type, inner/outer cacheability, Shareability,
and `reserved` for "a reserved or UNPREDICTABLE encoding was involved").

The HCR_EL2.DC, FWB-Shareability, FEAT_XS Device and Device-fetch tests found places where
memtype.py disagreed with the Arm ARM; each names the rule it checks.
"""
from __future__ import annotations

import pytest

from gdbplugin.arch.memtype import (MemType, combine, effective, from_mair, from_s2_memattr,
                                    s2_memattr_name, stage1_type)

# -- register bits, from the field descriptions in DDI 0487 D24.2 -------------------------------
SCTLR_M = 1 << 0       # SCTLR_EL1.M, bit [0]: stage 1 MMU enable for EL1&0
SCTLR_C = 1 << 2       # SCTLR_EL1.C, bit [2]: stage 1 cacheability control, data accesses
SCTLR_I = 1 << 12      # SCTLR_EL1.I, bit [12]: stage 1 cacheability control, instruction accesses
HCR_VM = 1 << 0        # HCR_EL2.VM, bit [0]: stage 2 enable
HCR_DC = 1 << 12       # HCR_EL2.DC, bit [12]: default cacheability
HCR_CD = 1 << 32       # HCR_EL2.CD, bit [32]: stage 2 data access cacheability disable
HCR_ID = 1 << 33       # HCR_EL2.ID, bit [33]: stage 2 instruction access cacheability disable
HCR_FWB = 1 << 46      # HCR_EL2.FWB, bit [46]: forced write-back (FEAT_S2FWB)

MMU_ON = SCTLR_M | SCTLR_C | SCTLR_I
FWB = HCR_VM | HCR_FWB
SHAREABILITIES = ("NSH", "ISH", "OSH")
KINDS = ("Device", "Normal-NC", "Normal-WT", "Normal-WB")


def dev(kind: str, reserved: bool = False) -> MemType:
    """Device memory; always treated as Outer Shareable (D8.6.2, "If a region is mapped as
    Device memory or Normal Non-cacheable memory ... effective Shareability ... Outer
    Shareable")."""
    return MemType(device=kind, sh="OSH", reserved=reserved)


def normal(inner: str, outer: str | None = None, sh: str = "OSH",
           reserved: bool = False) -> MemType:
    """Normal memory with the given Inner and Outer cacheability (NC, WT or WB)."""
    return MemType(inner=inner, outer=outer or inner, sh=sh, reserved=reserved)


NC = normal("NC")                  # Normal iNC oNC is always Outer Shareable (D8.6.2)
WB_ISH = normal("WB", sh="ISH")
WB_NSH = normal("WB", sh="NSH")
WT_ISH = normal("WT", sh="ISH")


def same_type(a: MemType, b: MemType) -> bool:
    """Equal memory type and cacheability, shareability not compared (used where the
    Shareability is IMPLEMENTATION DEFINED, see D8.6.2 "it is IMPLEMENTATION DEFINED whether
    ... the Shareability attribute configured for stage 1 is input into stage 2")."""
    return (a.device, a.inner, a.outer, a.reserved) == (b.device, b.inner, b.outer, b.reserved)


# == MAIR_EL1 Attr<n> (D24.2 MAIR_EL1) ==========================================================
# 0b0000dd00 is Device, dd = 00 nGnRnE, 01 nGnRE, 10 nGRE, 11 GRE.  0booooiiii with both
# nibbles non-zero is Normal; per nibble: 0b00RW (RW!=00) Write-Through Transient, 0b0100
# Non-cacheable, 0b01RW (RW!=00) Write-Back Transient, 0b10RW Write-Through Non-transient,
# 0b11RW Write-Back Non-transient.  R/W are only allocation hints: they never change the type.
# The descriptor shareability ("ISH" here) is kept for cacheable memory, and replaced by Outer
# Shareable for Normal iNC oNC (D8.6.2).
MAIR_CASES = [
    (0x00, dev("nGnRnE")), (0x04, dev("nGnRE")), (0x08, dev("nGRE")), (0x0C, dev("GRE")),
    # Write-Back Non-transient, RW = 11, 10, 01, 00 (no-allocate is still Write-Back).
    (0xFF, WB_ISH), (0xEE, WB_ISH), (0xDD, WB_ISH), (0xCC, WB_ISH),
    # Write-Through Non-transient, RW = 11, 10, 01, 00.
    (0xBB, WT_ISH), (0xAA, WT_ISH), (0x99, WT_ISH), (0x88, WT_ISH),
    # Write-Back Transient (0b01RW, RW != 00).
    (0x77, WB_ISH), (0x66, WB_ISH), (0x55, WB_ISH),
    # Write-Through Transient (0b00RW, RW != 00).
    (0x33, WT_ISH), (0x22, WT_ISH), (0x11, WT_ISH),
    # Non-cacheable inner and outer: Outer Shareable whatever the descriptor says.
    (0x44, NC),
    # Inner and outer differ (outer = Attr[7:4], inner = Attr[3:0]); still cacheable at one
    # level, so the descriptor shareability stands.
    (0x4F, normal("WB", "NC", sh="ISH")), (0xF4, normal("NC", "WB", sh="ISH")),
    (0x8F, normal("WB", "WT", sh="ISH")), (0xF8, normal("WT", "WB", sh="ISH")),
    (0x48, normal("WT", "NC", sh="ISH")), (0x1C, normal("WB", "WT", sh="ISH")),
    (0x74, normal("NC", "WB", sh="ISH")), (0x47, normal("WB", "NC", sh="ISH")),
    # FEAT_XS: 0b01000000 Normal iNC oNC (XS=0); 0b10100000 Normal iWT oWT RA-nWA Non-transient
    # (XS=0).  FEAT_MTE2: 0b11110000 Tagged Normal iWB oWB RA-WA Non-transient.
    (0x40, NC), (0xA0, WT_ISH), (0xF0, WB_ISH),
]


@pytest.mark.parametrize("attr,expected", [pytest.param(a, e, id=f"{a:#04x}")
                                           for a, e in MAIR_CASES])
def test_mair_attr_decoding(attr, expected):
    """D24.2 MAIR_EL1 Attr<n> encoding table (Device dd, Normal oooo/iiii, FEAT_XS/MTE2)."""
    assert from_mair(attr, "ISH") == expected


# 0b0000dd1x is UNPREDICTABLE; 0bxxxx0000 other than 0x00 (Device), 0x40, 0xA0, 0xF0 is
# UNPREDICTABLE (the iiii=0b0000 row says "See encoding of Attr").
MAIR_UNPREDICTABLE = [0x02, 0x03, 0x06, 0x07, 0x0A, 0x0B, 0x0E, 0x0F,
                      0x10, 0x20, 0x30, 0x50, 0x60, 0x70, 0x80, 0x90, 0xB0, 0xC0, 0xD0, 0xE0]


@pytest.mark.parametrize("attr", MAIR_UNPREDICTABLE, ids=hex)
def test_mair_unpredictable_encodings_are_flagged(attr):
    """D24.2 MAIR_EL1: 0b0000dd1x and the unlisted 0bxxxx0000 values are UNPREDICTABLE."""
    assert from_mair(attr, "ISH").reserved is True


@pytest.mark.parametrize("attr,kind", [(0x01, "nGnRnE"), (0x05, "nGnRE"), (0x09, "nGRE"),
                                       (0x0D, "GRE")], ids=["0x01", "0x05", "0x09", "0x0d"])
def test_mair_feat_xs_device_encodings(attr, kind):
    """D24.2 MAIR_EL1: Attr 0b0000dd01 is, with FEAT_XS, Device-<dd> with XS=0."""
    assert from_mair(attr, "ISH") == dev(kind)


def test_every_mair_and_stage2_encoding_gives_a_classifiable_type():
    """Whatever a reserved/UNPREDICTABLE encoding decodes to, the result must still be a
    memory type the cache model can classify (MemType.kind's documented classes) with an
    architectural Shareability; for encodings the Arm ARM defines, Device vs Normal must be
    right (MAIR Attr[7:4]==0 with dd00 is Device; oooo,iiii != 0 is Normal; stage 2
    MemAttr[3:2]==00 is Device, Table D8-96)."""
    for sh in SHAREABILITIES:
        for attr in range(256):
            t = from_mair(attr, sh)
            assert t.kind in KINDS and t.sh in SHAREABILITIES and isinstance(t.reserved, bool)
            if attr >> 4 == 0 and attr & 3 == 0:
                assert t.is_device
            if attr >> 4 and attr & 0xF:
                assert not t.is_device
        for memattr in range(16):
            t = from_s2_memattr(memattr, sh)
            assert t.kind in KINDS and t.sh in SHAREABILITIES and isinstance(t.reserved, bool)
            assert t.is_device == (memattr >> 2 == 0)


def test_as_dict_reports_the_architectural_facts():
    """D7.5.3: cacheability applies only to Normal memory, Device is always Non-cacheable; a
    Normal type is cacheable when either the Inner or the Outer attribute is WT or WB."""
    assert from_mair(0xFF, "ISH").as_dict() == {
        "type": "Normal-WB", "kind": "Normal-WB", "cacheable": True, "sh": "ISH",
        "reserved": False}
    assert from_mair(0x04, "ISH").as_dict() == {
        "type": "Device-nGnRE", "kind": "Device", "cacheable": False, "sh": "OSH",
        "reserved": False}
    assert from_mair(0xF4, "ISH").cacheable and not from_mair(0x44, "ISH").cacheable


# == Stage 2 MemAttr[3:0] with FWB = 0 (D8.6.5, Table D8-96) =====================================
S2_CASES = [
    (0b0000, dev("nGnRnE")), (0b0001, dev("nGnRE")), (0b0010, dev("nGRE")), (0b0011, dev("GRE")),
    (0b0101, NC),                                   # Outer NC, Inner NC: Outer Shareable
    (0b0110, normal("WT", "NC", sh="ISH")), (0b0111, normal("WB", "NC", sh="ISH")),
    (0b1001, normal("NC", "WT", sh="ISH")), (0b1010, WT_ISH),
    (0b1011, normal("WB", "WT", sh="ISH")),
    (0b1101, normal("NC", "WB", sh="ISH")), (0b1110, normal("WT", "WB", sh="ISH")),
    (0b1111, WB_ISH),
]


@pytest.mark.parametrize("memattr,expected", [pytest.param(m, e, id=f"{m:04b}")
                                              for m, e in S2_CASES])
def test_stage2_memattr_without_fwb(memattr, expected):
    """Table D8-96 Stage 2 MemAttr[3:0] encoding; stage 2 Device and Normal NC are treated as
    Outer Shareable (D8.6.7, "For Device memory and Normal Non-cacheable memory ...")."""
    assert from_s2_memattr(memattr, "ISH") == expected


@pytest.mark.parametrize("memattr", [0b0100, 0b1000, 0b1100], ids=bin)
def test_stage2_reserved_memattr(memattr):
    """Table D8-96: 0100 (without FEAT_MTE_PERM), 1000 and 1100 are Reserved, CONSTRAINED
    UNPREDICTABLE."""
    assert from_s2_memattr(memattr, "ISH").reserved is True


@pytest.mark.parametrize("memattr,fwb,name", [
    # FWB = 1, Table D8-100: MemAttr[2] = 0 gives the Device type from MemAttr[1:0].
    (0b000, True, "Device-nGnRnE"), (0b001, True, "Device-nGnRE"),
    (0b010, True, "Device-nGRE"), (0b011, True, "Device-GRE"),
    # FWB = 1, Table D8-101: 0b100 Reserved; 0b101 Normal Non-cacheable (unless stage 1 is
    # Device); 0b110 Normal Write-Back whatever stage 1 says; 0b111 the stage 1 type.
    (0b100, True, "reserved"), (0b101, True, "Normal-NC"),
    (0b110, True, "Normal-WB (forced)"), (0b111, True, "stage-1 type"),
    # FWB = 0, Table D8-96.
    (0b0001, False, "Device-nGnRE"), (0b1111, False, "Normal-WB"),
    (0b0111, False, "Normal-iWB-oNC"),
])
def test_stage2_memattr_names(memattr, fwb, name):
    """The walker's label for a stage 2 MemAttr on its own names its architectural meaning."""
    assert s2_memattr_name(memattr, fwb) == name


# == Stage 1 type of an EL1&0 access (D8.2.12.1, D7.5.5) ==========================================
DEV_nGnRE = dev("nGnRE")
STAGE1_CASES = [
    # (id, SCTLR_EL1, HCR_EL2, descriptor type, instruction fetch?, expected)
    # D8.2.12.1: stage 1 off, HCR_EL2.DC=0: data accesses are Device-nGnRnE, whatever C says.
    ("off-data", 0, HCR_VM, None, False, dev("nGnRnE")),
    ("off-data-C-I", SCTLR_C | SCTLR_I, HCR_VM, None, False, dev("nGnRnE")),
    # ... instruction fetches are Normal, Outer Shareable: iWT oWT if SCTLR_EL1.I=1, else NC.
    ("off-ifetch-I1", SCTLR_I, HCR_VM, None, True, normal("WT", sh="OSH")),
    ("off-ifetch-I0", 0, HCR_VM, None, True, NC),
    ("off-ifetch-C1-I0", SCTLR_C, HCR_VM, None, True, NC),
    # D8.2.12.1 + HCR_EL2.DC: Normal Non-shareable iWB oWB RA-WA, for data and instruction
    # accesses alike (D7.5.5: "This applies to translations for both data and instruction").
    ("off-DC-data", 0, HCR_VM | HCR_DC, None, False, WB_NSH),
    ("off-DC-ifetch", 0, HCR_VM | HCR_DC, None, True, WB_NSH),
    # Stage 1 on: the descriptor's type, with SCTLR_EL1.C=0 making data accesses to Normal
    # memory Non-cacheable (D7.5.5), which are then Outer Shareable (D8.6.2).
    ("on-data", MMU_ON, HCR_VM, WB_ISH, False, WB_ISH),
    ("on-data-C0", SCTLR_M | SCTLR_I, HCR_VM, WB_ISH, False, NC),
    ("on-data-C0-mixed", SCTLR_M, HCR_VM, normal("WB", "NC", sh="ISH"), False, NC),
    ("on-data-C0-device", SCTLR_M, HCR_VM, DEV_nGnRE, False, DEV_nGnRE),   # C: Normal only
    ("on-data-I0", SCTLR_M | SCTLR_C, HCR_VM, WB_ISH, False, WB_ISH),      # I: not data
    # SCTLR_EL1.I=0 makes instruction accesses to Normal memory Non-cacheable; C does not.
    ("on-ifetch-I0", SCTLR_M | SCTLR_C, HCR_VM, WB_ISH, True, NC),
    ("on-ifetch-C0", SCTLR_M | SCTLR_I, HCR_VM, WT_ISH, True, WT_ISH),
]


@pytest.mark.parametrize("sctlr,hcr,desc,instr,expected",
                         [pytest.param(*c[1:], id=c[0]) for c in STAGE1_CASES])
def test_stage1_type(sctlr, hcr, desc, instr, expected):
    if instr:
        assert stage1_type(sctlr, hcr, desc, instr=True) == expected
    else:   # a data access is the default, as the model engine calls it
        assert stage1_type(sctlr, hcr, desc) == expected


def test_stage1_on_needs_the_descriptor_type():
    with pytest.raises(ValueError):
        stage1_type(MMU_ON, HCR_VM, None)


@pytest.mark.parametrize("desc", [DEV_nGnRE, NC, WT_ISH], ids=["device", "nc", "wt"])
def test_hcr_dc_overrides_an_enabled_stage1(desc):
    """HCR_EL2.DC=1: the PE behaves as if SCTLR_EL1.M were 0 (D8.2.12.1 RLBPTY; pseudocode
    AArch64.S1Enabled needs HCR_EL2.<DC,TGE> == '00'): Normal iWB oWB Non-shareable."""
    assert stage1_type(MMU_ON, HCR_VM | HCR_DC, desc) == WB_NSH


@pytest.mark.parametrize("memattr,expected", [(0b1111, WB_NSH), (0b0101, NC),
                                              (0b0001, DEV_nGnRE)], ids=["WB", "NC", "nGnRE"])
def test_hcr_dc_without_vm_still_means_default_cacheable_and_stage2(memattr, expected):
    """HCR_EL2.DC=1: the PE behaves as if HCR_EL2.VM were 1 (pseudocode walkparams.vm =
    HCR_EL2.VM OR HCR_EL2.DC): stage 2 applies."""
    # Stage 1: Normal iWB oWB NSH (DC); stage 2 enabled (VM behaves as 1) and combined.
    assert effective(0, HCR_DC, None, memattr, "NSH") == expected


@pytest.mark.parametrize("desc,memattr", [(DEV_nGnRE, 0b1111), (WB_ISH, 0b0001)],
                         ids=["stage1-device", "stage2-device"])
def test_instruction_fetch_from_device_is_normal_nc(desc, memattr):
    """K1.1.22 'Instruction fetches from Device memory': treated as Normal Non-cacheable
    (pseudocode AArch64.S1TreatAsNormalNC / AArch64.S2TreatAsNormalNC)."""
    assert effective(MMU_ON, HCR_VM, desc, memattr, instr=True) == NC


# == Combining stage 1 and stage 2 with FWB = 0 (D8.6.5.1, D8.6.5.2, D8.6.7.1) ==================
GRE, nGRE, nGnRnE = dev("GRE"), dev("nGRE"), dev("nGnRnE")
COMBINE_CASES = [
    # (id, stage 1 type, stage 2 MemAttr[3:0], stage 2 SH, expected)
    # Table D8-97: Device has precedence over Normal; non-Gathering over Gathering;
    # non-Reordering over Reordering; no Early write acknowledge over Early write ack.
    ("normal+nGnRnE", WB_ISH, 0b0000, "ISH", nGnRnE),
    ("normal+nGRE", WB_ISH, 0b0010, "ISH", nGRE),
    ("nGRE+normal", nGRE, 0b1111, "ISH", nGRE),
    ("GRE+nGnRE", GRE, 0b0001, "ISH", DEV_nGnRE),
    ("nGnRE+GRE", DEV_nGnRE, 0b0011, "ISH", DEV_nGnRE),
    ("GRE+nGRE", GRE, 0b0010, "ISH", nGRE),
    ("nGnRnE+GRE", nGnRnE, 0b0011, "ISH", nGnRnE),
    # Table D8-98, applied to Inner and Outer separately: NC if either is NC, else WT if
    # either is WT, else WB.
    ("WB+WB", WB_ISH, 0b1111, "ISH", WB_ISH),
    ("WB+WT", WB_ISH, 0b1010, "ISH", WT_ISH),
    ("WT+WB", WT_ISH, 0b1111, "ISH", WT_ISH),
    ("WB+NC", WB_ISH, 0b0101, "ISH", NC),
    ("NC+WB", NC, 0b1111, "ISH", NC),
    ("WB+oNCiWB", WB_ISH, 0b0111, "ISH", normal("WB", "NC", sh="ISH")),
    ("iWBoWT+oWBiNC", normal("WB", "WT", sh="ISH"), 0b1101, "ISH", normal("NC", "WT", sh="ISH")),
    ("iWToWB+oWTiWB", normal("WT", "WB", sh="ISH"), 0b1011, "ISH", normal("WT", "WT", sh="ISH")),
    # Table D8-103: the more Shareable of the two assignments wins.
    ("sh-NSH+ISH", WB_NSH, 0b1111, "ISH", WB_ISH),
    ("sh-ISH+NSH", WB_ISH, 0b1111, "NSH", WB_ISH),
    ("sh-NSH+NSH", WB_NSH, 0b1111, "NSH", WB_NSH),
    ("sh-NSH+OSH", WB_NSH, 0b1111, "OSH", normal("WB", sh="OSH")),
    ("sh-OSH+NSH", normal("WB", sh="OSH"), 0b1111, "NSH", normal("WB", sh="OSH")),
    ("sh-ISH+OSH", WT_ISH, 0b1010, "OSH", normal("WT", sh="OSH")),
]


@pytest.mark.parametrize("s1,memattr,s2_sh,expected",
                         [pytest.param(*c[1:], id=c[0]) for c in COMBINE_CASES])
def test_combine_without_fwb(s1, memattr, s2_sh, expected):
    assert combine(s1, memattr, s2_sh, HCR_VM) == expected


@pytest.mark.parametrize("s1,memattr,expected", [
    (normal("WB", sh="ISH", reserved=True), 0b1111, True),   # reserved stage 1 encoding
    (WB_ISH, 0b1000, True),                                  # Table D8-96: 1000 Reserved
    (WB_ISH, 0b1100, True),                                  # Table D8-96: 1100 Reserved
    (WB_ISH, 0b1111, False),
], ids=["s1-reserved", "s2-1000", "s2-1100", "none"])
def test_combine_keeps_track_of_reserved_encodings(s1, memattr, expected):
    assert combine(s1, memattr, "ISH", HCR_VM).reserved is expected


@pytest.mark.parametrize("hcr", [HCR_VM, FWB], ids=["fwb0", "fwb1"])
def test_reserved_shareability_is_constrained_to_a_real_one(hcr):
    """SH[1:0]=0b01 is Reserved, CONSTRAINED UNPREDICTABLE (D8.6.2, D8.6.7); the pseudocode
    DecodeShareability() constrains it to one of Outer, Inner or Non-shareable."""
    out = combine(normal("WB", sh="reserved"), 0b0110 if hcr & HCR_FWB else 0b1111,
                  "reserved", hcr)
    assert out.kind == "Normal-WB" and out.sh in SHAREABILITIES


# == Combining with FEAT_S2FWB, HCR_EL2.FWB = 1 (D8.6.6, Tables D8-100/D8-101) ====================
FWB_CASES = [
    # (id, stage 1 type, stage 2 MemAttr[2:0], stage 2 SH, expected, compare shareability?)
    # MemAttr[2]=0: Device, combined with a stage 1 Device type (RGSDKZ, S2CombineS1Device).
    ("dev-normal-nGnRnE", WB_ISH, 0b000, "ISH", nGnRnE, True),
    ("dev-normal-nGnRE", WB_ISH, 0b001, "ISH", DEV_nGnRE, True),
    ("dev-normal-nGRE", WB_ISH, 0b010, "ISH", nGRE, True),
    ("dev-normal-GRE", NC, 0b011, "ISH", GRE, True),
    ("dev-GRE+nGnRE", GRE, 0b001, "ISH", DEV_nGnRE, True),
    ("dev-nGnRE+GRE", DEV_nGnRE, 0b011, "ISH", DEV_nGnRE, True),
    ("dev-GRE+nGnRnE", GRE, 0b000, "ISH", nGnRnE, True),
    ("dev-nGnRnE+nGRE", nGnRnE, 0b010, "ISH", nGnRnE, True),
    # 0b101: stage 1 Device<attr> stays Device<attr>; any stage 1 Normal becomes Normal NC.
    ("101-WB", WB_ISH, 0b101, "ISH", NC, True),
    ("101-WT", WT_ISH, 0b101, "ISH", NC, True),
    ("101-device", nGRE, 0b101, "ISH", nGRE, True),
    # 0b110: Normal Write-Back whatever stage 1 is; Shareability combined as usual (D8.6.7.1).
    ("110-WT", WT_ISH, 0b110, "NSH", WB_ISH, True),
    ("110-WB-NSH+ISH", WB_NSH, 0b110, "ISH", WB_ISH, True),
    ("110-WB-NSH+NSH", WB_NSH, 0b110, "NSH", WB_NSH, True),
    ("110-NC", NC, 0b110, "ISH", normal("WB"), False),       # S1 NC: SH input IMP DEF
    ("110-device", GRE, 0b110, "ISH", normal("WB"), False),  # S1 Device: SH input IMP DEF
    # 0b111: the stage 1 memory type and cacheability.
    ("111-WT", WT_ISH, 0b111, "NSH", WT_ISH, True),
    ("111-device", nGRE, 0b111, "ISH", nGRE, True),
    ("111-NC", NC, 0b111, "ISH", NC, True),
]


@pytest.mark.parametrize("s1,memattr,s2_sh,expected,check_sh",
                         [pytest.param(*c[1:], id=c[0]) for c in FWB_CASES])
def test_combine_with_fwb(s1, memattr, s2_sh, expected, check_sh):
    out = combine(s1, memattr, s2_sh, FWB)
    assert out == expected if check_sh else same_type(out, expected)


def test_fwb_reserved_memattr():
    """Table D8-101: MemAttr[2:0] = 0b100 (MemAttr[3:2]=x1, [1:0]=00) is Reserved."""
    assert combine(WB_ISH, 0b100, "ISH", FWB).reserved is True


@pytest.mark.parametrize("s1,s2_sh,expected", [(WB_NSH, "ISH", WB_ISH),
                                               (WT_ISH, "OSH", normal("WT", sh="OSH"))],
                         ids=["NSH+ISH", "ISH+OSH"])
def test_fwb_stage1_type_still_combines_shareability(s1, s2_sh, expected):
    """D8.6.7.1: 'The value of HCR_EL2.FWB does not affect how Shareability attributes from
    stage 1 and stage 2 are combined' (AArch64.S2ApplyFWBMemAttrs ends with
    S2CombineS1Shareability for every MemAttr, 0b111 included)."""
    assert combine(s1, 0b111, s2_sh, FWB) == expected


# == HCR_EL2.CD / HCR_EL2.ID (D7.5.5, HCR_EL2 field descriptions) ==================================
CD_ID_CASES = [
    # (id, stage 1 type, stage 2 MemAttr, HCR_EL2, instruction fetch?, expected)
    # CD=1 forces stage 2 of data accesses to Normal memory Non-cacheable.
    ("CD-data", WB_ISH, 0b1111, HCR_VM | HCR_CD, False, NC),
    ("CD-data-WT", WT_ISH, 0b1010, HCR_VM | HCR_CD, False, NC),
    ("CD-data-s2-device", WB_ISH, 0b0001, HCR_VM | HCR_CD, False, DEV_nGnRE),
    ("CD-data-s1-device", GRE, 0b1111, HCR_VM | HCR_CD, False, GRE),
    ("CD-data-fwb-110", WB_ISH, 0b0110, FWB | HCR_CD, False, NC),
    ("CD-ifetch", WB_ISH, 0b1111, HCR_VM | HCR_CD, True, WB_ISH),      # CD: data only
    # ID=1 forces stage 2 of instruction accesses to Normal memory Non-cacheable.
    ("ID-ifetch", WB_ISH, 0b1111, HCR_VM | HCR_ID, True, NC),
    ("ID-ifetch-fwb-110", WT_ISH, 0b0110, FWB | HCR_ID, True, NC),
    ("ID-data", WB_ISH, 0b1111, HCR_VM | HCR_ID, False, WB_ISH),       # ID: instructions only
]


@pytest.mark.parametrize("s1,memattr,hcr,instr,expected",
                         [pytest.param(*c[1:], id=c[0]) for c in CD_ID_CASES])
def test_hcr_cd_id(s1, memattr, hcr, instr, expected):
    if instr:
        assert combine(s1, memattr, "ISH", hcr, instr=True) == expected
    else:   # a data access is the default
        assert combine(s1, memattr, "ISH", hcr) == expected


# == effective(): stage 1, then stage 2 when HCR_EL2.VM=1 =========================================
EFFECTIVE_CASES = [
    # (id, SCTLR_EL1, HCR_EL2, descriptor type, MemAttr, stage 2 SH, ifetch?, expected)
    # D8.2.12.2: stage 2 disabled, the stage 1 attributes are the result.
    ("vm0", MMU_ON, 0, WB_ISH, 0b0000, "NSH", False, WB_ISH),
    ("vm0-CD", MMU_ON, HCR_CD, WB_ISH, 0b1111, "NSH", False, WB_ISH),  # CD needs VM==1
    ("no-stage2", MMU_ON, HCR_VM, WT_ISH, None, "NSH", False, WT_ISH),
    # Stage 1 off, instruction fetch with I=1: Normal iWT oWT OSH, then combined with stage 2.
    ("off-ifetch+WB", SCTLR_I, HCR_VM, None, 0b1111, "NSH", True, normal("WT", sh="OSH")),
    # Stage 1 off, data: Device-nGnRnE beats any stage 2 type (Table D8-97).
    ("off-data+WB", SCTLR_I, HCR_VM, None, 0b1111, "NSH", False, nGnRnE),
    # The stage 2 descriptor's Shareability is combined (Table D8-103).
    ("s2-sh", MMU_ON, HCR_VM, WB_NSH, 0b1111, "ISH", False, WB_ISH),
    # SCTLR_EL1.C=0 then stage 2 WB: NC (Table D8-98).
    ("C0+WB", SCTLR_M | SCTLR_I, HCR_VM, WB_ISH, 0b1111, "ISH", False, NC),
    # HCR_EL2.ID reaches instruction fetches through effective() too.
    ("ID-ifetch", MMU_ON, HCR_VM | HCR_ID, WB_ISH, 0b1111, "ISH", True, NC),
    # HCR_EL2.DC with VM=1 and stage 1 off: Normal WB NSH combined with stage 2.
    ("DC+WT", 0, HCR_VM | HCR_DC, None, 0b1010, "NSH", False, normal("WT", sh="NSH")),
]


@pytest.mark.parametrize("sctlr,hcr,desc,memattr,s2_sh,instr,expected",
                         [pytest.param(*c[1:], id=c[0]) for c in EFFECTIVE_CASES])
def test_effective(sctlr, hcr, desc, memattr, s2_sh, instr, expected):
    if instr:
        assert effective(sctlr, hcr, desc, memattr, s2_sh, instr=True) == expected
    else:
        assert effective(sctlr, hcr, desc, memattr, s2_sh) == expected
