"""The shim's ring, turned into a trace and replayed: the model's *observed* world must agree
with what the shim really did.  Debian Linux boots with its MMU off and reads the kernel QEMU
loaded through a cacheable host mapping — a first-map-uncached hazard for every such page
when nothing is cleaned.  Under the shim's kvm and rfc2013 policies each of those pages was
cleaned at its fault, so every such finding of the no-maintenance baseline is `observed`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gdbplugin.capture.record import record as capture_record
from gdbplugin.model.engine import Replay
from gdbplugin.model.trace import read_trace
from gdbplugin.shim.launch import ShimParams, ShimSession, shim_config

pytestmark = pytest.mark.qemu
ROOT = Path(__file__).resolve().parents[2]


def record(shim, images: Path, policy: str, path: Path) -> tuple[list, dict]:
    cfg = shim_config(images / "vmlinuz", ShimParams(policy=policy), shim=shim,
                      initrd=images / "initramfs.cpio.gz", append="console=ttyAMA0 panic=-1",
                      smp=1, paused=False)
    with ShimSession(cfg, shim, consume=True) as s:
        why, rec = capture_record(s, path, r"S2CACHE-BOOT-OK", timeout=120, vcpus=1)
        assert why == "match", s.console()[-2000:]
        events = list(s.events)
    return events, rec.header


@pytest.mark.parametrize("policy", ["kvm", "rfc2013"])
def test_observed_maintenance_covers_first_maps(shim, images, policy, tmp_path):
    path = tmp_path / f"{policy}.jsonl"
    events, _ = record(shim, images, policy, path)
    trace = read_trace(path)
    result = Replay(trace.header).run(trace)
    baseline = [f for f in result.findings("none") if f.kind == "first-map-uncached"]
    assert baseline, "Linux read no host-written page with its MMU off?"
    assert all(f.observed is True for f in baseline), \
        [f.as_dict() for f in baseline if not f.observed][:3]
    if policy == "kvm":
        # kvm_toggle_cache flushed the VM when Linux turned its caches on: the shim records
        # the SCTLR write before that flush, the converter orders them as the guest saw them.
        # Linux writes with its MMU off (the shim reports the changed lines) and invalidates
        # what it wrote (dcache_inval_poc); whatever is left stale was flushed by the shim.
        from gdbplugin.model import events as E
        nc_writes = trace.events["kind"] == E.KIND_CODE["guest-access"]
        assert nc_writes.any()
        stale = [f for f in result.findings("none") if f.kind == "stage1-enable-stale"]
        assert all(f.observed is True for f in stale)
    # The observed world's cost is the shim's own: every page-clean record, byte for byte.
    cleaned = sum(e.size for e in events if e.kind == "dc")
    assert result.stats["cost"]["observed"]["bytes_cleaned"] >= cleaned > 0
    # And the model's own policy of that name covers them too.
    assert not [f for f in result.findings(policy) if f.kind == "first-map-uncached"]


def test_replay_cli_on_a_shim_trace(shim, images, tmp_path):
    """Under the `none` shim nothing was cleaned: the trace says the shim's maintenance was
    tracked, so each finding's `observed` is false (the hypervisor did not cover it), and
    replaying under the `none` policy reports the uncovered first maps (exit 1) while `kvm`
    covers them."""
    path = tmp_path / "none.jsonl"
    record(shim, images, "none", path)
    out = tmp_path / "r.json"
    run = subprocess.run([sys.executable, "-m", "gdbplugin.cli", "replay", str(path),
                          "--policy", "none", "--json", str(out)], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 1, run.stderr
    report = json.loads(out.read_text())
    first = [f for f in report["findings"] if f["kind"] == "first-map-uncached"]
    assert first and all(f["observed"] is False for f in first)
    assert {"kvm.clean-on-translation-fault", "fwb.force-write-back"} <= \
        set(first[0]["covered_by"])
    assert report["stage2"]["maps"] > 1000
