"""Register layouts and memory-type rules, each expectation argued from the Arm ARM."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gdbplugin.arch import memtype as M
from gdbplugin.arch.sysregs import (ESR_EL2, HCR_EL2, ISS_DABT, REGISTERS, SCTLR_EL1, TCR_EL1,
                                    VTCR_EL2, current_el, fault_status, ipa_from_hpfar)
from gdbplugin.arch.walker import Regime

WB_RA_WA = 0xFF      # MAIR Normal, inner+outer write-back read/write-allocate
DEV_nGnRE = 0x04


@given(st.sampled_from(sorted(REGISTERS)), st.integers(0, (1 << 64) - 1))
def test_layouts_round_trip_their_defined_bits(name, value):
    layout = REGISTERS[name]
    defined = sum(p.mask for p in layout.fields.values())
    assert layout.build(**layout.decode(value)) == value & defined


def test_field_positions_match_the_architecture():
    # A handful of bits whose position every hypervisor depends on (DDI 0487 D23.2).
    assert HCR_EL2.build(VM=True) == 1 << 0
    assert HCR_EL2.build(SWIO=True, DC=True, TSW=True, TVM=True, FWB=True) == \
        (1 << 1) | (1 << 12) | (1 << 22) | (1 << 26) | (1 << 46)
    assert SCTLR_EL1.build(M=True, C=True, I=True) == 0b1_0000_0000_0101
    assert VTCR_EL2.fields["SL0"].lo == 6 and VTCR_EL2.fields["PS"].lo == 16
    assert TCR_EL1.fields["TG1"].lo == 30 and TCR_EL1.fields["DS"].lo == 59


def test_kvm_nested_vtcr_from_design_notes():
    """KVM's nested stage 2 (Linux KVM in a cortex-a72 guest) was measured as VTCR_EL2
    0x80243520, 'start level 2, four concatenated tables': T0SZ=32 gives a 32-bit IPA, SL0=0 with 4K starts at level 2,
    which resolves IPA[31:21] = 11 bits = 2048 entries = 4 tables of 512."""
    f = VTCR_EL2.decode(0x80243520)
    assert (f["T0SZ"], f["SL0"], f["TG0"], f["PS"], f["RES1"]) == (32, 0, 0, 4, 1)
    r = Regime.from_vtcr(0x80243520, 0x4000_0000)
    assert (r.start_level, r.start_entries, r.ia_bits, r.oa_bits) == (2, 2048, 32, 44)
    # pKVM's host stage 2 (0x802d3590): 48-bit IPA, SL0=2 → level 0, one 512-entry table.
    r = Regime.from_vtcr(0x802D3590, 0x4000_0000)
    assert (r.start_level, r.start_entries, r.ia_bits, r.oa_bits) == (0, 512, 48, 48)


def test_esr_and_fault_helpers():
    # A stage-2 translation fault at level 3 on a write from a lower EL: EC=0x24, WnR, DFSC=7.
    esr = ESR_EL2.build(EC=0x24, IL=True, ISS=ISS_DABT.build(WnR=True, DFSC=0b000111))
    iss = ISS_DABT.decode(ESR_EL2.get(esr, "ISS"))
    assert iss["WnR"] == 1 and fault_status(iss["DFSC"]) == ("translation", 3)
    assert fault_status(0b001001) == ("access-flag", 1)
    assert fault_status(0b101011) == ("translation", -1)
    assert ipa_from_hpfar(0x48_0010 << 4, 0xFFFF_0123) == 0x4_8001_0123
    assert current_el(0x3C9) == 2 and current_el(0x3C5) == 1


# -- memory types -------------------------------------------------------------------------
HCR_VM = HCR_EL2.build(VM=True)
MMU_OFF = 0
MMU_ON_C_I = SCTLR_EL1.build(M=True, C=True, I=True)
MMU_ON_NO_C = SCTLR_EL1.build(M=True, I=True)
WB = M.from_mair(WB_RA_WA, "ISH")


def test_mmu_off_data_is_device_unless_hcr_dc():
    """Stage 1 disabled: data accesses are Device-nGnRnE (D8.2.10); with HCR_EL2.DC=1 they are
    Normal Write-Back.  This is the seed thread's booting guest: its reads bypass the cache
    even though stage 2 says Normal WB."""
    t = M.effective(MMU_OFF, HCR_VM, None, 0xF)
    assert str(t) == "Device-nGnRnE" and not t.cacheable
    t = M.effective(MMU_OFF, HCR_VM | HCR_EL2.build(DC=True), None, 0xF)
    assert t.kind == "Normal-WB" and t.cacheable


def test_mmu_off_instruction_fetch_follows_sctlr_i():
    """Instruction fetches with stage 1 off are Normal: WT if SCTLR.I=1, else Non-cacheable."""
    assert M.stage1_type(SCTLR_EL1.build(I=True), 0, None, instr=True).kind == "Normal-WT"
    assert M.stage1_type(0, 0, None, instr=True).kind == "Normal-NC"


def test_c0_makes_normal_data_non_cacheable_but_leaves_device_alone():
    assert M.effective(MMU_ON_NO_C, HCR_VM, WB, 0xF).kind == "Normal-NC"
    assert str(M.effective(MMU_ON_NO_C, HCR_VM, M.from_mair(DEV_nGnRE), 0xF)) == "Device-nGnRE"
    assert M.effective(MMU_ON_C_I, HCR_VM, WB, 0xF).kind == "Normal-WB"


def test_without_fwb_the_more_restrictive_stage_wins():
    assert M.effective(MMU_ON_C_I, HCR_VM, WB, 0x5).kind == "Normal-NC"          # S2 NC
    assert str(M.effective(MMU_ON_C_I, HCR_VM, WB, 0x0)) == "Device-nGnRnE"     # S2 device
    gre = M.from_mair(0x0C)
    assert str(M.effective(MMU_ON_C_I, HCR_VM, gre, 0x1)) == "Device-nGnRE"      # stronger
    assert M.effective(MMU_ON_C_I, HCR_VM, WB, 0xA).kind == "Normal-WT"
    assert M.effective(MMU_ON_C_I, 0, WB, 0x0).kind == "Normal-WB"               # VM=0


def test_fwb_lets_stage2_force_write_back():
    """With HCR_EL2.FWB, MemAttr 0b110 forces Normal WB whatever stage 1 says (KVM's
    MT_S2_FWB_NORMAL), 0b111 takes stage 1's type, 0b101 makes Normal memory NC."""
    fwb = HCR_VM | HCR_EL2.build(FWB=True)
    assert M.effective(MMU_ON_NO_C, fwb, WB, 0b0110).kind == "Normal-WB"
    assert M.effective(MMU_OFF, fwb, None, 0b0110).kind == "Normal-WB"
    assert M.effective(MMU_ON_NO_C, fwb, WB, 0b0111).kind == "Normal-NC"
    assert M.effective(MMU_ON_C_I, fwb, WB, 0b0101).kind == "Normal-NC"
    assert str(M.effective(MMU_ON_C_I, fwb, M.from_mair(DEV_nGnRE), 0b0101)) == "Device-nGnRE"
    assert M.effective(MMU_ON_C_I, fwb, WB, 0b0100).reserved


def test_hcr_cd_and_shareability_normalisation():
    assert M.effective(MMU_ON_C_I, HCR_VM | HCR_EL2.build(CD=True), WB, 0xF).kind == "Normal-NC"
    # Non-cacheable and Device memory is always Outer Shareable (D8.6.2).
    assert M.effective(MMU_ON_NO_C, HCR_VM, WB, 0xF).sh == "OSH"
    assert M.effective(MMU_ON_C_I, HCR_VM, WB, 0xF).sh == "ISH"


def test_render_names_fields_and_shows_addresses_in_place():
    from rich.console import Console

    from gdbplugin.arch.sysregs import VTTBR_EL2
    console = Console(width=100, record=True)
    console.print(VTCR_EL2.render(0x80243520))
    console.print(VTTBR_EL2.render(0x2A000040400001))
    text = console.export_text()
    assert "T0SZ" in text and "0x20" in text and "PS" in text and "SL0" not in text
    assert "0x40400000" in text and "VMID" in text and "0x2a" in text
    assert VTTBR_EL2.describe(0x7F609001) == "VTTBR_EL2=0x7f609001 [BADDR=0x7f609000 CnP]"
