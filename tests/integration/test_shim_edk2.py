"""EDK2 (Debian's qemu-efi-aarch64, ArmVirtQemu from flash) under the reference shim, booting
Debian's Linux through its EFI stub (QEMU hands -kernel/-initrd/-append over fw_cfg), kvm
policy, ``observe=2`` (every SCTLR_EL1 write trapped), 1 and 2 vCPUs.

What EDK2 adds over U-Boot for a hypervisor: its first stage-1 tables live in flash (a
stage-1 walk reads a flash page: with HCR_EL2.PTW that page must be Normal at stage 2, which
is why the shim maps cfi-flash like KVM's read-only memslot), it formats the variable store
in the second flash bank, empty without a -drive for it (flash writes the shim emulates from
EL2), and it reads the kernel (in 1 MiB pieces) and the initrd with fw_cfg DMA (host writes
into guest RAM, recorded as ``host-dma``).  One boot per vCPU count, ~5-10 s each; all checks
share it.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from gdbplugin.shim.launch import EDK2, ShimParams, ShimSession, edk2_config
from gdbplugin.shim.ring import Event, RingHeader

pytestmark = pytest.mark.qemu

APPEND = "console=ttyAMA0 panic=-1"
FLASH_END = 0x0800_0000                 # virt's two 64 MiB flash banks
M, C = 1 << 0, 1 << 2
KERNEL_DATA, INITRD_DATA, FILE_DIR = 0x11, 0x12, 0x19      # fw_cfg items
PAGE = 4096


@dataclass
class Boot:
    smp: int
    why: str
    to_marker: float
    returncode: int | None
    console: str
    events: list[Event]
    header: RingHeader
    maps: list                          # walker Mappings of the final stage 2
    walk_errors: list


@pytest.fixture(scope="module")
def edk2_images(images) -> Path:
    if not EDK2.is_file():
        pytest.fail(f"{EDK2} missing: scripts/setup installs qemu-efi-aarch64")
    return images


@pytest.fixture(scope="module", params=[1, 2], ids=["kvm-smp1", "kvm-smp2"])
def boot(request, shim, edk2_images) -> Boot:
    smp = request.param
    # EDK2 + Linux make ~125,000 records with observe=2: a 2^18 ring needs no consumer
    params = ShimParams(policy="kvm", poweroff_on_fatal=True)
    config = edk2_config(params, shim=shim, kernel=edk2_images / "vmlinuz",
                         initrd=edk2_images / "initramfs.cpio.gz", append=APPEND, smp=smp,
                         paused=False)
    with ShimSession(config, shim) as s:
        why = s.wait(r"S2CACHE-BOOT-OK", timeout=120)
        to_marker = time.monotonic() - s.started
        if why == "match":
            why = s.wait(timeout=30)            # the initramfs powers off after its marker
        walker = s.stage2()
        return Boot(smp, why, to_marker, s.returncode, s.console(), s.events, s.header(),
                    walker.mappings(), walker.errors)


def test_edk2_boots_linux_at_el1(boot):
    h = boot.header
    assert boot.why == "exit" and boot.returncode == 0, \
        f"smp{boot.smp}: {boot.why}\n{boot.console[-3000:]}"
    assert h.halted is None, h.diag
    assert "EFI stub: Booting Linux Kernel" in boot.console
    assert "CPU: All CPU(s) started at EL1" in boot.console
    assert "started at EL1" in boot.console.split("S2CACHE-BOOT-OK", 1)[1].splitlines()[0]
    if boot.smp > 1:
        assert f"SMP: Total of {boot.smp} processors activated" in boot.console
    assert len(h.vcpus) == boot.smp
    st = h.stats
    print(f"EDK2+Linux kvm smp{boot.smp}: {boot.to_marker:.2f} s to the marker, "
          f"{st['dabt'] + st['iabt']} stage-2 aborts ({st['rom_writes']} flash writes and "
          f"{st['fw_cfg']} fw_cfg accesses emulated), {st['host_dma']} host-dma records "
          f"({st['host_dma_bytes']} bytes), {st['set_way']} set/way, {h.write_index} records")


def test_ring_is_complete_and_counted(boot):
    h, events = boot.header, boot.events
    assert h.overflow == 0 and h.write_index < h.capacity
    assert [e.seq for e in events] == list(range(h.write_index))
    assert not [e for e in events if e.kind.startswith("unknown") or e.kind == "diag"]
    st = h.stats
    kinds = collections.Counter(e.kind for e in events)
    maps = [e for e in events if e.kind == "s2-map"]
    # emulated accesses are not stage-2 events: no s2-fault record for them
    # emulated flash writes and fw_cfg accesses, and the first accesses after a caches-off
    # (observation: s2-access records), are aborts without an s2-fault record
    assert kinds["s2-fault"] == st["dabt"] + st["iabt"] - st["rom_writes"] - st["fw_cfg"] \
        - st["accesses"]
    assert kinds["s2-access"] == st["accesses"] > 0     # Linux after the EFI stub's MMU off
    for memtype in ("normal", "device", "rom"):
        assert sum(m.extra["memtype"] == memtype for m in maps) == st[f"map_{memtype}"]
    assert kinds["host-dma"] == st["host_dma"]
    assert sum(e.size for e in events if e.kind == "host-dma") == st["host_dma_bytes"]
    # nothing ever maps the fw_cfg page
    assert h.fw_cfg[1] and not [e for e in events if e.kind in ("s2-fault", "s2-map") and
                                e.ipa >> 12 == h.fw_cfg[0] >> 12]


def test_flash_is_a_read_only_memslot(boot):
    """cfi-flash pages: Normal and read-only at stage 2 (ring and walked tables agree), the
    stage-1 walk into EDK2's flash tables mapped as a read, code executed from flash, its
    variable store written through the shim, every new leaf cleaned as KVM cleans it."""
    events, h = boot.events, boot.header
    rom = [e for e in events if e.kind == "s2-map" and e.extra["memtype"] == "rom"]
    assert rom and all(e.ipa + e.size <= FLASH_END and "w" not in e.extra["perms"] for e in rom)
    assert not [e for e in events if e.kind == "s2-map" and e.ipa < FLASH_END and
                e.extra["memtype"] != "rom"]
    # a stage-1 walk faulting on a flash page maps it read-only (KVM: kvm_is_write_fault,
    # only a permission fault of a walk is a write); QEMU sets WnR from the instruction
    walks = [e for e in events if e.kind == "s2-fault" and e.extra["s1ptw"] and
             e.ipa < FLASH_END]
    assert walks and walks[0].seq < rom[-1].seq
    nxt = events[walks[0].seq + 1]
    assert nxt.kind == "s2-map" and nxt.ipa == walks[0].ipa and nxt.extra["memtype"] == "rom"
    executed = {e.ipa for e in rom if "x" in e.extra["perms"]}
    executed |= {e.ipa for e in events if e.kind == "s2-perm" and e.extra["memtype"] == "rom"}
    assert executed
    assert h.stats["rom_writes"] > 0                     # EDK2 formats its variable store
    cleaned = {e.ipa for e in events if e.kind == "dc" and e.ipa < FLASH_END}
    assert cleaned == {e.ipa for e in rom}
    assert boot.walk_errors == []
    table = {}
    for m in boot.maps:
        for page in range(m.ia, m.ia + m.size, PAGE):
            table[page] = m.attrs
    for e in rom:
        attrs = table[e.ipa]
        assert attrs["memtype"].startswith("Normal-WB") and attrs["s2ap"] == "RO", attrs
        assert attrs["exec_el1"] == (e.ipa in executed)


def test_kernel_and_initrd_arrive_by_host_dma(boot, edk2_images):
    """EDK2 selects each fw_cfg item with the selector register and reads it with DMA (the
    kernel in 1 MiB pieces): the host-dma records of the kernel item add up to the vmlinuz
    file, those of the initrd item to the initramfs, all inside guest RAM."""
    h = boot.header
    dma = [e for e in boot.events if e.kind == "host-dma"]
    assert all(h.ram_base <= e.pa and e.pa + e.size <= h.ram_end and e.vcpu == 0 and
               e.extra["control"] == ["read"] for e in dma)
    by_item = collections.defaultdict(list)
    for e in dma:
        by_item[e.extra["selector"]].append(e)
    kernel = by_item[KERNEL_DATA]
    assert sum(e.size for e in kernel) == (edk2_images / "vmlinuz").stat().st_size
    assert len(kernel) > 1 and max(e.size for e in kernel) == 1 << 20
    assert all(a.pa + a.size == b.pa for a, b in zip(kernel, kernel[1:]))    # one buffer
    assert sum(e.size for e in by_item[INITRD_DATA]) == \
        (edk2_images / "initramfs.cpio.gz").stat().st_size
    assert by_item[FILE_DIR]                       # the file directory, entry by entry


def test_sctlr_transitions(boot):
    """observe=2 shows every M/C transition of vCPU 0: EDK2 turns its MMU and caches on from
    flash, the EFI stub turns them off before entering the kernel, Linux turns them on."""
    writes = [e for e in boot.events if e.kind == "sysreg-write" and e.reg == "SCTLR_EL1" and
              e.vcpu == 0 and (e.old ^ e.new) & (M | C)]
    on = [e for e in writes if e.new & (M | C) == M | C]
    off = [e for e in writes if e.old & (M | C) == M | C and not e.new & M]
    assert on and on[0].pc < FLASH_END                  # EDK2, from flash
    assert off and on[0].seq < off[0].seq < on[-1].seq
    assert boot.header.ram_base <= off[0].pc < boot.header.ram_end       # the EFI stub
    # kvm: the first enable (TVM still armed by the policy) flushed the VM
    sweeps = [e for e in boot.events if e.kind == "flush-vm"]
    assert sweeps and sweeps[0].rule == "kvm.flush-on-cache-toggle"
