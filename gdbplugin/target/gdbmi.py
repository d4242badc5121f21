"""A gdb/MI driver for gdb-multiarch attached to QEMU's gdbstub.

Every command carries a token and we wait for exactly that token's result record, polling
gdb's output in short slices: pygdbmi's ``write()`` instead waits a fixed 0.2 s per call,
which would dwarf the ~1 ms a command costs against QEMU 7.2's gdbstub here.  Independent
commands can be pipelined (``read_memory_many``) so gdb never waits on Python between them.
Asynchronous ``*stopped`` records are queued for ``wait_stopped``.
"""
from __future__ import annotations

import collections
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from pygdbmi.gdbcontroller import GdbController

from .debugger import Debugger
from .errors import GdbCommandError, GdbError, GdbTimeout, MemoryAccessError

GDB = "gdb-multiarch"
_LOST = re.compile(r"Remote (communication error|connection closed)|Target disconnected"
                   r"|The program is not being run")
POLL_S = 0.05        # longest single wait on gdb's output, so a dead gdb is noticed quickly
WINDOW = 32          # pipelined commands in flight: bounded so gdb's pipes cannot fill up


@dataclass(frozen=True)
class MIResult:
    """A command's result record: ``message`` is done/running/connected/exit."""

    message: str
    payload: dict
    console: list[str] = field(default_factory=list)   # console output the command printed


@dataclass(frozen=True)
class Stop:
    """Why and where the target stopped (a ``*stopped`` record)."""

    reason: str | None           # breakpoint-hit, signal-received, ... (None: gdb gave none)
    address: int | None
    thread: int | None
    breakpoint: int | None
    payload: dict


def mi_quote(text: str) -> str:
    """``text`` as an MI C-string argument (paths with spaces, quotes, backslashes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class GdbMI(Debugger):
    """One gdb-multiarch process driven over MI.  Use as a context manager or call close()."""

    def __init__(self, gdb: str = GDB, timeout: float = 10.0):
        try:
            # A tiny positive check time makes pygdbmi return as soon as output arrived.
            self._ctl = GdbController([gdb, "--interpreter=mi3", "-nx", "-q"],
                                      time_to_check_for_additional_output_sec=1e-4)
        except (ValueError, OSError) as exc:
            raise GdbError(f"cannot start {gdb}: {exc}") from None
        self._proc: subprocess.Popen = self._ctl.gdb_process
        self._io = self._ctl.io_manager
        self.timeout = timeout
        self.resumes = 0                 # bumped whenever the target may have run
        self.leave_stopped = False       # close() disconnects: the target stays stopped
        self._token = 0
        self._waiting: set[int] = set()
        self._done: dict[int, MIResult] = {}
        self._console: list[str] = []
        self._events: collections.deque[dict] = collections.deque()
        self._log: collections.deque[str] = collections.deque(maxlen=8)
        self._register_numbers: dict[str, int] | None = None
        # mi-async lets us interrupt a running target; with the caches off a read right after
        # switching physical/virtual mode can never be served from gdb's stale copy.
        try:
            for setting in ("mi-async on", "pagination off", "code-cache off",
                            "stack-cache off"):
                self.command(f"-gdb-set {setting}")
        except BaseException:
            self.close()
            raise

    # -- commands -----------------------------------------------------------------------
    def command(self, cmd: str, timeout: float | None = None) -> MIResult:
        """Run one MI (or CLI) command; raise GdbCommandError on ``^error``."""
        return self._wait(self._send(cmd), cmd, timeout)

    def commands(self, cmds: Iterable[str], timeout: float | None = None
                 ) -> list[MIResult | GdbCommandError]:
        """Run commands pipelined; a command's ``^error`` is returned in its place, not raised."""
        cmds = list(cmds)
        out: list[MIResult | GdbCommandError | None] = [None] * len(cmds)
        inflight: collections.deque[tuple[int, int]] = collections.deque()

        def collect():
            i, tok = inflight.popleft()
            try:
                out[i] = self._wait(tok, cmds[i], timeout)
            except GdbCommandError as exc:
                out[i] = exc

        try:
            for i, cmd in enumerate(cmds):
                if len(inflight) >= WINDOW:
                    collect()
                inflight.append((i, self._send(cmd)))
            while inflight:
                collect()
        finally:                    # after a timeout, drop the answers still to come
            self._waiting.difference_update(tok for _, tok in inflight)
        return out

    def _send(self, cmd: str) -> int:
        self._check_alive()
        self._token += 1
        try:
            self._io.write(f"{self._token}{cmd}", timeout_sec=self.timeout, read_response=False)
        except OSError as exc:
            raise GdbError(f"cannot write to gdb: {exc}") from None
        self._waiting.add(self._token)
        return self._token

    def _wait(self, token: int, cmd: str, timeout: float | None) -> MIResult:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            while token not in self._done:
                if time.monotonic() >= deadline:
                    raise GdbTimeout(f"gdb did not answer {cmd!r} within "
                                     f"{self.timeout if timeout is None else timeout} s")
                self._pump(deadline)
        finally:
            self._waiting.discard(token)
        result = self._done.pop(token)
        if result.message == "error":
            msg = result.payload.get("msg", "error")
            if _LOST.search(msg):        # not the command's fault: no target any more
                raise GdbError(f"no connection to the target: {msg}")
            raise GdbCommandError(f"{cmd}: {msg}")
        return result

    def _pump(self, deadline: float) -> None:
        self._check_alive()
        wait = max(0.0, min(POLL_S, deadline - time.monotonic()))
        for rec in self._io.get_gdb_response(timeout_sec=wait, raise_error_on_timeout=False):
            kind = rec["type"]
            if kind == "result":
                token = rec.get("token")
                if token in self._waiting:     # results of timed-out commands are dropped
                    self._done[token] = MIResult(rec["message"], rec["payload"] or {},
                                                 self._console)
                self._console = []
            elif kind in ("console", "target"):     # target: a monitor command's output
                self._console.append(rec["payload"])
            elif kind == "notify" and rec["message"] == "stopped":
                self._events.append(rec["payload"] or {})
            elif kind == "notify" and rec["message"] == "running":
                self.resumes += 1              # however it was resumed (step, continue, ...)
                # A stop reported before the target resumed is over: gdb may print the stop
                # of an earlier command (the one on connect) after a later -exec-continue was
                # sent, and `attach` then took it for the guest's end.
                self._events.clear()
            elif kind in ("log", "output") and rec["payload"]:
                self._log.append(str(rec["payload"]).strip())

    def _check_alive(self) -> None:
        rc = self._proc.poll()
        if rc is not None:
            last = f": {self._log[-1]}" if self._log else ""
            raise GdbError(f"gdb exited with status {rc}{last}")

    def monitor(self, cmd: str, timeout: float | None = None) -> str:
        """A QEMU monitor (HMP) command over the gdb link (``qRcmd``); its output.  Only while
        the target is stopped (all-stop gdb cannot talk to a running remote)."""
        if "\n" in cmd or '"' in cmd or "\\" in cmd:
            raise GdbError(f"refusing a monitor command with a newline or quote: {cmd!r}")
        result = self.command(f'-interpreter-exec console "monitor {cmd}"', timeout)
        return "".join(result.console)

    # -- connection and symbols ---------------------------------------------------------
    def connect(self, address: str | Path, timeout: float | None = None) -> None:
        """Attach to a gdbstub: a unix socket path or HOST:PORT."""
        address = str(address)
        if any(c.isspace() for c in address):     # gdb takes the rest of the line verbatim
            raise GdbError(f"cannot connect to {address!r}: whitespace in a gdbstub address")
        # A refused TCP connection fails at once instead of being retried for seconds.
        self.command("-gdb-set tcp auto-retry off")
        try:
            self.command(f"-target-select remote {address}", timeout)
        except GdbTimeout:
            raise GdbTimeout("the gdbstub took the connection but never answered: another "
                             "debugger probably holds it (QEMU's gdbstub serves one at a "
                             "time; detach that one first)") from None
        self._register_numbers = None      # register numbers depend on the target
        self._events.clear()

    def load_symbols(self, elf: str | Path) -> None:
        """Read symbols (and the architecture) from an ELF so locations can be symbols."""
        self.command(f"-file-exec-and-symbols {mi_quote(str(elf))}")

    # -- memory -------------------------------------------------------------------------
    def read_memory(self, address: int, length: int) -> bytes:
        """``length`` bytes at ``address`` (virtual unless physical mode is on)."""
        cmd = _read_cmd(address, length)
        try:
            result = self.command(cmd)
        except GdbCommandError as exc:
            raise MemoryAccessError(address, length, _reason(exc, cmd)) from None
        return _contents(result, address, length)

    def read_memory_many(self, addresses: Iterable[int], length: int) -> list[bytes | None]:
        """Pipelined reads of ``length`` bytes at each address; None where the target refused."""
        addresses = list(addresses)
        out: list[bytes | None] = []
        for address, result in zip(addresses, self.commands(
                _read_cmd(a, length) for a in addresses)):
            if isinstance(result, GdbCommandError):
                out.append(None)
                continue
            try:
                out.append(_contents(result, address, length))
            except MemoryAccessError:
                out.append(None)
        return out

    def write_memory(self, address: int, data: bytes) -> None:
        """Write ``data`` at ``address`` (virtual unless physical mode is on)."""
        cmd = f"-data-write-memory-bytes {address:#x} {data.hex()}"
        try:
            self.command(cmd)
        except GdbCommandError as exc:
            raise MemoryAccessError(address, len(data), _reason(exc, cmd)) from None

    def maint_packet(self, packet: str) -> str:
        return "".join(self.command(f"maint packet {packet}").console)

    # -- registers and threads ----------------------------------------------------------
    def register_names(self) -> list[str]:
        """Names of the target's registers (from QEMU's target XML), cached per connection."""
        return list(self._numbers())

    def has_register(self, name: str) -> bool:
        return name in self._numbers()

    def _numbers(self) -> dict[str, int]:
        if self._register_numbers is None:
            names = self.command("-data-list-register-names").payload["register-names"]
            self._register_numbers = {n: i for i, n in enumerate(names) if n}
        return self._register_numbers

    def read_registers(self, names: Iterable[str]) -> dict[str, int]:
        """Values of registers by gdb name, of the selected thread, in one round trip."""
        names = list(names)
        numbers = self._numbers()
        missing = [n for n in names if n not in numbers]
        if missing:
            raise GdbError(f"the target has no register named {', '.join(missing)}")
        wanted = " ".join(str(numbers[n]) for n in names)
        values = self.command(f"-data-list-register-values --skip-unavailable x {wanted}"
                              ).payload["register-values"]
        by_number = {int(v["number"]): v["value"] for v in values}
        out = {}
        for n in names:
            text = by_number.get(numbers[n])
            if text is None:
                raise GdbError(f"register {n} is unavailable")
            out[n] = int(text, 16)
        return out

    def read_register(self, name: str) -> int:
        return self.read_registers([name])[name]

    def threads(self) -> list[int]:
        """gdb thread ids: one per vCPU with QEMU."""
        return [int(t["id"]) for t in self.command("-thread-info").payload.get("threads", [])]

    def select_thread(self, thread: int) -> None:
        self.command(f"-thread-select {thread}")

    # -- breakpoints and execution ------------------------------------------------------
    def break_insert(self, location: str | int) -> int:
        """A breakpoint at a symbol or address; returns its number."""
        where = f"*{location:#x}" if isinstance(location, int) else location
        return int(self.command(f"-break-insert {where}").payload["bkpt"]["number"])

    def break_delete(self, number: int) -> None:
        self.command(f"-break-delete {number}")

    def cont(self) -> None:
        """Resume all vCPUs and return at once (see wait_stopped)."""
        self._events.clear()
        self.resumes += 1
        self.command("-exec-continue")

    def wait_stopped(self, timeout: float | None = None) -> Stop:
        """The next stop of the target (breakpoint, interrupt, ...)."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while not self._events:
            if time.monotonic() >= deadline:
                raise GdbTimeout(f"the target did not stop within {limit} s")
            self._pump(deadline)
        return _stop(self._events.popleft())

    def poll_stop(self) -> Stop | None:
        """The target's next stop if it has stopped, else None, without waiting; raises
        GdbError once gdb has lost the connection (QEMU exited or was killed)."""
        self._pump(time.monotonic())
        if self._events:
            return _stop(self._events.popleft())
        for line in self._log:
            if _LOST.search(line):
                raise GdbError(f"no connection to the target: {line}")
        return None

    def cont_until_stop(self, timeout: float | None = None) -> Stop:
        self.cont()
        return self.wait_stopped(timeout)

    def interrupt(self, timeout: float | None = None) -> Stop:
        """Stop a running target.  A stop that came first (a breakpoint, the guest shutting
        down) is the stop returned: then nothing is interrupted (its ``reason`` tells)."""
        self._pump(time.monotonic())
        if not self._events:
            try:
                self.command("-exec-interrupt")
            except GdbCommandError:
                pass                 # gdb saw the target stop after our look: its record follows
        return self.wait_stopped(timeout)

    # -- lifetime -----------------------------------------------------------------------
    def close(self) -> None:
        """Ask gdb to exit (it detaches from QEMU, which then runs; with ``leave_stopped`` it
        disconnects instead and QEMU stays stopped); kill it if it hangs."""
        if self._proc.poll() is None:
            if self.leave_stopped:
                try:
                    self.command('-interpreter-exec console "disconnect"', timeout=2)
                except GdbError:
                    pass
            try:
                self.command("-gdb-exit", timeout=2)
            except GdbError:
                pass
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if stream:
                stream.close()

    def __enter__(self) -> "GdbMI":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_cmd(address: int, length: int) -> str:
    return f"-data-read-memory-bytes {address:#x} {length}"


def _reason(exc: GdbCommandError, cmd: str) -> str:
    return str(exc).removeprefix(f"{cmd}: ")


def _contents(result: MIResult, address: int, length: int) -> bytes:
    """The bytes of a -data-read-memory-bytes result; gdb returns only the readable part."""
    blocks = result.payload.get("memory", [])
    data = b"".join(bytes.fromhex(b["contents"]) for b in blocks)
    if len(data) != length or not blocks or int(blocks[0]["begin"], 16) != address:
        raise MemoryAccessError(address, length, f"only {len(data)} bytes readable")
    return data


def _stop(payload: dict) -> Stop:
    frame = payload.get("frame") or {}
    thread = payload.get("thread-id")
    bkpt = payload.get("bkptno")
    addr = frame.get("addr")
    return Stop(reason=payload.get("reason"),
                address=int(addr, 16) if addr else None,
                thread=int(thread) if thread and thread.isdigit() else None,
                breakpoint=int(bkpt) if bkpt else None,
                payload=payload)
