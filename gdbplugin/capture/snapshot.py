"""A one-shot snapshot of a stopped target: each vCPU's translation controls and the stage-1
and stage-2 tables they point at.

Which stage-1 regime a vCPU is in follows from its exception level and HCR_EL2 (E2H/TGE), never
from VTTBR_EL2 alone (under nVHE it is 0 while the host runs; under VHE it stays loaded).
Stage-1 tables of an EL1 guest live at IPAs, so they are read through its stage 2.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..arch.memory import PhysMemory
from ..arch.sysregs import HCR_EL2, SCTLR_EL1, TCR_EL1, TCR_EL2, VTTBR_EL2, current_el
from ..arch.walker import Mapping, Regime, TranslatedMemory, Walker

EL1_REGS = ("CPSR", "SCTLR_EL1", "TCR_EL1", "TTBR0_EL1", "TTBR1_EL1", "MAIR_EL1")
EL2_REGS = ("HCR_EL2", "VTCR_EL2", "VTTBR_EL2", "SCTLR_EL2", "TCR_EL2", "TTBR0_EL2",
            "TTBR1_EL2", "MAIR_EL2")


@dataclass
class VcpuState:
    vcpu: int                      # 0-based vCPU index (gdb thread order)
    regs: dict[str, int]           # architectural names

    @property
    def el(self) -> int:
        return current_el(self.regs["CPSR"])

    @property
    def hcr(self) -> int:
        return self.regs.get("HCR_EL2", 0)


@dataclass
class TableWalk:
    """One walked translation: which regime, from which registers, what it maps."""

    name: str
    registers: dict[str, int]
    regime: Regime
    mappings: list[Mapping] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    vcpus: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"name": self.name, "vcpus": self.vcpus, "registers": self.registers,
                "regime": None if self.regime.fatal else self.regime.describe(),
                "mapped_bytes": sum(m.size for m in self.mappings),
                "mappings": [m.as_dict() for m in self.mappings], "errors": self.errors}


def read_vcpus(gdb, registers) -> list[VcpuState]:
    """Every vCPU's translation controls, one register round trip per vCPU."""
    names = [n for n in EL1_REGS + EL2_REGS if registers.available(n)]
    states = []
    for index, thread in enumerate(gdb.threads()):
        gdb.select_thread(thread)
        states.append(VcpuState(index, registers.read(names)))
    return states


STAGE2_REGS = ("VTCR_EL2", "VTTBR_EL2", "HCR_EL2")      # what a vCPU's stage 2 depends on


def stage2_regime(state: VcpuState) -> Regime | None:
    """The stage 2 loaded on this vCPU, if HCR_EL2.VM is set and VTTBR_EL2 has a base."""
    vttbr = state.regs.get("VTTBR_EL2", 0)
    if not HCR_EL2.get(state.hcr, "VM") or not VTTBR_EL2.get(vttbr, "BADDR"):
        return None
    return Regime.from_vtcr(state.regs["VTCR_EL2"], vttbr, hcr=state.hcr)


def stage1_regimes(state: VcpuState) -> list[tuple[str, dict[str, int], Regime]]:
    """The stage-1 regime the vCPU is executing in, both VA ranges where it has two."""
    r, hcr = state.regs, state.hcr
    e2h, tge = HCR_EL2.get(hcr, "E2H"), HCR_EL2.get(hcr, "TGE")
    if state.el == 2 or (e2h and tge):
        if "TCR_EL2" not in r or not SCTLR_EL1.get(r["SCTLR_EL2"], "M"):
            return []
        if e2h:     # EL2&0 (VHE): TCR_EL2 has the TCR_EL1 format and two ranges
            return [(f"stage 1 EL2&0 TTBR{n}_EL2",
                     {"TCR_EL2": r["TCR_EL2"], f"TTBR{n}_EL2": r[f"TTBR{n}_EL2"],
                      "MAIR_EL2": r["MAIR_EL2"]},
                     Regime.from_tcr(r["TCR_EL2"], r[f"TTBR{n}_EL2"], upper=n == 1,
                                     mair=r["MAIR_EL2"], el=2)) for n in (0, 1)]
        return [("stage 1 EL2 TTBR0_EL2",
                 {"TCR_EL2": r["TCR_EL2"], "TTBR0_EL2": r["TTBR0_EL2"], "MAIR_EL2": r["MAIR_EL2"]},
                 Regime.from_tcr(el2_tcr_as_el1(r["TCR_EL2"]), r["TTBR0_EL2"],
                                 mair=r["MAIR_EL2"], el=2))]
    if not SCTLR_EL1.get(r["SCTLR_EL1"], "M"):
        return []
    return [(f"stage 1 EL1&0 TTBR{n}_EL1",
             {"TCR_EL1": r["TCR_EL1"], f"TTBR{n}_EL1": r[f"TTBR{n}_EL1"],
              "MAIR_EL1": r["MAIR_EL1"]},
             Regime.from_tcr(r["TCR_EL1"], r[f"TTBR{n}_EL1"], upper=n == 1, mair=r["MAIR_EL1"]))
            for n in (0, 1)]


def why_no_walk(state: VcpuState) -> str:
    """Why a vCPU has no stage to walk (its translation is off, as at reset)."""
    stage1 = "SCTLR_EL2.M=0" if state.el == 2 or \
        (HCR_EL2.get(state.hcr, "E2H") and HCR_EL2.get(state.hcr, "TGE")) else "SCTLR_EL1.M=0"
    stage2 = ("no stage 2 in use (HCR_EL2.VM=0 or no VTTBR_EL2 table)" if "HCR_EL2" in state.regs
              else "no EL2")
    return f"its MMU is off ({stage1}) and there is {stage2}"


def el2_tcr_as_el1(tcr_el2: int) -> int:
    """The non-VHE TCR_EL2 (one range, PS at [18:16]) re-expressed in the TCR_EL1 layout, so one
    regime decoder serves both; TTBR1 walks are disabled (EPD1) as EL2 has no upper range."""
    f = TCR_EL2.decode(tcr_el2)
    return TCR_EL1.build(T0SZ=f["T0SZ"], IRGN0=f["IRGN0"], ORGN0=f["ORGN0"], SH0=f["SH0"],
                         TG0=f["TG0"], IPS=f["PS"], HA=bool(f["HA"]), HD=bool(f["HD"]),
                         HPD0=bool(f["HPD"]), DS=bool(f["DS"]), EPD1=True)


def snapshot(states: list[VcpuState], mem: PhysMemory) -> list[TableWalk]:
    """Walk every distinct stage 2 and stage 1 the vCPUs use (identical registers: once)."""
    walks: dict[tuple, TableWalk] = {}

    def add(vcpu, name, regs, regime, memory):
        key = (name, regime)    # equal regimes differ at most in ASID/VMID: walk once
        if key in walks:
            walks[key].vcpus.append(vcpu)
            return
        walker = Walker(regime, memory)
        walks[key] = TableWalk(name, regs, regime, walker.mappings(), walker.error_dicts(),
                               [vcpu])

    for state in states:
        s2 = stage2_regime(state)
        s1_mem = mem
        if s2 is not None:
            regs = {k: state.regs[k] for k in STAGE2_REGS}
            add(state.vcpu, "stage 2 VTTBR_EL2", regs, s2, mem)
            if state.el < 2 and not HCR_EL2.get(state.hcr, "TGE"):
                s1_mem = TranslatedMemory(Walker(s2, mem), mem)
        for name, regs, regime in stage1_regimes(state):
            add(state.vcpu, name, regs, regime, s1_mem)
    return list(walks.values())
