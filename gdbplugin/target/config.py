"""A session's TOML file (qemu-configs/*.toml): what to boot under the shim and when it is done.

    [qemu]        machine, cpu, memory, smp, extra (a list of argv words)
    [guest]       kernel | bios | image + load + entry; initrd, append, dtb, symbols
    [hypervisor]  kind = "shim" ("external" is reserved), policy
    [run]         until (a console regex), timeout (seconds)

``kernel`` alone is a Linux Image the shim enters at EL1; ``bios`` is firmware (U-Boot, EDK2)
the shim enters at 0, which finds ``kernel``/``initrd``/``append`` through QEMU's fw_cfg;
``image`` is a raw program loaded at ``load`` and entered at ``entry``.  Paths are relative to
the file's own folder.  Everything is checked before anything starts: an unknown section or
key, a wrong type, a missing file is one line naming the file and the key (``ConfigError``).
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..model.policies import POLICIES
from .errors import QemuError
from .qemu import QemuConfig, parse_size

DEFAULT_MACHINE = "virt,virtualization=on"
DEFAULT_CPU = "max,pauth-impdef=on"


class ConfigError(Exception):
    """A configuration that cannot run: one line naming the file and the key."""


_PATH, _STR, _INT, _NUM, _WORDS, _PATHS, _SIZE = (
    "a path", "a string", "an integer", "a positive number", "a list of strings",
    "a list of paths", "a size such as \"512M\" or a number of bytes")
KEYS: dict[str, dict[str, str]] = {
    "qemu": {"machine": _STR, "cpu": _STR, "memory": _SIZE, "smp": _INT, "extra": _WORDS},
    "guest": {"kernel": _PATH, "bios": _PATH, "image": _PATH, "load": _INT, "entry": _INT,
              "initrd": _PATH, "append": _STR, "dtb": _PATH, "symbols": _PATHS},
    "hypervisor": {"kind": _STR, "policy": _STR},
    "run": {"until": _STR, "timeout": _NUM},
}


@dataclass
class SessionConfig:
    """A validated configuration; paths are absolute."""

    path: Path
    machine: str = DEFAULT_MACHINE
    cpu: str = DEFAULT_CPU
    memory: str | int = "512M"
    smp: int = 1
    extra: list[str] = field(default_factory=list)
    kernel: Path | None = None
    bios: Path | None = None
    image: Path | None = None
    load: int | None = None
    entry: int | None = None
    initrd: Path | None = None
    append: str | None = None
    dtb: Path | None = None
    symbols: list[Path] = field(default_factory=list)
    kind: str = "shim"
    policy: str = "kvm"
    until: str | None = None
    timeout: float = 300.0

    def with_overrides(self, policy: str | None = None, smp: int | None = None,
                       timeout: float | None = None) -> "SessionConfig":
        """The command line's options over the file's values, checked as the file's are."""
        out = replace(self, policy=policy or self.policy,
                      smp=self.smp if smp is None else smp,
                      timeout=self.timeout if timeout is None else timeout)
        _check_values(out, "the command line")
        return out

    def qemu_config(self, shim, paused: bool = True, **params) -> QemuConfig:
        """The QEMU this configuration runs under the shim (``params``: ShimParams fields
        over the defaults)."""
        from ..shim.launch import ShimParams, firmware_config, shim_config
        p = ShimParams(policy=self.policy, **params)
        common = dict(shim=shim, initrd=self.initrd, append=self.append, memory=self.memory,
                      smp=self.smp, cpu=self.cpu, machine=self.machine, extra=self.extra,
                      paused=paused, dtb=self.dtb)
        if self.bios is not None:
            return firmware_config(p, bios=self.bios, kernel=self.kernel, **common)
        if self.image is not None:
            return shim_config(self.image, replace(p, entry=self.entry),
                               payload_addr=self.load, **common)
        return shim_config(self.kernel, p, **common)


def load_config(path: str | Path) -> SessionConfig:
    """Read and check a configuration file."""
    path = Path(path)
    where = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    base = path.resolve().parent
    values: dict = {}
    for section, table in raw.items():
        if section not in KEYS:
            raise ConfigError(f"{where}: unknown section [{section}] (known: "
                              f"{', '.join(f'[{s}]' for s in KEYS)})")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {section} must be a [{section}] table")
        for key, value in table.items():
            want = KEYS[section].get(key)
            if want is None:
                raise ConfigError(f"{where}: [{section}] unknown key {key!r} (known: "
                                  f"{', '.join(KEYS[section])})")
            values[key] = _value(where, section, key, value, want, base)
    cfg = SessionConfig(path=path, **values)
    _check_values(cfg, where)
    return cfg


def _value(where, section, key, value, want, base: Path):
    def bad():
        return ConfigError(f"{where}: [{section}] {key} must be {want}, got {value!r}")
    if want == _STR:
        if not isinstance(value, str):
            raise bad()
        return value
    if want == _INT:
        if type(value) is not int or value < 0:
            raise bad()
        return value
    if want == _NUM:
        if type(value) not in (int, float) or value <= 0:
            raise bad()
        return float(value)
    if want == _SIZE:
        if type(value) not in (int, str):
            raise bad()
        try:
            size = parse_size(value)
        except QemuError:
            raise bad() from None
        if size <= 0 or size % (1 << 20):
            raise bad()
        return value
    if want == _WORDS:
        if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
            raise bad()
        return list(value)
    if want in (_PATH, _PATHS):
        items = value if want == _PATHS else [value]
        if (want == _PATHS and not isinstance(value, list)) or \
                not all(isinstance(v, str) and v for v in items):
            raise bad()
        paths = [(base / v).resolve() for v in items]
        for v, p in zip(items, paths):
            if not p.is_file():
                raise ConfigError(f"{where}: [{section}] {key}: no such file {v!r} "
                                  f"(paths are relative to the config's folder)")
        return paths if want == _PATHS else paths[0]
    raise AssertionError(want)


def _check_values(cfg: SessionConfig, where: str) -> None:
    """What single keys cannot say: one guest, the shim's needs, known names."""
    given = [k for k in ("bios", "image") if getattr(cfg, k) is not None]
    if cfg.kernel is not None and not cfg.bios:
        given.append("kernel")
    if len(given) != 1:
        raise ConfigError(f"{where}: [guest] needs exactly one of kernel, bios, image "
                          f"(got {', '.join(given) or 'none'})")
    if cfg.image is not None and (cfg.load is None or cfg.entry is None):
        raise ConfigError(f"{where}: [guest] image needs load and entry")
    if cfg.image is None and (cfg.load is not None or cfg.entry is not None):
        raise ConfigError(f"{where}: [guest] load and entry go with image")
    if cfg.kind != "shim":
        raise ConfigError(f"{where}: [hypervisor] kind {cfg.kind!r}: only \"shim\" runs "
                          f"(\"external\" is reserved)")
    if cfg.policy not in POLICIES:
        raise ConfigError(f"{where}: [hypervisor] policy {cfg.policy!r} is not one of "
                          f"{', '.join(POLICIES)}")
    if "virtualization=on" not in cfg.machine.split(",")[1:]:
        raise ConfigError(f"{where}: [qemu] machine {cfg.machine!r}: the shim runs at EL2, "
                          f"add virtualization=on")
    if not 1 <= cfg.smp <= 64:
        raise ConfigError(f"{where}: [qemu] smp must be 1..64, got {cfg.smp}")
    if cfg.timeout <= 0:
        raise ConfigError(f"{where}: [run] timeout must be positive, got {cfg.timeout}")
    if cfg.until is None:
        raise ConfigError(f"{where}: [run] until is required (a console regex that means "
                          f"the boot is done)")
    try:
        re.compile(cfg.until)
    except re.error as exc:
        raise ConfigError(f"{where}: [run] until is not a regex: {exc}") from None
