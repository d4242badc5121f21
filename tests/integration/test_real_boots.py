"""Findings that hold on real boots.  Debian's Linux, directly (1, 2 and 4 vCPUs), through
U-Boot's booti and through EDK2's EFI stub, runs under the shim's kvm policy -- the rules
upstream KVM follows, which are correct -- with the default observation (every SCTLR_EL1
write, the guest's own cache maintenance, write epochs with line-precise non-cacheable
writes, the first accesses after a caches-off).  The recorded trace is replayed:

- the `kvm` world (the model's KVM) and the `observed` world (what the shim really did)
  leave nothing uncovered that is the hypervisor's: a checker that reports hazards on a
  correct hypervisor is wrong.  What remains is one class of Linux's own, found by the
  write-xor-execute observer at the fetch: ftrace_init rewrites each function's
  patchable-entry NOP into MOV X9, X30 (ftrace_init_nop -> aarch64_insn_patch_text_nosync),
  and a function the patching path itself calls (after the write, before its DC CVAU and IC
  IVAU) is fetched in between.  MOV is not among the instructions the architecture lets a
  PE execute while they are modified (B, BL, BRK, SVC, HVC, SMC, ISB, NOP); Linux relies on
  either one being harmless there (X9 is free at function entry).  The guest's choice, and
  the tests pin it by the instruction words;
- the `none` world reports first-map-uncached on pages the host loaded that the guest read
  with its caches off -- the kernel QEMU put in RAM, U-Boot and EDK2 running from flash with
  their MMU off -- and every one of them was cleaned by the shim (observed).  What the
  firmware pulls in over fw_cfg DMA (U-Boot's and EDK2's kernel and initrd) it reads with its
  caches on, coherent with the host's cacheable writes: no hazard there, and none reported;
- the `xen` world reports nothing on pages without write evidence (no whole-RAM findings).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from gdbplugin.capture.record import record
from gdbplugin.model import events as E
from gdbplugin.model.engine import Replay
from gdbplugin.model.hazards import INFO_KINDS
from gdbplugin.model.trace import read_trace
from gdbplugin.shim.launch import (ShimParams, ShimSession, edk2_config, shim_config,
                                   uboot_config)

pytestmark = pytest.mark.qemu
APPEND = "console=ttyAMA0 panic=-1"
PAGE = 4096
BOOTS = {"linux-smp1": ("linux", 1), "linux-smp2": ("linux", 2), "linux-smp4": ("linux", 4),
         "uboot-booti": ("uboot", 1), "edk2-efi-stub": ("edk2", 1)}


@dataclass
class Run:
    name: str
    trace: object
    result: object


@pytest.fixture(scope="module", params=list(BOOTS))
def boot(request, shim, images, tmp_path_factory) -> Run:
    how, smp = BOOTS[request.param]
    params = ShimParams(policy="kvm", poweroff_on_fatal=True)
    common = dict(shim=shim, initrd=images / "initramfs.cpio.gz", append=APPEND, smp=smp,
                  paused=False)
    if how == "linux":
        config = shim_config(images / "vmlinuz", params, **common)
    else:
        config = (uboot_config if how == "uboot" else edk2_config)(
            params, kernel=images / "vmlinuz", **common)
    path = tmp_path_factory.mktemp(request.param) / "trace.jsonl"
    with ShimSession(config, shim, consume=True) as s:
        why, _ = record(s, path, r"S2CACHE-BOOT-OK", timeout=240, vcpus=smp,
                        cpu_model="max,pauth-impdef=on")
        assert why == "match", f"{request.param}: {why}\n{s.console()[-2000:]}"
    trace = read_trace(path)
    return Run(request.param, trace, Replay(trace.header).run(trace))


def describe(findings) -> list[str]:
    return [f"{f.kind} seq {f.seq} vCPU {f.vcpu} pc {f.pc:#x} pa {f.pa:#x}+{f.size:#x}"
            if f.pa is not None else f"{f.kind} seq {f.seq}" for f in findings]


def test_observation_was_on(boot):
    h = boot.trace.header
    assert h["policy"] == "kvm" and h["writes"] == "tracked" and h["accesses"] == "tracked"
    assert h["cpu"]["ctr_el0"] and h["cpu"]["clidr_el1"]


NOP, MOV_X9_X30 = 0xD503201F, 0xAA1E03E9


def _fetch_at(trace, seq: int):
    ev = trace.events[trace.events["seq"] == seq]
    return ev[0] if len(ev) and E.KIND_NAMES[ev[0]["kind"]] == "fetch" else None


@pytest.mark.parametrize("world", ["kvm", "observed"])
def test_nothing_uncovered_under_kvm_but_ftrace_entry_patching(boot, world):
    left = []
    for f in boot.result.uncovered(world):
        fetch = _fetch_at(boot.trace, f.seq)
        if f.kind == "icache-not-invalidated" and fetch is not None and \
                (int(fetch["old"]), int(fetch["new"])) == (NOP, MOV_X9_X30):
            continue
        left.append(f)
    assert describe(left) == []


def test_rewritten_code_is_checked_at_the_fetch(boot):
    """The write-xor-execute observer saw code rewritten after it ran and fetched again (Linux
    patches its text at boot: alternatives, static keys, ftrace): every such fetch is in the
    trace, and the ones the guest left correct (unchanged word, CMODX-safe rewrite, or I-cache
    maintenance in between) raise nothing."""
    fetches = _events(boot.trace, "fetch")
    assert len(fetches) > 10
    flagged = {f.seq for f in boot.result.findings("kvm") if f.kind == "icache-not-invalidated"}
    assert len(flagged) < len(fetches) / 4


def _pages(ranges) -> set[int]:
    return {p for pa, size in ranges for p in range(pa >> 12, (pa + size + PAGE - 1) >> 12)}


def _events(trace, kind: str) -> np.ndarray:
    return trace.events[trace.events["kind"] == E.KIND_CODE[kind]]


def test_host_loaded_pages_read_uncached_are_found_and_were_cleaned(boot):
    """Code and data QEMU loaded (the kernel Image, the firmware in flash) are read by the
    guest with its caches off: under no maintenance those pages may be stale in RAM."""
    host = _events(boot.trace, "host-write")
    loaded = _pages((int(e["pa"]), int(e["size"])) for e in host
                    if E.SOURCES[e["op"]] in ("load", "device")
                    and int(e["size"]) < boot.trace.header["ram"][-1][1])
    first = [f for f in boot.result.findings("none") if f.kind == "first-map-uncached"]
    hit = [f for f in first if _pages([(f.pa, f.size)]) & loaded]
    assert hit, describe(first)
    assert all(f.observed is True for f in first), describe(f for f in first if not f.observed)
    assert "kvm.clean-on-translation-fault" in hit[0].covered_by


def test_xen_reports_only_pages_with_write_evidence(boot):
    """Xen never flushes at a stage-1 enable unless a set/way op armed TVM: a page is stale
    there only if the guest wrote it non-cacheably, and caches-off needs cacheable writes."""
    written = _pages((int(e["pa"]), int(e["size"])) for e in _events(boot.trace, "guest-access"))
    faults = _events(boot.trace, "s2-fault")
    writes = faults[(faults["access"] == E.ACCESS.index("write")) & (faults["op"] == 0)]
    written |= {int(a) >> 12 for a in writes["addr"]}
    for f in boot.result.findings("xen"):
        if f.kind in ("stage1-enable-stale", "caches-off-after-boot"):
            assert _pages([(f.pa, f.size)]) <= written, describe([f])
    ram = sum(size for _, size in boot.trace.header["ram"])
    assert all((f.size or 0) < ram // 4 for f in boot.result.findings("xen")
               if f.kind not in INFO_KINDS)
