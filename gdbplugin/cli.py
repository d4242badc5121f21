"""The ``s2cache`` command: a thin shell over the library.

Exit codes (README.md, per command): 0 clean, 1 findings (for ``walk``: malformed tables),
2 usage/config/environment error with a one-line message, 3 the target failed mid-run.
"""
from __future__ import annotations

import argparse
import json
import mmap
import sys
from pathlib import Path

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_TARGET = 0, 1, 2, 3


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's default prints usage and exits 2; keep it one line
        raise UsageError(message)


def _console():
    """A terminal's own width (tables fold to fit it); a pipe or file gets 160 columns and
    no control characters.  Lines never wrap: one finding, one line (grep, CI logs).  rich is
    imported here, not with the module: ``s2cache run`` launches QEMU before it needs it."""
    from rich.console import Console
    probe = Console()
    return Console(width=None if probe.is_terminal else 160, soft_wrap=True)


def _err_console(**kw):
    """The console for stderr: one-line errors and summaries."""
    from rich.console import Console
    return Console(stderr=True, soft_wrap=True, **kw)


def _int(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError(f"not a 64-bit unsigned value: {text!r}")
    return value


def cmd_walk(args) -> int:
    from .arch.memory import ImageMemory
    from .arch.walker import Regime, Walker

    stage2 = args.vttbr is not None or args.vtcr is not None
    stage1 = args.ttbr is not None or args.tcr is not None
    if stage1 == stage2:
        raise UsageError("give either --vttbr and --vtcr (stage 2) or --ttbr and --tcr (stage 1)")
    if stage2 and (args.vttbr is None or args.vtcr is None):
        raise UsageError("stage 2 needs both --vttbr and --vtcr")
    if stage1 and (args.ttbr is None or args.tcr is None):
        raise UsageError("stage 1 needs both --ttbr and --tcr")
    if stage2 and (args.ttbr1 or args.mair is not None):
        raise UsageError("--ttbr1 and --mair apply to stage 1 only")
    _check_mem_base(args.mem_base)
    path = Path(args.mem)
    try:
        with path.open("rb") as f:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        reason = "file is empty" if isinstance(exc, ValueError) else exc.strerror or str(exc)
        raise UsageError(f"cannot read memory image {args.mem}: {reason}") from None
    if stage2:
        regime = Regime.from_vtcr(args.vtcr, args.vttbr, hcr=args.hcr)
    else:
        regime = Regime.from_tcr(args.tcr, args.ttbr, upper=args.ttbr1, mair=args.mair)
    walker = Walker(regime, ImageMemory(data, args.mem_base))
    mappings = walker.mappings()
    errors = walker.error_dicts()
    report = {"regime": None if regime.fatal else regime.describe(),
              "mappings": [m.as_dict() for m in mappings], "errors": errors}
    if args.json:
        _write_json(args.json, report)
    if args.json != "-":
        from .ui.console import print_walk
        print_walk(_console(), "", regime, mappings, errors)
    return EXIT_FINDINGS if errors else EXIT_OK


def _check_mem_base(base: int | None) -> None:
    """A memory image starts on a page: QEMU dumps and RAM files do, and a base off by a few
    bytes would silently shift every table read."""
    if base is not None and base % 4096:
        raise UsageError(f"--mem-base {base:#x} is not 4 KiB-aligned (the PA of the image's "
                         f"first byte, e.g. 0x40000000)")


def _write_json(dest: str, report: dict) -> None:
    _write_text(dest, json.dumps(report, indent=1) + "\n")


def _write_text(dest: str, text: str) -> None:
    if dest == "-":
        sys.stdout.write(text)
        return
    try:
        Path(dest).write_text(text)
    except OSError as exc:
        raise UsageError(f"cannot write {dest}: {exc.strerror or exc}") from None


def _gdb():
    """gdb-multiarch under MI; a missing gdb is an environment error (exit 2)."""
    from .target.errors import TargetError
    from .target.gdbmi import GdbMI
    try:
        return GdbMI()
    except TargetError as exc:
        raise UsageError(str(exc)) from None


def cmd_inspect(args) -> int:
    from .capture.snapshot import read_vcpus, snapshot, why_no_walk
    from .target.errors import TargetError
    from .target.physmem import GdbPhysMem, SharedRam
    from .target.registers import Registers
    from .ui.console import print_vcpu, print_walk

    if (args.mem_file is None) != (args.mem_base is None):
        raise UsageError("--mem-file and --mem-base go together")
    _check_mem_base(args.mem_base)
    console = _console()
    with _gdb() as gdb:
        try:
            gdb.connect(args.target)
        except TargetError as exc:
            raise UsageError(f"cannot attach to {args.target}: {exc}") from None
        try:
            # A guest QEMU holds at -S has not started: leave it so (gdb's detach would start it).
            prelaunch = "prelaunch" in gdb.monitor("info status")
            gdb.leave_stopped = prelaunch
            states = read_vcpus(gdb, Registers(gdb))
            mem = SharedRam(args.mem_file, args.mem_base) if args.mem_file else GdbPhysMem(gdb)
            walks = snapshot(states, mem)
        except TargetError as exc:
            print(f"s2cache: target error: {exc}", file=sys.stderr)
            return EXIT_TARGET
    if prelaunch:
        console.print("the guest has not started (QEMU -S): registers are at their reset "
                      "values and it is left stopped", highlight=False)
    for state in states:
        print_vcpu(console, state)
        if not any(state.vcpu in w.vcpus for w in walks):
            console.print(f"  nothing to walk for vCPU {state.vcpu}: {why_no_walk(state)}",
                          highlight=False)
    for walk in walks:
        vcpus = ",".join(map(str, walk.vcpus))
        print_walk(console, f"{walk.name} (vCPU {vcpus})", walk.regime, walk.mappings,
                   walk.errors, limit=args.runs)
    if args.json:
        _write_json(args.json, {"vcpus": [{"vcpu": s.vcpu, "el": s.el, "registers": s.regs}
                                          for s in states],
                                "walks": [w.as_dict() for w in walks]})
    return EXIT_FINDINGS if any(w.errors for w in walks) else EXIT_OK


def cmd_replay(args) -> int:
    from .model.engine import Replay
    from .model.policies import POLICIES
    from .model.trace import TraceError, read_trace

    try:
        trace = read_trace(args.trace)
    except TraceError as exc:
        text = str(exc)
        raise UsageError(text if text.startswith("cannot read") else f"{args.trace}: {text}") \
            from None
    policy = args.policy or trace.header.get("policy") or "kvm"
    if policy not in POLICIES:
        where = "--policy" if args.policy else f"{args.trace}: line 1 (header) policy"
        raise UsageError(f"{where}: unknown policy {policy!r} (one of {', '.join(POLICIES)})")
    images = _symbol_images(args.symbols or [], args.kernel, "--symbols")
    result = Replay(trace.header).run(trace)
    out = _reports(args, _console(), result, policy, trace.header, images=images)
    return out["verdict"]["exit"]


def _reports(args, console, result, policy: str, header: dict, live=None, images=(),
             drawer=None, written=None, **sections) -> dict:
    """Every view of one result: the findings (or with --compare the policy matrix and the
    cost table) on the console unless the JSON goes to stdout, then the JSON, Markdown,
    SARIF and SVG reports asked for; PCs named from ``images`` (gdbplugin/target/symbols.py).
    ``drawer``: a timeline Drawer started earlier (gdbplugin/ui/timeline.py); ``written()``
    is called once every report but the picture is written.  Returns the JSON report."""
    from .ui.report import cost_rows, matrix, print_compare, print_findings, report
    files, placed = {}, None
    if images:
        from .target.symbols import Symbolizer
        sym = Symbolizer(images, [t["pc"] for t in result.transitions
                                  if t["reg"] == "SCTLR_EL1" and t["pc"] is not None])
        files, placed = sym.annotate(result), sym.describe()
    out = report(result, policy, cpu=header.get("cpu"), strict=args.strict, images=files)
    if placed is not None:
        out["symbols"] = placed
    if live is not None:
        out["stats"]["live"] = {k: v for k, v in live.status().items() if k != "vcpus"}
    out.update(sections)
    if args.compare:
        out["compare"] = matrix(result)
        out["compare_cost"] = cost_rows(result)
    if args.svg and drawer is not None:
        drawer.start(out, result.fault_seqs, int(header.get("vcpus", 1)), args.svg)
    if args.json != "-" and (console.is_terminal or not sections.get("run")):
        (print_compare if args.compare else print_findings)(console, result, *(
            () if args.compare else (policy,)))
    elif args.json != "-" and args.compare:
        from .ui.report import print_cost
        print_cost(console, result)
    if args.json:
        _write_json(args.json, out)
    if args.md:
        from .ui.markdown import markdown
        _write_text(args.md, markdown(out))
    if args.sarif:
        from .ui.sarif import sarif
        _write_json(args.sarif, sarif(out))
    if written is not None:
        written()
    if args.svg:
        from .ui.timeline import timeline_svg
        try:
            if drawer is not None:
                drawer.finish()                  # drawn while the reports above were written
            else:
                timeline_svg(out, result.fault_seqs, int(header.get("vcpus", 1)), args.svg)
        except OSError as exc:
            raise UsageError(f"cannot write {args.svg}: {exc.strerror or exc}") from None
    return out


def cmd_attach(args) -> int:
    from .capture.attach import AttachError, attach
    from .target.physmem import VIA
    from .model.policies import POLICIES
    from .model.trace import TraceError
    from .target.errors import TargetError
    from .ui.live import WarningPrinter, dropped_line

    if args.policy is not None and args.policy not in POLICIES:
        raise UsageError(f"unknown policy {args.policy!r} (one of {', '.join(POLICIES)})")
    if args.via == "file" and not args.ram_file:
        raise UsageError("--via file needs --ram-file")
    images = _symbol_images(args.symbols or [], args.kernel, "--symbols")
    trace = args.trace or "s2cache-attach.jsonl"
    console = _console()
    err = _err_console()
    with _gdb() as gdb:
        try:
            session = attach(gdb, args.target, trace=trace, ram_file=args.ram_file,
                             policy=args.policy, views=[WarningPrinter(console)],
                             via=VIA[args.via])
        except AttachError as exc:
            raise UsageError(str(exc)) from None
        except TargetError as exc:
            raise UsageError(f"cannot attach to {args.target}: {exc}") from None
        err.print(f"s2cache: watching {args.target}: ring read through {session.ram.path}"
                  + (f" ({'; '.join(session.skipped)})" if session.skipped else "")
                  + f"; trace -> {trace}; Ctrl-C ends", highlight=False)
        try:
            why = session.watch()
        except KeyboardInterrupt:
            why = "interrupted"
        try:
            result = session.close()
        except (TargetError, TraceError) as exc:
            print(f"s2cache: target error: {exc}", file=sys.stderr)
            return EXIT_TARGET
    live = session.live
    if result is None:
        print(f"s2cache: the shim's ring never appeared in guest RAM ({why}); is the guest "
              f"running under the shim?", file=sys.stderr)
        return EXIT_TARGET
    out = _reports(args, console, result, live.policy,
                   live.recorder.header if live.recorder else {}, live=live, images=images)
    halted = live.ring.halted() if live.ring else None
    failed = [f"s2cache: the shim halted: {halted}"] if halted else []
    if why == "qemu-exited":
        failed.append(f"s2cache: QEMU went away ({'; '.join(session.notes)}); the trace holds "
                      f"what was drained")
    if live.dropped:               # the capture is incomplete: not a verdict of 0 or 1
        failed.append(dropped_line(live.dropped))
    for line in failed:
        print(line, file=sys.stderr)
    if failed:
        return EXIT_TARGET
    return out["verdict"]["exit"]


def _session_config(args):
    """The configuration file with the command line's overrides; errors are usage errors."""
    from .target.config import ConfigError, load_config
    try:
        return load_config(args.config).with_overrides(
            policy=args.policy, smp=args.smp, timeout=getattr(args, "timeout", None))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _symbol_images(paths, kernel, where: str):
    """Symbols files (ELF, System.map with its kernel Image), read before anything starts
    (errors: exit 2, naming ``where`` they were given)."""
    from .target.symbols import SymbolError, load_images
    try:
        return load_images([Path(p) for p in paths], None if kernel is None else Path(kernel))
    except SymbolError as exc:
        raise UsageError(f"{where}: {exc}") from None


def _shim_image():
    from .shim.launch import ShimError, ShimImage
    try:
        return ShimImage.load(build_first=False)
    except (ShimError, OSError) as exc:
        raise UsageError(f"the shim is not built ({exc}): run scripts/build-shim") from None


def cmd_qemu_cmd(args) -> int:
    import shlex
    from .target.qemu import Qemu
    cfg = _session_config(args)
    config = cfg.qemu_config(_shim_image(), paused=True)
    config.console = "stdio"
    workdir = Path(args.dir).resolve()
    argv = Qemu(config, workdir=workdir, keep_workdir=True).argv()
    print(shlex.join(argv))
    ext = Path(__file__).resolve().parent / "gdbext.py"
    gdb_cmd = shlex.join(["gdb-multiarch", "-ex", f"target remote {workdir / 'gdb.sock'}",
                          "-ex", f"source {ext}",
                          "-ex", f"s2cache start --ram-file {workdir / 'ram'}"])
    print(f"# QEMU waits paused (-S), its gdbstub on {workdir / 'gdb.sock'}, guest RAM shared "
          f"in {workdir / 'ram'}; then, in another terminal:\n# {gdb_cmd}\n# or headless: "
          f"s2cache attach {workdir / 'gdb.sock'} --ram-file {workdir / 'ram'}",
          file=sys.stderr)
    return EXIT_OK


def cmd_run(args) -> int:
    import contextlib
    import signal
    import time
    from .shim.launch import ShimSession
    from .target.errors import TargetError

    cfg = _session_config(args)
    shim = _shim_image()
    # QEMU is launched first, as soon as the config is known to be valid: the symbols files
    # (checked to exist with the config) are read while it initialises.  It starts paused
    # only for its monitor to be asked what it loaded (a scenario guest powers off within
    # milliseconds of starting); then the guest runs while the session's own set-up (imports,
    # the live view) goes on: the ring keeps every record until it is drained (512k records,
    # more than a Linux boot).
    config = cfg.qemu_config(shim, paused=True)
    trace = args.trace or "s2cache-run.jsonl"
    images: list = []
    why, tail, result, live, halted, drawer, console = "", "", None, None, None, None, None
    started, ended = time.monotonic(), 0.0
    with contextlib.ExitStack() as running:     # QEMU, reaped once the reports are written
        try:
            def read_symbols():
                images.extend(_symbol_images(cfg.symbols, cfg.kernel,
                                             f"{cfg.path}: [guest] symbols"))

            s = running.enter_context(ShimSession(config, shim, consume=True,
                                                  meanwhile=read_symbols))
            with contextlib.ExitStack() as showing:
                q = s.qemu
                roms, mtree = q.monitor("info roms"), q.monitor("info mtree -f")
                q.monitor("cont")

                def watch_the_boot() -> str:
                    nonlocal live, drawer, console
                    from .capture.live import LiveSession
                    from .ui.live import LivePanel, WarningPrinter
                    console = _console()
                    panel = (LivePanel(console, f"s2cache run {cfg.path.name} (policy "
                                       f"{cfg.policy})", cfg.timeout)
                             if console.is_terminal and args.json != "-" else None)
                    live = LiveSession(
                        s.ring, vcpus=cfg.smp, trace=trace, policy=cfg.policy,
                        drain="shared RAM file",
                        info_roms=roms, info_mtree=mtree,
                        cpu_model=cfg.cpu.split(",")[0], views=[panel or WarningPrinter(console)])
                    if panel:
                        panel.session = live
                        showing.enter_context(panel)
                    if args.svg:
                        from .ui.timeline import Drawer
                        drawer = Drawer(cfg.smp)   # imports matplotlib while the guest boots
                    for image in images:
                        image.site_offsets()  # what naming PCs needs of the images, found meanwhile
                    return s.wait(cfg.until, deadline - time.monotonic(), interval=0.02,
                                  pump=live.pump, stop=lambda: bool(stop) or live.behind())

                # Ctrl-C is noted, not raised: a batch is never half drained, recorded, replayed.
                stop: list[int] = []
                deadline = time.monotonic() + cfg.timeout
                previous = signal.signal(signal.SIGINT, lambda *_: stop.append(1))
                try:
                    ended_by = _below_the_guest(watch_the_boot)
                    if ended_by == "stopped" and not stop:
                        # Behind the guest at the lowest priority (its vCPUs leave no CPU
                        # free): the rest is watched at the caller's own, or the ring fills.
                        ended_by = s.wait(cfg.until, deadline - time.monotonic(), interval=0.02,
                                          pump=live.pump, stop=lambda: bool(stop))
                finally:
                    signal.signal(signal.SIGINT, previous)
                why = {"match": "marker", "exit": "qemu-exited",
                       "stopped": "interrupted"}.get(ended_by, ended_by)
                ended = time.monotonic() - started
                if why == "marker":
                    s.pause()      # the run is over: the backlog gets the CPUs, not the guest
                result = live.close()
                tail = s.console()[-4000:]
                halted = live.ring.halted() if live.ring is not None else None
            if drawer is None:
                s.release()      # QEMU's exit overlaps the reports; ``running`` reaps it
        except TargetError as exc:
            _err_console(highlight=False).print(f"s2cache: the target failed: {exc}")
            return EXIT_TARGET
        finally:
            if drawer is not None and result is None:
                drawer.close()                  # nothing to draw
        err = _err_console(highlight=False)
        failed = {"qemu-exited": f"QEMU exited before the marker {cfg.until!r}",
                  "halted": f"the shim halted: {halted}",
                  "timeout": f"no {cfg.until!r} on the console within {cfg.timeout:g} s",
                  "interrupted": "interrupted"}.get(why)
        if result is None:
            failed = failed or "the shim's ring never appeared"
            err.print(f"s2cache: {failed}; console tail:\n{tail[-1500:]}")
            return 130 if why == "interrupted" else EXIT_TARGET
        header = live.recorder.header if live.recorder else {}
        try:
            # With a picture to draw, QEMU goes once the other reports are written: its exit
            # would otherwise take a CPU from the drawing, what the run's end waits for.
            out = _reports(args, console, result, live.policy, header, live=live, images=images,
                           drawer=drawer, written=s.release, run={
                               "config": str(cfg.path), "ended": why, "trace": str(trace),
                               "seconds_to_end": round(ended, 3),
                               "seconds_closed": round(time.monotonic() - started, 3),
                               "console_tail": tail if failed else None})
        finally:
            if drawer is not None:
                drawer.close()
        if live.dropped:
            from .ui.live import dropped_line
            err.print(dropped_line(live.dropped))
        if failed:
            err.print(f"s2cache: {failed} (the report and trace hold what was seen)")
            return 130 if why == "interrupted" else EXIT_TARGET
        v = out["verdict"]
        if args.json != "-":
            err.print(f"s2cache: {cfg.path.name} under {live.policy}: {why} after {ended:.1f} s, "
                      f"{live.stats.events:,} events, all judged after "
                      f"{out['run']['seconds_closed']:.1f} s; "
                      f"{v['failing']} finding(s) fail the run, {v['uncovered']} uncovered "
                      f"({v['guest_own']} the guest's own){_written(args)}")
        if live.dropped:
            return EXIT_TARGET
        return v["exit"]


def _below_the_guest(work):
    """``work()`` in a thread of the lowest CPU priority (nice 19, that thread alone), the
    caller waiting for it: what a session does while its guest boots (draining, recording,
    replaying: ~0.75 of a CPU over a Linux boot) must not take the CPU from QEMU's vCPU
    threads, or the boot it measures gets slower (QEMU's vCPU thread waited 0.16 s on the
    run queue over a 4 s boot at equal priority, 0.02 s this way).  A thread, not the
    process: the caller's own priority is left as it was (nice cannot be lowered back), so
    a ``work`` that falls behind can return and let the caller go on.  Returns what
    ``work`` returns, raises what it raises; signal handlers still run in the caller's
    thread meanwhile."""
    import os
    import threading
    out: dict = {}

    def body():
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:
            pass                      # not Linux's per-thread nice: run at the caller's
        try:
            out["value"] = work()
        except BaseException as exc:   # handed to the caller, which raises it
            out["error"] = exc

    thread = threading.Thread(target=body, name="s2cache-boot-watch", daemon=True)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def _written(args) -> str:
    """Where the reports went, for the summary line."""
    outs = [f"{k} {getattr(args, k)}" for k in ("json", "md", "sarif", "svg")
            if getattr(args, k) not in (None, "-")]
    return "; reports: " + ", ".join(outs) if outs else ""


def _report_args(parser) -> None:
    parser.add_argument("--json", help="write the report as JSON to this file ('-' for stdout)")
    parser.add_argument("--md", help="write the report as Markdown to this file")
    parser.add_argument("--sarif", help="write the findings as SARIF 2.1.0 to this file")
    parser.add_argument("--svg", help="draw the timeline (SCTLR_EL1 per vCPU, stage-2 faults, "
                        "findings) as SVG to this file")
    parser.add_argument("--strict", action="store_true", help="the guest's own uncovered "
                        "findings fail the run too (default: only the hypervisor's)")


def _symbol_args(parser) -> None:
    parser.add_argument("--symbols", nargs="+", metavar="FILE", help="ELF or System.map "
                        "files naming the PCs (found where they ran from the run's own "
                        "SCTLR_EL1 writes)")
    parser.add_argument("--kernel", help="the Linux Image a System.map belongs to")


def _session_args(parser) -> None:
    parser.add_argument("config", help="session TOML file (qemu-configs/)")
    parser.add_argument("--policy", help="the shim's policy (default: the config's)")
    parser.add_argument("--smp", type=int, help="vCPUs (default: the config's)")


class _Version(argparse.Action):
    """``--version``: the package's version, looked up only when asked for."""

    def __init__(self, option_strings, dest, **kw):
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from . import __version__
        print(f"s2cache {__version__}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="s2cache", description="Find the cache-maintenance bugs QEMU hides.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    walk = sub.add_parser("walk", help="walk translation tables in a raw memory image")
    walk.add_argument("--mem", required=True, help="raw memory image (e.g. QEMU pmemsave)")
    walk.add_argument("--mem-base", required=True, type=_int, help="PA of the image's first byte")
    walk.add_argument("--vttbr", type=_int, help="VTTBR_EL2 (raw, VMID included)")
    walk.add_argument("--vtcr", type=_int, help="VTCR_EL2 (raw)")
    walk.add_argument("--hcr", type=_int, default=0, help="HCR_EL2, for FWB (stage 2)")
    walk.add_argument("--ttbr", type=_int, help="TTBR0/1_ELx (raw, ASID included)")
    walk.add_argument("--tcr", type=_int, help="TCR_ELx (raw)")
    walk.add_argument("--ttbr1", action="store_true", help="walk the upper (TTBR1) VA range")
    walk.add_argument("--mair", type=_int, help="MAIR_ELx, to name stage-1 memory types")
    walk.add_argument("--json", help="write the walk as JSON to this file ('-' for stdout)")
    walk.set_defaults(func=cmd_walk)

    rep = sub.add_parser("replay", help="re-evaluate a recorded trace under a policy, or "
                         "compare every policy's coverage and cost")
    rep.add_argument("trace", help="trace file (s2cache.trace/1 JSONL)")
    how = rep.add_mutually_exclusive_group()
    how.add_argument("--policy", help="active policy: none, rfc2013, kvm, xen, fwb "
                     "(default: the trace's, else kvm)")
    how.add_argument("--compare", action="store_true",
                     help="findings x policies matrix and the coverage-versus-cost table")
    _report_args(rep)
    _symbol_args(rep)
    rep.set_defaults(func=cmd_replay)

    insp = sub.add_parser("inspect", help="attach to a QEMU gdbstub, decode every vCPU's "
                          "translation registers and walk its stage-1 and stage-2 tables")
    insp.add_argument("target", help="gdbstub: HOST:PORT or a unix socket path")
    insp.add_argument("--mem-file", help="QEMU's shared RAM file (fast); default: gdb reads")
    insp.add_argument("--mem-base", type=_int, help="PA of the RAM file's first byte")
    insp.add_argument("--runs", type=int, default=40, help="runs shown per walk (default 40)")
    insp.add_argument("--json", help="write registers and complete walks as JSON")
    insp.set_defaults(func=cmd_inspect)

    att = sub.add_parser("attach", help="watch a QEMU running the shim, live: warnings as "
                         "they happen, a report when it ends (Ctrl-C, the guest stops or "
                         "QEMU exits)")
    att.add_argument("target", help="gdbstub: 127.0.0.1:PORT or a unix socket path")
    att.add_argument("--ram-file", help="QEMU's shared RAM file (fastest); default: "
                     "/proc/<qemu-pid>/mem, else gdb reads")
    att.add_argument("--via", choices=["auto", "file", "proc", "gdb"], default="auto",
                     help="how to read the ring: the fastest that works (default), or only "
                     "the RAM file, /proc/<qemu-pid>/mem, or gdb (stops the guest to read)")
    att.add_argument("--policy", help="active policy (default: the one the shim runs)")
    att.add_argument("--trace", help="write the trace here (default s2cache-attach.jsonl)")
    att.add_argument("--compare", action="store_true", help="also the policy comparison")
    _report_args(att)
    _symbol_args(att)
    att.set_defaults(func=cmd_attach)

    run = sub.add_parser("run", help="boot a configuration (qemu-configs/*.toml) under the "
                         "shim, watch it live to its console marker, report")
    _session_args(run)
    run.add_argument("--timeout", type=float, help="seconds to the marker (default: the "
                     "config's)")
    run.add_argument("--trace", help="trace file (default s2cache-run.jsonl)")
    run.add_argument("--compare", action="store_true", help="also the policy comparison: "
                     "per policy, uncovered findings by kind and the maintenance it costs")
    _report_args(run)
    run.set_defaults(func=cmd_run)

    qcmd = sub.add_parser("qemu-cmd", help="print the QEMU command line of a configuration, "
                          "paused with its gdbstub, for attaching by hand")
    _session_args(qcmd)
    qcmd.add_argument("--dir", default="s2cache-qemu", help="where the gdb socket, the "
                      "monitor socket and the shared RAM file go (default ./s2cache-qemu)")
    qcmd.set_defaults(func=cmd_qemu_cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UsageError as exc:
        print(f"s2cache: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("s2cache: interrupted", file=sys.stderr)
        return 130


def console_main() -> None:
    """The ``s2cache`` command itself: ``main``, then an exit without the interpreter's
    teardown (~0.05-0.09 s of a run's end, freeing numpy and rich's modules one by one).
    Every command has closed what it opened by the time ``main`` returns (QEMU reaped, its
    work directory removed, reports and traces closed); only the standard streams are left
    to flush."""
    import os
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass                              # a reader that closed its pipe: nobody to tell
    os._exit(code)


if __name__ == "__main__":
    console_main()
