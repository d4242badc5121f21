"""The event schema helpers (gdbplugin/model/events.py) against their documented contract:
a field's column defaults to its name, enum columns index the kind's enum (or REGS for a
register name), and pages() are the 4 KiB page numbers a byte range touches."""
from __future__ import annotations

import pytest

from gdbplugin.model.events import KINDS, REGS, Field, _f, enum_values, pages


def test_field_helper_defaults():
    """A field is kept in the column of its own name unless told otherwise, and is required
    unless marked optional."""
    assert _f("vcpu", "u32") == Field("vcpu", "u32", "vcpu", False)
    assert _f("ipa", "u64", "addr") == Field("ipa", "u64", "addr", False)
    assert _f("pc", "u64", optional=True) == Field("pc", "u64", "pc", True)
    assert _f("reinit", "u8", "op", optional=True) == Field("reinit", "u8", "op", True)


def test_schema_columns_as_documented():
    """The shared columns the engine reads: an s2-map's IPA is in ``addr``, a host write's
    source and a vcpu-on's reinit flag in ``op``."""
    cols = {k: {f.name: f.column for f in fs} for k, fs in KINDS.items()}
    assert cols["s2-map"]["ipa"] == "addr" and cols["s2-map"]["pa"] == "pa"
    assert cols["host-write"]["source"] == "op"
    assert cols["vcpu-on"]["reinit"] == "op"
    assert cols["fetch"]["ok"] == "op"


@pytest.mark.parametrize("kind, name, values", [
    ("cmo-va", "op", ("civac", "cvac", "ivac", "cvau", "cvap", "cvadp", "zva")),
    ("set-way", "op", ("isw", "csw", "cisw")),
    ("ic-inval", "op", ("iallu", "ialluis", "ivau")),
    ("hyp-maintenance", "op", ("clean", "inval", "clean-inval", "icache-inval")),
    ("host-write", "source", ("host-zero", "load", "device", "other")),
    ("s2-fault", "access", ("read", "write", "exec")),
    ("guest-access", "access", ("read", "write", "exec")),
])
def test_enum_values_of_enum_fields(kind, name, values):
    """An enum column stores an index into the kind's own enum, so the enum must be that
    kind's, in its declared order (the Arm DC/IC operations a guest can issue, the
    hypervisor's operations, the host write sources, the access types)."""
    assert enum_values(kind, name) == values


def test_enum_values_of_register_names():
    """sysreg-write's ``reg`` is a string field whose column indexes REGS."""
    assert enum_values("sysreg-write", "reg") is REGS
    assert "SCTLR_EL1" in REGS and "HCR_EL2" in REGS


@pytest.mark.parametrize("kind, name", [
    ("sysreg-write", "old"),      # a u64 field
    ("tlbi", "op"),               # a free string, not an enum
    ("s2-map", "reg"),            # no such field in the kind
    ("cmo-va", "access"),
    ("cmo-va", "pa"),
])
def test_enum_values_rejects_non_enums(kind, name):
    """Asking for the enum of a field that is not one is an error, not a guess."""
    with pytest.raises(KeyError, match=f"{kind}.{name} is not an enum"):
        enum_values(kind, name)


def test_pages_of_a_range():
    """The 4 KiB pages [addr, addr+size) touches: a range ending on a page boundary stops
    there, one byte more reaches the next page."""
    assert pages(0x4000_0000, 0x1000) == range(0x40000, 0x40001)
    assert pages(0x4000_0FFF, 1) == range(0x40000, 0x40001)
    assert pages(0x4000_0FFF, 2) == range(0x40000, 0x40002)
    assert pages(0x4000_0800, 0x1000) == range(0x40000, 0x40002)
    assert pages(0x4000_0000, 0x3000) == range(0x40000, 0x40003)
    assert list(pages(0x4000_1000, 0)) == []


def test_pages_other_granule():
    """The page size is a parameter (1 << shift): 64 KiB pages with shift 16."""
    assert pages(0x4001_0000, 0x1_0000, 16) == range(0x4001, 0x4002)
    assert pages(0x4001_FFFF, 2, 16) == range(0x4001, 0x4003)
    assert pages(0x2000, 0x2000, shift=13) == range(1, 2)
