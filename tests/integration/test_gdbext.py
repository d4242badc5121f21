"""The gdb extension (gdbplugin/gdbext.py) in gdb-multiarch's batch mode, attached to QEMU
running Debian's Linux under the shim with 2 vCPUs: every subcommand runs and says what it
should, SCTLR transitions shown live are the ring's, `s2` agrees with the walker, and
`break-on-hazard on` stops a `none` run at its first finding.

QEMU is started paused with its gdbstub on a unix socket; the initramfs idles after its marker
(``s2cache.hold``), and the test plays the person at the terminal: when the console shows the
marker it stops the guest through QEMU's monitor, which ends gdb's `continue`.
"""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from gdbplugin.model.engine import Replay
from gdbplugin.model.hazards import INFO_KINDS
from gdbplugin.model.trace import read_trace
from gdbplugin.shim.launch import ShimParams, ShimSession, shim_config
from gdbplugin.target.qemu import Loader
from gdbplugin.ui.live import sctlr_flags

pytestmark = pytest.mark.qemu

ROOT = Path(__file__).resolve().parents[2]
MARKER = "S2CACHE-BOOT-OK"
SCENARIOS = ROOT / "build" / "shim" / "scenarios"
BLOB = 0x4110_0000                    # where first_map_uncached's host-written blob goes


def boot_in_gdb(shim, images, tmp_path, policy: str, commands_after: list[str],
                before: list[str] = (), until=MARKER, timeout=300, smp=2):
    """Boot Linux under the shim's ``policy`` with gdb attached and the extension watching;
    stop the guest at ``until`` on the console (None: let gdb's continue end by itself);
    run ``commands_after``.  Returns (gdb's stdout, the session's trace path, the walker's
    stage-2 runs at the stop, the console)."""
    params = ShimParams(policy=policy, poweroff_on_fatal=True)
    config = shim_config(images / "vmlinuz", params, shim=shim,
                         initrd=images / "initramfs.cpio.gz",
                         append="console=ttyAMA0 panic=-1 s2cache.hold", smp=smp, paused=True)
    return in_gdb(shim, config, tmp_path, policy, commands_after, before, until, timeout)


def keep_stopped(monitor) -> str:
    """HMP `stop` if the VM runs; QEMU's status before it.  Called on every tick from the
    moment the guest is to stop: a `stop` that lands while gdb holds the VM at a breakpoint
    (runstate "paused (debug)") does nothing (QEMU's qmp_stop → vm_stop stops only a running
    VM) and gdb's resume runs the guest on to no end -- with SCTLR_EL1 breakpoints after
    /init, the VM spends a large part of its time in that state."""
    status = monitor("info status")
    if "running" in status:
        monitor("stop")
    return status


def run_gdb(argv: list[str], out_path: Path, timeout: float, tick) -> str:
    """gdb-multiarch (``argv``) with its output in ``out_path``, ``tick()`` called every 0.2 s
    while it runs; its output, checked: no traceback, no crash, exit status 0."""
    with out_path.open("w") as out:
        gdb = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        try:
            while gdb.poll() is None and time.monotonic() < deadline:
                tick()
                time.sleep(0.2)
            gdb.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            if gdb.poll() is None:
                gdb.kill()
    text = out_path.read_text()
    assert "Traceback" not in text and "internal error" not in text, text[-3000:]
    assert gdb.returncode == 0 and "Fatal signal" not in text, text[-3000:]
    return text


def in_gdb(shim, config, tmp_path, name: str, commands_after: list[str], before=(),
           until=None, timeout=300, first=()):
    """QEMU (paused) with gdb-multiarch attached in batch mode: source ``first`` files, the
    extension, `s2cache start`, ``before``, continue, then ``commands_after``; stop the guest
    at ``until`` on the console.  Returns (gdb's stdout, trace path, stage-2 runs at the
    stop, console)."""
    trace = tmp_path / f"{name}.jsonl"
    with ShimSession(config, shim) as s:
        cmds = ["set pagination off", "set confirm off",
                f"target remote {s.qemu.gdb_address}", *(f"source {f}" for f in first),
                "source gdbplugin/gdbext.py", f"s2cache start --trace {trace}", *before,
                "continue", *commands_after]
        argv = ["gdb-multiarch", "-batch", "-nx"] + [w for c in cmds for w in ("-ex", c)]
        runs, ran, seen = None, False, False

        def tick():
            nonlocal runs, ran, seen
            seen = seen or bool(until) and until in s.console()
            status = keep_stopped(s.qemu.monitor) if seen else s.qemu.monitor("info status")
            running = "running" in status
            ran |= running
            if ran and runs is None and not running and "shutdown" not in status:
                runs = s.stage2().mappings()      # gdb's continue ends here
        text = run_gdb(argv, tmp_path / f"{name}.gdb.txt", timeout, tick)
        console = s.console()
    return text, trace, runs, console


def test_every_subcommand_on_linux_smp2(shim, images, tmp_path):
    after = ["s2cache status", "s2cache sctlr", "s2cache sctlr --all 1", "s2cache hazards --all",
             "s2cache s2",
             "s2cache s2 0x40200000", "s2cache s1", "s2cache s1 $pc", "s2cache lines 0x40200000 4",
             "s2cache policy", "s2cache policy none", "s2cache hazards", "s2cache explain 1",
             "s2cache record " + str(tmp_path / "copy.jsonl"), "s2cache break-on-hazard",
             "s2cache stop", "s2cache status", "echo end\\n"]
    text, trace, runs, _ = boot_in_gdb(shim, images, tmp_path, "kvm", after)
    assert "ring read through /proc/<qemu-pid>/mem" in text
    # status: both vCPUs ran with M, C and I on, events drained, nothing lost; the EL shown is
    # that of the vCPU's last trapped event: EL1, or EL0 when busybox's last stage-2 fault
    # came after the kernel's (timing decides which)
    m = re.search(r"policy kvm; (\d+) events \((\d+) records, 0 lost\)", " ".join(text.split()))
    assert m and int(m.group(1)) > 10_000, text[:3000]
    assert len(re.findall(r"vCPU [01]: EL[01] SCTLR_EL1 0x[0-9a-f]+ \(MCI\)", text)) == 2
    # SCTLR transitions shown live are the ring's (the trace holds what the ring held)
    shown = re.findall(r"s2cache: vCPU (\d) SCTLR_EL1 (\w{3}) -> (\w{3})", text)
    t = read_trace(trace)
    ring = [(str(d["vcpu"]), sctlr_flags(d["old"]), sctlr_flags(d["new"]))
            for d in t.to_dicts() if d["kind"] == "sysreg-write" and d["reg"] == "SCTLR_EL1"
            and sctlr_flags(d["old"]) != sctlr_flags(d["new"])]
    assert shown == ring and len({v for v, _, _ in ring}) == 2
    # sctlr: the M/C/I history per vCPU with PCs; --all every write of one vCPU
    assert len(re.findall(r"seq +\d+ vCPU [01]: \w{3} -> \w{3} .* pc 0x", text)) > len(ring)
    assert f"{len(ring)} transition(s) shown of" in text
    writes_1 = [d for d in t.to_dicts() if d["kind"] == "sysreg-write"
                and d["reg"] == "SCTLR_EL1" and d["vcpu"] == 1]
    shown_1 = re.search(r"(\d+) transition\(s\) shown of \1 SCTLR", text)
    # the converter keeps a vCPU's last trapped write until that vCPU's next record (the
    # policy's maintenance for it may follow): at most one per vCPU comes out only at stop
    assert shown_1 and len(writes_1) - 1 <= int(shown_1.group(1)) <= len(writes_1)
    # s2 at the stop: the walker's enumeration of the shim's stage 2, run for run
    m = re.search(r"(\d+) runs, (0x[0-9a-f]+) bytes mapped", text)
    assert m and int(m.group(1)) == len(runs)
    assert int(m.group(2), 16) == sum(r.size for r in runs)
    assert re.search(r"IPA 0x40200000 -> 0x40200000 \(level \d", text)
    # the stop lands in the kernel (TTBR1) or in the initramfs's busybox (TTBR0)
    assert re.search(r"VA \(stage 1 EL1&0 TTBR1_EL1\) 0xffff[0-9a-f]+ -> 0x[0-9a-f]+|"
                     r"VA \(stage 1 EL1&0 TTBR0_EL1\) 0x[0-9a-f]{1,12} -> 0x[0-9a-f]+", text)
    assert "lines under kvm" in text and "0x402000c0" in text
    assert "s2cache: policy kvm" in text and "s2cache: policy none:" in text
    assert "whose job: the hypervisor's" in text and "covered by kvm." in text
    assert read_trace(tmp_path / "copy.jsonl").header == t.header
    assert re.search(r"s2cache: stopped; \d+ finding\(s\) uncovered under none", text)
    assert "not watching" in text                    # status after stop


def test_break_on_hazard_stops_a_none_run_at_its_first_finding(shim, images, tmp_path):
    """Under `none` the first finding (a first map of host-loaded memory read with the MMU
    off) comes early in the boot: with 2 vCPUs the guest is interrupted soon after it, long
    before the marker (measured: 20k-70k of a boot's ~200k events), the PC in the warning."""
    text, trace, _, console = boot_in_gdb(shim, images, tmp_path, "none",
                                          ["s2cache status", "s2cache stop"],
                                          before=["s2cache break-on-hazard on"], until=None,
                                          timeout=150, smp=2)
    warn = re.search(r"s2cache: #1 hazard (\S+) seq (\d+) vCPU \d pc (0x[0-9a-f]+)", text)
    assert warn, text[-3000:]
    assert "received signal SIGINT" in text
    assert MARKER not in console                  # stopped before the boot got there


def test_detach_with_a_pwndbg_like_extension_loaded(shim, tmp_path):
    """gdb with another extension loaded first (tests/integration/gdb_stub_extension.py: its
    own command, stop/continue/prompt hooks reading registers and memory) watches a scenario
    guest that plants a first map of host-written memory (`none` policy): both extensions work
    side by side (its stop hook runs at the guest's power-off, ours drains there).  Then
    `detach`: the watch ends with one line, and the trace it wrote is complete and replays to
    exactly the findings the warnings showed."""
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 16)
    params = ShimParams(policy="none", poweroff_on_fatal=True, trap_cmo=True, observe=2)
    config = shim_config(SCENARIOS / "first_map_uncached.bin", params, shim=shim, paused=True)
    config.loaders.append(Loader(file=blob, addr=BLOB, force_raw=True))
    config.extra = [*config.extra, "-no-shutdown"]     # power-off stops the guest: gdb sees it
    text, trace, _, console = in_gdb(
        shim, config, tmp_path, "detach", ["s2cache hazards", "stubctx", "detach",
                                           "s2cache status", "echo end\\n"],
        first=["tests/integration/gdb_stub_extension.py"], timeout=120)
    assert "SCENARIO-DONE first_map_uncached" in console
    assert re.search(r"stub-context: stop 1 pc 0x[0-9a-f]+ insn [0-9a-f]{8}", text), text
    assert "stub-context: 1 stop(s) seen" in text
    shown = [(k, int(seq)) for k, seq in
             re.findall(r"s2cache: #\d+ (?:hazard|info) (\S+) seq (\d+)", text)]
    t = read_trace(trace)
    replayed = Replay(t.header).run(t).findings("none")
    assert shown == [(f.kind, f.seq) for f in replayed]
    assert any(f.kind == "first-map-uncached" and f.pa == BLOB for f in replayed)
    ended = re.findall(r"s2cache: gdb is no longer attached to QEMU, watch ended; (\d+) "
                       r"finding\(s\) uncovered under none", text)
    uncovered = [f for f in replayed if f.kind not in INFO_KINDS]
    assert ended == [str(len(uncovered))], text[-2000:]
    assert "not watching" in text and text.rstrip().endswith("end")


def plain_gdb(config, cmds: list[str], tmp_path, name: str, until=None, timeout=300,
              script: str | None = None):
    """gdb-multiarch in batch mode on a QEMU without the shim (``config``, paused): ``cmds``
    after `target remote`, then ``script`` (a gdb script file's text), stopping the guest at
    ``until`` on the console.  Returns (gdb's output, console)."""
    from gdbplugin.target.qemu import Qemu
    argv_script = []
    if script is not None:
        (tmp_path / f"{name}.gdb").write_text(script)
        argv_script = ["-x", str(tmp_path / f"{name}.gdb")]
    with Qemu(config) as q:
        cmds = ["set pagination off", "set confirm off", *cmds[:1],
                f"target remote {q.gdb_address}", *cmds[1:]]
        argv = ["gdb-multiarch", "-batch", "-nx"] + \
            [w for c in cmds for w in ("-ex", c)] + argv_script

        seen = False

        def tick():
            nonlocal seen
            seen = seen or bool(until) and until in q.serial_log.read_text(errors="replace")
            if seen:
                keep_stopped(q.monitor)
        text = run_gdb(argv, tmp_path / f"{name}.gdb.txt", timeout, tick)
        console = q.serial_log.read_text(errors="replace")
    return text, console


ORACLE = r'''
python
import gdb
def sctlr():
    return int(gdb.selected_frame().read_register("SCTLR")) & (2**64 - 1)
done = int(gdb.parse_and_eval("(long)&done"))
old, steps = sctlr(), 0
while int(gdb.selected_frame().pc()) != done:
    pc = int(gdb.selected_frame().pc())
    gdb.execute("stepi", to_string=True)
    steps += 1
    new = sctlr()
    if new != old:
        gdb.write(f"oracle: pc {pc:#x} {old:#x} -> {new:#x}\n")
        old = new
gdb.write(f"oracle: {steps} steps\n")
end
'''


def test_sctlr_without_the_shim_equals_a_single_step_oracle(tmp_path):
    """A scenario guest on plain QEMU (-M virt: no EL2, so no shim) that turns M+C+I on and
    later M+C off (caches_off_after_boot, its ELF for symbols).  Oracle: gdb single-steps it
    to `done`, reading SCTLR_EL1 after every instruction.  Watched: `s2cache start` says that
    stage-2 hazards need the shim, plants breakpoints on the MSR SCTLR_EL1 sites it decodes in
    RAM and continues to a user breakpoint at `done`.  Every write the oracle saw is in the
    trace with its PC, old and new value; the M/C/I transitions were shown live with PC and
    symbol; turning caches off after boot is reported."""
    from gdbplugin.target.qemu import QemuConfig
    elf = SCENARIOS / "caches_off_after_boot.elf"
    config = QemuConfig(machine="virt", kernel=elf, paused=True)
    text, _ = plain_gdb(config, [f"file {elf}"], tmp_path, "oracle", script=ORACLE, timeout=240)
    oracle = [(int(pc, 16), int(old, 16), int(new, 16)) for pc, old, new in
              re.findall(r"oracle: pc (0x[0-9a-f]+) (0x[0-9a-f]+) -> (0x[0-9a-f]+)", text)]
    assert len(oracle) == 2 and re.search(r"oracle: \d{4,} steps", text), text[-2000:]
    trace = tmp_path / "watched.jsonl"
    text, _ = plain_gdb(config, [f"file {elf}", "source gdbplugin/gdbext.py",
                                 f"s2cache start --trace {trace}", "break done", "continue",
                                 "s2cache status", "s2cache stop", "echo end\\n"],
                        tmp_path, "watched", timeout=120)
    flat = " ".join(text.split())
    assert "this QEMU has no EL2" in flat and "stage-2 hazards cannot be checked" in flat
    writes = [(d["pc"], d["old"], d["new"]) for d in read_trace(trace).to_dicts()
              if d["kind"] == "sysreg-write" and d["reg"] == "SCTLR_EL1"]
    assert [w for w in writes if w[1] != w[2]] == oracle
    shown = [(int(pc, 16), sym, a, b) for a, b, pc, sym in re.findall(
        r"s2cache: vCPU 0 SCTLR_EL1 (\w{3}) -> (\w{3}) pc (0x[0-9a-f]+) <(\w+)", text)]
    assert [(pc, a, b) for pc, _, a, b in shown] == \
        [(pc, sctlr_flags(old), sctlr_flags(new)) for pc, old, new in oracle]
    assert [sym for _, sym, _, _ in shown] == ["mmu_on", "sctlr_set"]
    assert re.search(rf"vCPU 0 turned its caches off after boot .* pc {oracle[1][0]:#x}", flat)
    assert re.search(rf"no shim: \d+ breakpoint\(s\) on \d+ SCTLR_EL1 write site\(s\); "
                     rf"{len(writes)} hit\(s\)", flat), flat[-2000:]
    assert re.search(r"s2cache: stopped; 0 finding\(s\) uncovered under none; trace \S+ end",
                     flat)


INIT = "Run /init as init process"


def test_linux_without_the_shim_shows_every_sctlr_transition(shim, images, tmp_path):
    """Debian's Linux, 2 vCPUs, on plain QEMU (-M virt, -cpu max: no EL2, no shim) watched
    from gdb: each vCPU's M/C/I transitions are shown live with their PC, and they are the
    ones the shim traps for the same kernel (same order, same flags, the same instruction:
    the PC's offset in its page; the kernel sits at another PA under the shim and KASLR moves
    its VAs).  No write was missed: the engine, which checks each write's old value against
    the one it tracked, reports no unobserved transition."""
    from gdbplugin.capture.record import record
    from gdbplugin.target.qemu import QemuConfig
    append = "console=ttyAMA0 panic=-1 s2cache.hold"
    ref = tmp_path / "shim.jsonl"
    config = shim_config(images / "vmlinuz", ShimParams(policy="kvm", poweroff_on_fatal=True),
                         shim=shim, initrd=images / "initramfs.cpio.gz", append=append, smp=2,
                         paused=False)
    with ShimSession(config, shim) as s:
        why, _ = record(s, ref, MARKER, 180, vcpus=2)
    assert why == "match"
    trapped = [(d["vcpu"], sctlr_flags(d["old"]), sctlr_flags(d["new"]), d["pc"] & 0xFFF)
               for d in read_trace(ref).to_dicts() if d["kind"] == "sysreg-write"
               and d["reg"] == "SCTLR_EL1" and sctlr_flags(d["old"]) != sctlr_flags(d["new"])]
    trace = tmp_path / "plain.jsonl"
    plain = QemuConfig(machine="virt", kernel=images / "vmlinuz",
                       initrd=images / "initramfs.cpio.gz", append=append, smp=2, paused=True)
    # Stopped where the kernel starts /init: every M/C/I transition is behind it, and from
    # there on each switch between a user task and a kernel thread rewrites SCTLR_EL1's
    # pointer-auth enables (a breakpoint stop each, ~12 ms: thousands of them before the
    # marker, a boot of minutes that only grows the slower the machine is).
    text, console = plain_gdb(plain, ["set breakpoint pending off", "source gdbplugin/gdbext.py",
                                      f"s2cache start --trace {trace}", "continue",
                                      "s2cache status", "s2cache stop"],
                              tmp_path, "plain", until=INIT, timeout=400)
    assert INIT in console
    shown = [(int(v), a, b, int(pc, 16) & 0xFFF) for v, a, b, pc in re.findall(
        r"s2cache: vCPU (\d) SCTLR_EL1 (\w{3}) -> (\w{3}) pc (0x[0-9a-f]+)", text)]
    assert shown == trapped and {v for v, *_ in shown} == {0, 1}, (shown, trapped)
    t = read_trace(trace)
    assert not [f for f in Replay(t.header).run(t).findings("none")
                if f.kind == "unobserved-transition"]
    m = re.search(r"no shim: (\d+) breakpoint\(s\) on (\d+) SCTLR_EL1 write site\(s\); (\d+) "
                  r"hit\(s\)", " ".join(text.split()))
    writes = [d for d in t.to_dicts() if d["kind"] == "sysreg-write"]
    assert m and int(m.group(3)) == len(writes) and int(m.group(1)) > int(m.group(2)) > 10
