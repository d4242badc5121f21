"""Events: what happened to a guest, in the order it happened.

The schema is declared once here, as data: each kind with its fields and their types.  The
trace reader validates against it; the engine reads events in a columnar form (one numpy
structured array, ``EVENT_DTYPE``) so that runs of stage-2 faults and maps can be replayed
vectorized.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEMA = "s2cache.trace/1"
U64_MAX = (1 << 64) - 1

ACCESS = ("read", "write", "exec")
# Cache maintenance by VA (DC) and I-cache maintenance (IC), as the guest issues them.
DC_VA_OPS = ("civac", "cvac", "ivac", "cvau", "cvap", "cvadp", "zva")
SET_WAY_OPS = ("isw", "csw", "cisw")
IC_OPS = ("iallu", "ialluis", "ivau")
# Maintenance a hypervisor performed (observed in a real run, or a policy's action).
HYP_OPS = ("clean", "inval", "clean-inval", "icache-inval")
SOURCES = ("host-zero", "load", "device", "other")
# Registers whose writes matter to the model; other names are accepted and ignored.
REGS = ("SCTLR_EL1", "HCR_EL2", "TCR_EL1", "TTBR0_EL1", "TTBR1_EL1", "MAIR_EL1", "VTCR_EL2",
        "VTTBR_EL2", "other")


@dataclass(frozen=True)
class Field:
    """One event field: ``type`` is u64, u32, u8, str, bool, or an enum tuple; ``column`` is
    where the columnar form keeps it."""

    name: str
    type: object
    column: str
    optional: bool = False


def _f(name, type_, column=None, optional=False):
    return Field(name, type_, column or name, optional)


# kind -> fields (besides "seq" and "kind").  Columns are shared between kinds: ``addr`` is the
# IPA or PA or VA the event is about, ``pa`` its PA where both exist, ``size`` its length.
KINDS: dict[str, tuple[Field, ...]] = {
    # reinit 1: the VMM re-initialised the vCPU (KVM_ARM_VCPU_INIT on a vCPU that ran); a
    # guest's PSCI CPU_ON is not one.
    "vcpu-on": (_f("vcpu", "u32"), _f("pc", "u64", optional=True),
                _f("reinit", "u8", "op", optional=True)),
    "vcpu-off": (_f("vcpu", "u32"),),
    "sysreg-write": (_f("vcpu", "u32"), _f("reg", "str"), _f("old", "u64"), _f("new", "u64"),
                     _f("pc", "u64", optional=True), _f("el", "u8", optional=True)),
    "s2-map": (_f("ipa", "u64", "addr"), _f("pa", "u64"), _f("size", "u64"),
               _f("memattr", "u8"), _f("xn", "u8", optional=True),
               _f("vcpu", "u32", optional=True)),
    "s2-unmap": (_f("ipa", "u64", "addr"), _f("size", "u64")),
    "s2-attr": (_f("ipa", "u64", "addr"), _f("size", "u64"), _f("memattr", "u8"),
                _f("xn", "u8", optional=True)),
    # deferred 1: a write whose changed lines come later as guest-access writes (the
    # hypervisor compared the page before and after), so the fault itself is no evidence.
    "s2-fault": (_f("vcpu", "u32"), _f("ipa", "u64", "addr"), _f("access", ACCESS),
                 _f("esr", "u64", optional=True), _f("pc", "u64", optional=True),
                 _f("el", "u8", optional=True), _f("deferred", "u8", "op", optional=True)),
    # The hypervisor saw the vCPU's first access to a page after a vCPU turned its caches
    # off (observation: the page stays mapped for every policy).
    "s2-access": (_f("vcpu", "u32"), _f("ipa", "u64", "addr"), _f("access", ACCESS),
                  _f("pc", "u64", optional=True), _f("el", "u8", optional=True)),
    "host-write": (_f("pa", "u64"), _f("size", "u64"), _f("source", SOURCES, "op")),
    "guest-access": (_f("vcpu", "u32"), _f("pa", "u64"), _f("size", "u64"),
                     _f("access", ACCESS), _f("va", "u64", optional=True),
                     _f("pc", "u64", optional=True)),
    "cmo-va": (_f("vcpu", "u32"), _f("op", DC_VA_OPS), _f("pa", "u64"), _f("size", "u64"),
               _f("va", "u64", optional=True), _f("pc", "u64", optional=True),
               _f("el", "u8", optional=True)),
    "set-way": (_f("vcpu", "u32"), _f("op", SET_WAY_OPS), _f("pc", "u64", optional=True),
                _f("el", "u8", optional=True)),
    "ic-inval": (_f("vcpu", "u32"), _f("op", IC_OPS), _f("pa", "u64", optional=True),
                 _f("size", "u64", optional=True), _f("pc", "u64", optional=True)),
    "tlbi": (_f("vcpu", "u32"), _f("op", "str"), _f("ipa", "u64", "addr", optional=True),
             _f("pc", "u64", optional=True)),
    "hyp-maintenance": (_f("op", HYP_OPS), _f("pa", "u64"), _f("size", "u64"),
                        _f("vcpu", "u32", optional=True), _f("reason", "str", optional=True)),
    # The hypervisor saw the vCPU fetch from a page written since it could last be fetched
    # (write-xor-execute observation; the lines written came before as guest-access writes).
    # ok 1: every instruction of the fetched 64-byte line is unchanged, or old and new are
    # both ones a PE may execute while they are modified (B, BL, BRK, SVC, HVC, SMC, ISB, NOP);
    # old/new: the first word of the line that is neither (else the fetched one), as a fetch
    # could still see it and now, where the hypervisor kept a copy.
    "fetch": (_f("vcpu", "u32"), _f("ipa", "u64", "addr"), _f("pc", "u64", optional=True),
              _f("el", "u8", optional=True), _f("ok", "u8", "op", optional=True),
              _f("old", "u64", optional=True), _f("new", "u64", optional=True)),
}
KIND_NAMES = tuple(KINDS)
KIND_CODE = {k: i for i, k in enumerate(KIND_NAMES)}

# Enum columns store an index into the kind's enum (op, access) or into REGS.
EVENT_DTYPE = np.dtype([
    ("seq", "<u8"), ("kind", "u1"), ("vcpu", "<u4"), ("addr", "<u8"), ("pa", "<u8"),
    ("size", "<u8"), ("old", "<u8"), ("new", "<u8"), ("pc", "<u8"), ("esr", "<u8"),
    ("va", "<u8"), ("memattr", "u1"), ("xn", "u1"), ("op", "u1"), ("access", "u1"),
    ("reg", "u1"), ("el", "u1"), ("present", "<u2"),
])
# "present" holds one bit per optional column that was given (else the value is unknown).
OPTIONAL_BIT = {"pc": 1, "esr": 2, "va": 4, "xn": 8, "el": 16, "vcpu": 32, "pa": 64,
                "size": 128, "addr": 256}


def enum_values(kind: str, name: str) -> tuple[str, ...]:
    for f in KINDS[kind]:
        if f.name == name and isinstance(f.type, tuple):
            return f.type
    if name == "reg" and any(f.name == "reg" for f in KINDS[kind]):
        return REGS
    raise KeyError(f"{kind}.{name} is not an enum")


def pages(addr: int, size: int, shift: int = 12) -> range:
    """Page numbers covered by [addr, addr+size)."""
    return range(addr >> shift, (addr + size + (1 << shift) - 1) >> shift)
