"""The shim's ring modes, diagnostics and debugger hooks.

- Whatever the shim cannot handle (here: a guest access outside RAM and MMIO, or into the
  shim's own carve-out, and a full ring) leaves a fatal diagnostic in the ring and its header
  and stops the guest: powered off, or spinning at ``shim_halted`` where gdb finds it.
- Ring modes: ``halt`` (default) stops on a full ring, ``drop`` counts what it loses,
  ``wait`` blocks the guest until a live consumer (``RingReader(consume=True)``) catches up.
- ``hook_kinds`` + a breakpoint on ``shim_hook`` give a synchronous stop per event kind.
- 2 MiB block mode, the layout prediction, a missing parameter block.

The probe payload (tests/guests/scenarios/probe.c) reads the address passed as x0.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from gdbplugin.shim.launch import (PAYLOAD_ADDR, ShimImage, ShimParams,
                                   ShimSession, shim_config)
from gdbplugin.shim.ring import decode_record
from gdbplugin.target.gdbmi import GdbMI
from gdbplugin.target.qemu import QemuConfig

pytestmark = pytest.mark.qemu

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "build" / "shim" / "scenarios" / "probe.bin"
RAM_BASE, RAM_SIZE = 0x4000_0000, 512 << 20
OUTSIDE = 0x50_0000_0000            # between virt's high ECAM and its high PCIe window
APPEND = "console=ttyAMA0 panic=-1"


def probe(shim: ShimImage, address: int, poweroff: bool = True) -> ShimSession:
    params = ShimParams(policy="kvm", entry_x0=address, poweroff_on_fatal=poweroff)
    return ShimSession(shim_config(PROBE, params, shim=shim, paused=False), shim)


def linux(shim: ShimImage, images: Path, params: ShimParams, **kw) -> ShimSession:
    config = shim_config(images / "vmlinuz", params, shim=shim,
                         initrd=images / "initramfs.cpio.gz", append=APPEND, paused=False)
    return ShimSession(config, shim, **kw)


@pytest.mark.parametrize("where", ["ram", "uart", "flash"])
def test_probe_of_ram_and_mmio_runs(shim, where):
    address = {"ram": RAM_BASE + 0x1000, "uart": 0x0900_0000, "flash": 0x0400_0008}[where]
    with probe(shim, address) as s:
        assert s.wait(timeout=30) == "exit"
        assert "PROBE-OK" in s.console()
        kinds = [e.kind for e in s.events]
        assert "diag" not in kinds and s.header().halted is None
        maps = [e for e in s.events if e.kind == "s2-map" and e.ipa <= address < e.ipa + e.size]
        assert len(maps) == 1
        # cfi-flash: Normal and read-only at stage 2 (KVM's read-only memslot)
        memtype = {"ram": "normal", "uart": "device", "flash": "rom"}[where]
        assert maps[0].extra["memtype"] == memtype
        # the probe reads: RAM is mapped read-only until its first write (the default
        # observation tracks writes), flash always; a device window is not tracked
        assert maps[0].extra["perms"] == ("rw" if where == "uart" else "r")


def test_probe_of_fw_cfg_is_emulated(shim):
    """fw_cfg is never mapped: the shim performs the guest's 8-byte load of its data register
    from EL2 (item 0 after reset: the "QEMU" signature) and returns the value."""
    with probe(shim, 0x0902_0000) as s:
        assert s.wait(timeout=30) == "exit"
        h = s.header()
        assert h.halted is None and h.fw_cfg == (0x0902_0000, 0x18)
        assert "PROBE-OK 0x00000000554d4551" in s.console()
        assert not [e for e in s.events if e.kind in ("s2-fault", "s2-map") and
                    e.ipa >> 12 == 0x0902_0000 >> 12]
        assert h.stats["fw_cfg"] == 1 and h.stats["dabt"] >= 1


def test_access_outside_ram_and_mmio_is_a_fatal_diagnostic(shim):
    with probe(shim, OUTSIDE) as s:
        assert s.wait(timeout=30, stop_on_halt=False) == "exit"    # powered off after it
        h = s.header()
        assert h.halted == "outside-ram-and-mmio"
        assert h.diag.op == "outside-ram-and-mmio" and h.diag.extra["fatal"]
        assert h.diag.ipa == OUTSIDE and h.diag.pc >= PAYLOAD_ADDR
        last = s.events[-1]
        assert last.kind == "diag" and last.ipa == OUTSIDE
        assert s.events[-2].kind == "s2-fault" and s.events[-2].ipa == OUTSIDE
        assert "PROBE-OK" not in s.console()
        assert "s2cache-shim: FATAL: guest access outside RAM and MMIO" in s.console()
        assert s.returncode == 0


def test_shim_memory_is_hidden_and_where_predicted(shim):
    params = ShimParams(policy="kvm")
    layout = shim.layout(RAM_BASE, RAM_SIZE, params)
    with probe(shim, layout.carve_base + 0x1000) as s:
        assert s.wait(timeout=30, stop_on_halt=False) == "exit"
        h = s.header()
        assert (h.carve_base, h.carve_size, h.ram_end) == \
            (layout.carve_base, layout.carve_size, layout.guest_ram_end)
        assert s.ring().header_pa == layout.ring_header
        assert h.records == layout.records and h.pool_base == layout.pool_base
        assert h.shim_base - h.link_base == layout.delta
        assert h.halted == "shim-memory"
        # the guest was told RAM ends where the shim begins
        assert f"guest RAM {RAM_BASE:#x}-{layout.carve_base:#x}" in s.console()


def test_fatal_diagnostic_spins_where_gdb_sees_it(shim):
    with probe(shim, OUTSIDE, poweroff=False) as s:
        assert s.wait(timeout=30) == "halted"
        time.sleep(0.2)
        assert s.returncode is None              # still running: spinning, not powered off
        halted_at = s.address("shim_halted")
        with GdbMI() as gdb:
            gdb.load_symbols(shim.elf)
            gdb.connect(s.qemu.gdb_address)     # stops every vCPU
            pc = gdb.read_register("pc")
            assert halted_at <= pc < halted_at + 16, f"pc {pc:#x}, shim_halted {halted_at:#x}"


def test_full_ring_halts_with_a_diagnostic(shim, images):
    with linux(shim, images, ShimParams(policy="kvm", ring_records=64,
                                        poweroff_on_fatal=True)) as s:
        assert s.wait(timeout=30, stop_on_halt=False) == "exit"
        h = s.header()
        assert h.halted == "ring-full" and h.diag.op == "ring-full"
        assert h.write_index == 64 and h.overflow >= 1
        assert [e.seq for e in s.events] == list(range(64))
        assert "s2cache-shim: FATAL: event ring full" in s.console()
        assert "S2CACHE-BOOT-OK" not in s.console()


def test_full_ring_in_drop_mode_counts_what_it_lost(shim, images):
    with linux(shim, images, ShimParams(policy="kvm", ring_records=64, ring_full="drop",
                                        poweroff_on_fatal=True)) as s:
        assert s.wait(timeout=90) == "exit"
        assert "S2CACHE-BOOT-OK" in s.console()
        h = s.header()
        assert h.halted is None and h.write_index == 64
        assert h.overflow > 10000                # ~54k records in a kvm boot


def test_live_consumer_keeps_a_small_ring_flowing(shim, images):
    """wait mode + a consumer that advances read_index: every record arrives, none lost."""
    with linux(shim, images, ShimParams(policy="kvm", ring_records=1024, ring_full="wait",
                                        poweroff_on_fatal=True), consume=True) as s:
        assert s.wait(timeout=120, interval=0.002) == "exit"
        assert "S2CACHE-BOOT-OK" in s.console()
        h = s.header()
        assert h.halted is None and h.overflow == 0
        assert [e.seq for e in s.events] == list(range(h.write_index))
        assert h.write_index > 30 * 1024 and h.read_index == h.write_index
        print(f"{h.write_index} records through a 1024-record ring, {h.stalls} stalls")


def test_block_mode_maps_2m_of_ram_per_fault(shim, images):
    with linux(shim, images, ShimParams(policy="kvm", blocks=True,
                                        poweroff_on_fatal=True)) as s:
        assert s.wait(timeout=90) == "exit"
        assert "S2CACHE-BOOT-OK" in s.console() and "started at EL1" in s.console()
        maps = [e for e in s.events if e.kind == "s2-map"]
        normal = [m for m in maps if m.extra["memtype"] == "normal"]
        assert normal and all(m.size == 2 << 20 and m.ipa % (2 << 20) == 0 for m in normal)
        assert all(m.size == 4096 for m in maps if m.extra["memtype"] == "device")
        dc = [e for e in s.events if e.kind == "dc"]
        assert [(d.ipa, d.size) for d in dc] == [(m.ipa, m.size) for m in normal]
        faults = s.header().stats["dabt"] + s.header().stats["iabt"]
        assert faults < 300
        levels = {m.level for m in s.stage2().mappings() if m.attrs["memtype"] != "Device-nGnRE"}
        assert levels == {2}


def test_hook_gives_a_synchronous_stop(shim, images):
    """Break on shim_hook (at its relocated address, known before boot from the layout): the
    shim stops there with x0 pointing at the record just published."""
    params = ShimParams(policy="kvm", hook_kinds=("sysreg-write",), poweroff_on_fatal=True)
    config = shim_config(images / "vmlinuz", params, shim=shim,
                         initrd=images / "initramfs.cpio.gz", append=APPEND, paused=True)
    layout = shim.layout(RAM_BASE, RAM_SIZE, params)
    hook = shim.symbols["shim_hook"] + layout.delta
    with ShimSession(config, shim) as s, GdbMI() as gdb:
        gdb.connect(s.qemu.gdb_address)
        bp = gdb.break_insert(hook)
        stop = gdb.cont_until_stop(timeout=60)
        assert stop.address == hook
        record = gdb.read_register("x0")
        raw = s.ring()._read(record, 64)
        event = decode_record(int.from_bytes(raw[:8], "little") - 1, raw)
        assert event.kind == "sysreg-write" and event.reg == "SCTLR_EL1"
        assert s.drain() and s.events[-1] == event       # already published when we stop
        gdb.break_delete(bp)
        gdb.cont()
        assert s.wait(timeout=90) == "exit"
        assert "S2CACHE-BOOT-OK" in s.console()


def test_missing_parameter_block_is_reported(shim):
    config = QemuConfig(machine="virt,virtualization=on", kernel=shim.bin, paused=False,
                        extra=["-no-reboot"])
    with ShimSession(config, shim) as s:
        deadline = time.monotonic() + 20
        while "FATAL before start" not in s.console() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "s2cache-shim: FATAL before start: no parameter block" in s.console()


@pytest.mark.parametrize("cpu,machine,memory,policy,effective", [
    ("cortex-a72", "virt,virtualization=on", "1G", "fwb", "kvm"),
    ("max,pauth-impdef=on", "virt,virtualization=on,gic-version=3", "2G", "kvm", "kvm"),
], ids=["cortex-a72-no-fwb", "gicv3-2G"])
def test_other_cpus_gics_and_ram_sizes(shim, images, cpu, machine, memory, policy, effective):
    """cortex-a72 has EL2 but no FEAT_S2FWB (fwb runs kvm, with a non-fatal note), no SVE/SME;
    GICv3 needs ICC_SRE_EL2; the carve-out follows the RAM size."""
    params = ShimParams(policy=policy, poweroff_on_fatal=True)
    config = shim_config(images / "vmlinuz", params, shim=shim,
                         initrd=images / "initramfs.cpio.gz", append=APPEND, cpu=cpu,
                         machine=machine, memory=memory, smp=2, paused=False)
    with ShimSession(config, shim) as s:
        assert s.wait(timeout=120) == "exit", s.console()[-2000:]
        console = s.console()
        assert "S2CACHE-BOOT-OK" in console and "CPU: All CPU(s) started at EL1" in console
        assert "SMP: Total of 2 processors activated" in console
        h = s.header()
        assert (h.policy, h.policy_effective, h.halted) == (policy, effective, None)
        size = int(memory[:-1]) << 30
        layout = shim.layout(RAM_BASE, size, params)
        assert (h.carve_base, h.ram_end) == (layout.carve_base, layout.guest_ram_end)
        notes = [e for e in s.events if e.kind == "diag"]
        if policy != effective:
            assert [(n.op, n.extra["fatal"]) for n in notes] == [("fwb-missing", False)]
            assert not h.hcr & (1 << 46)
        else:
            assert notes == []
        if "gic-version=3" in machine:
            assert "GICv3: CPU1: found redistributor" in console
