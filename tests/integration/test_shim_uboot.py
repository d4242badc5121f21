"""U-Boot 2023.01 (Debian's qemu_arm64 build, from flash) under the reference shim, booting
Debian's Linux with ``booti`` through its default bootcmd (QEMU hands -kernel/-initrd/-append
over fw_cfg), every policy, 1 and 2 vCPUs.

U-Boot is the hard guest for a hypervisor: it relocates itself to the top of the RAM the DTB
announces (so the carve-out must be cut out of the memory node, not just reserved), runs its MMU
and caches and turns them off again, and flushes with ~100,000 DC set/way operations, which the
shim traps (TSW) and coalesces into a handful of records.
"""
from __future__ import annotations

import collections
import re
import time
from pathlib import Path

import pytest

from gdbplugin.shim.launch import UBOOT, ShimParams, ShimSession, uboot_config

pytestmark = pytest.mark.qemu

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ["none", "rfc2013", "kvm", "xen", "fwb"]
MATRIX = [(p, n) for p in POLICIES for n in (1, 2)]


@pytest.fixture(scope="module")
def uboot_images(images) -> Path:
    if not UBOOT.is_file():
        pytest.fail(f"{UBOOT} missing: scripts/setup installs u-boot-qemu")
    return images


@pytest.fixture(scope="module", params=MATRIX, ids=[f"{p}-smp{n}" for p, n in MATRIX])
def booted(request, shim, uboot_images):
    policy, smp = request.param
    config = uboot_config(ShimParams(policy=policy, poweroff_on_fatal=True), shim=shim,
                          kernel=uboot_images / "vmlinuz",
                          initrd=uboot_images / "initramfs.cpio.gz",
                          append="console=ttyAMA0 panic=-1", smp=smp, paused=False)
    with ShimSession(config, shim) as s:
        why = s.wait(timeout=120)
        yield policy, smp, why, s, s.header(), time.monotonic() - s.started


def test_uboot_boots_linux_at_el1(booted):
    policy, smp, why, s, h, wall = booted
    console = s.console()
    assert why == "exit" and s.returncode == 0, f"{policy} smp{smp}: {why}\n{console[-2000:]}"
    assert h.halted is None, h.diag
    assert "U-Boot 2023.01" in console and "Starting kernel" in console
    assert "CPU: All CPU(s) started at EL1" in console
    assert re.search(r"S2CACHE-BOOT-OK linux \S+ started at EL1", console)
    if smp > 1:
        assert f"SMP: Total of {smp} processors activated" in console
    # U-Boot saw only the RAM below the carve-out (and relocated itself below it)
    visible = (h.ram_end - h.ram_base) >> 20
    assert f"DRAM:  {visible} MiB" in console
    print(f"U-Boot+Linux {policy} smp{smp}: {wall:.2f} s, {h.write_index} records, "
          f"{h.stats['set_way']} set/way traps")


def test_set_way_storm_is_coalesced(booted):
    policy, smp, why, s, h, wall = booted
    runs = [e for e in s.events if e.kind == "set-way"]
    assert h.stats["set_way"] > 50_000
    assert sum(r.extra["count"] for r in runs) == h.stats["set_way"]
    assert len(runs) <= 8
    assert {r.op for r in runs} <= {"isw", "csw", "cisw"} and {r.vcpu for r in runs} == {0}


def test_ring_is_consistent(booted):
    policy, smp, why, s, h, wall = booted
    events = s.events
    assert [e.seq for e in events] == list(range(h.write_index)) and h.overflow == 0
    seen = set()
    for e in events:
        if e.kind == "s2-map":
            pages = set(range(e.ipa, e.ipa + e.size, 4096))
            assert not pages & seen
            seen |= pages
            assert (e.extra["memtype"] in ("device", "rom")) != (h.ram_base <= e.ipa < h.ram_end)
    # U-Boot runs from flash (and probes it with CFI commands): KVM's read-only memslot, Normal
    # and read-only at stage 2, writes emulated; KVM cleans it like any new cacheable leaf
    flash = [e for e in events if e.kind == "s2-map" and e.ipa < 0x0800_0000]
    assert flash and all(e.extra["memtype"] == "rom" and "w" not in e.extra["perms"]
                         for e in flash)
    assert any("x" in e.extra["perms"] for e in flash) and h.stats["rom_writes"] > 0
    assert h.stats["map_rom"] == len(flash)
    cleaned = {e.ipa for e in events if e.kind == "dc" and e.ipa < 0x0800_0000}
    if policy == "kvm":
        assert cleaned == {e.ipa for e in flash}
    elif policy in ("fwb", "none", "xen"):
        assert not cleaned


def test_kernel_and_initrd_arrive_by_host_dma(booted, uboot_images):
    """U-Boot's qfw loads -kernel/-initrd/-append with fw_cfg DMA: QEMU writes guest RAM
    (the shim performs the doorbell write and records it as host-dma)."""
    policy, smp, why, s, h, wall = booted
    dma = [e for e in s.events if e.kind == "host-dma"]
    assert dma and h.stats["host_dma"] == len(dma)
    assert h.stats["host_dma_bytes"] == sum(e.size for e in dma)
    assert all(h.ram_base <= e.pa and e.pa + e.size <= h.ram_end and e.vcpu == 0 and
               e.extra["control"] == ["read", "select"] for e in dma)
    by_item = collections.defaultdict(int)
    for e in dma:
        by_item[e.extra["selector"]] += e.size
    assert by_item[0x11] == (uboot_images / "vmlinuz").stat().st_size       # FW_CFG_KERNEL_DATA
    assert by_item[0x12] == (uboot_images / "initramfs.cpio.gz").stat().st_size  # INITRD_DATA
    # nothing maps the fw_cfg page
    assert not [e for e in s.events if e.kind == "s2-map" and e.ipa >> 12 == h.fw_cfg[0] >> 12]


def test_policy_reaction_to_set_way(booted):
    """KVM flushes the VM at the first set/way op while TVM is clear and re-arms TVM
    (kvm_set_way_flush); Xen defers the same flush to the return to the guest
    (p2m_set_way_flush); fwb, rfc2013 and none do nothing for set/way."""
    policy, smp, why, s, h, wall = booted
    sweeps = collections.Counter(e.rule for e in s.events if e.kind == "flush-vm")
    if policy == "kvm":
        assert sweeps["kvm.trap-set-way"] >= 1
        assert sweeps["kvm.flush-on-cache-toggle"] >= smp
        # after the set/way flush, TVM is armed again
        sw = next(e for e in s.events if e.kind == "flush-vm" and e.rule == "kvm.trap-set-way")
        nxt = next(e for e in s.events[sw.seq:] if e.kind == "tvm" and e.vcpu == sw.vcpu)
        assert nxt.op == "arm" and nxt.extra["policy"]
    elif policy == "xen":
        assert sweeps["xen.trap-set-way"] >= 1
    else:
        assert not [r for r in sweeps if r and "set-way" in r]
