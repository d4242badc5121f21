"""Which local process serves a gdbstub address: QEMU's pid for ``/proc/<pid>/mem``.

A gdbstub on ``127.0.0.1:PORT`` or on a unix socket is a listening socket of the QEMU process;
the kernel's socket tables (``/proc/net/tcp``, ``/proc/net/tcp6``, ``/proc/net/unix``) give its
inode and ``/proc/<pid>/fd`` the process holding it.  Only processes of the same user are
visible, which is also the condition for reading their memory.
"""
from __future__ import annotations

import os
from pathlib import Path

LISTEN = "0A"


def _tcp_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == LISTEN and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def _unix_inodes(path: str) -> set[str]:
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return set()
    want = os.path.realpath(path)
    return {cols[6] for cols in (line.split() for line in lines)
            if len(cols) > 7 and os.path.realpath(cols[7]) == want}


def pid_listening(address: str) -> int | None:
    """The pid of the process listening on ``HOST:PORT`` or a unix socket path; None if it
    is not a process of ours on this machine."""
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and not os.path.exists(address):
        inodes = _tcp_inodes(int(port))
    else:
        inodes = _unix_inodes(address)
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    return int(proc.name)
        except OSError:
            continue
    return None
