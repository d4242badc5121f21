"""`s2cache replay`: exit codes, the JSON report (gdbplugin/ui/report.py), corrupt traces."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gdbplugin.cli import main

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
ROOT = Path(__file__).resolve().parents[2]


def test_report_json_and_exit_codes(tmp_path):
    out = tmp_path / "r.json"
    trace = str(SCENARIOS / "seed2-stage1-enable-stale.jsonl")
    assert main(["replay", trace, "--policy", "xen", "--json", str(out)]) == 1
    r = json.loads(out.read_text())
    assert r["schema"] == "s2cache.report/1" and r["policy"] == "xen"
    (f,) = [f for f in r["findings"] if f["kind"] == "stage1-enable-stale"]
    assert set(f) >= {"kind", "vcpu", "pc", "el", "sctlr", "ipa", "pa", "size", "symbol",
                      "covered_by", "observed", "message", "responsibility", "covered"}
    assert (f["covered"], f["responsibility"]) == (False, "hypervisor")
    assert r["verdict"]["exit"] == 1
    assert r["transitions"] == [{"vcpu": 0, "reg": "SCTLR_EL1", "old": 0, "new": 4101,
                                 "pc": 1075839100, "seq": 6, "symbol": None}]
    assert r["stage2"] == {"maps": 1, "unmaps": 0}
    assert set(r["stats"]["cost"]) == {"none", "rfc2013", "kvm", "xen", "fwb"}
    # kvm covers everything in this trace: exit 0, and the report still lists the hazard
    # (found with no maintenance at all), flagged covered.
    assert main(["replay", trace, "--policy", "kvm", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert [(f["kind"], f["covered"]) for f in r["findings"]] == \
        [("smp-mmu-off-window", False), ("stage1-enable-stale", True)]
    assert "kvm.flush-on-cache-toggle" in r["findings"][1]["covered_by"]
    assert r["verdict"] == {"exit": 0, "strict": False, "failing": 0, "uncovered": 0,
                            "guest_own": 0}


def test_compare_json_matrix(tmp_path):
    out = tmp_path / "c.json"
    main(["replay", str(SCENARIOS / "seed4-smp-window.jsonl"), "--compare", "--json",
          str(out)])
    rows = json.loads(out.read_text())["compare"]
    by_kind = {(r["finding"]["kind"], r["finding"]["vcpu"]): r["uncovered"] for r in rows}
    assert by_kind[("first-map-uncached", 1)] == {"none": True, "rfc2013": True, "kvm": False,
                                                  "xen": False, "fwb": False}
    assert by_kind[("first-map-uncached", 0)] == {"none": True, "rfc2013": False,
                                                  "kvm": False, "xen": False, "fwb": False}
    # Both pages were only read: nothing can be stale at vCPU 0's stage-1 enable.
    assert ("stage1-enable-stale", 0) not in by_kind


def test_seed3_costs_counted_by_hand():
    """kvm: TVM from reset makes the caches-on write flush the (empty) VM, the fault cleans
    one page, the first DC CISW flushes the VM (one page) and re-arms TVM, the caches-off
    write flushes it again: 3 VM flushes, 3 pages cleaned, 4 calls.  Xen: only the set/way
    flush and the toggle it armed: 2 flushes, 2 pages, each ending with a whole I-cache
    invalidation (p2m_cache_flush_range -> invalidate_icache): 4 calls."""
    from gdbplugin.model.engine import Replay
    from gdbplugin.model.trace import read_trace
    t = read_trace(SCENARIOS / "seed3-caches-off-set-way.jsonl")
    cost = Replay(t.header).run(t).stats["cost"]
    assert cost["kvm"] == {"bytes_cleaned": 3 * 4096, "bytes_invalidated": 3 * 4096,
                           "operations": 4, "vm_flushes": 3, "icache_invalidations": 0}
    assert cost["xen"] == {"bytes_cleaned": 2 * 4096, "bytes_invalidated": 2 * 4096,
                           "operations": 4, "vm_flushes": 2, "icache_invalidations": 2}
    assert cost["rfc2013"]["bytes_cleaned"] == 0       # caches were on: no first-map clean
    assert cost["fwb"]["bytes_cleaned"] == 0


@pytest.mark.parametrize("content,line", [
    ('{"schema": "s2cache.trace/2", "ram": [[0, 4096]], "vcpus": 1}\n', 1),
    ('{"schema": "s2cache.trace/1", "ram": [[0, 4096]], "vcpus": 1}\n'
     '{"seq": 1, "kind": "vcpu-on", "vcpu": 0}\n{"seq": 1, "kind": "vcpu-on", "vcpu": 0}\n', 3),
    ('{"schema": "s2cache.trace/1", "ram": [[0, 4096]], "vcpus": 1}\n'
     '{"seq": 1, "kind": "teleport", "vcpu": 0}\n', 2),
    ('{"schema": "s2cache.trace/1", "ram": [[0, 4096]], "vcpus": 1}\n'
     '{"seq": 1, "kind": "host-write", "pa": 8192, "size": 64, "source": "load"}\n', 2),
    ('{"schema": "s2cache.trace/1", "ram": [[0, 4096]], "vcpus": 1}\n{"seq": 1, "ki', 2),
])
def test_corrupt_trace_is_one_line_exit_2(tmp_path, content, line):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    run = subprocess.run([sys.executable, "-m", "gdbplugin.cli", "replay", str(path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2
    err = run.stderr.strip()
    assert len(err.splitlines()) == 1 and f"line {line}:" in err and "Traceback" not in err


def test_unknown_policy_is_usage_error(capsys):
    assert main(["replay", str(SCENARIOS / "seed1-first-map-uncached.jsonl"), "--policy",
                 "hyperv"]) == 2
    assert "unknown policy" in capsys.readouterr().err
