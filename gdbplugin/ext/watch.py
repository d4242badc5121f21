"""``s2cache start|stop|status|record|policy|break-on-hazard``: the live watch itself."""
from __future__ import annotations

import argparse
import shlex
import shutil
import time

import gdb
from rich.markup import escape

from ..capture.attach import AttachError, open_target_ram, watch_target
from ..capture.live import LiveSession
from ..model.hazards import INFO_KINDS
from ..model.policies import POLICIES
from ..target.gdbinside import GdbInside
from ..target.physmem import VIA
from ..ui.live import dropped_line, finding_line, sctlr_flags
from . import state, unshimmed
from .state import command_errors


class _Args(argparse.ArgumentParser):
    def error(self, message):
        raise gdb.GdbError(f"s2cache: {message}")


class GdbView:
    """Prints the session's news into gdb (through the state's queue); stops the guest on a
    hazard when asked."""

    def transition(self, session, t):
        if t["reg"] == "SCTLR_EL1" and sctlr_flags(t["old"]) != sctlr_flags(t["new"]):
            state.live().say(lambda: f"[cyan]s2cache: vCPU {t['vcpu']} SCTLR_EL1 "
                             f"{sctlr_flags(t['old'])} -> {sctlr_flags(t['new'])}"
                             f"{at_pc(t.get('pc'))}[/cyan]")

    def dropped(self, session, n):
        state.live().say(f"[bold red]{escape(dropped_line(n))}[/bold red]")

    def finding(self, session, f):
        L = state.live()
        n = len(session.findings)
        if f.kind in INFO_KINDS:
            L.say(lambda: f"[dim]s2cache: #{n} info {escape(finding_line(f, symbol(f.pc)))}"
                          f"[/dim]")
            return
        L.say(lambda: f"[bold red]s2cache: #{n} hazard "
                      f"{escape(finding_line(f, symbol(f.pc)))}[/bold red]")
        L.hazard_seen()


def symbol(pc: int | None) -> str | None:
    """``name+off`` where gdb's symbols know the PC (gdb's main thread only)."""
    if pc is None:
        return None
    try:
        out = gdb.execute(f"info symbol {pc:#x}", to_string=True).strip()
    except gdb.error:
        return None
    if not out or out.startswith("No symbol"):
        return None
    name = out.split(" in section")[0]
    return name.replace(" + ", "+")


def at_pc(pc: int | None) -> str:
    if pc is None:
        return ""
    name = symbol(pc)
    return f" pc {pc:#x}" + (f" <{name}>" if name else "")


class Start(gdb.Command):
    """Begin watching the QEMU gdb is attached to: s2cache start [--policy P] [--trace FILE] [--ram-file F] [--via auto|file|proc|gdb] [--no-shim]

Finds the shim's ring in guest RAM (fastest way first: the shared RAM file given, else
/proc/<qemu-pid>/mem, else gdb physical reads at each stop), records a trace, and prints SCTLR
transitions and hazard warnings as they happen.  The guest must be stopped; continue it after.
Without the shim (a QEMU without EL2, or --no-shim) stage-2 hazards cannot be checked: it
watches each vCPU's SCTLR_EL1 through breakpoints on the MSR SCTLR_EL1 sites in guest RAM."""

    def __init__(self):
        super().__init__("s2cache start", gdb.COMMAND_USER)

    @command_errors
    def invoke(self, arg, from_tty):
        if state.CURRENT is not None:
            raise gdb.GdbError("s2cache: already watching (`s2cache stop` first)")
        p = _Args(prog="s2cache start", add_help=False)
        p.add_argument("--policy", choices=list(POLICIES))
        p.add_argument("--trace")
        p.add_argument("--ram-file")
        p.add_argument("--via", choices=list(VIA), default="auto")
        p.add_argument("--no-shim", action="store_true")
        a = p.parse_args(shlex.split(arg))
        if gdb.selected_inferior().pid == 0 and not gdb.selected_inferior().threads():
            raise gdb.GdbError("s2cache: gdb is not attached to QEMU (target remote first)")
        debugger = GdbInside()
        via = VIA[a.via]
        trace = a.trace or time.strftime("s2cache-%Y%m%d-%H%M%S.jsonl")
        if a.no_shim or not debugger.has_register("HCR_EL2"):
            why = "--no-shim" if a.no_shim else \
                "this QEMU has no EL2 (-M virt without virtualization=on)"
            try:
                access, skipped, pid = open_target_ram(
                    debugger, debugger.target_address(), debugger.monitor("info mtree -f"),
                    a.ram_file, via)
            except AttachError as exc:
                debugger.close()
                raise gdb.GdbError(f"s2cache: {exc}") from None
            unshimmed.start(debugger, access, skipped, pid, trace, why, [GdbView()])
            return
        try:
            attached = watch_target(debugger, debugger.target_address(), trace=trace,
                                    ram_file=a.ram_file, policy=a.policy, views=[GdbView()],
                                    via=via)
        except AttachError as exc:
            debugger.close()
            raise gdb.GdbError(f"s2cache: {exc}") from None
        state.CURRENT = state.Live(attached, trace)
        why = f" ({'; '.join(attached.skipped)})" if attached.skipped else ""
        gdb.write(f"s2cache: watching {len(debugger.threads())} vCPU(s); ring read through "
                  f"{attached.ram.path}{why}; trace -> {trace}\n")
        if state.CURRENT.gdb_only:
            gdb.write("s2cache: gdb reads only: the ring is drained when the guest stops "
                      "(run the shim with ring_full=wait so nothing is lost)\n")


class Stop(gdb.Command):
    """Stop watching: drain what is left, finish the replay, print the verdict."""

    def __init__(self):
        super().__init__("s2cache stop", gdb.COMMAND_USER)

    @command_errors
    def invoke(self, arg, from_tty):
        end_watch("stopped")


def end_watch(why: str) -> None:
    """End the watch: drain what is left, finish the replay, one line of verdict."""
    L = state.live()
    result = L.close()                     # what it publishes still prints through L
    state.CURRENT = None
    if result is None:
        gdb.write(f"s2cache: {why}; the shim's ring never appeared\n")
        return
    policy = L.session.policy
    left = [f for f in result.findings(policy) if f.kind not in INFO_KINDS]
    gdb.write(f"s2cache: {why}; {len(left)} finding(s) uncovered under {policy}; "
              f"trace {L.trace_path}"
              + (f" ({L.session.dropped} ring records lost)" if L.session.dropped else "")
              + "\n")


def on_connection_removed(_event) -> None:
    """gdb left QEMU (``detach``, ``disconnect``, the connection closed): the watch ends
    there, with what could still be drained, instead of outliving its target."""
    if state.CURRENT is not None:
        end_watch("gdb is no longer attached to QEMU, watch ended")


class Status(gdb.Command):
    """Drain path, events, vCPUs with SCTLR_EL1 M/C/I and EL, findings."""

    def __init__(self):
        super().__init__("s2cache status", gdb.COMMAND_USER)

    @command_errors
    def invoke(self, arg, from_tty):
        L = state.live()
        with L.busy:
            st = L.session.status()
        out = state.console()
        source = "events from" if L.watch is not None else "ring read through"
        out.print(f"{source} {st['drain']}; policy {st['policy']}; "
                  f"{st['events']} events ({st['records']} records, {st['dropped']} lost) in "
                  f"{st['seconds']:.1f} s; stage 2: {st['maps']} maps, {st['unmaps']} "
                  f"unmaps; findings {st['findings']} ({st['uncovered']} uncovered)"
                  + (f"; shim halted: {st['halted']}" if st["halted"] else "")
                  + (f"; draining stopped: {L.error}" if L.error else ""))
        if L.watch is not None:
            out.print(unshimmed.status_line(L), highlight=False)
        for v in st["vcpus"]:
            el = "-" if v["el"] is None else f"EL{v['el']}"
            out.print(f"  vCPU {v['vcpu']}: {el} SCTLR_EL1 {v['sctlr']:#x} "
                      f"({sctlr_flags(v['sctlr'])}){'' if v['online'] else ' offline'}")


class Record(gdb.Command):
    """s2cache record FILE: copy the trace so far to FILE (the session's own trace file keeps
    growing; it is flushed after every drained batch)."""

    def __init__(self):
        super().__init__("s2cache record", gdb.COMMAND_USER, gdb.COMPLETE_FILENAME)

    @command_errors
    def invoke(self, arg, from_tty):
        L = state.live()
        if not arg.strip():
            gdb.write(f"s2cache: the trace is written to {L.trace_path}\n")
            return
        with L.busy:
            shutil.copyfile(L.trace_path, arg.strip())
        gdb.write(f"s2cache: trace so far copied to {arg.strip()} (it continues in "
                  f"{L.trace_path})\n")


class Policy(gdb.Command):
    """s2cache policy [P]: show or switch the policy warnings are judged by (none, rfc2013,
    kvm, xen, fwb).  Every policy is replayed at once, so switching re-renders, it re-runs
    nothing."""

    def __init__(self):
        super().__init__("s2cache policy", gdb.COMMAND_USER)

    def complete(self, text, word):
        return [p for p in POLICIES if p.startswith(word or "")]

    @command_errors
    def invoke(self, arg, from_tty):
        L = state.live()
        name = arg.strip()
        if not name:
            gdb.write(f"s2cache: policy {L.session.policy}\n")
            return
        if name not in POLICIES:
            raise gdb.GdbError(f"s2cache: unknown policy {name!r} (one of "
                               f"{', '.join(POLICIES)})")
        with L.busy:
            L.session.set_policy(name)
            n = sum(1 for f in L.session.findings if f.kind not in INFO_KINDS)
        gdb.write(f"s2cache: policy {name}: {n} finding(s) so far\n")


class BreakOnHazard(gdb.Command):
    """s2cache break-on-hazard on|off: stop the guest when a hazard is found (no breakpoint:
    the drain thread interrupts the guest once the replay has judged the event, with every
    drained batch replayed at once; the PC of the event is in the warning).  Costs no stop
    while no hazard is found.  Measured on Linux, 2 vCPUs, 2 cores: the guest stops 1-3 s
    (20k-70k events) after its first finding, long before userspace."""

    def __init__(self):
        super().__init__("s2cache break-on-hazard", gdb.COMMAND_USER)

    def complete(self, text, word):
        return [w for w in ("on", "off") if w.startswith(word or "")]

    @command_errors
    def invoke(self, arg, from_tty):
        L = state.live()
        value = arg.strip()
        if value not in ("on", "off", ""):
            raise gdb.GdbError("s2cache: break-on-hazard on|off")
        if value:
            L.break_on_hazard = value == "on"
            # A finding waits in the replay's held run at most LATENCY_S: none, when it stops
            with L.busy:
                L.session.LATENCY_S = 0.0 if L.break_on_hazard else LiveSession.LATENCY_S
        gdb.write(f"s2cache: break-on-hazard {'on' if L.break_on_hazard else 'off'}\n")


COMMANDS = (Start, Stop, Status, Record, Policy, BreakOnHazard)
