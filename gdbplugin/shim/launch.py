"""Loading the reference shim: the parameter block and the QEMU options around it.

The shim (built by ``scripts/build-shim`` into ``build/shim/``) is QEMU's ``-kernel`` on
``-M virt,virtualization=on``: an arm64 Image QEMU loads at 0x40200000 and enters at EL2 with
x0 = DTB.  The payload (a Linux Image, or any raw AArch64 program) goes in with
``-device loader,file=...,addr=...,force-raw=on``; QEMU still places ``-initrd`` and the DTB and
fills /chosen for it.  The policy and the other choices travel in a parameter block at the
ELF symbol ``shim_params`` (the page below the image), one ``-device loader,data=...`` per
64-bit word, so nothing is rebuilt to change them.  Layout: ``PARAMS`` in gdbplugin/shim/abi.py (``struct params`` in shim.h).
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..target.qemu import Loader, QemuConfig
from .abi import (KINDS, PARAM_FLAGS, PARAMS, PARAMS_MAGIC, PARAMS_VERSION, POLICIES, RING_FULL,
                  SNAP_BYTES)

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "shim"
BUILD_SCRIPT = ROOT / "scripts" / "build-shim"
UBOOT = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")       # Debian's u-boot-qemu
EDK2 = Path("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd")      # Debian's qemu-efi-aarch64

PAYLOAD_ADDR = 0x40400000                  # default load address of the payload (RAM + 4 MiB)
LINK_BASE = 0x40200000


class ShimError(Exception):
    """The shim is missing, cannot be built, or was given impossible parameters."""


def build(quiet: bool = True) -> None:
    """Run scripts/build-shim (idempotent, silent when up to date)."""
    proc = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True)
    if proc.returncode:
        raise ShimError(f"scripts/build-shim failed:\n{proc.stderr.strip()}")
    if not quiet and proc.stdout.strip():
        print(proc.stdout.strip())


@dataclass(frozen=True)
class ShimImage:
    """The built shim: the Image for ``-kernel``, the ELF for gdb, and its symbols (from
    ``shim.map``, the ELF's symbol table as ``nm`` printed it at build time: reading the ELF
    with pyelftools cost ~40 ms of every launch)."""

    bin: Path
    elf: Path
    symbols: dict[str, int]

    @classmethod
    def load(cls, directory: Path = BUILD, build_first: bool = True) -> "ShimImage":
        if build_first:
            build()
        elf, image, table = (directory / f"shim.{x}" for x in ("elf", "bin", "map"))
        if not all(f.is_file() for f in (elf, image, table)):
            raise ShimError(f"{directory} holds no shim.elf/shim.bin/shim.map: run "
                            f"scripts/build-shim")
        symbols = {}
        for line in table.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 3:     # value type name (an undefined symbol has no value)
                symbols[parts[2]] = int(parts[0], 16)
        if symbols.get("_start") != LINK_BASE:
            raise ShimError(f"{table}: _start is not at {LINK_BASE:#x}")
        return cls(image, elf, symbols)

    @property
    def params_addr(self) -> int:
        return self.symbols["shim_params"]

    def offset(self, symbol: str) -> int:
        """Offset of a symbol from _start: the running address is header.shim_base + this."""
        return self.symbols[symbol] - LINK_BASE

    def layout(self, ram_base: int, ram_size: int, params: "ShimParams") -> "Layout":
        """Where the shim will put itself (boot_main in main.c, same arithmetic), for a RAM
        of ``ram_size`` at ``ram_base`` (one memory node): lets a debugger plant breakpoints
        at relocated symbols before the guest runs."""
        def up(x, a):
            return (x + a - 1) // a * a
        image = up(self.symbols["_end"] - LINK_BASE, 0x10000)
        ring = up(params.ring_records * 64, 0x10000)
        pool = (up(params.pool_size, 4096) if params.pool_size
                else up(ram_size // 256 + (1 << 20), 4096)) + \
            (SNAP_BYTES if params.track_writes else 0)
        end = ram_base + ram_size
        base = (end - (image + ring + pool)) // (2 << 20) * (2 << 20)
        return Layout(carve_base=base, carve_size=end - base, guest_ram_end=base,
                      ring_header=base + self.offset("shim_ring"), records=base + image,
                      pool_base=base + image + ring, delta=base - LINK_BASE)


@dataclass(frozen=True)
class Layout:
    carve_base: int
    carve_size: int
    guest_ram_end: int
    ring_header: int
    records: int
    pool_base: int
    delta: int                     # running address of a symbol = link address + delta


@dataclass
class ShimParams:
    """What ``struct params`` carries (shim.h).  ``hook_kinds``: ring kinds (names, see
    ring.KINDS) for which the shim calls ``shim_hook`` -- plant a breakpoint there for a
    synchronous stop.

    Observation (invisible to the policy, on by default; ``kvm_like()`` turns it off):
    ``observe``: TVM for observation only (0: as the policy says, 1: until the vCPU's caches
    are on, 2: always, so every SCTLR_EL1 transition is seen).  ``trap_cmo``: trap the
    guest's own cache maintenance by VA (HCR_EL2.TPCP|TPU: DC to PoC and PoU, IC; more than
    KVM traps) and record it as ``guest-cmo``.  ``track_writes``: map RAM read-only until the
    first write of each epoch (SCTLR_EL1 M/C changes and VM flushes start one), so guest writes
    are observed, not assumed; with the writer's caches off, the lines it changed.
    ``track_access``: when a vCPU turns its caches off, its first access to each page is
    observed (caches-off hazards are judged where the guest really goes non-cacheable)."""

    policy: str = "kvm"
    entry: int = PAYLOAD_ADDR
    blocks: bool = False
    poweroff_on_fatal: bool = False
    quiet: bool = False
    ring_records: int = 1 << 19
    ring_full: str = "halt"
    observe: int = 2
    hook_kinds: tuple[str, ...] = ()
    dtb: int = 0
    pool_size: int = 0
    entry_x0: int = 0
    trap_cmo: bool = True
    track_writes: bool = True
    track_access: bool = True

    @classmethod
    def kvm_like(cls, **kw) -> "ShimParams":
        """Only the traps KVM itself sets: no observation beyond the policy's own."""
        return cls(**{"observe": 0, "trap_cmo": False, "track_writes": False,
                      "track_access": False, **kw})

    def fields(self) -> dict[str, int]:
        """``struct params`` (gdbplugin/shim/abi.py PARAMS) as a dict, validated."""
        if self.policy not in POLICIES.ids:
            raise ShimError(f"unknown policy {self.policy!r} (one of {', '.join(POLICIES.ids)})")
        if self.ring_full not in RING_FULL.ids:
            raise ShimError(f"ring_full must be one of {', '.join(RING_FULL.ids)}")
        n = self.ring_records
        if n < 64 or n > 1 << 24 or n & (n - 1):
            raise ShimError("ring_records must be a power of two in 64..2**24")
        if self.observe not in (0, 1, 2):
            raise ShimError("observe must be 0, 1 or 2")
        mask = 0
        for kind in self.hook_kinds:
            if kind not in KINDS.ids:
                raise ShimError(f"unknown ring kind {kind!r}")
            mask |= 1 << KINDS.ids[kind]
        chosen = {"blocks": self.blocks, "poweroff": self.poweroff_on_fatal,
                  "quiet": self.quiet, "trap_cmo": self.trap_cmo,
                  "track_writes": self.track_writes, "track_access": self.track_access}
        flags = sum(bit for bit, name in PARAM_FLAGS.items() if chosen[name])
        return dict(magic=PARAMS_MAGIC, version=PARAMS_VERSION, policy=POLICIES.ids[self.policy],
                    entry=self.entry, flags=flags, ring_records=n,
                    ring_full=RING_FULL.ids[self.ring_full], observe=self.observe,
                    hook_mask=mask, dtb=self.dtb, pool_size=self.pool_size,
                    entry_x0=self.entry_x0)

    def pack(self) -> bytes:
        return PARAMS.build(self.fields())

    @classmethod
    def unpack(cls, raw: bytes) -> "ShimParams":
        """``pack``'s inverse: the params a packed block asks of the shim, ``hook_kinds`` in
        the order of their codes (ShimError when ``raw`` is not a block this launcher
        writes)."""
        if len(raw) != PARAMS.sizeof():
            raise ShimError(f"a params block is {PARAMS.sizeof()} bytes, not {len(raw)}")
        c = PARAMS.parse(raw)
        if c.magic != PARAMS_MAGIC or c.version != PARAMS_VERSION or \
                c.policy not in POLICIES or c.ring_full not in RING_FULL:
            raise ShimError("not a params block of this shim")
        on = {name for bit, name in PARAM_FLAGS.items() if c.flags & bit}
        return cls(policy=POLICIES[c.policy], entry=c.entry, blocks="blocks" in on,
                   poweroff_on_fatal="poweroff" in on, quiet="quiet" in on,
                   ring_records=c.ring_records, ring_full=RING_FULL[c.ring_full],
                   observe=c.observe,
                   hook_kinds=tuple(KINDS[k] for k in sorted(KINDS) if c.hook_mask >> k & 1),
                   dtb=c.dtb, pool_size=c.pool_size, entry_x0=c.entry_x0,
                   trap_cmo="trap_cmo" in on, track_writes="track_writes" in on,
                   track_access="track_access" in on)

    @classmethod
    def loaded_by(cls, config: QemuConfig, params_addr: int) -> "ShimParams | None":
        """The params block ``config``'s loaders write at ``params_addr`` (None: none, or
        not all of it)."""
        size = PARAMS.sizeof()
        words = {ld.addr - params_addr: ld.data for ld in config.loaders
                 if ld.data is not None and ld.data_len == 8 and ld.addr is not None
                 and 0 <= ld.addr - params_addr < size}
        if sorted(words) != list(range(0, size, 8)):
            return None
        try:
            return cls.unpack(b"".join(words[o].to_bytes(8, "little") for o in range(0, size, 8)))
        except ShimError:
            return None

    def loaders(self, params_addr: int) -> list[Loader]:
        """One ``-device loader,data=`` per 64-bit word of the packed block."""
        raw = self.pack()
        return [Loader(addr=params_addr + off, data=int.from_bytes(raw[off:off + 8], "little"))
                for off in range(0, len(raw), 8)]


def shim_config(payload: Path | None, params: ShimParams, *, shim: ShimImage | None = None,
                payload_addr: int = PAYLOAD_ADDR, initrd: Path | None = None,
                append: str | None = None, memory: int | str = "512M", smp: int = 1,
                cpu: str = "max,pauth-impdef=on", machine: str = "virt,virtualization=on",
                extra: list[str] | None = None, **qemu_kw) -> QemuConfig:
    """A QemuConfig running ``payload`` (raw, at ``payload_addr``) under the shim."""
    shim = shim or ShimImage.load()
    if "virtualization=on" not in machine:
        raise ShimError("the shim needs -M ...,virtualization=on (it runs at EL2)")
    loaders = params.loaders(shim.params_addr)
    if payload is not None:
        loaders.append(Loader(file=Path(payload), addr=payload_addr, force_raw=True))
    return QemuConfig(machine=machine, cpu=cpu, memory=memory, smp=smp, kernel=shim.bin,
                      initrd=initrd, append=append, loaders=loaders,
                      extra=["-no-reboot", *(extra or [])], **qemu_kw)


def firmware_config(params: ShimParams, *, bios: Path, kernel: Path | None = None,
                    initrd: Path | None = None, append: str | None = None,
                    shim: ShimImage | None = None, memory: int | str = "512M", smp: int = 1,
                    cpu: str = "max,pauth-impdef=on", machine: str = "virt,virtualization=on",
                    extra: list[str] | None = None, **qemu_kw) -> QemuConfig:
    """Firmware (``-bios``: QEMU puts it in virt's flash at 0) under the shim, which enters it
    at EL1 at 0.  The shim goes in as an ELF with ``-device loader,cpu-num=0`` (its entry wins
    over the reset vector) and finds the DTB QEMU put at the base of RAM; QEMU hands
    -kernel/-initrd/-append to the firmware through fw_cfg."""
    shim = shim or ShimImage.load()
    if "virtualization=on" not in machine:
        raise ShimError("the shim needs -M ...,virtualization=on (it runs at EL2)")
    from dataclasses import replace
    params = replace(params, entry=0)
    loaders = params.loaders(shim.params_addr) + [Loader(file=shim.elf, cpu_num=0)]
    return QemuConfig(machine=machine, cpu=cpu, memory=memory, smp=smp, bios=bios,
                      kernel=kernel, initrd=initrd, append=append, loaders=loaders,
                      extra=["-no-reboot", *(extra or [])], **qemu_kw)


def uboot_config(params: ShimParams, *, kernel: Path, bios: Path = UBOOT,
                 **kw) -> QemuConfig:
    """U-Boot (runs from flash) under the shim, booting ``kernel`` with ``booti`` from its
    default bootcmd (qfw: fw_cfg DMA).  Other keywords: ``firmware_config``."""
    return firmware_config(params, bios=bios, kernel=kernel, **kw)


def edk2_config(params: ShimParams, *, kernel: Path, bios: Path = EDK2,
                **kw) -> QemuConfig:
    """EDK2 (ArmVirtQemu, runs from flash) under the shim, booting ``kernel`` through its EFI
    stub: EDK2's platform boot manager loads -kernel/-initrd over fw_cfg DMA and starts the
    Image as an EFI application before any boot option.  Without a -drive for it the second
    flash bank holds no variable store and EDK2 formats it (flash writes, emulated by the
    shim).  Other keywords: ``firmware_config``."""
    return firmware_config(params, bios=bios, kernel=kernel, **kw)


class ShimSession:
    """A QEMU running a payload under the shim, with its ring drained as it goes.

    ``wait()`` returns when the console matches, QEMU exits (the shim forwards the guest's
    PSCI SYSTEM_OFF; ``-no-reboot`` turns a reset into an exit) or the shim halted on a fatal
    diagnostic, draining every new ring record into ``events`` meanwhile.  With ``consume``
    the drain also advances the ring's read index (needed with ``ring_full="wait"``).
    Everything stays readable after QEMU exited, until ``close()``.
    """

    def __init__(self, config: QemuConfig, shim: ShimImage | None = None, consume: bool = False,
                 workdir: Path | None = None, meanwhile=None):
        from ..target.qemu import Qemu
        self.shim = shim or ShimImage.load(build_first=False)
        self.qemu = Qemu(config, workdir=workdir)
        self.consume = consume
        self._meanwhile = meanwhile             # Qemu.start's: work done while QEMU starts
        self.events: list = []
        self._ring = None
        self._ram_map = None                   # the RAM file, mapped once for every look
        self._next_search = 0.0                # see ring()
        self._expected_header: int | None = None
        self.ram_base: int | None = None
        self.started = None

    def __enter__(self) -> "ShimSession":
        import time
        self.qemu.start(self._meanwhile)
        self.started = time.monotonic()
        self.ram_base = self.qemu.ram_base()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def release(self) -> None:
        """The guest is done with (its ring drained, read): unmap its RAM and ask QEMU to
        quit without waiting (``Qemu.quit``), so that its exit overlaps the caller's reports;
        ``close`` reaps it."""
        if self._ring is not None:
            self._ring.close()                 # and the mapping it reads
            self._ring = None
        elif self._ram_map is not None:
            self._ram_map.close()
        self._ram_map = None
        self.qemu.quit()

    def close(self) -> None:
        self.release()
        self.qemu.close()

    @property
    def returncode(self) -> int | None:
        proc = self.qemu._proc
        return None if proc is None else proc.poll()

    def console(self) -> str:
        try:
            return self.qemu.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    SEARCH_AFTER_S = 1.0

    def ring(self):
        """The RingReader, once the shim has set its ring up (None before).  It is looked for
        where boot_main will put it for the params block and the RAM this config gives QEMU
        (ShimImage.layout: one page read; the shim sets its ring up ~0.05 s after the guest
        starts).  All of guest RAM is searched, a read of every page (~0.15 s for 512 MiB,
        more than twice that at nice 19 during a boot), only when that cannot be foreseen or
        the ring is not there SEARCH_AFTER_S after QEMU started; after a search that found
        nothing, not again before ``ring.next_search`` says.  The RAM file is mapped once."""
        import time
        from ..target.errors import TargetError
        from ..target.physmem import SharedRam
        from .ring import RingError, RingReader, next_search
        if self._ring is not None:
            return self._ring
        if self._ram_map is None:
            try:
                self._ram_map = SharedRam(self.qemu.ram_path, self.ram_base,
                                          writable=self.consume)
            except TargetError:
                return None                    # not there (yet): as a ring not set up
        if self._expected_header is None:
            params = ShimParams.loaded_by(self.qemu.config, self.shim.params_addr)
            self._expected_header = (self.shim.layout(self.ram_base, self.qemu.ram_size,
                                                      params).ring_header if params else 0)
            if self._expected_header:
                self._next_search = self.started + self.SEARCH_AFTER_S
        candidates = [self._expected_header] if self._expected_header else []
        started = time.monotonic()
        if started >= self._next_search:
            candidates.append(None)                # None: search all of RAM
        for header_pa in candidates:
            try:
                self._ring = RingReader(self._ram_map, self.ram_base, self._ram_map.size,
                                        consume=self.consume, header_pa=header_pa)
                return self._ring
            except RingError:
                pass
        if candidates and candidates[-1] is None:
            self._next_search = next_search(started, time.monotonic())
        return None

    def drain(self, sink=None) -> int:
        """Read every new ring record into ``events`` (and hand the batch, as the records'
        fields, to ``sink``: a Recorder's ``feed``)."""
        from .ring import decode_fields
        ring = self.ring()
        if ring is None:
            return 0
        batch = ring.poll_fields()
        self.events += [decode_fields(f[0] - 1, f) for f in batch]
        if sink is not None and batch:
            sink(batch)
        return len(batch)

    def wait(self, pattern: str | None = None, timeout: float = 90.0,
             interval: float = 0.01, stop_on_halt: bool = True, sink=None, pump=None,
             stop=None) -> str:
        """'match', 'exit', 'halted', 'timeout', or 'stopped' when ``stop()`` became true.
        ``stop_on_halt=False`` keeps waiting after a fatal diagnostic (for QEMU to exit, with
        ``poweroff_on_fatal``).  The ring is drained meanwhile: into ``events``, handing each
        batch to ``sink``; or by ``pump()`` (a LiveSession's), which returns the records it
        read.  It sleeps ``interval`` only when nothing was drained."""
        import re
        import time
        regex = re.compile(pattern) if pattern else None
        drain = pump if pump is not None else (lambda: self.drain(sink))
        deadline = time.monotonic() + timeout
        why = "timeout"
        while time.monotonic() < deadline:
            if stop is not None and stop():
                why = "stopped"
                break
            exited = self.returncode is not None
            drained = drain()
            if regex and regex.search(self.console()):
                why = "match"
                break
            ring = self.ring()
            if stop_on_halt and ring is not None and ring.halted():
                why = "halted"
                break
            if exited:
                why = "exit"
                break
            if not drained:
                time.sleep(interval)
        drain()
        return why

    def pause(self) -> bool:
        """Stop the guest's vCPUs (HMP ``stop``) so that what comes after, draining the ring
        and judging it, does not share the host's CPUs with a guest nobody watches any more;
        False when QEMU has already exited (nothing to stop)."""
        from ..target.errors import TargetError
        if self.returncode is not None:
            return False
        try:
            self.qemu.monitor("stop")
        except TargetError:
            return False               # it exited meanwhile: also stopped
        return True

    def header(self):
        ring = self.ring()
        if ring is None:
            raise ShimError("the shim never set its ring up (see the console)")
        return ring.header()

    def address(self, symbol: str) -> int:
        """Where a shim symbol is now (the shim runs relocated into its carve-out)."""
        return self.header().shim_base + self.shim.offset(symbol)

    def stage2(self):
        """A Walker over the guest's stage 2 as it is now (from the RAM file)."""
        from ..arch.walker import Regime, Walker
        from ..target.physmem import SharedRam
        h = self.header()
        return Walker(Regime.from_vtcr(h.vtcr, h.vttbr, h.hcr),
                      SharedRam(self.qemu.ram_path, self.ram_base))
