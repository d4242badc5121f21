"""The live session of this gdb, its drain thread and its output (inside gdb only).

The drain thread pumps the LiveSession (gdbplugin/capture/live.py) while the guest runs,
when the ring is read from the shared RAM file or /proc/<qemu-pid>/mem; it never talks to gdb
itself: what views print is queued and printed by ``gdb.post_event`` in gdb's main thread,
which runs such events even during a synchronous ``continue``.  With gdb physical reads only
(no faster way in), the ring is drained at each stop instead.
"""
from __future__ import annotations

import functools
import os
import sys
import threading
import traceback

import gdb
from rich.console import Console

from ..capture.attach import Attached
from ..target.errors import TargetError
from ..target.physmem import PATH_GDB


class GdbStream:
    """A file for rich that writes to gdb's terminal (main thread only)."""

    def write(self, text: str) -> int:
        gdb.write(text)
        return len(text)

    def flush(self) -> None:
        gdb.flush()

    def isatty(self) -> bool:
        return True


def console() -> Console:
    return Console(file=GdbStream(), force_terminal=gdb.parameter("style enabled") or False,
                   width=max(100, int(gdb.parameter("width") or 0)), highlight=False)


def command_errors(fn):
    """A subcommand's errors become one-line gdb.GdbError (a bug: its last frame too)."""
    @functools.wraps(fn)
    def wrapper(*args, **kw):
        try:
            return fn(*args, **kw)
        except gdb.GdbError:
            raise
        except (TargetError, ValueError, OSError, KeyError) as exc:
            raise gdb.GdbError(f"s2cache: {exc}") from None
        except Exception as exc:           # noqa: BLE001 - a bug, still one line
            where = traceback.extract_tb(exc.__traceback__)[-1]
            raise gdb.GdbError(f"s2cache: internal error: {type(exc).__name__}: {exc} "
                               f"({where.filename.rsplit('/', 1)[-1]}:{where.lineno})") from None
    return wrapper


class Live:
    """The one watch of this gdb."""

    def __init__(self, attached: Attached, trace_path: str):
        self.attached = attached
        self.session = attached.live
        self.trace_path = trace_path
        self.lock = threading.Lock()           # the output queue
        self.busy = threading.Lock()           # the session: one pump or command at a time
        self.break_on_hazard = False
        self.stop_requested = False
        self.pending: list[str] = []           # rich markup lines to print in gdb's thread
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.gdb_only = attached.ram.path == PATH_GDB
        self.watch = None                      # a BreakpointWatch when there is no shim
        self.breakpoints: dict = {}            # its breakpoints, by address
        self.running = False
        gdb.events.stop.connect(self._on_stop)
        gdb.events.cont.connect(self._on_cont)
        if not self.gdb_only:
            self._thread = threading.Thread(target=self._drain, name="s2cache-drain",
                                            daemon=True)
            self._thread.start()

    # -- output -------------------------------------------------------------------------
    def say(self, markup) -> None:
        """Queue a line for gdb's terminal (rich markup, or a callable making it, called in
        gdb's main thread: it may ask gdb for symbols); printed by the main thread."""
        with self.lock:
            first = not self.pending
            self.pending.append(markup)
        if threading.current_thread() is threading.main_thread():
            self.flush()
        elif first:
            post(self.flush)

    def flush(self) -> None:
        with self.lock:
            lines, self.pending = self.pending, []
        out = console()
        for line in lines:
            out.print(line() if callable(line) else line)

    def hazard_seen(self) -> None:
        if self.break_on_hazard and self.running and not self.stop_requested:
            self.stop_requested = True
            post(_interrupt)

    # -- draining -----------------------------------------------------------------------
    def pump(self, look: bool = False) -> int:
        try:
            with self.busy:
                return self.session.pump(look)
        except Exception as exc:               # noqa: BLE001 - reported, never raised here
            self.error = f"{type(exc).__name__}: {exc}"
            self.say(f"[red]s2cache: draining stopped: {self.error}[/red]")
            self._stop.set()
            return 0

    def _drain(self) -> None:
        while not self._stop.wait(0.02):
            if self.running:
                self.pump()

    def _on_cont(self, _event) -> None:
        self.running = True

    def _on_stop(self, _event) -> None:
        """At every stop the session catches up (whatever the drain path), so what the
        commands show is the guest's state now."""
        self.running = False
        self.stop_requested = False
        while self.pump(look=True):
            pass
        self.flush()

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for registry, handler in ((gdb.events.stop, self._on_stop),
                                  (gdb.events.cont, self._on_cont)):
            try:
                registry.disconnect(handler)
            except (ValueError, RuntimeError):
                pass
        for bp in self.breakpoints.values():
            if bp.is_valid():
                bp.delete()
        self.breakpoints.clear()
        self.attached.gdb.close()
        with self.busy:
            result = self.session.close()
        self.flush()
        return result


def _interrupt() -> None:
    try:
        gdb.execute("interrupt")
    except gdb.error as exc:
        gdb.write(f"s2cache: break-on-hazard could not stop the guest: {exc}\n")


CURRENT: Live | None = None
_outstanding = 0                          # events posted from the drain thread, not run yet
_posts = threading.Lock()


def post(fn) -> None:
    """gdb.post_event, counting what has not run yet (see ``on_gdb_exit``)."""
    global _outstanding

    def run():
        global _outstanding
        with _posts:
            _outstanding -= 1
        fn()
    with _posts:
        _outstanding += 1
    gdb.post_event(run)


def on_gdb_exit(event) -> None:
    """gdb is exiting: end the watch (thread joined, trace complete).  gdb 13 crashes in its
    exit handlers when an event posted from a thread never ran (batch mode: a post that raced
    with the last stop); then leave with gdb's exit code before those handlers run."""
    global CURRENT
    if CURRENT is not None:
        CURRENT.close()
        CURRENT = None
    if _outstanding:
        gdb.flush()
        sys.stdout.flush()
        os._exit(getattr(event, "exit_code", None) or 0)


def live() -> Live:
    if CURRENT is None:
        raise gdb.GdbError("s2cache: not watching: `s2cache start` first")
    return CURRENT
