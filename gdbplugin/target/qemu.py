"""Launching qemu-system-aarch64 for s2cache.

QEMU gets private sockets in a work directory: the gdbstub (unix socket, or a 127.0.0.1 TCP
port), the HMP monitor (driven with pexpect) and optionally the serial console.  Guest RAM is a
``memory-backend-file`` with ``share=on``, so Python can mmap it and read guest memory live at
memory speed instead of through gdb (a memory read through the gdbstub costs ~1 ms); the work
directory holding it goes on a tmpfs when there is room (``workdir_parent``).  Nothing listens
beyond loopback.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import pexpect
import pexpect.fdpexpect

from .errors import QemuError

QEMU = "qemu-system-aarch64"
START_TIMEOUT_S = 10.0
PROMPT = "(qemu) "
RAM_ID = "s2cache.ram"          # memory-backend id; also the RAM region's name in `info mtree`
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


SHM = "/dev/shm"


def workdir_parent(ram_size: int) -> str | None:
    """Where a fresh work directory goes: the user's TMPDIR if set, else a tmpfs (/dev/shm)
    with room for twice the guest's RAM, else the system's temporary folder (None).  Guest RAM
    is a shared file, and on a disk-backed filesystem the kernel writes back the pages the
    guest dirties while it runs: a Linux boot to its marker took 3.04 s with the file on the
    disk, 2.75 s on /dev/shm (6 rounds each, alternated)."""
    if os.environ.get("TMPDIR"):
        return None
    try:
        st = os.statvfs(SHM)
    except OSError:
        return None
    if st.f_bavail * st.f_frsize < 2 * ram_size or not os.access(SHM, os.W_OK | os.X_OK):
        return None
    return SHM


def parse_size(size: int | str) -> int:
    """Bytes from an int or a QEMU-style size such as ``512M`` or ``2G``."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", size, re.IGNORECASE)
    if not m:
        raise QemuError(f"not a memory size: {size!r} (use e.g. 512M or 2G)")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).upper()]


def _opt(value: object) -> str:
    """A value inside a QEMU option list, where a comma must be doubled."""
    return str(value).replace(",", ",,")


def hmp_quote(text: str | Path) -> str:
    """A string argument for an HMP command (file names: unquoted, ``/`` would parse as a
    division in ``pmemsave``'s size expression)."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Loader:
    """One ``-device loader``: ``data`` (``data_len`` bytes, little-endian) or ``file`` at
    ``addr``; ``cpu_num`` makes that vCPU start at the loaded image's entry."""

    addr: int | None = None
    data: int | None = None
    data_len: int = 8
    file: Path | None = None
    cpu_num: int | None = None
    force_raw: bool = False

    def arg(self) -> str:
        if (self.data is None) == (self.file is None):
            raise QemuError("a loader needs exactly one of data and file")
        parts = ["loader"]
        if self.file is not None:
            parts.append(f"file={_opt(self.file)}")
        if self.addr is not None:
            parts.append(f"addr={self.addr:#x}")
        if self.data is not None:
            parts += [f"data={self.data:#x}", f"data-len={self.data_len}"]
        if self.cpu_num is not None:
            parts.append(f"cpu-num={self.cpu_num}")
        if self.force_raw:
            parts.append("force-raw=on")
        return ",".join(parts)


@dataclass
class QemuConfig:
    """What to run.  ``machine`` is the ``-M`` value (``virt,virtualization=on``); the RAM
    backend is added to it.  ``gdb_port`` None puts the gdbstub on a unix socket, an int on
    that 127.0.0.1 port (0: any free port).  ``console`` is ``log`` (serial to a file),
    ``pexpect`` (serial on a socket, read through ``Qemu.console``, also logged) or ``stdio``
    (the terminal: only for a command line printed for a person, ``s2cache qemu-cmd``)."""

    machine: str = "virt"
    cpu: str = "max,pauth-impdef=on"
    memory: int | str = "512M"
    smp: int = 1
    kernel: Path | None = None
    bios: Path | None = None
    initrd: Path | None = None
    append: str | None = None
    dtb: Path | None = None
    loaders: list[Loader] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    paused: bool = True
    gdb_port: int | None = None
    console: str = "log"
    binary: str = QEMU


class Qemu:
    """A running QEMU.  ``start()`` (or ``with``) launches it; ``close()`` always reaps it.

    ``workdir`` holds the sockets, logs and the RAM file (default: a fresh directory where
    ``workdir_parent`` says, deleted on close unless ``keep_workdir``).
    """

    def __init__(self, config: QemuConfig, workdir: Path | None = None,
                 keep_workdir: bool = False):
        if config.console not in ("log", "pexpect", "stdio"):
            raise QemuError(f"console must be 'log', 'pexpect' or 'stdio', not "
                            f"{config.console!r}")
        self.config = config
        self.ram_size = parse_size(config.memory)
        if self.ram_size <= 0 or self.ram_size % (1 << 20):
            raise QemuError(f"memory must be a positive whole number of MiB, not {config.memory!r}")
        self.workdir = Path(tempfile.mkdtemp(prefix="s2cache-qemu-",
                                             dir=workdir_parent(self.ram_size))) \
            if workdir is None else Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ram_path = self.workdir / "ram"
        self.serial_log = self.workdir / "serial.log"
        self._mon_path = self.workdir / "monitor.sock"
        self._gdb_path = self.workdir / "gdb.sock"
        self._con_path = self.workdir / "console.sock"
        self._stderr_path = self.workdir / "qemu.stderr"
        self._proc: subprocess.Popen | None = None
        self._mon: pexpect.fdpexpect.fdspawn | None = None
        self._console: pexpect.fdpexpect.fdspawn | None = None
        self._quit_sent = False
        self._sockets: list[socket.socket] = []
        self._gdb_port: int | None = None
        self._ram_base: int | None = None
        self._cleanup_dir = self.workdir if workdir is None and not keep_workdir else None
        self._finalizer = weakref.finalize(self, _reap, None, self._cleanup_dir)

    # -- launching ----------------------------------------------------------------------
    def argv(self) -> list[str]:
        c = self.config
        mib = self.ram_size >> 20
        argv = [c.binary, "-M", f"{c.machine},memory-backend={RAM_ID}", "-cpu", c.cpu,
                "-m", f"{mib}M", "-smp", str(c.smp),
                "-object", f"memory-backend-file,id={RAM_ID},mem-path={_opt(self.ram_path)},"
                           f"size={mib}M,share=on",
                "-nodefaults", "-no-user-config", "-display", "none",
                "-chardev", f"socket,id=s2cache.mon,path={_opt(self._mon_path)},server=on,wait=off",
                "-mon", "chardev=s2cache.mon,mode=readline"]
        if c.gdb_port is None:
            gdb = f"socket,id=s2cache.gdb,path={_opt(self._gdb_path)},server=on,wait=off"
        else:
            gdb = (f"socket,id=s2cache.gdb,host=127.0.0.1,port={c.gdb_port},ipv4=on,"
                   f"server=on,wait=off")
        argv += ["-chardev", gdb, "-gdb", "chardev:s2cache.gdb"]
        if c.console == "stdio":        # a person's terminal (``s2cache qemu-cmd``)
            con = "stdio,id=s2cache.con,signal=off"
        elif c.console == "log":
            con = f"file,id=s2cache.con,path={_opt(self.serial_log)}"
        else:   # wait=on: QEMU blocks until we connect, so no early output is lost
            con = f"socket,id=s2cache.con,path={_opt(self._con_path)},server=on,wait=on"
        argv += ["-chardev", con, "-serial", "chardev:s2cache.con"]
        for opt, value in (("-kernel", c.kernel), ("-bios", c.bios), ("-initrd", c.initrd),
                           ("-append", c.append), ("-dtb", c.dtb)):
            if value is not None:
                argv += [opt, str(value)]
        for loader in c.loaders:
            argv += ["-device", loader.arg()]
        if c.paused:
            argv.append("-S")
        return argv + list(c.extra)

    def start(self, meanwhile=None) -> "Qemu":
        """Launch QEMU and connect to its monitor.  ``meanwhile()``, when given, runs right
        after the launch: QEMU takes ~0.2 s to initialise before its monitor answers, time a
        caller can use (its exceptions end QEMU and propagate)."""
        if self._proc is not None:
            raise QemuError("QEMU is already started")
        argv = self.argv()
        with open(self._stderr_path, "wb") as err:
            try:
                # Its own process group: a terminal's Ctrl-C reaches s2cache, which ends
                # QEMU after writing what it saw, not QEMU first.  Not its own session:
                # where the kernel shares the CPU session by session (autogroup), QEMU's
                # threads would not be weighed against s2cache's by their nice values.
                self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err,
                                              stderr=err, process_group=0)
            except OSError as exc:
                raise QemuError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _reap, self._proc, self._cleanup_dir)
        try:
            if meanwhile is not None:
                meanwhile()
            if self.config.console == "pexpect":
                self._console = self._spawn(self._connect(self._con_path))
                self._console.logfile_read = open(self.serial_log, "w", encoding="utf-8")
            self._mon = self._spawn(self._connect(self._mon_path))
            self._expect_prompt("the monitor banner", START_TIMEOUT_S)
            if self.config.gdb_port is not None:
                self._gdb_port = self._bound_port()
        except BaseException:
            self.close()
            raise
        return self

    def _connect(self, path: Path) -> socket.socket:
        """Connect to one of QEMU's unix sockets once it exists (QEMU creates them at start)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            self.check_alive()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline:
                    raise QemuError(f"QEMU did not open {path.name} within "
                                    f"{START_TIMEOUT_S:g} s") from None
                time.sleep(0.01)
                continue
            self._sockets.append(sock)
            return sock

    @staticmethod
    def _spawn(sock: socket.socket) -> pexpect.fdpexpect.fdspawn:
        return pexpect.fdpexpect.fdspawn(sock.fileno(), encoding="utf-8",
                                         codec_errors="replace", timeout=START_TIMEOUT_S)

    def _bound_port(self) -> int:
        m = re.search(r"s2cache\.gdb: filename=\S*tcp:[^:,]+:(\d+)", self.monitor("info chardev"))
        if not m:
            raise QemuError("cannot find the gdbstub's TCP port in `info chardev`")
        return int(m.group(1))

    # -- state --------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def check_alive(self) -> None:
        """Raise QemuError if QEMU has exited, with the last line it printed."""
        if self._proc is None:
            raise QemuError("QEMU is not started")
        rc = self._proc.poll()
        if rc is not None:
            raise QemuError(f"{self.config.binary} exited with status {rc}: {self._last_words()}")

    def _last_words(self) -> str:
        try:
            lines = self._stderr_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return lines[-1].strip() if lines else "no message"

    @property
    def gdb_address(self) -> str:
        """What gdb's ``target remote`` takes: the socket path or ``127.0.0.1:PORT``."""
        if self.config.gdb_port is None:
            return str(self._gdb_path)
        if self._gdb_port is None:
            raise QemuError("QEMU is not started")
        return f"127.0.0.1:{self._gdb_port}"

    def ram_base(self) -> int:
        """Guest PA of the first byte of the RAM file (from ``info mtree -f``)."""
        if self._ram_base is None:
            line = rf"^\s*([0-9a-f]+)-[0-9a-f]+ \(prio -?\d+, ram\): {re.escape(RAM_ID)}\s*$"
            m = re.search(line, self.monitor("info mtree -f"), re.MULTILINE)
            if not m:
                raise QemuError(f"`info mtree -f` shows no RAM region named {RAM_ID}")
            self._ram_base = int(m.group(1), 16)
        return self._ram_base

    @property
    def console(self) -> pexpect.fdpexpect.fdspawn:
        """The serial console (``console='pexpect'``): expect()/send() on the guest's UART."""
        if self._console is None:
            raise QemuError("the console is a log file here; start with console='pexpect'")
        return self._console

    # -- monitor ------------------------------------------------------------------------
    def monitor(self, cmd: str, timeout: float = 10.0) -> str:
        """Run an HMP command; returns its output (lines joined by \\n, no echo, no prompt)."""
        if self._mon is None:
            raise QemuError("QEMU is not started")
        try:
            self._mon.sendline(cmd)
        except OSError as exc:
            self.check_alive()
            raise QemuError(f"cannot write to the monitor: {exc}") from None
        text = self._expect_prompt(repr(cmd), timeout)
        # The readline monitor echoes the command (with cursor escapes) up to the first CRLF.
        _, _, output = text.partition("\r\n")
        return output.replace("\r\n", "\n").rstrip("\n")

    def _expect_prompt(self, what: str, timeout: float) -> str:
        try:
            self._mon.expect_exact(PROMPT, timeout=timeout)
        except (pexpect.EOF, OSError):     # OSError: reset by a QEMU exiting meanwhile
            self.check_alive()
            raise QemuError(f"the monitor closed while waiting for {what}") from None
        except pexpect.TIMEOUT:
            self.check_alive()
            raise QemuError(f"the monitor did not answer {what} within {timeout:g} s") from None
        return self._mon.before

    # -- lifetime -----------------------------------------------------------------------
    def quit(self) -> None:
        """Ask QEMU to quit (HMP ``quit``) and return at once: its exit overlaps what the
        caller does next; ``close`` reaps it.  The RAM file of a work directory we own goes
        too: with nobody else mapping it, QEMU's exit frees the guest's memory (~15 ms of a
        Linux boot's, on a tmpfs) instead of our ``close`` removing the file."""
        if self._quit_sent or self._proc is None or self._proc.poll() is not None \
                or self._mon is None:
            return
        self._quit_sent = True
        try:
            self._mon.sendline("quit")
        except OSError:
            pass                        # gone already: close reaps it
        if self._cleanup_dir is not None:
            self.ram_path.unlink(missing_ok=True)

    def close(self, timeout: float = 3.0) -> None:
        """Quit QEMU through the monitor, kill it if it lingers, remove our work directory."""
        if self._proc is not None and self._proc.poll() is None:
            self.quit()
            if self._quit_sent:
                try:
                    self._proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass                # _reap kills it
        for spawn in (self._mon, self._console):
            if spawn is not None and spawn.logfile_read:
                spawn.logfile_read.close()
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        self._mon = self._console = None
        self._finalizer()

    def __enter__(self) -> "Qemu":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _reap(proc: subprocess.Popen | None, workdir: Path | None) -> None:
    """Kill QEMU if it still runs and delete the work directory we created (also at exit)."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)
