"""Decoder for AArch64 system instructions (pure Python, no target I/O).

Recognises, from a 32-bit instruction word:

* ``MSR``/``MRS`` (register form) with architectural register names,
* ``SYS``/``SYSL`` and their aliases ``DC``, ``IC``, ``TLBI``, ``AT`` (and the
  ``CFP``/``DVP``/``CPP RCTX`` prediction-restriction ops),
* hints (``NOP``, ``WFI``, ``WFE``, ...), barriers (``DSB``/``DMB``/``ISB``,
  ``DSB <dom>nXS``, ``SSBB``/``PSSBB``/``SB``/``CLREX``), ``MSR <pstatefield>, #imm``,
* exception generation (``SVC``/``HVC``/``SMC``/``BRK``/``HLT``/``DCPSn``) and
  exception return (``ERET``/``ERETAA``/``ERETAB``/``DRPS``).

Any other 32-bit value decodes to :class:`Unknown`; :func:`decode` never raises
for a value in ``0 <= word < 2**32``.

It also decodes what a hypervisor sees: :func:`decode_iss_sys64` turns the ISS
of an ESR_ELx with EC=0x18 (trapped MSR/MRS/system instruction) into the same
result objects, and :func:`decode_esr` handles that and a few neighbouring
exception classes.

Layout of the module: first the declarative part (``construct`` bit layouts,
then the encoding tables), then the decoding logic that uses them.
``str()`` of every result is assembler text that GNU as (Armv9.3-A plus extensions)
assembles back to the same word.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from construct import BitsInteger, BitStruct

from .sysregs import ESR_EL2, ISS_ERET, ISS_HVC, ISS_SYS, ISS_WFX

__all__ = [
    "SYSTEM_INSN", "EXC_GEN_INSN", "BRANCH_REG_INSN",
    "SYSREGS", "SYSREG_DIRECTIONAL", "SYS_OP_SPECS", "SYS_OPS", "HINTS", "BARRIER_OPTIONS",
    "BARRIER_OPS", "DSB_NXS_DOMAINS", "PSTATE_FIELDS", "EXC_GEN_OPS", "ERET_OPS",
    "SysOpSpec", "Insn", "SysRegAccess", "SysOp", "Hint", "Barrier", "MsrImm",
    "ExceptionGen", "ExceptionReturn", "Unknown", "Decoded",
    "decode", "decode_bytes", "decode_iss_sys64", "decode_esr",
    "sysreg_name", "generic_sysreg_name", "sysreg_encoding", "find_sys_op", "system_word",
    "EC_WFX", "EC_SVC64", "EC_HVC64", "EC_SMC64", "EC_SYS64", "EC_ERET",
]

# ---------------------------------------------------------------------------
# Bit layouts (MSB first; parse from the word as 4 big-endian bytes)
# ---------------------------------------------------------------------------

#: System instruction class: bits[31:22] == 0b1101010100.
SYSTEM_INSN = BitStruct(
    "prefix" / BitsInteger(10),
    "L" / BitsInteger(1),
    "op0" / BitsInteger(2),
    "op1" / BitsInteger(3),
    "CRn" / BitsInteger(4),
    "CRm" / BitsInteger(4),
    "op2" / BitsInteger(3),
    "Rt" / BitsInteger(5),
)
SYSTEM_PREFIX = 0b1101010100

#: Exception generation: bits[31:24] == 0b11010100.
EXC_GEN_INSN = BitStruct(
    "prefix" / BitsInteger(8),
    "opc" / BitsInteger(3),
    "imm16" / BitsInteger(16),
    "op2" / BitsInteger(3),
    "LL" / BitsInteger(2),
)
EXC_GEN_PREFIX = 0b11010100

#: Unconditional branch (register): bits[31:25] == 0b1101011.
BRANCH_REG_INSN = BitStruct(
    "prefix" / BitsInteger(7),
    "opc" / BitsInteger(4),
    "op2" / BitsInteger(5),
    "op3" / BitsInteger(6),
    "Rn" / BitsInteger(5),
    "op4" / BitsInteger(5),
)
BRANCH_REG_PREFIX = 0b1101011

# ESR_ELx and the ISS encodings are laid out once, in sysregs.py.

EC_WFX = 0x01
EC_SVC64 = 0x15
EC_HVC64 = 0x16
EC_SMC64 = 0x17
EC_SYS64 = 0x18
EC_ERET = 0x1A

# ---------------------------------------------------------------------------
# Encoding tables
# ---------------------------------------------------------------------------

# (name, op0, op1, CRn, CRm, op2)
_SYSREG_ROWS: tuple[tuple[str, int, int, int, int, int], ...] = (
    # --- identification (op0=3, CRn=0) ---
    ("MIDR_EL1", 3, 0, 0, 0, 0),
    ("MPIDR_EL1", 3, 0, 0, 0, 5),
    ("REVIDR_EL1", 3, 0, 0, 0, 6),
    ("ID_PFR0_EL1", 3, 0, 0, 1, 0),
    ("ID_PFR1_EL1", 3, 0, 0, 1, 1),
    ("ID_DFR0_EL1", 3, 0, 0, 1, 2),
    ("ID_AFR0_EL1", 3, 0, 0, 1, 3),
    ("ID_MMFR0_EL1", 3, 0, 0, 1, 4),
    ("ID_MMFR1_EL1", 3, 0, 0, 1, 5),
    ("ID_MMFR2_EL1", 3, 0, 0, 1, 6),
    ("ID_MMFR3_EL1", 3, 0, 0, 1, 7),
    ("ID_ISAR0_EL1", 3, 0, 0, 2, 0),
    ("ID_ISAR1_EL1", 3, 0, 0, 2, 1),
    ("ID_ISAR2_EL1", 3, 0, 0, 2, 2),
    ("ID_ISAR3_EL1", 3, 0, 0, 2, 3),
    ("ID_ISAR4_EL1", 3, 0, 0, 2, 4),
    ("ID_ISAR5_EL1", 3, 0, 0, 2, 5),
    ("ID_MMFR4_EL1", 3, 0, 0, 2, 6),
    ("ID_ISAR6_EL1", 3, 0, 0, 2, 7),
    ("MVFR0_EL1", 3, 0, 0, 3, 0),
    ("MVFR1_EL1", 3, 0, 0, 3, 1),
    ("MVFR2_EL1", 3, 0, 0, 3, 2),
    ("ID_PFR2_EL1", 3, 0, 0, 3, 4),
    ("ID_DFR1_EL1", 3, 0, 0, 3, 5),
    ("ID_MMFR5_EL1", 3, 0, 0, 3, 6),
    ("ID_AA64PFR0_EL1", 3, 0, 0, 4, 0),
    ("ID_AA64PFR1_EL1", 3, 0, 0, 4, 1),
    ("ID_AA64ZFR0_EL1", 3, 0, 0, 4, 4),
    ("ID_AA64SMFR0_EL1", 3, 0, 0, 4, 5),
    ("ID_AA64DFR0_EL1", 3, 0, 0, 5, 0),
    ("ID_AA64DFR1_EL1", 3, 0, 0, 5, 1),
    ("ID_AA64AFR0_EL1", 3, 0, 0, 5, 4),
    ("ID_AA64AFR1_EL1", 3, 0, 0, 5, 5),
    ("ID_AA64ISAR0_EL1", 3, 0, 0, 6, 0),
    ("ID_AA64ISAR1_EL1", 3, 0, 0, 6, 1),
    ("ID_AA64ISAR2_EL1", 3, 0, 0, 6, 2),
    ("ID_AA64MMFR0_EL1", 3, 0, 0, 7, 0),
    ("ID_AA64MMFR1_EL1", 3, 0, 0, 7, 1),
    ("ID_AA64MMFR2_EL1", 3, 0, 0, 7, 2),
    ("CCSIDR_EL1", 3, 1, 0, 0, 0),
    ("CLIDR_EL1", 3, 1, 0, 0, 1),
    ("CCSIDR2_EL1", 3, 1, 0, 0, 2),
    ("AIDR_EL1", 3, 1, 0, 0, 7),
    ("CSSELR_EL1", 3, 2, 0, 0, 0),
    ("CTR_EL0", 3, 3, 0, 0, 1),
    ("DCZID_EL0", 3, 3, 0, 0, 7),
    ("VPIDR_EL2", 3, 4, 0, 0, 0),
    ("VMPIDR_EL2", 3, 4, 0, 0, 5),
    # --- system control, traps (CRn=1) ---
    ("SCTLR_EL1", 3, 0, 1, 0, 0),
    ("ACTLR_EL1", 3, 0, 1, 0, 1),
    ("CPACR_EL1", 3, 0, 1, 0, 2),
    ("RGSR_EL1", 3, 0, 1, 0, 5),
    ("GCR_EL1", 3, 0, 1, 0, 6),
    ("ZCR_EL1", 3, 0, 1, 2, 0),
    ("TRFCR_EL1", 3, 0, 1, 2, 1),
    ("SCTLR_EL2", 3, 4, 1, 0, 0),
    ("ACTLR_EL2", 3, 4, 1, 0, 1),
    ("HCR_EL2", 3, 4, 1, 1, 0),
    ("MDCR_EL2", 3, 4, 1, 1, 1),
    ("CPTR_EL2", 3, 4, 1, 1, 2),
    ("HSTR_EL2", 3, 4, 1, 1, 3),
    ("HFGRTR_EL2", 3, 4, 1, 1, 4),
    ("HFGWTR_EL2", 3, 4, 1, 1, 5),
    ("HFGITR_EL2", 3, 4, 1, 1, 6),
    ("HACR_EL2", 3, 4, 1, 1, 7),
    ("ZCR_EL2", 3, 4, 1, 2, 0),
    ("TRFCR_EL2", 3, 4, 1, 2, 1),
    ("SDER32_EL2", 3, 4, 1, 3, 1),
    ("SCTLR_EL12", 3, 5, 1, 0, 0),
    ("CPACR_EL12", 3, 5, 1, 0, 2),
    ("ZCR_EL12", 3, 5, 1, 2, 0),
    ("TRFCR_EL12", 3, 5, 1, 2, 1),
    ("SCTLR_EL3", 3, 6, 1, 0, 0),
    ("ACTLR_EL3", 3, 6, 1, 0, 1),
    ("SCR_EL3", 3, 6, 1, 1, 0),
    ("SDER32_EL3", 3, 6, 1, 1, 1),
    ("CPTR_EL3", 3, 6, 1, 1, 2),
    ("ZCR_EL3", 3, 6, 1, 2, 0),
    ("MDCR_EL3", 3, 6, 1, 3, 1),
    # --- translation tables (CRn=2) ---
    ("TTBR0_EL1", 3, 0, 2, 0, 0),
    ("TTBR1_EL1", 3, 0, 2, 0, 1),
    ("TCR_EL1", 3, 0, 2, 0, 2),
    ("APIAKeyLo_EL1", 3, 0, 2, 1, 0),
    ("APIAKeyHi_EL1", 3, 0, 2, 1, 1),
    ("APIBKeyLo_EL1", 3, 0, 2, 1, 2),
    ("APIBKeyHi_EL1", 3, 0, 2, 1, 3),
    ("APDAKeyLo_EL1", 3, 0, 2, 2, 0),
    ("APDAKeyHi_EL1", 3, 0, 2, 2, 1),
    ("APDBKeyLo_EL1", 3, 0, 2, 2, 2),
    ("APDBKeyHi_EL1", 3, 0, 2, 2, 3),
    ("APGAKeyLo_EL1", 3, 0, 2, 3, 0),
    ("APGAKeyHi_EL1", 3, 0, 2, 3, 1),
    ("TTBR0_EL2", 3, 4, 2, 0, 0),
    ("TTBR1_EL2", 3, 4, 2, 0, 1),
    ("TCR_EL2", 3, 4, 2, 0, 2),
    ("VTTBR_EL2", 3, 4, 2, 1, 0),
    ("VTCR_EL2", 3, 4, 2, 1, 2),
    ("VNCR_EL2", 3, 4, 2, 2, 0),
    ("VSTTBR_EL2", 3, 4, 2, 6, 0),
    ("VSTCR_EL2", 3, 4, 2, 6, 2),
    ("TTBR0_EL12", 3, 5, 2, 0, 0),
    ("TTBR1_EL12", 3, 5, 2, 0, 1),
    ("TCR_EL12", 3, 5, 2, 0, 2),
    ("TTBR0_EL3", 3, 6, 2, 0, 0),
    ("TCR_EL3", 3, 6, 2, 0, 2),
    ("DACR32_EL2", 3, 4, 3, 0, 0),
    # --- exception state, PSTATE (CRn=4) ---
    ("SPSR_EL1", 3, 0, 4, 0, 0),
    ("ELR_EL1", 3, 0, 4, 0, 1),
    ("SP_EL0", 3, 0, 4, 1, 0),
    ("SPSel", 3, 0, 4, 2, 0),
    ("CurrentEL", 3, 0, 4, 2, 2),
    ("PAN", 3, 0, 4, 2, 3),
    ("UAO", 3, 0, 4, 2, 4),
    ("ICC_PMR_EL1", 3, 0, 4, 6, 0),
    ("NZCV", 3, 3, 4, 2, 0),
    ("DAIF", 3, 3, 4, 2, 1),
    ("DIT", 3, 3, 4, 2, 5),
    ("SSBS", 3, 3, 4, 2, 6),
    ("TCO", 3, 3, 4, 2, 7),
    ("FPCR", 3, 3, 4, 4, 0),
    ("FPSR", 3, 3, 4, 4, 1),
    ("DSPSR_EL0", 3, 3, 4, 5, 0),
    ("DLR_EL0", 3, 3, 4, 5, 1),
    ("SPSR_EL2", 3, 4, 4, 0, 0),
    ("ELR_EL2", 3, 4, 4, 0, 1),
    ("SP_EL1", 3, 4, 4, 1, 0),
    ("SPSR_irq", 3, 4, 4, 3, 0),
    ("SPSR_abt", 3, 4, 4, 3, 1),
    ("SPSR_und", 3, 4, 4, 3, 2),
    ("SPSR_fiq", 3, 4, 4, 3, 3),
    ("SPSR_EL12", 3, 5, 4, 0, 0),
    ("ELR_EL12", 3, 5, 4, 0, 1),
    ("SPSR_EL3", 3, 6, 4, 0, 0),
    ("ELR_EL3", 3, 6, 4, 0, 1),
    ("SP_EL2", 3, 6, 4, 1, 0),
    # --- fault status (CRn=5), fault address (CRn=6) ---
    ("AFSR0_EL1", 3, 0, 5, 1, 0),
    ("AFSR1_EL1", 3, 0, 5, 1, 1),
    ("ESR_EL1", 3, 0, 5, 2, 0),
    ("ERRIDR_EL1", 3, 0, 5, 3, 0),
    ("ERRSELR_EL1", 3, 0, 5, 3, 1),
    ("ERXFR_EL1", 3, 0, 5, 4, 0),
    ("ERXCTLR_EL1", 3, 0, 5, 4, 1),
    ("ERXSTATUS_EL1", 3, 0, 5, 4, 2),
    ("ERXADDR_EL1", 3, 0, 5, 4, 3),
    ("ERXMISC0_EL1", 3, 0, 5, 5, 0),
    ("ERXMISC1_EL1", 3, 0, 5, 5, 1),
    ("TFSR_EL1", 3, 0, 5, 6, 0),
    ("TFSRE0_EL1", 3, 0, 5, 6, 1),
    ("IFSR32_EL2", 3, 4, 5, 0, 1),
    ("AFSR0_EL2", 3, 4, 5, 1, 0),
    ("AFSR1_EL2", 3, 4, 5, 1, 1),
    ("ESR_EL2", 3, 4, 5, 2, 0),
    ("VSESR_EL2", 3, 4, 5, 2, 3),
    ("FPEXC32_EL2", 3, 4, 5, 3, 0),
    ("TFSR_EL2", 3, 4, 5, 6, 0),
    ("AFSR0_EL12", 3, 5, 5, 1, 0),
    ("AFSR1_EL12", 3, 5, 5, 1, 1),
    ("ESR_EL12", 3, 5, 5, 2, 0),
    ("TFSR_EL12", 3, 5, 5, 6, 0),
    ("AFSR0_EL3", 3, 6, 5, 1, 0),
    ("AFSR1_EL3", 3, 6, 5, 1, 1),
    ("ESR_EL3", 3, 6, 5, 2, 0),
    ("TFSR_EL3", 3, 6, 5, 6, 0),
    ("FAR_EL1", 3, 0, 6, 0, 0),
    ("FAR_EL2", 3, 4, 6, 0, 0),
    ("HPFAR_EL2", 3, 4, 6, 0, 4),
    ("FAR_EL12", 3, 5, 6, 0, 0),
    ("FAR_EL3", 3, 6, 6, 0, 0),
    # --- address translation result (CRn=7) ---
    ("PAR_EL1", 3, 0, 7, 4, 0),
    # --- performance monitors (CRn=9) ---
    ("PMINTENSET_EL1", 3, 0, 9, 14, 1),
    ("PMINTENCLR_EL1", 3, 0, 9, 14, 2),
    ("PMCR_EL0", 3, 3, 9, 12, 0),
    ("PMCNTENSET_EL0", 3, 3, 9, 12, 1),
    ("PMCNTENCLR_EL0", 3, 3, 9, 12, 2),
    ("PMOVSCLR_EL0", 3, 3, 9, 12, 3),
    ("PMSWINC_EL0", 3, 3, 9, 12, 4),
    ("PMSELR_EL0", 3, 3, 9, 12, 5),
    ("PMCEID0_EL0", 3, 3, 9, 12, 6),
    ("PMCEID1_EL0", 3, 3, 9, 12, 7),
    ("PMCCNTR_EL0", 3, 3, 9, 13, 0),
    ("PMXEVTYPER_EL0", 3, 3, 9, 13, 1),
    ("PMXEVCNTR_EL0", 3, 3, 9, 13, 2),
    ("PMUSERENR_EL0", 3, 3, 9, 14, 0),
    ("PMOVSSET_EL0", 3, 3, 9, 14, 3),
    # --- memory attributes (CRn=10) ---
    ("MAIR_EL1", 3, 0, 10, 2, 0),
    ("AMAIR_EL1", 3, 0, 10, 3, 0),
    ("LORSA_EL1", 3, 0, 10, 4, 0),
    ("LOREA_EL1", 3, 0, 10, 4, 1),
    ("LORN_EL1", 3, 0, 10, 4, 2),
    ("LORC_EL1", 3, 0, 10, 4, 3),
    ("LORID_EL1", 3, 0, 10, 4, 7),
    ("MAIR_EL2", 3, 4, 10, 2, 0),
    ("AMAIR_EL2", 3, 4, 10, 3, 0),
    ("MAIR_EL12", 3, 5, 10, 2, 0),
    ("AMAIR_EL12", 3, 5, 10, 3, 0),
    ("MAIR_EL3", 3, 6, 10, 2, 0),
    ("AMAIR_EL3", 3, 6, 10, 3, 0),
    # --- vectors, interrupts (CRn=12) ---
    ("VBAR_EL1", 3, 0, 12, 0, 0),
    ("RVBAR_EL1", 3, 0, 12, 0, 1),
    ("RMR_EL1", 3, 0, 12, 0, 2),
    ("ISR_EL1", 3, 0, 12, 1, 0),
    ("DISR_EL1", 3, 0, 12, 1, 1),
    ("ICC_IAR0_EL1", 3, 0, 12, 8, 0),
    ("ICC_EOIR0_EL1", 3, 0, 12, 8, 1),
    ("ICC_HPPIR0_EL1", 3, 0, 12, 8, 2),
    ("ICC_BPR0_EL1", 3, 0, 12, 8, 3),
    ("ICC_AP0R0_EL1", 3, 0, 12, 8, 4),
    ("ICC_AP0R1_EL1", 3, 0, 12, 8, 5),
    ("ICC_AP0R2_EL1", 3, 0, 12, 8, 6),
    ("ICC_AP0R3_EL1", 3, 0, 12, 8, 7),
    ("ICC_AP1R0_EL1", 3, 0, 12, 9, 0),
    ("ICC_AP1R1_EL1", 3, 0, 12, 9, 1),
    ("ICC_AP1R2_EL1", 3, 0, 12, 9, 2),
    ("ICC_AP1R3_EL1", 3, 0, 12, 9, 3),
    ("ICC_DIR_EL1", 3, 0, 12, 11, 1),
    ("ICC_RPR_EL1", 3, 0, 12, 11, 3),
    ("ICC_SGI1R_EL1", 3, 0, 12, 11, 5),
    ("ICC_ASGI1R_EL1", 3, 0, 12, 11, 6),
    ("ICC_SGI0R_EL1", 3, 0, 12, 11, 7),
    ("ICC_IAR1_EL1", 3, 0, 12, 12, 0),
    ("ICC_EOIR1_EL1", 3, 0, 12, 12, 1),
    ("ICC_HPPIR1_EL1", 3, 0, 12, 12, 2),
    ("ICC_BPR1_EL1", 3, 0, 12, 12, 3),
    ("ICC_CTLR_EL1", 3, 0, 12, 12, 4),
    ("ICC_SRE_EL1", 3, 0, 12, 12, 5),
    ("ICC_IGRPEN0_EL1", 3, 0, 12, 12, 6),
    ("ICC_IGRPEN1_EL1", 3, 0, 12, 12, 7),
    ("VBAR_EL2", 3, 4, 12, 0, 0),
    ("RVBAR_EL2", 3, 4, 12, 0, 1),
    ("RMR_EL2", 3, 4, 12, 0, 2),
    ("VDISR_EL2", 3, 4, 12, 1, 1),
    ("ICH_AP0R0_EL2", 3, 4, 12, 8, 0),
    ("ICH_AP0R1_EL2", 3, 4, 12, 8, 1),
    ("ICH_AP0R2_EL2", 3, 4, 12, 8, 2),
    ("ICH_AP0R3_EL2", 3, 4, 12, 8, 3),
    ("ICH_AP1R0_EL2", 3, 4, 12, 9, 0),
    ("ICH_AP1R1_EL2", 3, 4, 12, 9, 1),
    ("ICH_AP1R2_EL2", 3, 4, 12, 9, 2),
    ("ICH_AP1R3_EL2", 3, 4, 12, 9, 3),
    ("ICC_SRE_EL2", 3, 4, 12, 9, 5),
    ("ICH_HCR_EL2", 3, 4, 12, 11, 0),
    ("ICH_VTR_EL2", 3, 4, 12, 11, 1),
    ("ICH_MISR_EL2", 3, 4, 12, 11, 2),
    ("ICH_EISR_EL2", 3, 4, 12, 11, 3),
    ("ICH_ELRSR_EL2", 3, 4, 12, 11, 5),
    ("ICH_VMCR_EL2", 3, 4, 12, 11, 7),
    ("VBAR_EL12", 3, 5, 12, 0, 0),
    ("VBAR_EL3", 3, 6, 12, 0, 0),
    ("RVBAR_EL3", 3, 6, 12, 0, 1),
    ("RMR_EL3", 3, 6, 12, 0, 2),
    ("ICC_CTLR_EL3", 3, 6, 12, 12, 4),
    ("ICC_SRE_EL3", 3, 6, 12, 12, 5),
    ("ICC_IGRPEN1_EL3", 3, 6, 12, 12, 7),
    # --- context, thread ids (CRn=13) ---
    ("CONTEXTIDR_EL1", 3, 0, 13, 0, 1),
    ("TPIDR_EL1", 3, 0, 13, 0, 4),
    ("SCXTNUM_EL1", 3, 0, 13, 0, 7),
    ("TPIDR_EL0", 3, 3, 13, 0, 2),
    ("TPIDRRO_EL0", 3, 3, 13, 0, 3),
    ("SCXTNUM_EL0", 3, 3, 13, 0, 7),
    ("CONTEXTIDR_EL2", 3, 4, 13, 0, 1),
    ("TPIDR_EL2", 3, 4, 13, 0, 2),
    ("SCXTNUM_EL2", 3, 4, 13, 0, 7),
    ("CONTEXTIDR_EL12", 3, 5, 13, 0, 1),
    ("SCXTNUM_EL12", 3, 5, 13, 0, 7),
    ("TPIDR_EL3", 3, 6, 13, 0, 2),
    ("SCXTNUM_EL3", 3, 6, 13, 0, 7),
    # --- generic timer (CRn=14) ---
    ("CNTKCTL_EL1", 3, 0, 14, 1, 0),
    ("CNTFRQ_EL0", 3, 3, 14, 0, 0),
    ("CNTPCT_EL0", 3, 3, 14, 0, 1),
    ("CNTVCT_EL0", 3, 3, 14, 0, 2),
    ("CNTPCTSS_EL0", 3, 3, 14, 0, 5),
    ("CNTVCTSS_EL0", 3, 3, 14, 0, 6),
    ("CNTP_TVAL_EL0", 3, 3, 14, 2, 0),
    ("CNTP_CTL_EL0", 3, 3, 14, 2, 1),
    ("CNTP_CVAL_EL0", 3, 3, 14, 2, 2),
    ("CNTV_TVAL_EL0", 3, 3, 14, 3, 0),
    ("CNTV_CTL_EL0", 3, 3, 14, 3, 1),
    ("CNTV_CVAL_EL0", 3, 3, 14, 3, 2),
    ("PMCCFILTR_EL0", 3, 3, 14, 15, 7),
    ("CNTVOFF_EL2", 3, 4, 14, 0, 3),
    ("CNTPOFF_EL2", 3, 4, 14, 0, 6),
    ("CNTHCTL_EL2", 3, 4, 14, 1, 0),
    ("CNTHP_TVAL_EL2", 3, 4, 14, 2, 0),
    ("CNTHP_CTL_EL2", 3, 4, 14, 2, 1),
    ("CNTHP_CVAL_EL2", 3, 4, 14, 2, 2),
    ("CNTHV_TVAL_EL2", 3, 4, 14, 3, 0),
    ("CNTHV_CTL_EL2", 3, 4, 14, 3, 1),
    ("CNTHV_CVAL_EL2", 3, 4, 14, 3, 2),
    ("CNTHVS_TVAL_EL2", 3, 4, 14, 4, 0),
    ("CNTHVS_CTL_EL2", 3, 4, 14, 4, 1),
    ("CNTHVS_CVAL_EL2", 3, 4, 14, 4, 2),
    ("CNTHPS_TVAL_EL2", 3, 4, 14, 5, 0),
    ("CNTHPS_CTL_EL2", 3, 4, 14, 5, 1),
    ("CNTHPS_CVAL_EL2", 3, 4, 14, 5, 2),
    ("CNTKCTL_EL12", 3, 5, 14, 1, 0),
    ("CNTP_TVAL_EL02", 3, 5, 14, 2, 0),
    ("CNTP_CTL_EL02", 3, 5, 14, 2, 1),
    ("CNTP_CVAL_EL02", 3, 5, 14, 2, 2),
    ("CNTV_TVAL_EL02", 3, 5, 14, 3, 0),
    ("CNTV_CTL_EL02", 3, 5, 14, 3, 1),
    ("CNTV_CVAL_EL02", 3, 5, 14, 3, 2),
    ("CNTPS_TVAL_EL1", 3, 7, 14, 2, 0),
    ("CNTPS_CTL_EL1", 3, 7, 14, 2, 1),
    ("CNTPS_CVAL_EL1", 3, 7, 14, 2, 2),
    # --- debug (op0=2) ---
    ("OSDTRRX_EL1", 2, 0, 0, 0, 2),
    ("MDCCINT_EL1", 2, 0, 0, 2, 0),
    ("MDSCR_EL1", 2, 0, 0, 2, 2),
    ("OSDTRTX_EL1", 2, 0, 0, 3, 2),
    ("OSECCR_EL1", 2, 0, 0, 6, 2),
    ("MDRAR_EL1", 2, 0, 1, 0, 0),
    ("OSLAR_EL1", 2, 0, 1, 0, 4),
    ("OSLSR_EL1", 2, 0, 1, 1, 4),
    ("OSDLR_EL1", 2, 0, 1, 3, 4),
    ("DBGPRCR_EL1", 2, 0, 1, 4, 4),
    ("DBGCLAIMSET_EL1", 2, 0, 7, 8, 6),
    ("DBGCLAIMCLR_EL1", 2, 0, 7, 9, 6),
    ("DBGAUTHSTATUS_EL1", 2, 0, 7, 14, 6),
    ("MDCCSR_EL0", 2, 3, 0, 1, 0),
    ("DBGDTR_EL0", 2, 3, 0, 4, 0),
    ("DBGVCR32_EL2", 2, 4, 0, 7, 0),
) + tuple(
    # register families
    row
    for n in range(16)
    for row in (
        (f"DBGBVR{n}_EL1", 2, 0, 0, n, 4),
        (f"DBGBCR{n}_EL1", 2, 0, 0, n, 5),
        (f"DBGWVR{n}_EL1", 2, 0, 0, n, 6),
        (f"DBGWCR{n}_EL1", 2, 0, 0, n, 7),
        (f"ICH_LR{n}_EL2", 3, 4, 12, 12 + (n >> 3), n & 7),
    )
) + tuple(
    row
    for n in range(31)
    for row in (
        (f"PMEVCNTR{n}_EL0", 3, 3, 14, 8 + (n >> 3), n & 7),
        (f"PMEVTYPER{n}_EL0", 3, 3, 14, 12 + (n >> 3), n & 7),
    )
)

#: (op0, op1, CRn, CRm, op2) -> architectural name (ARM ARM spelling).
SYSREGS: dict[tuple[int, int, int, int, int], str] = {
    (op0, op1, crn, crm, op2): name for name, op0, op1, crn, crm, op2 in _SYSREG_ROWS
}

#: Encodings whose name depends on the direction: key -> (name when read, name when written).
SYSREG_DIRECTIONAL: dict[tuple[int, int, int, int, int], tuple[str, str]] = {
    (2, 3, 0, 5, 0): ("DBGDTRRX_EL0", "DBGDTRTX_EL0"),
}

_SYSREG_BY_NAME: dict[str, tuple[int, int, int, int, int]] = {
    name.lower(): key for key, name in SYSREGS.items()
} | {
    name.lower(): key for key, names in SYSREG_DIRECTIONAL.items() for name in names
}


@dataclass(frozen=True)
class SysOpSpec:
    """One SYS alias (a row of the DC/IC/TLBI/AT table).

    ``operand`` says what Rt carries: ``None`` (no register; Rt should be 31),
    ``"va"``, ``"va_range"``, ``"ipa"``, ``"ipa_range"``, ``"asid"``,
    ``"setway"`` (DC set/way: level, set and way) or ``"ctx"`` (RCTX ops).

    Cache-maintenance attributes (DC/IC): ``clean``, ``invalidate``, ``zero``
    (DC ZVA/GVA/GZVA), ``data``/``tags`` (what is maintained: data and/or MTE
    allocation tags) and ``point``: ``"poc"``, ``"pou"``, ``"pop"``
    (persistence), ``"podp"`` (deep persistence) or ``None`` (set/way and DC
    ZVA-like ops have no point).

    TLBI/IC attributes: ``domain`` is ``"is"``/``"os"`` for broadcast
    variants and ``None`` for local ones; ``last_level`` for the ``*L*``
    variants; ``stage2`` when stage-2 (IPA) entries are affected.
    ``el`` is the translation regime's exception level (TLBI/AT) or ``None``.
    """

    kind: str
    op: str
    op1: int
    crn: int
    crm: int
    op2: int
    operand: str | None = None
    clean: bool = False
    invalidate: bool = False
    zero: bool = False
    data: bool = False
    tags: bool = False
    point: str | None = None
    domain: str | None = None
    last_level: bool = False
    stage2: bool = False
    el: int | None = None

    @property
    def key(self) -> tuple[int, int, int, int]:
        return (self.op1, self.crn, self.crm, self.op2)

    @property
    def takes_register(self) -> bool:
        return self.operand is not None

    @property
    def takes_address(self) -> bool:
        """Rt holds a (possibly range-encoded) virtual or intermediate physical address."""
        return self.operand in ("va", "va_range", "ipa", "ipa_range")

    @property
    def is_set_way(self) -> bool:
        return self.operand == "setway"

    @property
    def is_by_va(self) -> bool:
        return self.kind in ("dc", "ic") and self.operand == "va"

    @property
    def is_range(self) -> bool:
        return self.operand in ("va_range", "ipa_range")

    @property
    def text(self) -> str:
        return f"{self.kind} {self.op}"


def _dc(op: str, op1: int, crm: int, op2: int, *, operand: str, point: str | None = None,
        clean: bool = False, invalidate: bool = False, zero: bool = False,
        data: bool = True, tags: bool = False) -> SysOpSpec:
    return SysOpSpec("dc", op, op1, 7, crm, op2, operand, clean=clean, invalidate=invalidate,
                     zero=zero, data=data, tags=tags, point=point)


def _ic(op: str, op1: int, crm: int, op2: int, operand: str | None, domain: str | None) -> SysOpSpec:
    return SysOpSpec("ic", op, op1, 7, crm, op2, operand, invalidate=True, data=True,
                     point="pou", domain=domain)


def _at(op: str, op1: int, crm: int, op2: int, el: int, stage2: bool = False) -> SysOpSpec:
    return SysOpSpec("at", op, op1, 7, crm, op2, "va", stage2=stage2, el=el)


def _tlbi(op: str, op1: int, crm: int, op2: int, operand: str | None, *, el: int,
          stage2: bool = False, last_level: bool = False) -> SysOpSpec:
    # The broadcast domain is spelled in the op name (…IS / …OS); the table
    # rows below only give it once, in the name.
    domain = "is" if op.endswith("is") else "os" if op.endswith("os") else None
    return SysOpSpec("tlbi", op, op1, 8, crm, op2, operand, invalidate=True, domain=domain,
                     last_level=last_level, stage2=stage2, el=el)


_VA, _SW, _NONE = "va", "setway", None

#: Every SYS alias this decoder knows.
SYS_OP_SPECS: tuple[SysOpSpec, ...] = (
    # DC by set/way (op1=0) and by VA
    _dc("ivac", 0, 6, 1, operand=_VA, invalidate=True, point="poc"),
    _dc("isw", 0, 6, 2, operand=_SW, invalidate=True),
    _dc("igvac", 0, 6, 3, operand=_VA, invalidate=True, point="poc", data=False, tags=True),
    _dc("igsw", 0, 6, 4, operand=_SW, invalidate=True, data=False, tags=True),
    _dc("igdvac", 0, 6, 5, operand=_VA, invalidate=True, point="poc", tags=True),
    _dc("igdsw", 0, 6, 6, operand=_SW, invalidate=True, tags=True),
    _dc("csw", 0, 10, 2, operand=_SW, clean=True),
    _dc("cgsw", 0, 10, 4, operand=_SW, clean=True, data=False, tags=True),
    _dc("cgdsw", 0, 10, 6, operand=_SW, clean=True, tags=True),
    _dc("cisw", 0, 14, 2, operand=_SW, clean=True, invalidate=True),
    _dc("cigsw", 0, 14, 4, operand=_SW, clean=True, invalidate=True, data=False, tags=True),
    _dc("cigdsw", 0, 14, 6, operand=_SW, clean=True, invalidate=True, tags=True),
    _dc("zva", 3, 4, 1, operand=_VA, zero=True),
    _dc("gva", 3, 4, 3, operand=_VA, zero=True, data=False, tags=True),
    _dc("gzva", 3, 4, 4, operand=_VA, zero=True, tags=True),
    _dc("cvac", 3, 10, 1, operand=_VA, clean=True, point="poc"),
    _dc("cgvac", 3, 10, 3, operand=_VA, clean=True, point="poc", data=False, tags=True),
    _dc("cgdvac", 3, 10, 5, operand=_VA, clean=True, point="poc", tags=True),
    _dc("cvau", 3, 11, 1, operand=_VA, clean=True, point="pou"),
    _dc("cvap", 3, 12, 1, operand=_VA, clean=True, point="pop"),
    _dc("cgvap", 3, 12, 3, operand=_VA, clean=True, point="pop", data=False, tags=True),
    _dc("cgdvap", 3, 12, 5, operand=_VA, clean=True, point="pop", tags=True),
    _dc("cvadp", 3, 13, 1, operand=_VA, clean=True, point="podp"),
    _dc("cgvadp", 3, 13, 3, operand=_VA, clean=True, point="podp", data=False, tags=True),
    _dc("cgdvadp", 3, 13, 5, operand=_VA, clean=True, point="podp", tags=True),
    _dc("civac", 3, 14, 1, operand=_VA, clean=True, invalidate=True, point="poc"),
    _dc("cigvac", 3, 14, 3, operand=_VA, clean=True, invalidate=True, point="poc",
        data=False, tags=True),
    _dc("cigdvac", 3, 14, 5, operand=_VA, clean=True, invalidate=True, point="poc", tags=True),
    # IC
    _ic("ialluis", 0, 1, 0, _NONE, "is"),
    _ic("iallu", 0, 5, 0, _NONE, None),
    _ic("ivau", 3, 5, 1, _VA, None),
    # AT
    _at("s1e1r", 0, 8, 0, 1),
    _at("s1e1w", 0, 8, 1, 1),
    _at("s1e0r", 0, 8, 2, 1),
    _at("s1e0w", 0, 8, 3, 1),
    _at("s1e1rp", 0, 9, 0, 1),
    _at("s1e1wp", 0, 9, 1, 1),
    _at("s1e2r", 4, 8, 0, 2),
    _at("s1e2w", 4, 8, 1, 2),
    _at("s12e1r", 4, 8, 4, 1, stage2=True),
    _at("s12e1w", 4, 8, 5, 1, stage2=True),
    _at("s12e0r", 4, 8, 6, 1, stage2=True),
    _at("s12e0w", 4, 8, 7, 1, stage2=True),
    _at("s1e3r", 6, 8, 0, 3),
    _at("s1e3w", 6, 8, 1, 3),
    # TLBI, EL1&0 regime (op1=0). CRm: 1=OS, 2=range IS, 3=IS, 5=range OS, 6=range, 7=local
    _tlbi("vmalle1os", 0, 1, 0, _NONE, el=1),
    _tlbi("vae1os", 0, 1, 1, "va", el=1),
    _tlbi("aside1os", 0, 1, 2, "asid", el=1),
    _tlbi("vaae1os", 0, 1, 3, "va", el=1),
    _tlbi("vale1os", 0, 1, 5, "va", el=1, last_level=True),
    _tlbi("vaale1os", 0, 1, 7, "va", el=1, last_level=True),
    _tlbi("rvae1is", 0, 2, 1, "va_range", el=1),
    _tlbi("rvaae1is", 0, 2, 3, "va_range", el=1),
    _tlbi("rvale1is", 0, 2, 5, "va_range", el=1, last_level=True),
    _tlbi("rvaale1is", 0, 2, 7, "va_range", el=1, last_level=True),
    _tlbi("vmalle1is", 0, 3, 0, _NONE, el=1),
    _tlbi("vae1is", 0, 3, 1, "va", el=1),
    _tlbi("aside1is", 0, 3, 2, "asid", el=1),
    _tlbi("vaae1is", 0, 3, 3, "va", el=1),
    _tlbi("vale1is", 0, 3, 5, "va", el=1, last_level=True),
    _tlbi("vaale1is", 0, 3, 7, "va", el=1, last_level=True),
    _tlbi("rvae1os", 0, 5, 1, "va_range", el=1),
    _tlbi("rvaae1os", 0, 5, 3, "va_range", el=1),
    _tlbi("rvale1os", 0, 5, 5, "va_range", el=1, last_level=True),
    _tlbi("rvaale1os", 0, 5, 7, "va_range", el=1, last_level=True),
    _tlbi("rvae1", 0, 6, 1, "va_range", el=1),
    _tlbi("rvaae1", 0, 6, 3, "va_range", el=1),
    _tlbi("rvale1", 0, 6, 5, "va_range", el=1, last_level=True),
    _tlbi("rvaale1", 0, 6, 7, "va_range", el=1, last_level=True),
    _tlbi("vmalle1", 0, 7, 0, _NONE, el=1),
    _tlbi("vae1", 0, 7, 1, "va", el=1),
    _tlbi("aside1", 0, 7, 2, "asid", el=1),
    _tlbi("vaae1", 0, 7, 3, "va", el=1),
    _tlbi("vale1", 0, 7, 5, "va", el=1, last_level=True),
    _tlbi("vaale1", 0, 7, 7, "va", el=1, last_level=True),
    # TLBI, EL2 regime and stage 2 (op1=4)
    _tlbi("ipas2e1is", 4, 0, 1, "ipa", el=1, stage2=True),
    _tlbi("ripas2e1is", 4, 0, 2, "ipa_range", el=1, stage2=True),
    _tlbi("ipas2le1is", 4, 0, 5, "ipa", el=1, stage2=True, last_level=True),
    _tlbi("ripas2le1is", 4, 0, 6, "ipa_range", el=1, stage2=True, last_level=True),
    _tlbi("alle2os", 4, 1, 0, _NONE, el=2),
    _tlbi("vae2os", 4, 1, 1, "va", el=2),
    _tlbi("alle1os", 4, 1, 4, _NONE, el=1, stage2=True),
    _tlbi("vale2os", 4, 1, 5, "va", el=2, last_level=True),
    _tlbi("vmalls12e1os", 4, 1, 6, _NONE, el=1, stage2=True),
    _tlbi("rvae2is", 4, 2, 1, "va_range", el=2),
    _tlbi("rvale2is", 4, 2, 5, "va_range", el=2, last_level=True),
    _tlbi("alle2is", 4, 3, 0, _NONE, el=2),
    _tlbi("vae2is", 4, 3, 1, "va", el=2),
    _tlbi("alle1is", 4, 3, 4, _NONE, el=1, stage2=True),
    _tlbi("vale2is", 4, 3, 5, "va", el=2, last_level=True),
    _tlbi("vmalls12e1is", 4, 3, 6, _NONE, el=1, stage2=True),
    _tlbi("ipas2e1os", 4, 4, 0, "ipa", el=1, stage2=True),
    _tlbi("ipas2e1", 4, 4, 1, "ipa", el=1, stage2=True),
    _tlbi("ripas2e1", 4, 4, 2, "ipa_range", el=1, stage2=True),
    _tlbi("ripas2e1os", 4, 4, 3, "ipa_range", el=1, stage2=True),
    _tlbi("ipas2le1os", 4, 4, 4, "ipa", el=1, stage2=True, last_level=True),
    _tlbi("ipas2le1", 4, 4, 5, "ipa", el=1, stage2=True, last_level=True),
    _tlbi("ripas2le1", 4, 4, 6, "ipa_range", el=1, stage2=True, last_level=True),
    _tlbi("ripas2le1os", 4, 4, 7, "ipa_range", el=1, stage2=True, last_level=True),
    _tlbi("rvae2os", 4, 5, 1, "va_range", el=2),
    _tlbi("rvale2os", 4, 5, 5, "va_range", el=2, last_level=True),
    _tlbi("rvae2", 4, 6, 1, "va_range", el=2),
    _tlbi("rvale2", 4, 6, 5, "va_range", el=2, last_level=True),
    _tlbi("alle2", 4, 7, 0, _NONE, el=2),
    _tlbi("vae2", 4, 7, 1, "va", el=2),
    _tlbi("alle1", 4, 7, 4, _NONE, el=1, stage2=True),
    _tlbi("vale2", 4, 7, 5, "va", el=2, last_level=True),
    _tlbi("vmalls12e1", 4, 7, 6, _NONE, el=1, stage2=True),
    # TLBI, EL3 regime (op1=6)
    _tlbi("alle3os", 6, 1, 0, _NONE, el=3),
    _tlbi("vae3os", 6, 1, 1, "va", el=3),
    _tlbi("vale3os", 6, 1, 5, "va", el=3, last_level=True),
    _tlbi("rvae3is", 6, 2, 1, "va_range", el=3),
    _tlbi("rvale3is", 6, 2, 5, "va_range", el=3, last_level=True),
    _tlbi("alle3is", 6, 3, 0, _NONE, el=3),
    _tlbi("vae3is", 6, 3, 1, "va", el=3),
    _tlbi("vale3is", 6, 3, 5, "va", el=3, last_level=True),
    _tlbi("rvae3os", 6, 5, 1, "va_range", el=3),
    _tlbi("rvale3os", 6, 5, 5, "va_range", el=3, last_level=True),
    _tlbi("rvae3", 6, 6, 1, "va_range", el=3),
    _tlbi("rvale3", 6, 6, 5, "va_range", el=3, last_level=True),
    _tlbi("alle3", 6, 7, 0, _NONE, el=3),
    _tlbi("vae3", 6, 7, 1, "va", el=3),
    _tlbi("vale3", 6, 7, 5, "va", el=3, last_level=True),
    # Prediction restriction by context (FEAT_SPECRES)
    SysOpSpec("cfp", "rctx", 3, 7, 3, 4, "ctx"),
    SysOpSpec("dvp", "rctx", 3, 7, 3, 5, "ctx"),
    SysOpSpec("cpp", "rctx", 3, 7, 3, 7, "ctx"),
)

#: (op1, CRn, CRm, op2) -> SysOpSpec
SYS_OPS: dict[tuple[int, int, int, int], SysOpSpec] = {s.key: s for s in SYS_OP_SPECS}
_SYS_OPS_BY_NAME: dict[tuple[str, str], SysOpSpec] = {(s.kind, s.op): s for s in SYS_OP_SPECS}

#: HINT #imm (imm = CRm:op2) -> text
HINTS: dict[int, str] = {
    0: "nop", 1: "yield", 2: "wfe", 3: "wfi", 4: "sev", 5: "sevl", 6: "dgh", 7: "xpaclri",
    8: "pacia1716", 10: "pacib1716", 12: "autia1716", 14: "autib1716",
    16: "esb", 17: "psb csync", 18: "tsb csync", 20: "csdb",
    24: "paciaz", 25: "paciasp", 26: "pacibz", 27: "pacibsp",
    28: "autiaz", 29: "autiasp", 30: "autibz", 31: "autibsp",
    32: "bti", 34: "bti c", 36: "bti j", 38: "bti jc",
}

#: DSB/DMB option (CRm) -> name
BARRIER_OPTIONS: dict[int, str] = {
    15: "sy", 14: "st", 13: "ld", 11: "ish", 10: "ishst", 9: "ishld",
    7: "nsh", 6: "nshst", 5: "nshld", 3: "osh", 2: "oshst", 1: "oshld",
}
#: op2 in the barrier group (op0=0, op1=3, CRn=3) -> mnemonic
BARRIER_OPS: dict[int, str] = {2: "clrex", 4: "dsb", 5: "dmb", 6: "isb", 7: "sb"}
#: DSB <domain>nXS: CRm<3:2> -> domain (CRm<1:0> == 0b10, op2 == 1)
DSB_NXS_DOMAINS: dict[int, str] = {0: "osh", 1: "nsh", 2: "ish", 3: "sy"}

#: MSR <pstatefield>, #imm: (op1, op2) -> (field name, largest imm in CRm)
PSTATE_FIELDS: dict[tuple[int, int], tuple[str, int]] = {
    (0, 3): ("uao", 1), (0, 4): ("pan", 1), (0, 5): ("spsel", 1),
    (3, 1): ("ssbs", 1), (3, 2): ("dit", 1), (3, 4): ("tco", 1),
    (3, 6): ("daifset", 15), (3, 7): ("daifclr", 15),
}

#: Exception generation: (opc, LL) -> mnemonic (op2 must be 0)
EXC_GEN_OPS: dict[tuple[int, int], str] = {
    (0, 1): "svc", (0, 2): "hvc", (0, 3): "smc", (1, 0): "brk", (2, 0): "hlt",
    (5, 1): "dcps1", (5, 2): "dcps2", (5, 3): "dcps3",
}

#: Exception return, from the branch-register layout: (opc, op2, op3, Rn, op4) -> mnemonic
ERET_OPS: dict[tuple[int, int, int, int, int], str] = {
    (0b0100, 0b11111, 0b000000, 31, 0): "eret",
    (0b0100, 0b11111, 0b000010, 31, 31): "eretaa",
    (0b0100, 0b11111, 0b000011, 31, 31): "eretab",
    (0b0101, 0b11111, 0b000000, 31, 0): "drps",
}

# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


def _xreg(n: int) -> str:
    return "xzr" if n == 31 else f"x{n}"


@dataclass(frozen=True)
class Insn:
    """Base of every decode result. ``word`` is the 32-bit encoding (for
    results built from an ESR it is the equivalent synthesised encoding).
    Every subclass has a ``mnemonic`` (field or property) and ``str()``."""

    word: int


@dataclass(frozen=True)
class SysRegAccess(Insn):
    """MRS (``is_read``) or MSR (register) access to a system register."""

    op0: int
    op1: int
    crn: int
    crm: int
    op2: int
    rt: int
    is_read: bool
    name: str

    @property
    def mnemonic(self) -> str:
        return "mrs" if self.is_read else "msr"

    @property
    def is_write(self) -> bool:
        return not self.is_read

    @property
    def encoding(self) -> tuple[int, int, int, int, int]:
        return (self.op0, self.op1, self.crn, self.crm, self.op2)

    @property
    def known(self) -> bool:
        """True when ``name`` is an architectural name rather than the generic S-form."""
        return self.name != generic_sysreg_name(*self.encoding)

    def __str__(self) -> str:
        reg = self.name.lower()
        if self.is_read:
            return f"mrs {_xreg(self.rt)}, {reg}"
        return f"msr {reg}, {_xreg(self.rt)}"


@dataclass(frozen=True)
class SysOp(Insn):
    """SYS (``is_read`` False) / SYSL instruction, with its alias spec if known."""

    op1: int
    crn: int
    crm: int
    op2: int
    rt: int
    is_read: bool
    spec: SysOpSpec | None

    @property
    def kind(self) -> str:
        """``dc``/``ic``/``tlbi``/``at``/``cfp``/``dvp``/``cpp``, else ``sys``/``sysl``."""
        if self.spec is not None:
            return self.spec.kind
        return "sysl" if self.is_read else "sys"

    @property
    def op(self) -> str | None:
        return self.spec.op if self.spec is not None else None

    @property
    def mnemonic(self) -> str:
        return self.kind

    @property
    def takes_register(self) -> bool:
        return self.spec.takes_register if self.spec is not None else self.rt != 31

    @property
    def takes_address(self) -> bool:
        return self.spec is not None and self.spec.takes_address

    @property
    def is_set_way(self) -> bool:
        return self.spec is not None and self.spec.is_set_way

    @property
    def is_by_va(self) -> bool:
        return self.spec is not None and self.spec.is_by_va

    @property
    def cleans(self) -> bool:
        return self.spec is not None and self.spec.clean

    @property
    def invalidates(self) -> bool:
        return self.spec is not None and self.spec.invalidate

    @property
    def zeroes(self) -> bool:
        return self.spec is not None and self.spec.zero

    @property
    def point(self) -> str | None:
        return self.spec.point if self.spec is not None else None

    @property
    def alias_form(self) -> bool:
        """True when ``str()`` uses the alias (operand shape matches the spec)."""
        if self.spec is None:
            return False
        return self.spec.takes_register or self.rt == 31

    def __str__(self) -> str:
        if self.is_read:
            return f"sysl {_xreg(self.rt)}, #{self.op1}, c{self.crn}, c{self.crm}, #{self.op2}"
        if self.alias_form:
            assert self.spec is not None
            if self.spec.takes_register:
                return f"{self.spec.kind} {self.spec.op}, {_xreg(self.rt)}"
            return f"{self.spec.kind} {self.spec.op}"
        text = f"sys #{self.op1}, c{self.crn}, c{self.crm}, #{self.op2}"
        return text if self.rt == 31 else f"{text}, {_xreg(self.rt)}"


@dataclass(frozen=True)
class Hint(Insn):
    """HINT space: ``imm`` = CRm:op2; ``name`` is the alias text or None."""

    imm: int
    name: str | None

    @property
    def mnemonic(self) -> str:
        return self.name.split()[0] if self.name else "hint"

    def __str__(self) -> str:
        return self.name if self.name else f"hint #0x{self.imm:x}"


@dataclass(frozen=True)
class Barrier(Insn):
    """DSB/DMB/ISB/CLREX/SB/SSBB/PSSBB; ``option`` is CRm (or the nXS domain bits)."""

    mnemonic: str
    option: int
    nxs: bool = False

    @property
    def option_name(self) -> str | None:
        if self.nxs:
            return DSB_NXS_DOMAINS[self.option >> 2] + "nxs"
        if self.mnemonic in ("dsb", "dmb"):
            return BARRIER_OPTIONS.get(self.option)
        if self.mnemonic in ("isb", "clrex") and self.option == 15:
            return "sy"
        return None

    def __str__(self) -> str:
        m = self.mnemonic
        if m in ("ssbb", "pssbb", "sb"):
            return m
        if m in ("isb", "clrex"):
            return m if self.option == 15 else f"{m} #0x{self.option:x}"
        name = self.option_name
        return f"{m} {name}" if name else f"{m} #0x{self.option:x}"


@dataclass(frozen=True)
class MsrImm(Insn):
    """MSR <pstatefield>, #imm."""

    field: str
    imm: int

    @property
    def mnemonic(self) -> str:
        return "msr"

    def __str__(self) -> str:
        return f"msr {self.field}, #0x{self.imm:x}"


@dataclass(frozen=True)
class ExceptionGen(Insn):
    """SVC/HVC/SMC/BRK/HLT/DCPSn #imm16."""

    mnemonic: str
    imm: int

    def __str__(self) -> str:
        if self.mnemonic.startswith("dcps") and self.imm == 0:
            return self.mnemonic
        return f"{self.mnemonic} #0x{self.imm:x}"


@dataclass(frozen=True)
class ExceptionReturn(Insn):
    """ERET/ERETAA/ERETAB/DRPS."""

    mnemonic: str

    def __str__(self) -> str:
        return self.mnemonic


@dataclass(frozen=True)
class Unknown(Insn):
    """Anything this decoder does not handle."""

    @property
    def mnemonic(self) -> str:
        return ".inst"

    def __str__(self) -> str:
        return f".inst 0x{self.word:08x}"


Decoded = Union[SysRegAccess, SysOp, Hint, Barrier, MsrImm, ExceptionGen, ExceptionReturn, Unknown]

# ---------------------------------------------------------------------------
# Decoding logic
# ---------------------------------------------------------------------------


def generic_sysreg_name(op0: int, op1: int, crn: int, crm: int, op2: int) -> str:
    """The generic ``S<op0>_<op1>_C<n>_C<m>_<op2>`` name."""
    return f"S{op0}_{op1}_C{crn}_C{crm}_{op2}"


def sysreg_name(op0: int, op1: int, crn: int, crm: int, op2: int, *, is_read: bool = True) -> str:
    """Architectural name of a system register encoding (generic S-form if unknown)."""
    key = (op0, op1, crn, crm, op2)
    directional = SYSREG_DIRECTIONAL.get(key)
    if directional is not None:
        return directional[0 if is_read else 1]
    name = SYSREGS.get(key)
    return name if name is not None else generic_sysreg_name(*key)


def sysreg_encoding(name: str) -> tuple[int, int, int, int, int]:
    """(op0, op1, CRn, CRm, op2) for a register name (case-insensitive; also
    accepts the generic ``s3_0_c1_c0_0`` form). Raises KeyError if unknown."""
    low = name.strip().lower()
    key = _SYSREG_BY_NAME.get(low)
    if key is not None:
        return key
    parts = low.split("_")
    if (len(parts) == 5 and parts[0][:1] == "s" and parts[2][:1] == "c" and parts[3][:1] == "c"):
        try:
            op0, op1, crn, crm, op2 = (int(parts[0][1:]), int(parts[1]), int(parts[2][1:]),
                                       int(parts[3][1:]), int(parts[4]))
        except ValueError:
            raise KeyError(name) from None
        if 2 <= op0 <= 3 and op1 < 8 and crn < 16 and crm < 16 and op2 < 8:
            return (op0, op1, crn, crm, op2)
    raise KeyError(name)


def find_sys_op(kind: str, op: str) -> SysOpSpec:
    """Look up a SYS alias by name, e.g. ``find_sys_op("dc", "civac")``. KeyError if unknown."""
    return _SYS_OPS_BY_NAME[(kind.lower(), op.lower())]


def _be(word: int) -> bytes:
    return word.to_bytes(4, "big")


def _decode_system(word: int) -> Decoded:
    f = SYSTEM_INSN.parse(_be(word))
    if f.op0 >= 2:
        is_read = bool(f.L)
        return SysRegAccess(word, f.op0, f.op1, f.CRn, f.CRm, f.op2, f.Rt, is_read,
                            sysreg_name(f.op0, f.op1, f.CRn, f.CRm, f.op2, is_read=is_read))
    if f.op0 == 1:
        spec = None if f.L else SYS_OPS.get((f.op1, f.CRn, f.CRm, f.op2))
        return SysOp(word, f.op1, f.CRn, f.CRm, f.op2, f.Rt, bool(f.L), spec)
    # op0 == 0: hints, barriers, MSR (immediate)
    if f.L or f.Rt != 31:
        return Unknown(word)
    if f.CRn == 2 and f.op1 == 3:
        imm = (f.CRm << 3) | f.op2
        return Hint(word, imm, HINTS.get(imm))
    if f.CRn == 3 and f.op1 == 3:
        op = BARRIER_OPS.get(f.op2)
        if op == "dsb" and f.CRm in (0, 4):
            return Barrier(word, "ssbb" if f.CRm == 0 else "pssbb", f.CRm)
        if op == "sb":
            return Barrier(word, "sb", f.CRm) if f.CRm == 0 else Unknown(word)
        if op is not None:
            return Barrier(word, op, f.CRm)
        if f.op2 == 1 and (f.CRm & 3) == 0b10:
            return Barrier(word, "dsb", f.CRm, nxs=True)
        return Unknown(word)
    if f.CRn == 4:
        field = PSTATE_FIELDS.get((f.op1, f.op2))
        if field is not None and f.CRm <= field[1]:
            return MsrImm(word, field[0], f.CRm)
    return Unknown(word)


def _decode_exc_gen(word: int) -> Decoded:
    f = EXC_GEN_INSN.parse(_be(word))
    op = EXC_GEN_OPS.get((f.opc, f.LL)) if f.op2 == 0 else None
    return ExceptionGen(word, op, f.imm16) if op is not None else Unknown(word)


def _decode_branch_reg(word: int) -> Decoded:
    f = BRANCH_REG_INSN.parse(_be(word))
    op = ERET_OPS.get((f.opc, f.op2, f.op3, f.Rn, f.op4))
    return ExceptionReturn(word, op) if op is not None else Unknown(word)


def decode(word: int) -> Decoded:
    """Decode one 32-bit instruction word. Never raises for 0 <= word < 2**32."""
    if not isinstance(word, int) or isinstance(word, bool):
        raise TypeError(f"instruction word must be int, not {type(word).__name__}")
    if not 0 <= word <= 0xFFFFFFFF:
        raise ValueError(f"instruction word out of range: {word:#x}")
    if word >> 22 == SYSTEM_PREFIX:
        return _decode_system(word)
    if word >> 24 == EXC_GEN_PREFIX:
        return _decode_exc_gen(word)
    if word >> 25 == BRANCH_REG_PREFIX:
        return _decode_branch_reg(word)
    return Unknown(word)


def decode_bytes(data: bytes, offset: int = 0) -> Decoded:
    """Decode the little-endian instruction at ``data[offset:offset+4]``."""
    chunk = bytes(data[offset:offset + 4])
    if len(chunk) != 4:
        raise ValueError("need 4 bytes")
    return decode(int.from_bytes(chunk, "little"))


def system_word(L: int, op0: int, op1: int, crn: int, crm: int, op2: int, rt: int) -> int:
    """The MRS/MSR/SYS/SYSL instruction word (``L`` 1 for reads) with these fields."""
    raw = SYSTEM_INSN.build(dict(prefix=SYSTEM_PREFIX, L=L, op0=op0, op1=op1, CRn=crn,
                                 CRm=crm, op2=op2, Rt=rt))
    return int.from_bytes(raw, "big")


def decode_iss_sys64(iss: int) -> Decoded:
    """Decode the ISS of an ESR_ELx with EC=0x18 (trapped MSR/MRS/SYS/SYSL).

    The result is what :func:`decode` returns for the equivalent instruction
    (its ``word`` is that synthesised encoding); Direction=1 means a read
    (MRS/SYSL). Only ISS bits[24:0] are used."""
    f = ISS_SYS.parse(iss & 0x1FFFFFF)
    return decode(system_word(int(f.Direction), f.Op0, f.Op1, f.CRn, f.CRm, f.Op2, f.Rt))


def _exc_gen_word(mnemonic: str, imm16: int) -> int:
    (opc, ll), = [k for k, v in EXC_GEN_OPS.items() if v == mnemonic]
    raw = EXC_GEN_INSN.build(dict(prefix=EXC_GEN_PREFIX, opc=opc, imm16=imm16, op2=0, LL=ll))
    return int.from_bytes(raw, "big")


def _eret_word(mnemonic: str) -> int:
    (opc, op2, op3, rn, op4), = [k for k, v in ERET_OPS.items() if v == mnemonic]
    raw = BRANCH_REG_INSN.build(dict(prefix=BRANCH_REG_PREFIX, opc=opc, op2=op2, op3=op3,
                                     Rn=rn, op4=op4))
    return int.from_bytes(raw, "big")


_EC_IMM16 = {EC_SVC64: "svc", EC_HVC64: "hvc", EC_SMC64: "smc"}


def decode_esr(esr: int) -> Decoded | None:
    """Decode the instruction an ESR_ELx value reports, for the exception
    classes that identify one: 0x18 (MSR/MRS/SYS, via :func:`decode_iss_sys64`),
    0x15/0x16/0x17 (SVC/HVC/SMC with their imm16), 0x01 (WFI/WFE) and 0x1A
    (ERET/ERETAA/ERETAB). Returns None for any other class (or WFIT/WFET)."""
    if not 0 <= esr < 1 << 64:
        raise ValueError(f"ESR out of range: {esr:#x}")
    f = ESR_EL2.parse(esr)
    if f.EC == EC_SYS64:
        return decode_iss_sys64(f.ISS)
    if f.EC in _EC_IMM16:
        return decode(_exc_gen_word(_EC_IMM16[f.EC], ISS_HVC.get(f.ISS, "imm16")))
    if f.EC == EC_WFX:
        ti = ISS_WFX.get(f.ISS, "TI")
        if ti > 1:
            return None
        return decode(system_word(0, 0, 3, 2, 0, 3 if ti == 0 else 2, 31))
    if f.EC == EC_ERET:
        e = ISS_ERET.parse(f.ISS)
        name = "eret" if not e.ERET else ("eretab" if e.ERETA else "eretaa")
        return decode(_eret_word(name))
    return None
