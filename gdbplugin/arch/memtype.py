"""Memory types and their combination across stage 1 and stage 2 (Arm ARM D8.5/D8.6).

The question every s2cache finding rests on is "is this access cacheable?": a guest with its
MMU off, or with SCTLR_EL1.C=0, reaches RAM non-cacheably while the host wrote through a
cacheable alias.  This module answers it for one access from the registers and descriptors.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .sysregs import HCR_EL2, SCTLR_EL1

DEVICE_TYPES = ("nGnRnE", "nGnRE", "nGRE", "GRE")   # strongest (most restrictive) first
CACHEABILITY = ("NC", "WT", "WB")                    # most restrictive first
SHAREABILITY_ORDER = ("NSH", "ISH", "OSH")           # weakest first


@dataclass(frozen=True)
class MemType:
    """Device (with its type) or Normal (inner/outer cacheability), plus shareability."""

    device: str | None = None
    inner: str = "NC"
    outer: str = "NC"
    sh: str = "OSH"
    reserved: bool = False   # a reserved/UNPREDICTABLE encoding was involved

    @property
    def is_device(self) -> bool:
        return self.device is not None

    @property
    def cacheable(self) -> bool:
        """True when some level of cache may hold the line (WT or WB, inner or outer)."""
        return not self.is_device and (self.inner != "NC" or self.outer != "NC")

    @property
    def kind(self) -> str:
        """The coarse class a cache model needs: Device, Normal-NC, Normal-WT or Normal-WB."""
        if self.is_device:
            return "Device"
        inner, outer = CACHEABILITY.index(self.inner), CACHEABILITY.index(self.outer)
        return f"Normal-{CACHEABILITY[min(inner, outer)]}"

    def __str__(self) -> str:
        if self.is_device:
            return f"Device-{self.device}"
        if self.inner == self.outer:
            return f"Normal-{self.inner}"
        return f"Normal-i{self.inner}-o{self.outer}"

    def as_dict(self) -> dict:
        return {"type": str(self), "kind": self.kind, "cacheable": self.cacheable,
                "sh": self.sh, "reserved": self.reserved}


DEVICE_nGnRnE = MemType(device="nGnRnE")
NORMAL_WB = MemType(inner="WB", outer="WB", sh="ISH")


def _cache_nibble(nibble: int) -> tuple[str, bool]:
    """A MAIR cacheability nibble (outer or inner) → (policy, reserved)."""
    if nibble == 0b0100:
        return "NC", False
    policy = "WT" if (nibble >> 2) in (0b00, 0b10) else "WB"
    # 0b00RW/0b01RW are the transient hints and need RW != 0; 0b0000 is UNPREDICTABLE.
    return policy, (nibble >> 2) in (0b00, 0b01) and nibble & 3 == 0


def from_mair(attr: int, sh: str = "NSH") -> MemType:
    """One 8-bit MAIR Attr<n> with the descriptor's shareability."""
    hi, lo = attr >> 4, attr & 0xF
    if hi == 0:         # 0b0000dd00; 0b0000dd01 is the same Device type with XS=0 (FEAT_XS)
        return MemType(device=DEVICE_TYPES[lo >> 2], reserved=lo & 2 != 0)
    if lo == 0:
        # FEAT_XS / FEAT_MTE encodings; anything else is UNPREDICTABLE.
        special = {0x4: ("NC", False), 0xA: ("WT", False), 0xF: ("WB", False)}
        policy, reserved = special.get(hi, ("NC", True))
        return _normalised(MemType(inner=policy, outer=policy, sh=sh, reserved=reserved))
    outer, r_out = _cache_nibble(hi)
    inner, r_in = _cache_nibble(lo)
    return _normalised(MemType(inner=inner, outer=outer, sh=sh, reserved=r_out or r_in))


def from_s2_memattr(memattr: int, sh: str = "NSH") -> MemType:
    """Stage-2 MemAttr[3:0] with HCR_EL2.FWB=0 (outer in [3:2], inner in [1:0])."""
    hi, lo = memattr >> 2, memattr & 3
    if hi == 0:
        return MemType(device=DEVICE_TYPES[lo])
    names = {1: "NC", 2: "WT", 3: "WB"}
    return _normalised(MemType(inner=names.get(lo, "NC"), outer=names[hi], sh=sh,
                               reserved=lo == 0))


def s2_memattr_name(memattr: int, fwb: bool) -> str:
    """Human name of a stage-2 MemAttr on its own (no stage 1 to combine with)."""
    if not fwb:
        return str(from_s2_memattr(memattr))
    if not memattr & 0b100:
        return f"Device-{DEVICE_TYPES[memattr & 3]}"
    return {0b100: "reserved", 0b101: "Normal-NC", 0b110: "Normal-WB (forced)",
            0b111: "stage-1 type"}[memattr & 0b111]


def _normalised(mt: MemType) -> MemType:
    """Device and Normal Non-cacheable memory is always Outer Shareable."""
    if mt.is_device or (mt.inner == "NC" and mt.outer == "NC"):
        return replace(mt, sh="OSH")
    return mt


def _stronger_device(a: str, b: str) -> str:
    return DEVICE_TYPES[min(DEVICE_TYPES.index(a), DEVICE_TYPES.index(b))]


def _weaker_cache(a: str, b: str) -> str:
    return CACHEABILITY[min(CACHEABILITY.index(a), CACHEABILITY.index(b))]


def _wider_sh(a: str, b: str) -> str:
    known = [s for s in (a, b) if s in SHAREABILITY_ORDER] or ["OSH"]
    return max(known, key=SHAREABILITY_ORDER.index)


def stage1_type(sctlr: int, hcr: int, descriptor_type: MemType | None, *, instr: bool = False
                ) -> MemType:
    """The stage-1 memory type of an EL1&0 access (Arm ARM D8.2.x "stage 1 disabled").

    HCR_EL2.DC=1: the PE behaves as if SCTLR_EL1.M were 0 (and HCR_EL2.VM 1), and stage 1
    gives Normal WB Non-shareable (pseudocode AArch64.S1Enabled, AArch64.S1DisabledOutput).
    MMU off otherwise: data is Device-nGnRnE; instruction fetches are Normal, WT when
    SCTLR_EL1.I=1 else NC.  MMU on: the descriptor's MAIR type, forced to Non-cacheable for
    data when C=0 and for instructions when I=0.
    """
    mmu, cache, icache = (SCTLR_EL1.get(sctlr, f) for f in ("M", "C", "I"))
    if HCR_EL2.get(hcr, "DC"):
        return MemType(inner="WB", outer="WB", sh="NSH")
    if not mmu:
        if instr:
            return _normalised(MemType(inner="WT", outer="WT", sh="OSH") if icache
                               else MemType(sh="OSH"))
        return DEVICE_nGnRnE
    if descriptor_type is None:
        raise ValueError("MMU on: the stage-1 descriptor's memory type is needed")
    if descriptor_type.is_device or (cache if not instr else icache):
        return descriptor_type
    return _normalised(replace(descriptor_type, inner="NC", outer="NC"))


def combine(s1: MemType, s2_memattr: int, s2_sh: str, hcr: int, *, instr: bool = False
            ) -> MemType:
    """Combine a stage-1 type with a stage-2 MemAttr: the more restrictive wins, except where
    FEAT_S2FWB lets stage 2 force Write-Back (HCR_EL2.FWB=1)."""
    if HCR_EL2.get(hcr, "FWB"):
        low3 = s2_memattr & 0b111
        if not low3 & 0b100:
            dev = DEVICE_TYPES[low3 & 3]
            out = MemType(device=_stronger_device(dev, s1.device) if s1.is_device else dev)
        elif low3 == 0b101:
            out = s1 if s1.is_device else MemType(sh=s1.sh)
        elif low3 == 0b110:
            out = MemType(inner="WB", outer="WB", sh=_wider_sh(s1.sh, s2_sh))
        elif low3 == 0b111:         # stage 1's type; Shareability still combines (D8.6.7.1)
            out = replace(s1, sh=_wider_sh(s1.sh, s2_sh))
        else:
            out = replace(s1, reserved=True)
    else:
        s2 = from_s2_memattr(s2_memattr, s2_sh)
        if s1.is_device or s2.is_device:
            devs = [m.device for m in (s1, s2) if m.is_device]
            out = MemType(device=_stronger_device(devs[0], devs[-1]))
        else:
            out = MemType(inner=_weaker_cache(s1.inner, s2.inner),
                          outer=_weaker_cache(s1.outer, s2.outer),
                          sh=_wider_sh(s1.sh, s2.sh), reserved=s1.reserved or s2.reserved)
    # HCR_EL2.CD / HCR_EL2.ID make stage 2 non-cacheable for data / instruction accesses.
    if not out.is_device and HCR_EL2.get(hcr, "ID" if instr else "CD"):
        out = replace(out, inner="NC", outer="NC")
    return _normalised(out)


def effective(sctlr: int, hcr: int, s1_descriptor_type: MemType | None, s2_memattr: int | None,
              s2_sh: str = "NSH", *, instr: bool = False) -> MemType:
    """The memory type an EL1 access really gets: stage 1, then stage 2 if HCR_EL2.VM=1 (or
    DC=1, which behaves as if VM were 1).  An instruction fetch from Device memory is treated
    as Normal Non-cacheable (K1.1.22; AArch64.S1TreatAsNormalNC, S2TreatAsNormalNC)."""
    out = stage1_type(sctlr, hcr, s1_descriptor_type, instr=instr)
    if s2_memattr is not None and (HCR_EL2.get(hcr, "VM") or HCR_EL2.get(hcr, "DC")):
        out = combine(out, s2_memattr, s2_sh, hcr, instr=instr)
    if instr and out.is_device:
        out = MemType(sh="OSH")
    return out
