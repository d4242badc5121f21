"""`s2cache run CONFIG.toml` and `s2cache qemu-cmd CONFIG.toml` on real QEMU: the configs in
qemu-configs/ and a scenario guest's, exit codes and reports from the same session result as
the trace a replay reads."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gdbplugin.model.engine import Replay
from gdbplugin.model.hazards import INFO_KINDS
from gdbplugin.model.trace import read_trace
from gdbplugin.ui.report import finding_dicts

pytestmark = pytest.mark.qemu

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "build" / "shim" / "scenarios"
BLOB = 0x4110_0000


def s2cache(*argv, timeout=400, env=None):
    return subprocess.run([sys.executable, "-m", "gdbplugin.cli", *map(str, argv)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def unnamed(findings: list[dict]) -> list[dict]:
    """Findings as a replay without symbols gives them."""
    return [{**f, "symbol": None, "image": None} for f in findings]


CONFIGS = sorted(p.name for p in (ROOT / "qemu-configs").glob("*.toml"))


@pytest.mark.parametrize("policy", ["kvm", "none"])
@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_runs_to_its_marker(images, shim, tmp_path, config, policy):
    """Every configuration in qemu-configs/ boots to its marker under `kvm` and under `none`,
    and the reports come from the same result a replay of the recorded trace gives.

    Under `kvm` (the rules upstream KVM follows, correct): exit 0, nothing of the
    hypervisor's left uncovered.  What may stay listed uncovered is the guest's own (Linux's
    ftrace patching, tests/integration/test_real_boots.py).  Under `none`: exit 1, with
    first-map-uncached on pages of the images the host loaded (the kernel QEMU placed in
    RAM, the firmware in flash: host-write events in the shim's ring), and the shim really
    cleaned none of them (observed false)."""
    out, trace = tmp_path / "r.json", tmp_path / "t.jsonl"
    md, sarif, svg = tmp_path / "r.md", tmp_path / "r.sarif", tmp_path / "r.svg"
    run = s2cache("run", f"qemu-configs/{config}", "--policy", policy, "--json", out,
                  "--trace", trace, "--md", md, "--sarif", sarif, "--svg", svg)
    report = json.loads(out.read_text())
    assert report["run"]["ended"] == "marker", run.stderr[-2000:]
    assert not report["run"]["console_tail"]
    t = read_trace(trace)
    assert unnamed(report["findings"]) == finding_dicts(Replay(t.header).run(t), policy)
    assert md.read_text().startswith("# s2cache report") and svg.stat().st_size > 10_000
    assert len(json.loads(sarif.read_text())["runs"][0]["results"]) == len(report["findings"])
    hazards = [f for f in report["findings"] if f["kind"] not in INFO_KINDS]
    # Not a terminal: plain lines, one per finding as it arrives, and a final summary.
    assert "\x1b" not in run.stdout + run.stderr
    assert run.stderr.splitlines()[-1].startswith(f"s2cache: {config} under {policy}: marker")
    if any(not f["covered"] for f in hazards):
        assert "hazard: " in run.stdout
    # The kernel's functions are named (System.map placed by the run's own SCTLR_EL1 writes,
    # at its physical load address and at its KASLR-shifted VA): the MMU-on write is the
    # kernel's __enable_mmu, whichever firmware loaded it wherever.
    names = {t["symbol"] for t in report["transitions"] if t["reg"] == "SCTLR_EL1"}
    assert any(n and n.startswith("__enable_mmu+") for n in names), names
    assert len(report["symbols"]) >= 2
    if policy == "kvm":
        assert run.returncode == 0, run.stderr[-2000:]
        assert [f for f in hazards if not f["covered"] and f["responsibility"] != "guest"] == []
        return
    assert run.returncode == 1, run.stderr[-2000:]
    loaded = [e for e in t.to_dicts() if e["kind"] == "host-write"
              and e["source"] in ("load", "device") and e["size"] < t.header["ram"][-1][1]]
    assert loaded
    first = [f for f in hazards if f["kind"] == "first-map-uncached"]
    on_images = [f for f in first if any(e["pa"] < f["pa"] + f["size"] and
                                         f["pa"] < e["pa"] + e["size"] for e in loaded)]
    assert on_images, first
    assert all(f["observed"] is False and not f["covered"] for f in first)


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
    assert unnamed(report["findings"]) == finding_dicts(Replay(t.header).run(t), "kvm")


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


def test_a_scenario_elf_names_its_functions(shim, tmp_path):
    """A program image with an ELF in [guest] symbols: findings and transitions name the
    program's functions (SARIF points at the ELF); the caches-off is the guest's own."""
    cfg = tmp_path / "scenario.toml"
    cfg.write_text(f"""
[guest]
image = "{SCENARIOS / 'caches_off_after_boot.bin'}"
load = 0x40400000
entry = 0x40400000
symbols = ["{SCENARIOS / 'caches_off_after_boot.elf'}"]
[hypervisor]
policy = "none"
[run]
until = "SCENARIO-DONE"
""")
    out, sarif = tmp_path / "r.json", tmp_path / "r.sarif"
    run = s2cache("run", cfg, "--json", out, "--sarif", sarif, "--trace", tmp_path / "t.jsonl",
                  timeout=120)
    report = json.loads(out.read_text())
    assert report["run"]["ended"] == "marker", run.stderr
    named = [f for f in report["findings"] if f["kind"] == "caches-off-after-boot"]
    assert named and all(f["symbol"] for f in named), named
    assert named[0]["responsibility"] == "guest"
    sctlr = [t["symbol"] for t in report["transitions"] if t["reg"] == "SCTLR_EL1"]
    assert sctlr and all(sctlr), sctlr
    results = json.loads(sarif.read_text())["runs"][0]["results"]
    loc = [r["locations"][0] for r in results if r["ruleId"] == "caches-off-after-boot"][0]
    assert loc["physicalLocation"]["artifactLocation"]["uri"].endswith(
        "caches_off_after_boot.elf")
    assert loc["logicalLocations"][0]["kind"] == "function"


def test_bad_symbols_exit_2_before_the_guest_runs(tmp_path):
    """Symbols files are read while QEMU initialises, paused: a bad one ends QEMU before the
    guest ran an instruction, exit 2, one line, and QEMU's work directory is gone."""
    cfg = tmp_path / "c.toml"
    junk = tmp_path / "junk.map"
    junk.write_text("nothing here\n")
    cfg.write_text(f"""
[guest]
kernel = "{ROOT / 'build' / 'images' / 'vmlinuz'}"
symbols = ["{junk}"]
[run]
until = "x"
""")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    run = s2cache("run", cfg, timeout=60, env=dict(os.environ, TMPDIR=str(scratch)))
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "[guest] symbols" in run.stderr and "no text symbols" in run.stderr
    assert not any(scratch.iterdir())


def test_ctrl_c_exits_130_with_the_report_so_far(images, shim, tmp_path):
    """Ctrl-C (SIGINT) while Linux boots: exit 130, one line saying so, and the report and
    trace of everything seen until then, replaying to the same findings."""
    import signal
    out, trace = tmp_path / "r.json", tmp_path / "t.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "gdbplugin.cli", "run",
                             "qemu-configs/linux-shim.toml", "--json", str(out), "--trace",
                             str(trace)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not trace.exists() or trace.stat().st_size < 1 << 20):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "s2cache: interrupted (the report and trace hold what was seen)" in err
    assert "Traceback" not in err
    report = json.loads(out.read_text())
    assert report["run"]["ended"] == "interrupted"
    t = read_trace(trace)
    assert len(t) > 1000
    assert unnamed(report["findings"]) == finding_dicts(Replay(t.header).run(t), "kvm")


def _program(tmp_path, words: list[int], until: str) -> Path:
    """A config running raw AArch64 instruction words at 0x40400000 under the shim."""
    import struct
    image = tmp_path / "prog.bin"
    image.write_bytes(b"".join(struct.pack("<I", w) for w in words))
    cfg = tmp_path / "prog.toml"
    cfg.write_text(f'[guest]\nimage = "{image}"\nload = 0x40400000\nentry = 0x40400000\n'
                   f'[run]\nuntil = "{until}"\ntimeout = 60\n')
    return cfg


def test_run_says_when_the_shim_halted(shim, tmp_path):
    """The guest reads QEMU's fw_cfg registers with LDP (no syndrome for the shim to emulate
    the access): the shim halts on a diagnostic.  Exit 3, one line naming it, console tail in
    the report."""
    cfg = _program(tmp_path, [0xD2A12042,      # movz x2, #0x0902, lsl #16 (fw_cfg)
                              0xA9400440,      # ldp x0, x1, [x2]
                              0x14000000],     # b .
                   "NEVER-PRINTED")
    out = tmp_path / "r.json"
    run = s2cache("run", cfg, "--json", out, "--trace", tmp_path / "t.jsonl", timeout=120)
    assert run.returncode == 3, run.stderr
    lines = [x for x in run.stderr.splitlines() if x.startswith("s2cache:")]
    assert len(lines) == 1 and lines[0].startswith("s2cache: the shim halted: "), run.stderr
    report = json.loads(out.read_text())
    assert report["run"]["ended"] == "halted" and report["run"]["console_tail"]


def test_run_says_when_qemu_exited_before_the_marker(shim, tmp_path):
    """The scenario guest powers off after its own marker, which is not the config's: exit 3,
    one line saying QEMU exited before the marker."""
    cfg = tmp_path / "scenario.toml"
    cfg.write_text(f'[guest]\nimage = "{SCENARIOS / "first_map_uncached.bin"}"\n'
                   f'load = 0x40400000\nentry = 0x40400000\n[run]\nuntil = "NEVER-PRINTED"\n'
                   f'timeout = 60\n')
    out = tmp_path / "r.json"
    run = s2cache("run", cfg, "--json", out, "--trace", tmp_path / "t.jsonl", timeout=120)
    assert run.returncode == 3, run.stderr
    lines = [x for x in run.stderr.splitlines() if x.startswith("s2cache:")]
    assert lines == ["s2cache: QEMU exited before the marker 'NEVER-PRINTED' (the report and "
                     "trace hold what was seen)"], run.stderr
    report = json.loads(out.read_text())
    assert report["run"]["ended"] == "qemu-exited"
    assert "SCENARIO-DONE" in report["run"]["console_tail"]


def test_the_boot_is_watched_below_the_guest_and_at_full_priority_once_behind(
        images, shim, tmp_path, monkeypatch):
    """The session drains the ring from a thread at nice 19 (the caller's own priority
    untouched); a session falling behind the guest (more than 1/16 of the ring unread)
    goes on at the caller's priority, and nothing is lost on the way: the report is the
    trace's replay."""
    import threading

    from gdbplugin import cli
    from gdbplugin.capture.live import LiveSession
    from gdbplugin.shim.launch import ShimSession

    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen, waits = [], []
    pump, behind, wait = LiveSession.pump, LiveSession.behind, ShimSession.wait

    def spy_pump(self, *a, **k):
        got = pump(self, *a, **k)
        if got:
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return got

    def spy_wait(self, *a, **k):
        waits.append(threading.current_thread() is threading.main_thread())
        return wait(self, *a, **k)

    monkeypatch.setattr(LiveSession, "pump", spy_pump)
    # "behind" as soon as the first records came: the rest of the boot is the caller's
    monkeypatch.setattr(LiveSession, "behind", lambda self: bool(seen) or behind(self))
    monkeypatch.setattr(ShimSession, "wait", spy_wait)
    out, trace = tmp_path / "r.json", tmp_path / "t.jsonl"
    code = cli.main(["run", str(ROOT / "qemu-configs" / "linux-shim.toml"), "--json", str(out),
                     "--trace", str(trace)])
    assert code in (0, 1)
    assert waits == [False, True]             # the watch thread's, then the caller's
    assert seen[0] == 19 and seen[-1] == mine and len(seen) >= 2, seen
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine
    report = json.loads(out.read_text())
    assert report["run"]["ended"] == "marker"
    t = read_trace(trace)
    assert len(t.events) > 100_000          # the whole boot
    assert unnamed(report["findings"]) == finding_dicts(Replay(t.header).run(t), "kvm")
