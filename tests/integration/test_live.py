"""Live sessions (gdbplugin/capture/live.py) on real QEMU: the scenario guests of
tests/guests/scenarios under the shim, every policy, watched while they run.

What is checked, per guest and policy: the findings published while the guest ran are the
ones a replay of the trace it wrote gives (same kinds, events and pages, in order), the
scenario's hazard is found with no maintenance and its clean twin shows none of it there; and
the ring was read through the path the session says.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from gdbplugin.capture.live import LiveSession
from gdbplugin.model.engine import Replay
from gdbplugin.model.hazards import INFO_KINDS
from gdbplugin.model.trace import read_trace
from gdbplugin.ui.report import finding_dicts
from gdbplugin.shim.launch import ShimParams, ShimSession, shim_config
from gdbplugin.shim.ring import RingReader
from gdbplugin.target.locate import pid_listening
from gdbplugin.target.physmem import open_ram
from gdbplugin.target.qemu import Loader

pytestmark = pytest.mark.qemu

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "build" / "shim" / "scenarios"
BUF, BLOB, CODE, DMA_BUF = 0x4100_0000, 0x4110_0000, 0x4120_0000, 0x4130_0000
# Each scenario's hazard and the page it plants it on (tests/guests/scenarios/README.md); None:
# a hazard about no page.
HAZARDS = {"first_map_uncached": ("first-map-uncached", BLOB),
           "stage1_enable_stale": ("stage1-enable-stale", BUF),
           "caches_off_after_boot": ("caches-off-after-boot", BUF),
           "set_way_op": ("set-way-op", None),
           "icache_not_invalidated": ("icache-not-invalidated", CODE),
           "code_rewritten": ("icache-not-invalidated", CODE),
           "mismatched_alias": ("mismatched-alias", DMA_BUF),
           "smp_mmu_off_window": ("smp-mmu-off-window", None)}
POLICIES = ["none", "rfc2013", "kvm", "xen", "fwb"]


@pytest.fixture(scope="module")
def blob(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("live") / "blob.bin"
    path.write_bytes(bytes(range(256)) * 16)
    return path


class Collect:
    """A view that keeps what it was shown."""

    def __init__(self):
        self.findings, self.transitions, self.updates, self.result = [], [], 0, None

    def finding(self, session, f):
        self.findings.append(f)

    def transition(self, session, t):
        self.transitions.append(t)

    def progress(self, session):
        self.updates += 1

    def ended(self, session, result):
        self.result = result


def watch(shim, blob, name, policy, tmp_path, drain="file"):
    """Run scenario ``name`` under the shim's ``policy`` with a live session; (view, session,
    trace path)."""
    smp = 2 if name.startswith("smp") else 1
    params = ShimParams(policy=policy, poweroff_on_fatal=True, trap_cmo=True, observe=2)
    config = shim_config(SCENARIOS / f"{name}.bin", params, shim=shim, smp=smp, paused=True)
    config.loaders.append(Loader(file=blob, addr=BLOB, force_raw=True))
    if drain != "file":
        # Guest RAM through /proc dies with QEMU: keep it after the guest's SYSTEM_OFF.
        config.extra = [*config.extra, "-no-shutdown"]
    view = Collect()
    tmp_path.mkdir(parents=True, exist_ok=True)
    trace = tmp_path / f"{name}-{policy}.jsonl"
    with ShimSession(config, shim) as s:
        q = s.qemu
        if drain == "file":
            access, _ = open_ram(s.ram_base, q.ram_size, ram_file=q.ram_path, writable=True)
        else:   # as for a QEMU started by hand: its pid from the gdb socket, gpa2hva
            pid = pid_listening(q.gdb_address)
            assert pid == q.pid
            access, skipped = open_ram(s.ram_base, q.ram_size, pid=pid, monitor=q.monitor,
                                       writable=True)
            assert skipped == ["no shared RAM file given"]
        live = LiveSession(lambda: RingReader(access.mem, access.base, access.size,
                                              consume=True),
                           vcpus=smp, trace=trace, drain=access.path,
                           info_roms=q.monitor("info roms"),
                           info_mtree=q.monitor("info mtree -f"), views=[view])
        q.monitor("cont")
        if drain == "file":
            live.run(lambda: s.returncode is not None, interval=0.005)
        else:
            live.run(lambda: "shutdown" in q.monitor("info status"), interval=0.005)
        result = live.close()
        assert f"SCENARIO-DONE {name}" in s.console(), s.console()
        assert live.ring.lost == 0 and live.ring.header().overflow == 0
    assert result is view.result is not None
    return view, live, trace


def replayed(trace: Path, policy: str) -> list:
    t = read_trace(trace)
    return Replay(t.header).run(t).findings(policy)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", sorted(HAZARDS))
def test_live_findings_equal_the_replay_of_what_was_recorded(shim, blob, tmp_path, name,
                                                              policy):
    view, live, trace = watch(shim, blob, name, policy, tmp_path)
    assert live.policy == policy and live.drain == "shared RAM file"
    assert [f.as_dict() for f in view.findings] == \
        [f.as_dict() for f in replayed(trace, policy)]
    assert view.transitions == live.result.transitions and view.updates > 0
    twin_view, twin, _ = watch(shim, blob, f"{name}_clean", policy, tmp_path)
    # The hazard the scenario plants is found on its page where nothing maintains the
    # caches; the clean twin's maintenance removes it there.
    kind, page = HAZARDS[name]

    def planted(result):
        return [f for f in result.findings("none") if f.kind == kind and
                (page is None or f.pa is not None and f.pa <= page < f.pa + f.size)]
    assert planted(live.result)
    if kind not in INFO_KINDS:    # the SMP window is a report of every boot, not a hazard
        assert planted(twin.result) == []
    assert [f.as_dict() for f in twin_view.findings] == \
        [f.as_dict() for f in twin.result.findings(policy)]


@pytest.mark.parametrize("name", ["first_map_uncached", "code_rewritten"])
def test_proc_mem_path_records_the_same_trace(shim, blob, tmp_path, name):
    """Attached to a QEMU without its RAM file (found by its gdb socket, RAM through
    /proc/<pid>/mem at gpa2hva's address): the trace equals the fast path's, event for event
    (seq and kind; addresses are the guest's own and identical)."""
    _, fast, fast_trace = watch(shim, blob, name, "kvm", tmp_path / "fast")
    _, slow, slow_trace = watch(shim, blob, name, "kvm", tmp_path / "slow", drain="proc")
    assert slow.drain == "/proc/<qemu-pid>/mem"
    a, b = read_trace(fast_trace), read_trace(slow_trace)
    assert a.header == b.header
    assert a.to_dicts() == b.to_dicts()


def attach_cli(shim, blob, tmp_path, name, policy, via, ram_file=True):
    """``s2cache attach`` on a QEMU started by hand (paused, -no-shutdown so that guest RAM
    outlives the guest's SYSTEM_OFF); (exit code, stderr, report, trace path)."""
    import json
    import subprocess
    import sys
    params = ShimParams(policy=policy, trap_cmo=True, observe=2)
    config = shim_config(SCENARIOS / f"{name}.bin", params, shim=shim, paused=True)
    config.loaders.append(Loader(file=blob, addr=BLOB, force_raw=True))
    config.extra = [*config.extra, "-no-shutdown"]
    out, trace = tmp_path / f"{via}.json", tmp_path / f"{via}.jsonl"
    with ShimSession(config, shim) as s:
        argv = [sys.executable, "-m", "gdbplugin.cli", "attach", s.qemu.gdb_address,
                "--via", via, "--json", str(out), "--trace", str(trace)]
        if ram_file:
            argv += ["--ram-file", str(s.qemu.ram_path)]
        run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
        status = s.qemu.monitor("info status")
    assert out.exists() and "shutdown" in status, (run.returncode, status, run.stderr[-3000:])
    return run.returncode, run.stderr, json.loads(out.read_text()), trace


def test_attach_every_drain_path_records_the_same_trace(shim, blob, tmp_path):
    """`s2cache attach` says which way it reads the ring; the RAM file, /proc/<pid>/mem and
    gdb physical reads at stops (the slowest) record the same trace event for event, and the
    report's verdict is the exit code: the `none` policy leaves the scenario's first map of
    host-written memory uncovered (1)."""
    got = {}
    for via in ("file", "proc", "gdb"):
        rc, err, report, trace = attach_cli(shim, blob, tmp_path, "first_map_uncached",
                                            "none", via, ram_file=via == "file")
        path = {"file": "shared RAM file", "proc": "/proc/<qemu-pid>/mem",
                "gdb": "gdb physical reads"}[via]
        assert f"ring read through {path}" in " ".join(err.split()), err
        assert rc == 1, err
        assert report["policy"] == "none" and report["stats"]["live"]["drain"] == path
        assert any(f["kind"] == "first-map-uncached" and f["pa"] == BLOB
                   for f in report["findings"])
        got[via] = read_trace(trace)
    assert got["file"].to_dicts() == got["proc"].to_dicts() == got["gdb"].to_dicts()


def test_attach_exit_code_follows_the_active_policy(shim, blob, tmp_path):
    """Under the shim's kvm policy the same guest leaves nothing uncovered: exit 0; and the
    report names the policy the shim ran."""
    rc, err, report, _ = attach_cli(shim, blob, tmp_path, "first_map_uncached", "kvm", "auto")
    assert rc == 0, err
    assert report["policy"] == "kvm"
    assert not [f for f in report["findings"] if f["kind"] not in INFO_KINDS
                and not f["covered"]]


def test_attach_refuses_a_remote_gdbstub():
    """The gdbstub must be local: no network exposure of a debugger."""
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-m", "gdbplugin.cli", "attach", "10.0.0.1:1234"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "only a local gdbstub" in run.stderr


def test_attach_when_qemu_is_killed_mid_run(shim, images, tmp_path):
    """QEMU killed while Linux boots: `s2cache attach` says so in one line and exits 3; the
    trace is complete up to the kill and replays to exactly the findings reported."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    params = ShimParams(policy="none", trap_cmo=True, observe=2)
    config = shim_config(images / "vmlinuz", params, shim=shim, paused=True,
                         initrd=images / "initramfs.cpio.gz", append="console=ttyAMA0")
    out, trace = tmp_path / "r.json", tmp_path / "t.jsonl"
    with ShimSession(config, shim) as s:
        argv = [sys.executable, "-m", "gdbplugin.cli", "attach", s.qemu.gdb_address,
                "--ram-file", str(s.qemu.ram_path), "--json", str(out), "--trace", str(trace)]
        run = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        deadline = time.monotonic() + 60
        while "Booting Linux" not in s.console() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        os.kill(s.qemu.pid, signal.SIGKILL)
        _, err = run.communicate(timeout=120)
    assert run.returncode == 3, err
    lines = [x for x in err.splitlines() if x.startswith("s2cache:")]
    assert any("QEMU went away" in x for x in lines), err
    assert "Traceback" not in err
    report = json.loads(out.read_text())
    t = read_trace(trace)
    assert len(t) > 1000
    assert report["findings"] == finding_dicts(Replay(t.header).run(t), "none")


def test_a_ring_that_dropped_records_is_said_once_and_what_it_kept_replays(shim, images,
                                                                           tmp_path):
    """The shim told to drop records when its ring is full (``ring_full=drop``, the smallest
    ring of 64 records), Linux booting with nobody reading until the guest is stopped in its
    early boot: the loss is said once, in one line, as soon as the session sees it, and
    counted in its status; the trace holds every record the ring kept and replays to exactly
    the findings shown."""
    import io
    import time
    from rich.console import Console
    from gdbplugin.ui.live import WarningPrinter
    params = ShimParams(policy="none", trap_cmo=True, observe=2, ring_records=64,
                        ring_full="drop")
    config = shim_config(images / "vmlinuz", params, shim=shim, paused=True,
                         initrd=images / "initramfs.cpio.gz", append="console=ttyAMA0")
    view, out = Collect(), io.StringIO()
    trace = tmp_path / "dropped.jsonl"
    with ShimSession(config, shim) as s:
        q = s.qemu
        access, _ = open_ram(s.ram_base, q.ram_size, ram_file=q.ram_path, writable=True)
        q.monitor("cont")
        deadline = time.monotonic() + 60
        while "Booting Linux" not in s.console() and time.monotonic() < deadline:
            time.sleep(0.05)
        q.monitor("stop")
        assert "Booting Linux" in s.console()
        live = LiveSession(lambda: RingReader(access.mem, access.base, access.size,
                                              consume=True),
                           vcpus=1, trace=trace, drain=access.path,
                           info_roms=q.monitor("info roms"),
                           info_mtree=q.monitor("info mtree -f"),
                           views=[view, WarningPrinter(Console(file=out, width=300))])
        live.run(lambda: True)
        result = live.close()
        overflow = live.ring.header().overflow
    assert overflow > 0 and live.dropped == overflow == live.status()["dropped"]
    said = [x for x in out.getvalue().splitlines() if "ring record(s) lost" in x]
    assert said == [f"s2cache: {overflow} ring record(s) lost (the ring was full; run the "
                    f"shim with ring_full=wait so nothing is lost): findings may be missing "
                    f"from here on"]
    t = read_trace(trace)
    assert live.stats.records == 64 and view.findings
    assert [f.as_dict() for f in view.findings] == \
        [f.as_dict() for f in Replay(t.header).run(t).findings("none")] == \
        [f.as_dict() for f in result.findings("none")]
