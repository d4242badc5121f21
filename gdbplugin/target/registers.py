"""Architectural system-register names mapped to what QEMU's gdbstub calls them.

QEMU names registers in its ``org.qemu.gdb.arm.sys.regs`` XML after its own cpreg names, which
are not always the architectural ones and change between versions; register numbers move with
the machine options.  So every name is resolved against the connected target's register list
(fetched once per connection by GdbMI), trying the architectural spelling first.

Measured with QEMU 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18), ``-M virt -cpu max``:
- 512 registers without ``virtualization=on``, 568 with it.
- EL1 controls under their architectural names: TCR_EL1, TTBR0_EL1, TTBR1_EL1, MAIR_EL1,
  ESR_EL1, FAR_EL1, PAR_EL1, ELR_EL1, SPSR_EL1, SP_EL1, CONTEXTIDR_EL1, ID_AA64MMFR0_EL1;
  under QEMU's AArch32-style names: SCTLR (SCTLR_EL1), VBAR, CPACR, CNTKCTL, AMAIR0, CSSELR,
  CLIDR.
- Only with ``virtualization=on``: HCR_EL2, VTCR_EL2, VTTBR_EL2, SCTLR_EL2, TCR_EL2,
  TTBR0_EL2, TTBR1_EL2, MAIR_EL2, ESR_EL2, FAR_EL2, HPFAR_EL2, ELR_EL2, SPSR_EL2, VBAR_EL2,
  SP_EL2, CPTR_EL2, MDCR_EL2, HSTR_EL2, CNTHCTL_EL2, CNTVOFF_EL2, VPIDR_EL2, VMPIDR_EL2,
  TPIDR_EL2, VSTCR_EL2, VSTTBR_EL2 and the VHE aliases (SCTLR_EL12, TCR_EL12, TTBR0_EL12, ...).
  Without it, RVBAR_EL1 appears instead of RVBAR_EL2.
- Present either way (RES0 stand-ins when EL2 is absent): HCRX_EL2, ZCR_EL2, SMCR_EL2,
  ACTLR_EL2, CONTEXTIDR_EL2, SCXTNUM_EL2, VDISR_EL2, VSESR_EL2, DACR32_EL2, IFSR32_EL2,
  FPEXC32_EL2.  Do not infer EL2 from those; check for HCR_EL2.
- Never: CurrentEL, MIDR_EL1, MPIDR_EL1.  CurrentEL is taken from cpsr bits [3:2].
"""
from __future__ import annotations

from typing import Iterable

from .errors import RegisterError
from .gdbmi import GdbMI

# Spellings other than the architectural one, tried after it (QEMU 7.2-9.x names).
ALIASES: dict[str, tuple[str, ...]] = {
    "SCTLR_EL1": ("SCTLR",),
    "VBAR_EL1": ("VBAR",),
    "CPACR_EL1": ("CPACR",),
    "CNTKCTL_EL1": ("CNTKCTL",),
    "AMAIR_EL1": ("AMAIR0",),
    "CSSELR_EL1": ("CSSELR",),
    "CLIDR_EL1": ("CLIDR",),
    "CPSR": ("cpsr",),
}
CURRENT_EL = "CurrentEL"        # derived: cpsr & 0b1100, as MRS CurrentEL returns it


class Registers:
    """Reads registers by architectural name from the gdb-selected vCPU."""

    def __init__(self, gdb: GdbMI):
        self._gdb = gdb

    def resolve(self, name: str) -> str:
        """The target's name for architectural register ``name``."""
        if name == CURRENT_EL:
            return self.resolve("CPSR")
        spellings = (name, *ALIASES.get(name, ()))
        for spelling in spellings:
            if self._gdb.has_register(spelling):
                return spelling
        raise RegisterError(f"the target has no {name} register (tried {', '.join(spellings)})"
                            + ("; EL2 registers need -M virt,virtualization=on"
                               if name.endswith(("_EL2", "_EL12")) else ""))

    def available(self, name: str) -> bool:
        try:
            self.resolve(name)
        except RegisterError:
            return False
        return True

    def read(self, names: Iterable[str]) -> dict[str, int]:
        """Values by architectural name, all in one gdb round trip."""
        names = list(names)
        target = {n: self.resolve(n) for n in names}
        values = self._gdb.read_registers(sorted(set(target.values())))
        return {n: values[t] & 0b1100 if n == CURRENT_EL else values[t]
                for n, t in target.items()}

    def read_one(self, name: str) -> int:
        return self.read([name])[name]

    def current_el(self) -> int:
        """The exception level the vCPU is at (0-3)."""
        return self.read_one(CURRENT_EL) >> 2
