"""The shim's binary interface (gdbplugin/shim/abi.py) against its C side (gdbplugin/shim/shim.h).

Static assertions generated from abi.py (every field's offset and size, every struct's size,
every code's value) are compiled with the shim's own cross compiler against shim.h, so a field
moved or a kind renumbered on either side fails here; and every code shim.h declares must be in
abi.py, so a kind added in C alone fails too.  No QEMU needed.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gdbplugin.shim import abi
from gdbplugin.shim.launch import ShimError, ShimParams
from gdbplugin.shim.ring import decode_record

ROOT = Path(__file__).resolve().parents[2]
SHIM_H = ROOT / "gdbplugin" / "shim" / "shim.h"
CC = "aarch64-linux-gnu-gcc"


def assertions() -> str:
    lines = ['#include "shim.h"', "#include <stddef.h>"]
    for cname, layout in abi.LAYOUTS.items():
        lines.append(f"_Static_assert(sizeof(struct {cname}) == {layout.sizeof()}, "
                     f'"sizeof struct {cname}");')
        off = 0
        for sub in layout.subcons:
            size = sub.sizeof()
            lines.append(f"_Static_assert(offsetof(struct {cname}, {sub.name}) == {off}, "
                         f'"{cname}.{sub.name} offset");')
            lines.append(f"_Static_assert(sizeof(((struct {cname} *)0)->{sub.name}) == {size},"
                         f' "{cname}.{sub.name} size");')
            off += size
    for codes in abi.ALL_CODES:
        for cname, value in codes.c.items():
            lines.append(f'_Static_assert({cname} == {value}, "{cname}");')
    lines.append(f'_Static_assert(ST_COUNT == {len(abi.STATS)}, "ST_COUNT");')
    for name, value in (("PARAMS_MAGIC", abi.PARAMS_MAGIC), ("RING_MAGIC", abi.RING_MAGIC),
                        ("PARAMS_VERSION", abi.PARAMS_VERSION),
                        ("RING_VERSION", abi.RING_VERSION), ("MAX_VCPUS", abi.MAX_VCPUS),
                        ("SNAP_SLOTS", abi.SNAP_SLOTS), ("SNAP_BYTES", abi.SNAP_BYTES)):
        lines.append(f'_Static_assert({name} == {value:#x}UL, "{name}");')
    return "\n".join(lines) + "\n"


def test_abi_matches_shim_h(tmp_path):
    if shutil.which(CC) is None:
        pytest.fail(f"{CC} not found: scripts/setup installs gcc-aarch64-linux-gnu")
    src = tmp_path / "abi_check.c"
    src.write_text(assertions())
    res = subprocess.run([CC, "-fsyntax-only", "-ffreestanding", "-std=gnu11",
                          f"-I{SHIM_H.parent}", str(src)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]


def test_the_check_catches_a_moved_field(tmp_path):
    """The generated assertions really constrain shim.h: one wrong offset fails to compile."""
    text = assertions().replace("offsetof(struct ring_header, ctr_el0) == 1728",
                                "offsetof(struct ring_header, ctr_el0) == 1736")
    assert "1736" in text
    src = tmp_path / "abi_bad.c"
    src.write_text(text)
    res = subprocess.run([CC, "-fsyntax-only", "-ffreestanding", "-std=gnu11",
                          f"-I{SHIM_H.parent}", str(src)], capture_output=True, text=True)
    assert res.returncode != 0 and "ctr_el0 offset" in res.stderr


def test_every_code_in_shim_h_is_declared_in_abi():
    text = SHIM_H.read_text()
    declared = set().union(*(codes.c for codes in abi.ALL_CODES))
    prefixes = sorted({re.match(r"[A-Z]+_", n).group(0) for n in declared
                       if re.match(r"[A-Z]+_", n)})
    in_c = set()
    for body in re.findall(r"enum\s*\w*\s*\{([^}]*)\}", text):
        in_c |= {m for m in re.findall(r"\b([A-Z][A-Z0-9_]+)\s*=", body)}
    in_c |= set(re.findall(r"#define\s+((?:PF|FAULT|PERM|FWCFG|CMO)_[A-Z0-9_]+)\s", text))
    in_c = {n for n in in_c if any(n.startswith(p) for p in prefixes)}
    missing = in_c - declared - {"ST_COUNT", "POL_COUNT"}
    assert not missing, f"in shim.h but not in gdbplugin/shim/abi.py: {sorted(missing)}"


def test_record_fast_path_is_the_construct_layout():
    values = dict(seq=5, kind=abi.KINDS.ids["s2-fault"], vcpu=3, el=1,
                  access=abi.ACCESS.ids["exec"], op=0x0f,
                  flags=abi.FAULT_FLAGS.ids["s1ptw"] | abi.FAULT_FLAGS.ids["deferred"],
                  pc=0xffff800080001234, esr=0x82000007, ipa=0x40123000, pa=0x40123000,
                  size=0, va=0xffff800080123000)
    raw = abi.RECORD.build(values)
    assert abi.RECORD_FORMAT.unpack(raw) == tuple(values.values())
    ev = decode_record(4, raw)
    assert (ev.kind, ev.vcpu, ev.access, ev.pc, ev.ipa) == ("s2-fault", 3, "exec",
                                                             0xffff800080001234, 0x40123000)
    assert ev.extra == {"fsc": 0x0f, "s1ptw": True, "far_valid": True, "deferred": True,
                        "fetch": False, "fetch_ok": False}


def test_parameters_are_packed_and_validated():
    for bad in (dict(policy="linux"), dict(ring_records=1000), dict(ring_full="block"),
                dict(observe=3), dict(hook_kinds=("nothing",))):
        with pytest.raises(ShimError):
            ShimParams(**bad).pack()
    raw = ShimParams(policy="xen", blocks=True, hook_kinds=("diag",), trap_cmo=False).pack()
    p = abi.PARAMS.parse(raw)
    assert len(raw) == abi.PARAMS.sizeof() == 96
    assert (p.magic, p.policy, p.hook_mask) == (abi.PARAMS_MAGIC, 3, 1 << 16)
    assert p.flags == 1 | 16 | 32                  # blocks, track_writes, track_access
    loaders = ShimParams().loaders(0x1000)
    assert [ld.addr for ld in loaders] == list(range(0x1000, 0x1000 + 96, 8))
