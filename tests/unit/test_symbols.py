"""Naming PCs from ``[guest] symbols`` (gdbplugin/target/symbols.py): placements proven by the
run's SCTLR_EL1 write PCs landing on the image's own MSR SCTLR_EL1 instructions, at aligned
addresses; a PC no proven placement covers gets no name, never a wrong one."""
from __future__ import annotations

import struct

import pytest

from gdbplugin.capture.sites import MSR_WORDS
from gdbplugin.target.symbols import SymbolError, Symbolizer, load_images

LINK = 0xFFFF_8000_0800_0000                 # where _text is linked
ENTRY = 0x1000                               # primary_entry's offset in the Image
SITES = (0x1100, 0x2F00)                     # MSR SCTLR_EL1, X0 in the Image
PHYS = 0x4020_0000                           # where the Image is loaded (2 MiB aligned)
KASLR = 0x3A5C_0000_0000                     # a 2 MiB-aligned randomization
SIZE = 0x4000


def kernel(tmp_path):
    image = bytearray(SIZE)
    image[0:4] = struct.pack("<I", 0x1400_0000 | (ENTRY // 4))      # b primary_entry
    image[0x38:0x3C] = b"ARM\x64"
    for off in SITES:
        image[off:off + 4] = struct.pack("<I", MSR_WORDS["SCTLR_EL1"])
    (tmp_path / "Image").write_bytes(bytes(image))
    (tmp_path / "System.map").write_text("".join(
        f"{LINK + off:016x} {t} {name}\n" for off, t, name in
        ((ENTRY, "T", "primary_entry"), (0x10F0, "t", "__enable_mmu"),
         (0x2E00, "T", "set_sctlr_el1"), (0x3000, "D", "some_data"))))
    return load_images([tmp_path / "System.map"], tmp_path / "Image")


def test_physical_and_kaslr_placements_name_the_functions(tmp_path):
    images = kernel(tmp_path)
    assert images[0].link == LINK
    sym = Symbolizer(images, [PHYS + 0x1100, LINK + KASLR + 0x2F00])
    assert sorted(p["runs_at"] for p in sym.describe()) == [PHYS, LINK + KASLR]
    assert sym.locate(PHYS + 0x1100)[0] == "__enable_mmu+0x10"
    assert sym.locate(PHYS + 0x1000)[0] == "primary_entry"
    assert sym.locate(LINK + KASLR + 0x2F04)[0] == "set_sctlr_el1+0x104"
    # data symbols are not functions: the nearest text symbol names the address
    assert sym.locate(LINK + KASLR + 0x3008)[0] == "set_sctlr_el1+0x208"
    assert sym.locate(PHYS + SIZE) is None                  # past the image
    assert sym.locate(0x1234) is None and sym.locate(None) is None


def test_no_placement_without_proof(tmp_path):
    """A PC that is no MSR SCTLR_EL1 of the image at an aligned placement proves nothing;
    without it, nothing in that address range is named."""
    images = kernel(tmp_path)
    sym = Symbolizer(images, [PHYS + 0x1104, PHYS + 0x8000 + 0x1100])   # not 64 KiB aligned
    assert sym.describe() == []
    assert sym.locate(PHYS + 0x1100) is None


def test_an_ambiguous_pc_names_nothing(tmp_path):
    """Two images that would both explain the same write PC, and name a PC differently:
    no name rather than a guess."""
    a = kernel(tmp_path)
    (tmp_path / "b").mkdir()
    b = kernel(tmp_path / "b")
    (tmp_path / "b" / "System.map").write_text(
        (tmp_path / "b" / "System.map").read_text().replace("__enable_mmu", "other_fn"))
    b = load_images([tmp_path / "b" / "System.map"], tmp_path / "b" / "Image")
    sym = Symbolizer(a + b, [PHYS + 0x1100])
    assert sym.locate(PHYS + 0x1100) is None
    assert sym.locate(PHYS + 0x1000)[0] == "primary_entry"    # both agree there


@pytest.mark.parametrize("content, needs", [
    (b"\x7fELF\x02\x01\x01" + bytes(57), "no executable segment"),
    (b"garbage without symbols\n", "no text symbols"),
])
def test_bad_symbol_files_are_one_line(tmp_path, content, needs):
    path = tmp_path / "syms"
    path.write_bytes(content)
    (tmp_path / "Image").write_bytes(bytes(SIZE))
    with pytest.raises(SymbolError, match=needs):
        load_images([path], tmp_path / "Image")


def test_a_system_map_needs_a_linux_image(tmp_path):
    kernel(tmp_path)
    (tmp_path / "Image").write_bytes(bytes(SIZE))            # no ARM\x64 magic
    with pytest.raises(SymbolError, match="not an arm64 Linux Image"):
        load_images([tmp_path / "System.map"], tmp_path / "Image")
    with pytest.raises(SymbolError, match="needs the config's"):
        load_images([tmp_path / "System.map"], None)


RELOCATED = 0x5FF4_1000                      # where a U-Boot-like program moved itself


def test_an_elf_is_named_at_its_link_address_and_where_it_relocated(tmp_path):
    """A program linked at 0 (as U-Boot for QEMU's virt, running from flash) writes
    SCTLR_EL1 there, then again from a page-aligned copy near the top of RAM: both
    placements are proven, and PCs in either copy are named, built with the Debian cross
    toolchain."""
    import subprocess
    src = tmp_path / "prog.S"
    src.write_text("""
        .text
        .globl _start, mmu_setup, dcache_disable
    _start:     nop
                b mmu_setup
    mmu_setup:  mrs x0, sctlr_el1
                orr x0, x0, #1
                msr sctlr_el1, x0
                ret
        .balign 64
    dcache_disable:
                mrs x0, sctlr_el1
                bic x0, x0, #4
                msr sctlr_el1, x0
                ret
    """)
    obj, elf = tmp_path / "prog.o", tmp_path / "prog.elf"
    subprocess.run(["aarch64-linux-gnu-as", "-o", str(obj), str(src)], check=True)
    subprocess.run(["aarch64-linux-gnu-ld", "-Ttext=0", "-o", str(elf), str(obj)], check=True)
    (image,) = load_images([elf], None)
    sites = image.site_offsets()
    assert len(sites) == 2
    pcs = [sites[0], RELOCATED + sites[0], RELOCATED + sites[1]]
    sym = Symbolizer([image], pcs)
    assert sorted(p["runs_at"] for p in sym.describe()) == [0, RELOCATED]
    assert sym.locate(sites[0])[0] == "mmu_setup+0x8"
    assert sym.locate(RELOCATED + sites[1])[0] == "dcache_disable+0x8"
    assert sym.locate(RELOCATED + 4)[0] == "_start+0x4"
    assert sym.locate(RELOCATED + 0x10000) is None            # past the program


def test_replay_names_pcs_with_symbols(tmp_path, capsys):
    """`s2cache replay --symbols System.map --kernel Image`: the trace's SCTLR_EL1 writes
    place the kernel, and the transitions and findings at those PCs are named."""
    import json

    from gdbplugin.cli import main
    kernel(tmp_path)
    trace = tmp_path / "t.jsonl"
    events = [{"seq": 1, "kind": "vcpu-on", "vcpu": 0},
              {"seq": 2, "kind": "sysreg-write", "vcpu": 0, "reg": "SCTLR_EL1", "old": 0,
               "new": 0x1005, "pc": PHYS + 0x1100, "el": 1},
              {"seq": 3, "kind": "set-way", "vcpu": 0, "op": "cisw", "pc": PHYS + 0x1104,
               "el": 1}]
    trace.write_text(json.dumps({"schema": "s2cache.trace/1", "ram": [[PHYS, 1 << 24]],
                                 "vcpus": 1}) + "\n" + "".join(json.dumps(e) + "\n"
                                                              for e in events))
    out = tmp_path / "r.json"
    main(["replay", str(trace), "--policy", "none", "--json", str(out), "--symbols",
          str(tmp_path / "System.map"), "--kernel", str(tmp_path / "Image")])
    report = json.loads(out.read_text())
    assert report["transitions"][0]["symbol"] == "__enable_mmu+0x10"
    (sw,) = [f for f in report["findings"] if f["kind"] == "set-way-op"]
    assert sw["symbol"] == "__enable_mmu+0x14" and sw["image"].endswith("System.map")
    assert main(["replay", str(trace), "--symbols", str(tmp_path / "System.map")]) == 2
    assert "--symbols: " in capsys.readouterr().err
