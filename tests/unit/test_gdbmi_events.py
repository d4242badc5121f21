"""gdb/MI asynchronous records (gdbplugin/target/gdbmi.py), fed from a script instead of a gdb:
a stop that gdb reports before the target resumed is not the stop after the resume."""
from __future__ import annotations

import collections

from gdbplugin.target.gdbmi import GdbMI


class ScriptedIO:
    def __init__(self, batches):
        self.batches = collections.deque(batches)

    def get_gdb_response(self, timeout_sec, raise_error_on_timeout):
        return self.batches.popleft() if self.batches else []


class Alive:
    def poll(self):
        return None


def mi(batches) -> GdbMI:
    g = object.__new__(GdbMI)
    g._io, g._proc = ScriptedIO(batches), Alive()
    g.resumes, g._waiting, g._done, g._console = 0, set(), {}, []
    g._events, g._log = collections.deque(), collections.deque(maxlen=8)
    return g


def stopped(addr):
    return {"type": "notify", "message": "stopped",
            "payload": {"reason": "signal-received", "frame": {"addr": hex(addr)}}}


RUNNING = {"type": "notify", "message": "running", "payload": {"thread-id": "all"}}


def test_a_stop_reported_before_the_resume_is_not_the_next_stop():
    g = mi([[stopped(0x40000000), RUNNING], [], [stopped(0x40001000)]])
    assert g.poll_stop() is None and g.resumes == 1         # the connect's stop, then resumed
    assert g.poll_stop() is None                            # still running
    assert g.poll_stop().address == 0x40001000
    g = mi([[RUNNING, stopped(0x40002000)]])                # stopped right after resuming
    assert g.poll_stop().address == 0x40002000
