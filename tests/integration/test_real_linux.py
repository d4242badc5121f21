"""The decoding core on a real hypervisor's tables: Debian's Linux 6.1 arm64 kernel booted in
protected KVM mode (pKVM, ``kvm-arm.mode=protected``) on 2 vCPUs.

pKVM runs the host kernel at EL1 behind a stage 2 of its own, so a stopped vCPU shows both
stages at once: the host's stage-1 tables (TTBR1_EL1, at IPAs) and pKVM's host stage 2
(VTTBR_EL2).  We check the composed translation VA -> IPA -> PA against QEMU's own MMU, and
two properties pKVM guarantees by construction: the host stage 2 is an identity map
(``host_stage2_idmap``), and the memory pKVM reserved for itself is not mapped in it.
"""
from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gdbplugin.arch.memtype import effective, from_mair
from gdbplugin.arch.sysregs import HCR_EL2
from gdbplugin.arch.walker import Regime, TranslatedMemory, Translation, Walker
from gdbplugin.capture.snapshot import read_vcpus, snapshot, stage1_regimes, stage2_regime
from gdbplugin.target.gdbmi import GdbMI
from gdbplugin.target.physmem import SharedRam
from gdbplugin.target.qemu import Qemu, QemuConfig
from gdbplugin.target.registers import Registers

pytestmark = pytest.mark.qemu

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = 400


@pytest.fixture(scope="module")
def pkvm(images):
    config = QemuConfig(machine="virt,virtualization=on,gic-version=3", memory="1G", smp=2,
                        kernel=images / "vmlinuz", initrd=images / "initramfs.cpio.gz",
                        append="console=ttyAMA0 panic=-1 kvm-arm.mode=protected s2cache.hold",
                        paused=False, console="pexpect", extra=["-no-reboot"])
    with Qemu(config) as qemu:
        qemu.console.expect("S2CACHE-HOLD", timeout=120)
        log = qemu.serial_log.read_text(errors="replace")
        with GdbMI() as gdb:
            gdb.connect(qemu.gdb_address)      # QEMU stops every vCPU on attach
            ram = SharedRam(qemu.ram_path, qemu.ram_base())
            yield qemu, gdb, ram, log


def test_pkvm_host_runs_at_el1_behind_a_stage2(pkvm):
    qemu, gdb, ram, log = pkvm
    assert "Protected nVHE mode initialized successfully" in log
    states = read_vcpus(gdb, Registers(gdb))
    assert len(states) == 2
    for s in states:
        assert s.el == 1
        assert HCR_EL2.get(s.hcr, "VM") and not HCR_EL2.get(s.hcr, "E2H")
        assert stage2_regime(s) is not None


def test_pkvm_host_stage2_is_identity_and_hides_hyp_memory(pkvm):
    qemu, gdb, ram, log = pkvm
    state = read_vcpus(gdb, Registers(gdb))[0]
    walker = Walker(stage2_regime(state), ram)
    maps = walker.mappings()
    assert walker.errors == []
    assert maps and all(m.ia == m.oa for m in maps)
    # The kernel announces the carve-out: "kvm [0]: Reserved 10 MiB at 0x7f200000".
    m = re.search(r"Reserved (\d+) MiB at (0x[0-9a-f]+)", log)
    assert m, "pKVM did not print its reservation"
    base, size = int(m.group(2), 16), int(m.group(1)) << 20
    assert not any(x.ia < base + size and base < x.ia + x.size for x in maps)
    # ... and the host's stage-2 tables themselves live inside it.
    assert base <= walker.regime.root < base + size
    # pKVM maps host memory RWX (PKVM_HOST_MEM_PROT) and MMIO RW, never executable
    # (PKVM_HOST_MMIO_PROT), leaving the device type to the host's own stage 1.
    in_ram = [x for x in maps if ram.base <= x.ia < ram.base + ram.size]
    mmio = [x for x in maps if not ram.base <= x.ia < ram.base + ram.size]
    assert in_ram and mmio
    assert all(x.attrs["exec_el1"] and x.attrs["s2ap"] == "RW" for x in in_ram)
    assert all(not x.attrs["exec_el1"] and x.attrs["s2ap"] == "RW" for x in mmio)


def test_composed_translation_matches_qemu(pkvm):
    """For random kernel VAs of each vCPU: stage 1 (read through stage 2) then stage 2 gives
    the PA whose bytes gdb reads physically; gdb's virtual read goes through QEMU's MMU."""
    qemu, gdb, ram, log = pkvm
    rng = random.Random(7)
    for state in read_vcpus(gdb, Registers(gdb)):
        gdb.select_thread(gdb.threads()[state.vcpu])
        s2 = Walker(stage2_regime(state), ram)
        ipa_space = TranslatedMemory(s2, ram)
        upper = [r for name, _, r in stage1_regimes(state) if name.endswith("TTBR1_EL1")][0]
        s1 = Walker(upper, ipa_space)
        runs = s1.mappings()
        assert s1.errors == [] and runs
        # Only Normal memory: reading device registers through gdb can have side effects.
        runs = [m for m in runs if m.attrs["memtype"].startswith("Normal")]
        vas = []
        for _ in range(SAMPLES):
            run = rng.choice(runs)
            vas.append((run.ia + rng.randrange(run.size)) & ~7)
        pas, checked = [], 0
        for va in vas:
            t1 = s1.translate(va)
            assert isinstance(t1, Translation), (hex(va), t1)
            t2 = s2.translate(t1.oa)
            pas.append(t2.oa if isinstance(t2, Translation) else None)
        virtual = gdb.read_memory_many(vas, 8)
        backed = sorted({pa for pa in pas if pa is not None and ram.base <= pa < ram.base
                         + ram.size})
        with gdb.physical():
            physical = dict(zip(backed, gdb.read_memory_many(backed, 8)))
        for va, pa, v in zip(vas, pas, virtual):
            if pa is None:
                assert v is None, f"{va:#x}: stage 2 faults per the walk, QEMU reads {v}"
                continue
            assert v is not None and v == physical[pa] == ram.read(pa, 8), hex(va)
            checked += 1
        # pKVM maps host pages lazily, so some VAs hit a stage-2 hole (QEMU agreed above).
        assert checked >= SAMPLES // 2


def test_kernel_linear_map_is_cacheable_but_mmu_off_would_not_be(pkvm):
    """The question s2cache exists for: the same page is Normal WB with the host's MMU on and
    Device (uncached) if that vCPU ran with SCTLR_EL1.M=0 — the seed thread's hazard."""
    qemu, gdb, ram, log = pkvm
    state = read_vcpus(gdb, Registers(gdb))[0]
    s2 = Walker(stage2_regime(state), ram)
    upper = [r for name, _, r in stage1_regimes(state) if name.endswith("TTBR1_EL1")][0]
    s1 = Walker(upper, TranslatedMemory(s2, ram))
    # A Normal WB kernel page that pKVM has already mapped at stage 2.
    t1, t2 = next((t1, t2) for m in s1.mappings() if m.attrs["memtype"] == "Normal-WB"
                  for t1 in [s1.translate(m.ia)] for t2 in [s2.translate(t1.oa)]
                  if isinstance(t2, Translation))
    s1_type = from_mair((state.regs["MAIR_EL1"] >> (8 * t1.attrs["attr_index"])) & 0xFF,
                        t1.attrs["sh"])
    on = effective(state.regs["SCTLR_EL1"], state.hcr, s1_type, t2.attrs["memattr"])
    off = effective(0, state.hcr, None, t2.attrs["memattr"])
    assert on.cacheable and on.kind == "Normal-WB"
    assert not off.cacheable and off.kind == "Device"


def test_inspect_cli_on_pkvm(pkvm, tmp_path):
    """``s2cache inspect`` attaches like a user would (our gdb detaches first)."""
    qemu, gdb, ram, log = pkvm
    expected = {(w.name, w.regime) for w in snapshot(read_vcpus(gdb, Registers(gdb)), ram)}
    gdb.close()
    out = tmp_path / "inspect.json"
    cli = subprocess.run([sys.executable, "-m", "gdbplugin.cli", "inspect", qemu.gdb_address,
                          "--mem-file", str(qemu.ram_path), "--mem-base", hex(ram.base),
                          "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert cli.returncode == 0, cli.stderr
    report = json.loads(out.read_text())
    assert [v["el"] for v in report["vcpus"]] == [1, 1]
    names = {w["name"] for w in report["walks"]}
    assert {"stage 2 VTTBR_EL2", "stage 1 EL1&0 TTBR1_EL1"} <= names
    stage2 = next(w for w in report["walks"] if w["name"] == "stage 2 VTTBR_EL2")
    assert stage2["vcpus"] == [0, 1] and stage2["errors"] == []
    regime = Regime.from_vtcr(stage2["registers"]["VTCR_EL2"], stage2["registers"]["VTTBR_EL2"])
    assert ("stage 2 VTTBR_EL2", regime) in expected


def test_inspect_leaves_a_guest_that_never_started_as_found(images):
    """QEMU started with -S: `inspect` says the guest has not started, why there is nothing
    to walk, and leaves it stopped (gdb's detach would have started it); with another
    debugger holding the gdbstub it says so in one line instead of a protocol timeout."""
    import time
    cfg = QemuConfig(kernel=images / "vmlinuz", initrd=images / "initramfs.cpio.gz",
                     append="console=ttyAMA0 s2cache.hold", machine="virt",
                     cpu="max,pauth-impdef=on", memory="512M", smp=1, paused=True)
    with Qemu(cfg) as q:
        cli = subprocess.run([sys.executable, "-m", "gdbplugin.cli", "inspect", q.gdb_address],
                             capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0, cli.stderr
        assert "has not started (QEMU -S)" in cli.stdout
        assert "nothing to walk for vCPU 0: its MMU is off (SCTLR_EL1.M=0)" in cli.stdout
        time.sleep(0.3)
        assert "prelaunch" in q.monitor("info status")
        holder = GdbMI()
        try:
            holder.connect(q.gdb_address)
            cli = subprocess.run([sys.executable, "-m", "gdbplugin.cli", "inspect",
                                  q.gdb_address], capture_output=True, text=True, timeout=120)
        finally:
            holder.close()
        assert cli.returncode == 2 and cli.stderr.count("\n") == 1, cli.stderr
        assert "another debugger probably holds it" in cli.stderr
