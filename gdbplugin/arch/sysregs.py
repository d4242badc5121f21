"""System-register layouts (Arm ARM DDI 0487, chapter D23/D24 register descriptions).

Only the layouts live here; the logic that interprets them (walker, memory types, capture)
imports them.  Field names are the architectural ones.
"""
from __future__ import annotations

from .bits import Layout

SCTLR_EL1 = Layout(
    "SCTLR_EL1",
    M=0, A=1, C=2, SA=3, SA0=4, CP15BEN=5, nAA=6, ITD=7, SED=8, UMA=9, EnRCTX=10, EOS=11,
    I=12, EnDB=13, DZE=14, UCT=15, nTWI=16, nTWE=18, WXN=19, TSCXT=20, IESB=21, EIS=22,
    SPAN=23, E0E=24, EE=25, UCI=26, EnDA=27, nTLSMD=28, LSMAOE=29, EnIB=30, EnIA=31,
    CMOW=32, MSCEn=33, EnFPM=34, BT0=35, BT1=36, ITFSB=37, TCF0=(39, 38), TCF=(41, 40),
    ATA0=42, ATA=43, DSSBS=44, TWEDEn=45, TWEDEL=(49, 46), TMT0=50, TMT=51, TME0=52,
    TME=53, EnASR=54, EnAS0=55, EnALS=56, EPAN=57, TCSO0=58, TCSO=59, EnTP2=60, NMI=61,
    SPINTMASK=62, TIDCP=63,
)

# With HCR_EL2.E2H=1 SCTLR_EL2 takes the SCTLR_EL1 format; without it the EL1-only controls
# are RES0/RES1, so one layout serves both (the bits that matter here, M/C/I, do not move).
SCTLR_EL2 = Layout("SCTLR_EL2", **{n: (p.lo + p.width - 1, p.lo) if p.width > 1 else p.lo
                                   for n, p in SCTLR_EL1.fields.items()})

HCR_EL2 = Layout(
    "HCR_EL2",
    VM=0, SWIO=1, PTW=2, FMO=3, IMO=4, AMO=5, VF=6, VI=7, VSE=8, FB=9, BSU=(11, 10), DC=12,
    TWI=13, TWE=14, TID0=15, TID1=16, TID2=17, TID3=18, TSC=19, TIDCP=20, TACR=21, TSW=22,
    TPCP=23, TPU=24, TTLB=25, TVM=26, TGE=27, TDZ=28, HCD=29, TRVM=30, RW=31, CD=32, ID=33,
    E2H=34, TLOR=35, TERR=36, TEA=37, MIOCNCE=38, TME=39, APK=40, API=41, NV=42, NV1=43,
    AT=44, NV2=45, FWB=46, FIEN=47, GPF=48, TID4=49, TICAB=50, AMVOFFEN=51, TOCU=52,
    EnSCXT=53, TTLBIS=54, TTLBOS=55, ATA=56, DCT=57, TID5=58, TWEDEn=59, TWEDEL=(63, 60),
)

VTCR_EL2 = Layout(
    "VTCR_EL2",
    T0SZ=(5, 0), SL0=(7, 6), IRGN0=(9, 8), ORGN0=(11, 10), SH0=(13, 12), TG0=(15, 14),
    PS=(18, 16), VS=19, HA=21, HD=22, HWU59=25, HWU60=26, HWU61=27, HWU62=28, NSW=29, NSA=30,
    RES1=31, DS=32, SL2=33, AssuredOnly=34, TL1=35, S2PIE=36, S2POE=37, D128=38, GCSH=40,
    TL0=41, HAFT=44,
)

TCR_EL1 = Layout(
    "TCR_EL1",
    T0SZ=(5, 0), EPD0=7, IRGN0=(9, 8), ORGN0=(11, 10), SH0=(13, 12), TG0=(15, 14),
    T1SZ=(21, 16), A1=22, EPD1=23, IRGN1=(25, 24), ORGN1=(27, 26), SH1=(29, 28),
    TG1=(31, 30), IPS=(34, 32), AS=36, TBI0=37, TBI1=38, HA=39, HD=40, HPD0=41, HPD1=42,
    HWU059=43, HWU060=44, HWU061=45, HWU062=46, HWU159=47, HWU160=48, HWU161=49, HWU162=50,
    TBID0=51, TBID1=52, NFD0=53, NFD1=54, E0PD0=55, E0PD1=56, TCMA0=57, TCMA1=58, DS=59,
    MTX0=60, MTX1=61,
)

# TCR_EL2 without E2H (with E2H=1 it takes the TCR_EL1 format: use TCR_EL1 then).
TCR_EL2 = Layout(
    "TCR_EL2",
    T0SZ=(5, 0), IRGN0=(9, 8), ORGN0=(11, 10), SH0=(13, 12), TG0=(15, 14), PS=(18, 16),
    TBI=20, HA=21, HD=22, HPD=24, HWU59=25, HWU60=26, HWU61=27, HWU62=28, TBID=29, TCMA=30,
    RES1_23=23, RES1_31=31, DS=32, MTX=33,
)

MAIR_EL1 = Layout("MAIR_EL1", **{f"Attr{n}": (8 * n + 7, 8 * n) for n in range(8)})
MAIR_EL2 = Layout("MAIR_EL2", **{f"Attr{n}": (8 * n + 7, 8 * n) for n in range(8)})

# BADDR[47:1]; with 52-bit tables (64K+LPA, or DS=1) BADDR[51:48] sits in bits [5:2].
TTBR = Layout("TTBRn_ELx", addresses=("BADDR",), ASID=(63, 48), BADDR=(47, 1), CnP=0)
VTTBR_EL2 = Layout("VTTBR_EL2", addresses=("BADDR",), VMID=(63, 48), BADDR=(47, 1), CnP=0)
TTBR_BADDR52 = Layout("TTBR.BADDR[51:48]", BADDR_51_48=(5, 2))

ESR_EL2 = Layout("ESR_EL2", ISS2=(55, 32), EC=(31, 26), IL=25, ISS=(24, 0))
# ISS encodings for the exception classes a stage-2 watcher meets (ESR_EL2 bits [24:0]).
ISS_DABT = Layout("ISS(data abort)", 32, ISV=24, SAS=(23, 22), SSE=21, SRT=(20, 16), SF=15,
                  AR=14, VNCR=13, SET=(12, 11), FnV=10, EA=9, CM=8, S1PTW=7, WnR=6,
                  DFSC=(5, 0))
ISS_IABT = Layout("ISS(instruction abort)", 32, SET=(12, 11), FnV=10, EA=9, S1PTW=7,
                  IFSC=(5, 0))
ISS_SYS = Layout("ISS(MSR/MRS/SYS)", 32, Op0=(21, 20), Op2=(19, 17), Op1=(16, 14),
                 CRn=(13, 10), Rt=(9, 5), CRm=(4, 1), Direction=0)
ISS_HVC = Layout("ISS(SVC/HVC/SMC)", 32, imm16=(15, 0))
ISS_WFX = Layout("ISS(WFx)", 32, TI=(1, 0))
ISS_ERET = Layout("ISS(ERET)", 32, ERET=1, ERETA=0)

# Cache geometry (the report says which CPU the I-side findings are about).
CTR_EL0 = Layout("CTR_EL0", TminLine=(37, 32), DIC=29, IDC=28, CWG=(27, 24), ERG=(23, 20),
                 DminLine=(19, 16), L1Ip=(15, 14), IminLine=(3, 0))
CLIDR_EL1 = Layout("CLIDR_EL1", ICB=(32, 30), LoUU=(29, 27), LoC=(26, 24), LoUIS=(23, 21),
                   **{f"Ctype{n}": (3 * n - 1, 3 * n - 3) for n in range(1, 8)})

HPFAR_EL2 = Layout("HPFAR_EL2", NS=63, FIPA=(47, 4))

# Exception classes (ESR_ELx.EC) used by the capture side.
EC_NAMES = {
    0x00: "unknown", 0x01: "wfx", 0x07: "fp-simd", 0x0E: "illegal-state", 0x15: "svc64",
    0x16: "hvc64", 0x17: "smc64", 0x18: "sys64", 0x19: "sve", 0x1F: "impdef-el3",
    0x20: "iabt-lower", 0x21: "iabt-same", 0x22: "pc-align", 0x24: "dabt-lower",
    0x25: "dabt-same", 0x26: "sp-align", 0x2C: "fp-exc64", 0x2F: "serror", 0x30: "bkpt-lower",
    0x31: "bkpt-same", 0x32: "step-lower", 0x33: "step-same", 0x34: "watch-lower",
    0x35: "watch-same", 0x3C: "brk64",
}


def fault_status(fsc: int) -> tuple[str, int | None]:
    """Decode a DFSC/IFSC into (kind, level); levels -1..3 as the architecture numbers them."""
    kinds = {0: "address-size", 1: "translation", 2: "access-flag", 3: "permission",
             5: "external-walk", 9: "parity-walk"}
    if fsc >> 2 in kinds:
        return kinds[fsc >> 2], fsc & 3
    level_minus_one = {0x29: "address-size", 0x2B: "translation", 0x13: "external-walk",
                       0x1B: "parity-walk"}
    if fsc in level_minus_one:
        return level_minus_one[fsc], -1
    other = {0x10: "external", 0x18: "parity", 0x21: "alignment", 0x30: "tlb-conflict",
             0x31: "unsupported-atomic", 0x34: "lockdown", 0x35: "exclusive"}
    return other.get(fsc, f"fsc-{fsc:#04x}"), None


def ipa_from_hpfar(hpfar: int, far: int) -> int:
    """The faulting IPA: HPFAR_EL2.FIPA gives the page, FAR_EL2 the offset within it."""
    return (HPFAR_EL2.get(hpfar, "FIPA") << 12) | (far & 0xFFF)


def current_el(cpsr: int) -> int:
    """Exception level from PSTATE/CPSR bits [3:2] (QEMU exposes no CurrentEL register)."""
    return (cpsr >> 2) & 3


REGISTERS: dict[str, Layout] = {
    layout.name: layout for layout in (
        SCTLR_EL1, SCTLR_EL2, HCR_EL2, VTCR_EL2, TCR_EL1, TCR_EL2, MAIR_EL1, MAIR_EL2,
        VTTBR_EL2, ESR_EL2, HPFAR_EL2)
} | {"TTBR0_EL1": TTBR, "TTBR1_EL1": TTBR, "TTBR0_EL2": TTBR, "TTBR1_EL2": TTBR}
