"""`s2cache run CONFIG.toml` and `s2cache qemu-cmd CONFIG.toml` on real QEMU: the configs in
qemu-configs/ and a scenario guest's, exit codes and reports from the same session result as
the trace a replay reads."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gdbplugin.model.engine import Replay
from gdbplugin.model.hazards import INFO_KINDS
from gdbplugin.model.trace import read_trace

pytestmark = pytest.mark.qemu

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "build" / "shim" / "scenarios"
BLOB = 0x4110_0000


def s2cache(*argv, timeout=400):
    return subprocess.run([sys.executable, "-m", "gdbplugin.cli", *map(str, argv)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_run_linux_under_no_maintenance(images, shim, tmp_path):
    """qemu-configs/linux-shim.toml under `none`: the boot reaches its marker, the report
    holds exactly the findings a replay of the recorded trace gives under `none`, among them
    first maps of the kernel Image QEMU loaded read with the MMU off; exit 1."""
    out, trace = tmp_path / "r.json", tmp_path / "t.jsonl"
    run = s2cache("run", "qemu-configs/linux-shim.toml", "--policy", "none", "--json", out,
                  "--trace", trace)
    assert run.returncode == 1, run.stderr[-2000:]
    report = json.loads(out.read_text())
    t = read_trace(trace)
    assert report["policy"] == "none" and report["run"]["ended"] == "marker"
    assert report["findings"] == [f.as_dict() for f in Replay(t.header).run(t).findings("none")]
    kernel = [e for e in t.to_dicts() if e["kind"] == "host-write" and e["source"] == "load"
              and e["size"] > 1 << 20]
    assert kernel
    assert any(f["kind"] == "first-map-uncached" and
               any(k["pa"] <= f["pa"] < k["pa"] + k["size"] for k in kernel)
               for f in report["findings"])
    assert not report["run"]["console_tail"]


def test_run_says_when_the_marker_never_came(images, shim, tmp_path):
    """A timeout too short for the boot: exit 3, one line saying which marker and how long,
    the console tail in the report, the trace complete up to the end."""
    out, trace = tmp_path / "r.json", tmp_path / "t.jsonl"
    run = s2cache("run", "qemu-configs/linux-shim-smp.toml", "--timeout", "1", "--json", out,
                  "--trace", trace)
    assert run.returncode == 3
    lines = [x for x in run.stderr.splitlines() if x.startswith("s2cache:")]
    assert lines == ["s2cache: no 'S2CACHE-BOOT-OK' on the console within 1 s (the report and "
                     "trace hold what was seen)"], run.stderr
    report = json.loads(out.read_text())
    assert report["run"]["ended"] == "timeout" and report["run"]["console_tail"] is not None
    t = read_trace(trace)
    assert report["findings"] == [f.as_dict() for f in Replay(t.header).run(t).findings("kvm")]


def test_bad_configs_exit_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[guest]\nkernel = "nope"\n[run]\nuntil = "x"\n')
    for argv in (["run", bad], ["qemu-cmd", bad], ["run", tmp_path / "missing.toml"]):
        run = s2cache(*argv, timeout=60)
        assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
        assert run.stderr.startswith("s2cache: error: ") and str(argv[1]) in run.stderr


def test_qemu_cmd_then_attach_by_hand(shim, tmp_path):
    """`s2cache qemu-cmd` prints the QEMU command line of a config (paused, gdbstub and
    monitor on unix sockets, guest RAM in a shared file) and the gdb recipe; started as
    printed, `s2cache attach` on its socket and RAM file watches the scenario guest to its
    end: the first map of the host-written blob is uncovered under `none` (exit 1)."""
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 16)
    cfg = tmp_path / "scenario.toml"
    cfg.write_text(f"""
[qemu]
extra = ["-no-shutdown", "-device", "loader,file={blob},addr={BLOB:#x},force-raw=on"]
[guest]
image = "{SCENARIOS / 'first_map_uncached.bin'}"
load = 0x40400000
entry = 0x40400000
[hypervisor]
policy = "none"
[run]
until = "SCENARIO-DONE"
""")
    work = tmp_path / "q"
    printed = s2cache("qemu-cmd", cfg, "--dir", work, timeout=60)
    assert printed.returncode == 0, printed.stderr
    argv = shlex.split(printed.stdout.strip())
    assert argv[0] == "qemu-system-aarch64" and "-S" in argv
    assert "gdb.sock" in " ".join(argv) and "share=on" in " ".join(argv)
    assert f"s2cache start --ram-file {work / 'ram'}" in printed.stderr
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not (work / "gdb.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        out = tmp_path / "r.json"
        run = s2cache("attach", work / "gdb.sock", "--ram-file", work / "ram", "--json", out,
                      "--trace", tmp_path / "t.jsonl", timeout=120)
    finally:
        qemu.kill()
        console = qemu.communicate(timeout=30)[0].decode(errors="replace")
    assert "SCENARIO-DONE first_map_uncached" in console
    assert run.returncode == 1, run.stderr
    report = json.loads(out.read_text())
    assert any(f["kind"] == "first-map-uncached" and f["pa"] == BLOB
               for f in report["findings"] if f["kind"] not in INFO_KINDS)
