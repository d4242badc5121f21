"""The HMP monitor's failures (gdbplugin/target/qemu.py ``Qemu.monitor``) are QemuError, so
that callers that expect a QEMU to go away (``ShimSession.pause`` right after a guest printed
its marker and powered off) say so in one line instead of a traceback.  A socket pair stands
for QEMU's monitor socket; a sleeping process for QEMU.  No QEMU needed.
"""
from __future__ import annotations

import socket
import subprocess
import threading

import pexpect.fdpexpect
import pytest

from gdbplugin.target.errors import QemuError
from gdbplugin.target.qemu import Qemu, QemuConfig


@pytest.fixture
def monitor(tmp_path):
    """A Qemu whose monitor is one end of a socket pair (the other end returned) and whose
    process is alive."""
    q = Qemu(QemuConfig(), workdir=tmp_path)
    ours, theirs = socket.socketpair()
    q._mon = pexpect.fdpexpect.fdspawn(ours.fileno())
    q._proc = subprocess.Popen(["sleep", "30"])
    yield q, theirs
    q._proc.kill()
    q._proc.wait()
    ours.close()


def test_a_monitor_reset_while_a_command_is_unread_is_a_qemu_error(monitor):
    """QEMU exiting with our command unread resets the connection (ECONNRESET on a unix
    socket): the read that waits for the prompt fails with OSError, not EOF."""
    q, theirs = monitor
    threading.Timer(0.2, theirs.close).start()       # never reads what we sent
    with pytest.raises(QemuError, match="the monitor closed while waiting for 'stop'"):
        q.monitor("stop", timeout=5)


def test_a_monitor_closed_cleanly_is_a_qemu_error(monitor):
    q, theirs = monitor

    def answer_and_close():
        theirs.recv(100)
        theirs.close()
    threading.Timer(0.1, answer_and_close).start()
    with pytest.raises(QemuError, match="the monitor closed"):
        q.monitor("info status", timeout=5)
