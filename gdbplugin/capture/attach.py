"""Attach a live session to a QEMU someone else started with the shim, through its gdbstub.

gdb is the control plane: it connects, asks QEMU's monitor (``qRcmd``) where guest RAM is
(``info mtree -f``) and what QEMU loaded (``info roms``), counts the vCPUs (threads), and lets
the guest run.  The ring is drained by the fastest way to guest RAM that works
(gdbplugin/target/physmem.py ``open_ram``): the shared RAM file if given, else
``/proc/<qemu-pid>/mem`` (the pid found from the gdbstub's listening socket), else gdb's
physical reads, for which ``watch`` stops the guest every ``interval`` to read (the shim's
``ring_full=wait`` keeps the guest from overrunning the ring in between).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from ..shim.ring import RingError, RingReader
from ..target.errors import GdbError, GdbTimeout, TargetError
from ..target.gdbmi import GdbMI
from ..target.locate import pid_listening
from ..target.physmem import PATH_FILE, PATH_GDB, PATH_PROC, RamAccess, open_ram, ram_regions
from .live import LiveError, LiveSession

TOP_SEARCH = 128 << 20


class AttachError(Exception):
    """The target cannot be watched (no RAM region, no way to read it): one line."""


def check_local(target: str) -> None:
    """The gdbstub must be local: a unix socket path or 127.0.0.1/localhost:PORT."""
    host, sep, port = target.rpartition(":")
    if sep and port.isdigit() and "/" not in target:
        if host not in ("127.0.0.1", "localhost", "[::1]", "::1"):
            raise AttachError(f"{target}: only a local gdbstub (127.0.0.1:PORT or a unix "
                              f"socket) can be watched")


@dataclass
class Attached:
    """A live session on a gdb-attached QEMU: ``watch`` runs it, ``close`` ends it."""

    gdb: GdbMI
    live: LiveSession
    ram: RamAccess
    skipped: list[str]
    pid: int | None
    why_ended: str = ""
    stops: int = 0
    notes: list[str] = field(default_factory=list)

    def watch(self, done: Callable[[], bool] = lambda: False, interval: float = 0.02,
              gdb_interval: float = 0.2) -> str:
        """Let the guest run and drain until ``done()``, the guest stops (a breakpoint, the
        monitor's ``stop``, a shutdown with ``-no-shutdown``), QEMU goes away, or the shim
        halts.  Returns why: done / stopped / qemu-exited / halted."""
        live, gdb = self.live, self.gdb
        gdb_only = self.ram.path == PATH_GDB
        try:
            gdb.cont()
            while True:
                if done():
                    self.why_ended = "done"
                    break
                if gdb_only:
                    try:
                        gdb.wait_stopped(gdb_interval)     # stopped by itself: the end
                        live.pump()
                        self.why_ended = "stopped"
                        break
                    except GdbTimeout:
                        if not _interrupted(gdb.interrupt()):
                            live.pump()            # it stopped by itself meanwhile
                            self.why_ended = "stopped"
                            break
                    self.stops += 1
                    live.pump()
                    gdb.cont()
                else:
                    stop = gdb.poll_stop()
                    live.pump()
                    if stop is not None:
                        self.why_ended = "stopped"
                        break
                    time.sleep(interval)
                ring = live.ring
                if ring is not None and ring.halted():
                    self.why_ended = "halted"
                    break
        except (TargetError, LiveError) as exc:
            self.why_ended = "qemu-exited"
            self.notes.append(str(exc))
        return self.why_ended

    def close(self):
        """Stop the guest if it runs (ring read through gdb needs it), drain the rest, end
        the session; its Result."""
        try:
            if self.why_ended == "done":
                self.gdb.interrupt()
        except TargetError:
            pass
        return self.live.close()


def _interrupted(stop) -> bool:
    """Whether a stop is the one an interrupt asked for (QEMU's gdbstub reports SIGINT), not
    one of the guest's own (a shutdown with ``-no-shutdown`` is SIGQUIT, a breakpoint)."""
    return stop.reason == "signal-received" and stop.payload.get("signal-name") == "SIGINT"


def _local_shim():
    """This repo's shim build (gdbplugin/shim/launch.py ShimImage), if there is one."""
    from ..shim.launch import ShimError, ShimImage
    try:
        return ShimImage.load(build_first=False)
    except (ShimError, OSError):
        return None


def attach(gdb: GdbMI, target: str, *, trace, ram_file=None, policy: str | None = None,
           views=(), cpu_model: str | None = None, via: str | None = None) -> Attached:
    """Connect ``gdb`` to ``target`` and set a live session up on it (the guest stays as it
    was: stopped, since gdb stops it on connect).  ``via``: force one way to guest RAM
    (gdbplugin/target/physmem.py PATH_*), else the fastest that works."""
    check_local(target)
    gdb.connect(target)
    return watch_target(gdb, target, trace=trace, ram_file=ram_file, policy=policy,
                        views=views, cpu_model=cpu_model, via=via)


def open_target_ram(debugger, target: str | None, mtree: str, ram_file=None,
                    via: str | None = None) -> tuple[RamAccess, list[str], int | None]:
    """The fastest way to the main RAM of the QEMU ``debugger`` is connected to (``target``:
    its gdbstub address, to find QEMU's pid; ``mtree``: its ``info mtree -f``): (access,
    the faster ways skipped and why, QEMU's pid or None)."""
    regions = ram_regions(mtree)
    if not regions:
        raise AttachError("`info mtree -f` shows no RAM region")
    base, size, _ = max(regions, key=lambda r: r[1])            # the machine's main RAM
    pid = pid_listening(target) if target else None
    try:
        access, skipped = open_ram(base, size, ram_file=ram_file, pid=pid,
                                   monitor=debugger.monitor, gdb=debugger, writable=True,
                                   allow=(via,) if via else (PATH_FILE, PATH_PROC, PATH_GDB))
    except TargetError as exc:
        raise AttachError(str(exc)) from None
    return access, skipped, pid


def watch_target(debugger, target: str | None, *, trace, ram_file=None,
                 policy: str | None = None, views=(), cpu_model: str | None = None,
                 via: str | None = None) -> Attached:
    """A live session on the QEMU a stopped ``debugger`` is connected to (gdb/MI from
    outside, gdbplugin/target/gdbmi.py, or gdb's own API, gdbplugin/target/gdbinside.py);
    ``target``: its gdbstub address, to find QEMU's pid (None: unknown)."""
    mtree = debugger.monitor("info mtree -f")
    access, skipped, pid = open_target_ram(debugger, target, mtree, ram_file, via)
    base, size = access.base, access.size
    vcpus = len(debugger.threads())
    if not vcpus:
        raise GdbError("the gdbstub shows no vCPU threads")

    misses = [0]

    def ring() -> RingReader:
        # Read through gdb only while stopped: the shim's VBAR_EL2 tells where it runs, and
        # this repo's shim build where its ring header is inside it (else search near it).
        # Faster ways search the top TOP_SEARCH of RAM (the shim's carve-out is there), all
        # of it every tenth miss.
        misses[0] += 1
        depth = None if misses[0] % 10 == 0 else TOP_SEARCH
        near = header = None
        if access.path == PATH_GDB and debugger.has_register("VBAR_EL2"):
            near = debugger.read_register("VBAR_EL2") or None
            image = _local_shim()
            if near is not None and image is not None:
                header = near - image.offset("vectors") + image.offset("shim_ring")
        try:
            return RingReader(access.mem, base, size, consume=True, header_pa=header,
                              near=near, depth=depth)
        except RingError:
            if header is None:
                raise
            return RingReader(access.mem, base, size, consume=True, near=near)

    live = LiveSession(ring, vcpus=vcpus, trace=trace, policy=policy, drain=access.path,
                       info_roms=debugger.monitor("info roms"), info_mtree=mtree,
                       cpu_model=cpu_model, views=views)
    return Attached(debugger, live, access, skipped, pid)
