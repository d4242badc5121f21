"""The debugger behind one small interface, for the capture and snapshot code.

Two backends: gdb/MI driven from outside (gdbplugin/target/gdbmi.py ``GdbMI``, what
``s2cache inspect`` and ``s2cache attach`` use) and gdb's own Python API from inside gdb
(gdbplugin/target/gdbinside.py ``GdbInside``, for the extension).  Both offer: ``threads()``
(vCPUs) and ``select_thread``; ``register_names``, ``has_register``, ``read_registers``,
``read_register``; ``read_memory`` and ``write_memory`` (virtual, or physical inside
``physical()``); ``monitor`` (a QEMU HMP command over the gdb link); ``resumes`` (bumped
whenever the target may have run, so cached guest memory can be dropped).  Errors are
gdbplugin/target/errors.py ``TargetError`` subclasses with one-line messages.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from .errors import GdbError


class Debugger:
    """What both backends share: QEMU's physical-memory mode (``Qqemu.PhyMemMode``)."""

    resumes: int = 0

    def maint_packet(self, packet: str) -> str:
        """Send a raw remote packet; gdb's printout of the exchange."""
        raise NotImplementedError

    def physical_mode(self, on: bool) -> None:
        """Make memory accesses physical (QEMU's ``Qqemu.PhyMemMode``) or virtual again."""
        packet = f"Qqemu.PhyMemMode:{int(on)}"
        out = self.maint_packet(packet)
        if 'received: "OK"' not in out:
            raise GdbError(f"QEMU refused {packet}: {out.strip() or 'no reply'}")

    @contextmanager
    def physical(self) -> Iterator[None]:
        """Physical memory accesses inside the block; virtual mode is restored on exit."""
        self.physical_mode(True)
        try:
            yield
        finally:
            self.physical_mode(False)
