"""The walker against QEMU's own translation, on real tables in a running guest.

The guests in tests/guests/mmu (built by scripts/build-guests) build random stage-1 (``s1``) or
stage-2 (``s2``) tables from a parameter block and stop at ``done`` with the MMU on.  For every
granule and start level we then read the registers through gdb, walk the tables from the
shared RAM file, and check each sampled address both ways: a Translation must read through
gdb at the VA/IPA exactly what gdb reads physically at the OA (and, in the data pool, the
OA itself, which every pool word holds); a Fault must make gdb's read fail.  The CLI's
``s2cache walk`` over a ``pmemsave`` dump must agree with the library.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from gdbplugin.arch.walker import Fault, Regime, Translation, Walker
from gdbplugin.target.gdbmi import GdbMI
from gdbplugin.target.physmem import GdbPhysMem, SharedRam
from gdbplugin.target.qemu import Loader, Qemu, QemuConfig, hmp_quote
from gdbplugin.target.registers import Registers

pytestmark = pytest.mark.qemu

ROOT = Path(__file__).resolve().parents[2]
PARAMS_MAGIC = 0x6d61726170633273       # "s2cparam", struct params in tests/guests/mmu/mmu.h
SAMPLES = 1000                          # addresses checked per translation regime
SCTLR_M, SCTLR_C, SCTLR_I = 1 << 0, 1 << 2, 1 << 12
HCR_VM, HCR_RW = 1 << 0, 1 << 31


@dataclass(frozen=True)
class S1:
    """Stage 1 at EL1: T0SZ picks the lower range's start level, T1SZ the upper range's (the
    upper range is where VA sizes too small to hold the identity map at 1 GiB are tried)."""

    name: str
    granule: int
    t0sz: int
    t1sz: int
    starts: tuple[int, int]            # expected start level (lower, upper)

    program = "s1"
    machine = "virt"

    def words(self) -> list[int]:
        return [PARAMS_MAGIC, self.granule, seed(self.name), self.t0sz, self.t1sz, 0]


@dataclass(frozen=True)
class S2:
    """Stage 2 from EL2 with a root of ``tables`` concatenated tables."""

    name: str
    granule: int
    t0sz: int
    sl0: int
    start: int
    tables: int

    program = "s2"
    machine = "virt,virtualization=on"

    def words(self) -> list[int]:
        return [PARAMS_MAGIC, self.granule, seed(self.name), self.t0sz, 0, self.sl0]


def seed(name: str) -> int:
    return zlib.crc32(name.encode()) << 16 | 1


K4, K16, K64 = 4096, 16384, 65536
CONFIGS = [
    S1("s1-4k-t0sz16-t1sz34", K4, 16, 34, (0, 2)),
    S1("s1-4k-t0sz25-t1sz44", K4, 25, 44, (1, 3)),
    S1("s1-4k-t0sz33-t1sz16", K4, 33, 16, (1, 0)),
    S1("s1-16k-t0sz16-t1sz40", K16, 16, 40, (0, 3)),
    S1("s1-16k-t0sz17-t1sz28", K16, 17, 28, (1, 2)),
    S1("s1-16k-t0sz32-t1sz20", K16, 32, 20, (2, 1)),
    S1("s1-64k-t0sz16-t1sz36", K64, 16, 36, (1, 3)),
    S1("s1-64k-t0sz22-t1sz16", K64, 22, 16, (2, 1)),
    S1("s1-64k-t0sz33-t1sz47", K64, 33, 47, (2, 3)),
    S2("s2-4k-t0sz24-sl0_1", K4, 24, 1, start=1, tables=2),
    S2("s2-4k-t0sz32-sl0_0", K4, 32, 0, start=2, tables=4),
    S2("s2-4k-t0sz21-sl0_1", K4, 21, 1, start=1, tables=16),
    S2("s2-16k-t0sz24-sl0_1", K16, 24, 1, start=2, tables=16),
    S2("s2-16k-t0sz16-sl0_2", K16, 16, 2, start=1, tables=2),
    S2("s2-64k-t0sz20-sl0_1", K64, 20, 1, start=2, tables=4),
    S2("s2-64k-t0sz32-sl0_0", K64, 32, 0, start=3, tables=8),
]


@pytest.fixture(scope="session")
def guests() -> dict[str, tuple[Path, dict[str, int]]]:
    """Builds the guests once; program name -> (ELF, symbol table)."""
    build = subprocess.run([str(ROOT / "scripts" / "build-guests")], capture_output=True,
                           text=True)
    assert build.returncode == 0, f"scripts/build-guests failed:\n{build.stderr}"
    out = {}
    for program in ("s1", "s2"):
        elf = ROOT / "build" / "guests" / f"{program}.elf"
        with elf.open("rb") as f:
            symtab = ELFFile(f).get_section_by_name(".symtab")
            out[program] = (elf, {s.name: s["st_value"] for s in symtab.iter_symbols() if s.name})
    return out


@dataclass
class Booted:
    config: S1 | S2
    qemu: Qemu
    gdb: GdbMI
    ram: SharedRam
    symbols: dict[str, int]
    regs: dict[str, int]
    regimes: dict[str, Regime]
    boot_s: float


# Tests take `booted` indirectly, all from this one list, so each configuration boots once.
BOOT = pytest.mark.parametrize("booted", CONFIGS, ids=lambda c: c.name, indirect=True)


@pytest.fixture(scope="module")
def booted(request, guests):
    """QEMU running one configuration, stopped at ``done``, with gdb attached."""
    config = request.param
    elf, symbols = guests[config.program]
    loaders = [Loader(addr=symbols["params"] + 8 * i, data=word)
               for i, word in enumerate(config.words())]
    t0 = time.monotonic()
    with Qemu(QemuConfig(machine=config.machine, kernel=elf, loaders=loaders)) as qemu, \
            GdbMI() as gdb:
        gdb.load_symbols(elf)
        gdb.connect(qemu.gdb_address)
        gdb.break_insert("done")
        gdb.break_insert("fault")
        stop = gdb.cont_until_stop(timeout=60)
        registers = Registers(gdb)
        if stop.address != symbols["done"]:
            el = registers.current_el()
            syndrome = registers.read([f"ESR_EL{el}", f"FAR_EL{el}", f"ELR_EL{el}"])
            panic = int.from_bytes(gdb.read_memory(symbols["panic_code"], 8), "little")
            pytest.fail(f"{config.name}: guest stopped at {stop.address:#x}, not done: "
                        f"panic_code={panic} (tests/guests/mmu/mmu.h) "
                        + " ".join(f"{k}={v:#x}" for k, v in syndrome.items()))
        if config.program == "s1":
            regs = registers.read(["TCR_EL1", "TTBR0_EL1", "TTBR1_EL1", "MAIR_EL1",
                                   "SCTLR_EL1", "CurrentEL"])
            regimes = {
                "lower": Regime.from_tcr(regs["TCR_EL1"], regs["TTBR0_EL1"],
                                         mair=regs["MAIR_EL1"]),
                "upper": Regime.from_tcr(regs["TCR_EL1"], regs["TTBR1_EL1"], upper=True,
                                         mair=regs["MAIR_EL1"])}
        else:
            regs = registers.read(["VTCR_EL2", "VTTBR_EL2", "HCR_EL2", "SCTLR_EL1",
                                   "CurrentEL"])
            regimes = {"stage2": Regime.from_vtcr(regs["VTCR_EL2"], regs["VTTBR_EL2"],
                                                  regs["HCR_EL2"])}
        ram = SharedRam(qemu.ram_path, qemu.ram_base())
        yield Booted(config, qemu, gdb, ram, symbols, regs, regimes, time.monotonic() - t0)


@BOOT
def test_registers_and_regimes(booted):
    c, regs = booted.config, booted.regs
    assert regs["CurrentEL"] >> 2 == 1
    for regime in booted.regimes.values():
        assert not regime.config_errors, regime.config_errors
        assert regime.granule == c.granule
    if isinstance(c, S1):
        assert regs["SCTLR_EL1"] & (SCTLR_M | SCTLR_C | SCTLR_I) == SCTLR_M | SCTLR_C | SCTLR_I
        assert (booted.regimes["lower"].start_level,
                booted.regimes["upper"].start_level) == c.starts
        assert (booted.regimes["lower"].ia_bits, booted.regimes["upper"].ia_bits) == \
            (64 - c.t0sz, 64 - c.t1sz)
    else:
        assert regs["HCR_EL2"] & (HCR_VM | HCR_RW) == HCR_VM | HCR_RW
        assert regs["SCTLR_EL1"] & SCTLR_M == 0
        regime = booted.regimes["stage2"]
        assert regime.start_level == c.start
        assert regime.start_entries * 8 == c.tables * c.granule     # concatenated root


@BOOT
def test_tables_cover_what_the_guest_built(booted):
    """Over a thousand pages, blocks at every level the granule allows, contiguous runs."""
    main = booted.regimes["stage2" if isinstance(booted.config, S2) else "lower"]
    walker = Walker(main, booted.ram)
    maps = walker.mappings()
    assert walker.errors == []
    pages = sum(m.size // main.granule for m in maps if m.level == 3)
    assert pages >= 1000
    block_levels = {1, 2} if main.granule == K4 else {2}
    assert {m.level for m in maps if m.level < 3} == {lv for lv in block_levels
                                                      if lv >= main.start_level}
    assert any(m.attrs["contiguous"] for m in maps)
    assert all(m.ia != m.oa for m in maps if not _in(m.ia, booted.symbols, "idmap"))


def _in(address: int, symbols: dict[str, int], region: str) -> bool:
    return symbols[f"{region}_start"] <= address < symbols[f"{region}_end"]


def _samples(regime: Regime, maps, rng: random.Random, n: int) -> list[int]:
    """8-aligned addresses: 80% inside mappings, 10% just outside one (mostly holes), 10%
    anywhere.  All stay on this range's side of the VA space (a lower range also gets the
    gap just above it), so no sample is translated through the other TTBR."""
    span = 1 << regime.ia_bits
    lo, hi = (regime.ia_fill - span, 1 << 64) if regime.upper else (0, 2 * span)
    out = []
    for _ in range(n):
        r = rng.random()
        m = rng.choice(maps)
        if r < 0.8:
            a = m.ia + rng.randrange(m.size)
        elif r < 0.9:
            around = [m.ia - 1 - rng.randrange(regime.granule),
                      m.ia + m.size + rng.randrange(regime.granule)]
            a = rng.choice([x for x in around if lo <= x < hi])
        else:
            a = regime.ia_fill + rng.randrange(hi - regime.ia_fill)
        out.append(a & ~7)
    return out


@BOOT
def test_translations_match_qemu(booted):
    for which, regime in booted.regimes.items():
        _check_translations(booted, which, regime)


def _check_translations(booted: Booted, which: str, regime: Regime) -> None:
    t0 = time.monotonic()
    walker = Walker(regime, booted.ram)
    maps = walker.mappings()
    assert walker.errors == []
    addresses = _samples(regime, maps, random.Random(seed(booted.config.name + which)), SAMPLES)
    results = [walker.translate(a) for a in addresses]
    t_walk = time.monotonic() - t0

    gdb = booted.gdb
    virtual = gdb.read_memory_many(addresses, 8)
    ram_lo, ram_hi = booted.ram.base, booted.ram.base + booted.ram.size
    backed = sorted({t.oa for t in results if isinstance(t, Translation)
                     and ram_lo <= t.oa < ram_hi})
    with gdb.physical():
        physical = dict(zip(backed, gdb.read_memory_many(backed, 8)))
    t_total = time.monotonic() - t0

    faults = 0
    for a, t, v in zip(addresses, results, virtual):
        where = f"{which} {a:#x}"
        if isinstance(t, Fault):
            faults += 1
            assert v is None, f"{where}: walker says {t.kind} fault at level {t.level}, " \
                              f"QEMU reads {v.hex()}"
            continue
        assert isinstance(t, Translation)
        if not ram_lo <= t.oa < ram_hi:       # e.g. the upper half of a 1 GiB block
            assert v is None, f"{where} -> unbacked PA {t.oa:#x}, yet QEMU reads {v.hex()}"
            continue
        assert v is not None, f"{where}: walker translates to {t.oa:#x} (level {t.level}), " \
                              f"QEMU cannot read it"
        assert v == physical[t.oa] == booted.ram.read(t.oa, 8), \
            f"{where} -> {t.oa:#x}: virtual {v.hex()} vs physical {physical[t.oa].hex()}"
        if _in(t.oa, booted.symbols, "pool"):
            assert int.from_bytes(v, "little") == t.oa, \
                f"{where}: pool word at {t.oa:#x} is {v.hex()}"
    assert SAMPLES // 50 <= faults <= SAMPLES // 2, f"{which}: {faults} faults"
    print(f"\n{booted.config.name} {which}: boot {booted.boot_s:.2f} s, {len(maps)} runs, "
          f"walk+translate {t_walk:.2f} s, checked {SAMPLES} addresses ({faults} faults, "
          f"{len(virtual) + len(backed)} gdb reads) in {t_total:.2f} s")


@BOOT
def test_gdb_physmem_walk_matches_shared_ram(booted):
    """The gdb physical-memory backend sees the same tables as the RAM file."""
    over_gdb = GdbPhysMem(booted.gdb, ram=[(booted.ram.base, booted.ram.size)])
    for regime in booted.regimes.values():
        assert Walker(regime, over_gdb).mappings() == Walker(regime, booted.ram).mappings()


@BOOT
def test_walk_cli_matches_walker(booted, tmp_path):
    """``s2cache walk`` over a pmemsave dump of the table arena equals the library's walk."""
    start = booted.symbols["tables_start"]
    size = booted.symbols["tables_end"] - start
    dump = tmp_path / "tables.bin"
    booted.qemu.monitor(f"pmemsave {start:#x} {size:#x} {hmp_quote(dump)}")
    assert dump.stat().st_size == size
    regs = booted.regs
    for which, regime in booted.regimes.items():
        if which == "stage2":
            args = ["--vttbr", hex(regs["VTTBR_EL2"]), "--vtcr", hex(regs["VTCR_EL2"]),
                    "--hcr", hex(regs["HCR_EL2"])]
        else:
            args = ["--ttbr", hex(regs["TTBR1_EL1" if which == "upper" else "TTBR0_EL1"]),
                    "--tcr", hex(regs["TCR_EL1"]), "--mair", hex(regs["MAIR_EL1"])]
            if which == "upper":
                args.append("--ttbr1")
        out = tmp_path / f"{which}.json"
        cli = subprocess.run([sys.executable, "-m", "gdbplugin.cli", "walk", "--mem", str(dump),
                              "--mem-base", hex(start), *args, "--json", str(out)],
                             cwd=ROOT, capture_output=True, text=True)
        assert cli.returncode == 0, f"s2cache walk ({which}) failed: {cli.stderr}"
        report = json.loads(out.read_text())
        expected = json.loads(json.dumps([m.as_dict() for m in
                                          Walker(regime, booted.ram).mappings()]))
        assert report["errors"] == []
        assert report["mappings"] == expected
