"""The ``s2cache`` command family inside gdb-multiarch (loaded by gdbplugin/gdbext.py).

One module per family, each thin over the library: ``watch`` (start, stop, status, record,
policy, break-on-hazard), ``show`` (sctlr, hazards, explain, lines), ``tables`` (s2, s1).
``state`` holds the one live session a gdb has.  Errors reach the user as ``gdb.GdbError``:
one line, never a Python traceback.
"""
from __future__ import annotations

import gdb

from . import show, state, tables, watch


class S2cachePrefix(gdb.Command):
    """Find the cache-maintenance bugs QEMU hides: watch a guest under the s2cache shim.

Start with `s2cache start` while gdb is attached to QEMU (stopped); then continue the guest.
Warnings print as they happen.  `help s2cache SUBCOMMAND` for each subcommand."""

    def __init__(self):
        super().__init__("s2cache", gdb.COMMAND_USER, prefix=True)


def register() -> None:
    gdb.events.gdb_exiting.connect(state.on_gdb_exit)       # gdb 12+
    gdb.events.connection_removed.connect(watch.on_connection_removed)   # gdb 11+
    S2cachePrefix()
    for module in (watch, show, tables):
        for cls in module.COMMANDS:
            cls()
