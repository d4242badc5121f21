"""The debugger interface over gdb's own Python API, for code running inside gdb-multiarch
(gdbplugin/gdbext.py).  It offers what gdbplugin/target/gdbmi.py's ``GdbMI`` offers to the
capture code (threads as vCPUs, registers by name, memory, QEMU's physical mode, monitor
commands, a resume counter), so snapshots, walks and live sessions run the same inside gdb and
from outside.  Only importable inside gdb (``import gdb``)."""
from __future__ import annotations

from typing import Iterable

import gdb  # noqa: the module gdb embeds

from .debugger import Debugger
from .errors import GdbError, MemoryAccessError, RegisterError

MASK64 = (1 << 64) - 1


class GdbInside(Debugger):
    """The Debugger interface (gdbplugin/target/debugger.py) over gdb's Python API."""

    def __init__(self):
        self.resumes = 0
        self._names: set[str] | None = None
        # gdb's caches would serve a physical read from a virtual one's bytes (GdbMI too)
        for setting in ("code-cache off", "stack-cache off"):
            self._execute(f"set {setting}")
        gdb.events.cont.connect(self._resumed)

    def _resumed(self, _event) -> None:
        self.resumes += 1

    def close(self) -> None:
        gdb.events.cont.disconnect(self._resumed)

    # -- QEMU ---------------------------------------------------------------------------
    def monitor(self, cmd: str) -> str:
        if "\n" in cmd:
            raise GdbError(f"refusing a monitor command with a newline: {cmd!r}")
        return self._execute(f"monitor {cmd}")

    def target_address(self) -> str | None:
        """The gdbstub this gdb is connected to (HOST:PORT or a socket path), if known."""
        conn = getattr(gdb.selected_inferior(), "connection", None)
        details = getattr(conn, "details", None)
        return details or None

    def _execute(self, cmd: str) -> str:
        try:
            return gdb.execute(cmd, to_string=True) or ""
        except gdb.error as exc:
            raise GdbError(f"{cmd}: {exc}") from None

    # -- threads and registers ----------------------------------------------------------
    def threads(self) -> list[int]:
        return sorted(t.num for t in gdb.selected_inferior().threads())

    def select_thread(self, number: int) -> None:
        for t in gdb.selected_inferior().threads():
            if t.num == number:
                t.switch()
                return
        raise GdbError(f"no thread {number}")

    def register_names(self) -> list[str]:
        frame = gdb.selected_frame()
        return [r.name for r in frame.architecture().registers()]

    def has_register(self, name: str) -> bool:
        if self._names is None:
            self._names = set(self.register_names())
        return name in self._names

    def read_registers(self, names: Iterable[str]) -> dict[str, int]:
        frame = gdb.selected_frame()
        out = {}
        for name in names:
            try:
                out[name] = int(frame.read_register(name)) & MASK64
            except (gdb.error, ValueError) as exc:
                raise RegisterError(f"cannot read {name}: {exc}") from None
        return out

    def read_register(self, name: str) -> int:
        return self.read_registers([name])[name]

    # -- memory -------------------------------------------------------------------------
    def read_memory(self, address: int, length: int) -> bytes:
        try:
            return bytes(gdb.selected_inferior().read_memory(address, length))
        except gdb.MemoryError as exc:
            raise MemoryAccessError(address, length, str(exc)) from None

    def write_memory(self, address: int, data: bytes) -> None:
        try:
            gdb.selected_inferior().write_memory(address, data)
        except gdb.MemoryError as exc:
            raise MemoryAccessError(address, len(data), str(exc)) from None

    def maint_packet(self, packet: str) -> str:
        return self._execute(f"maint packet {packet}")
