"""`s2cache start` on a guest that is not under the shim: SCTLR_EL1 through breakpoints on its
write sites (the logic: gdbplugin/capture/unshimmed.py; this module plants and answers).

A hit costs a gdb stop and resume: ``stop()`` records the write and lets the guest go on.  A
vCPU turning its MMU on is a real, silent stop instead: its tables are read as they will be
used, the sites' new VAs get breakpoints (and RAM is scanned again for code loaded or moved
since), then the breakpoint's commands continue the guest.  Breakpoints cannot be added from
``stop()`` (gdb forbids it), and added while the guest runs they would only be inserted at the
next stop, after the code they are for may have run.
"""
from __future__ import annotations


import gdb
from rich.markup import escape

from ..arch.sysinsn import SysRegAccess, decode
from ..capture.attach import Attached
from ..capture.live import LiveSession
from ..capture.snapshot import read_vcpus
from ..capture.unshimmed import BreakpointWatch
from ..target.physmem import ram_regions
from ..ui.live import sctlr_flags
from . import state

REPLANT = "python import gdbplugin.ext.unshimmed as s2u; s2u.replant()\ncontinue"
_turning_on: dict[int, int] = {}              # vCPU -> the SCTLR_EL1 value turning M on


class SiteBreakpoint(gdb.Breakpoint):
    """A breakpoint on one SCTLR_EL1 write site (at its PA or one of its VAs)."""

    def __init__(self, address: int, rt: int):
        super().__init__(f"*{address:#x}", gdb.BP_BREAKPOINT, internal=True)
        self.silent = True
        self.rt = rt
        self.commands = REPLANT

    def stop(self) -> bool:
        L = state.CURRENT
        if L is None or L.watch is None:
            return False
        frame = gdb.selected_frame()
        pc = int(frame.pc()) & ((1 << 64) - 1)
        insn = decode(int.from_bytes(bytes(gdb.selected_inferior().read_memory(pc, 4)),
                                     "little"))
        if not (isinstance(insn, SysRegAccess) and insn.is_write and
                insn.name == "SCTLR_EL1"):
            return False          # a VA that maps other code now: not a write site any more
        threads = L.attached.gdb.threads()
        vcpu = threads.index(gdb.selected_thread().num)
        with L.busy:
            event = L.watch.hit(vcpu, pc, insn.rt)
        if event["reg"] == "SCTLR_EL1" and event in L.watch.caches_off:
            L.say(f"[bold yellow]s2cache: vCPU {vcpu} turned its caches off after boot "
                  f"(SCTLR_EL1 {sctlr_flags(event['old'])} -> {sctlr_flags(event['new'])}) "
                  f"pc {pc:#x}: what it wrote with caches on may still be in them; under a "
                  f"hypervisor that is a caches-off-after-boot hazard the shim can judge[/]")
        turns_on = event["reg"] == "SCTLR_EL1" and event["new"] & 1 and not event["old"] & 1
        if turns_on:
            _turning_on[vcpu] = event["new"]
        return bool(turns_on)      # a real (silent) stop: REPLANT runs, then continues


def replant() -> None:
    """Breakpoints on every site address now (the selected thread is kept).  Run from a
    breakpoint's commands: an error is one line, and the guest goes on."""
    L = state.CURRENT
    if L is None or L.watch is None:
        return
    try:
        _replant(L)
    except Exception as exc:               # noqa: BLE001 - one line, never a traceback
        gdb.write(f"s2cache: could not update the SCTLR_EL1 breakpoints: "
                  f"{type(exc).__name__}: {exc}\n")


def _replant(L) -> None:
    w = L.watch
    debugger = L.attached.gdb
    current = gdb.selected_thread().num
    try:
        states = read_vcpus(debugger, w.registers)
    finally:
        debugger.select_thread(current)
    if _turning_on:
        w.rescan()
    wanted = w.addresses(states, dict(_turning_on))
    _turning_on.clear()
    for address, rt in wanted.items():
        if address not in L.breakpoints:
            L.breakpoints[address] = SiteBreakpoint(address, rt)


def start(debugger, access, skipped, pid, trace: str, why: str, views) -> "state.Live":
    """Watch SCTLR_EL1 of every vCPU through breakpoints; the gdb extension's Live."""
    regions = [(b, s) for b, s, _ in ram_regions(debugger.monitor("info mtree -f"))]
    vcpus = len(debugger.threads())
    live = LiveSession(lambda: None, vcpus=vcpus, trace=trace, policy="none",
                       drain=f"breakpoints (no shim; RAM through {access.path})", views=views)
    L = state.Live(Attached(debugger, live, access, skipped, pid), trace)
    L.watch = BreakpointWatch(debugger, access.mem, regions, live, vcpus)
    state.CURRENT = L
    replant()
    w = L.watch
    gdb.write(f"s2cache: {why}: no s2cache shim here, so stage-2 hazards cannot be checked "
              f"(run the guest under the shim: README, 'The reference stage-2 shim').\n"
              f"s2cache: watching SCTLR_EL1 of {vcpus} vCPU(s) through {len(L.breakpoints)} "
              f"breakpoint(s) on {len(w.sites.writes)} MSR SCTLR_EL1 site(s) (RAM scanned in "
              f"{w.scan_seconds:.1f} s through {access.path}); trace -> {trace}\n")
    if w.sites.set_way:
        shown = ", ".join(f"{s.pa:#x} ({escape(s.text)})" for s in w.sites.set_way[:8])
        gdb.write(f"s2cache: {len(w.sites.set_way)} set/way maintenance site(s) in guest "
                  f"code: {shown}{' ...' if len(w.sites.set_way) > 8 else ''} (under a "
                  f"hypervisor set/way operations must be trapped, HCR_EL2.TSW)\n")
    return L


def status_line(L) -> str:
    w = L.watch
    per_hit = f", {1000 * w.hit_seconds / w.hits:.2f} ms each in s2cache" if w.hits else ""
    return (f"no shim: {len(L.breakpoints)} breakpoint(s) on {len(w.sites.writes)} SCTLR_EL1 "
            f"write site(s); {w.hits} hit(s){per_hit}, plus a gdb stop and resume each (about "
            f"10-15 ms with QEMU 7.2: README); RAM scanned {w.scans} time(s) in "
            f"{w.scan_seconds:.1f} s; {len(w.sites.set_way)} set/way site(s); "
            f"{len(w.caches_off)} caches-off transition(s) after boot")

