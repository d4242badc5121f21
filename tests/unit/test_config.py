"""Session TOML files (gdbplugin/target/config.py): checked before anything starts, one line
naming the file and the key for each mistake; paths relative to the file; the command line
over the file."""
from __future__ import annotations

import pytest

from gdbplugin.target.config import ConfigError, load_config

GOOD = """
[qemu]
smp = 2
extra = ["-no-shutdown"]
[guest]
kernel = "img/Image"
initrd = "img/initrd"
append = "console=ttyAMA0"
[hypervisor]
policy = "none"
[run]
until = "BOOT-OK"
timeout = 60
"""


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("Image", "initrd", "u-boot.bin", "prog.bin"):
        (tmp_path / "img" / name).write_bytes(b"\0" * 64)
    return tmp_path


def write(folder, text, name="s.toml"):
    path = folder / "cfg" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text.replace('"img/', '"../img/'))
    return path


def test_a_good_file_resolves_paths_against_its_own_folder(folder, monkeypatch):
    monkeypatch.chdir("/")
    cfg = load_config(write(folder, GOOD))
    assert cfg.kernel == folder / "img" / "Image" and cfg.initrd == folder / "img" / "initrd"
    assert (cfg.smp, cfg.extra, cfg.policy, cfg.until, cfg.timeout) == \
        (2, ["-no-shutdown"], "none", "BOOT-OK", 60.0)
    assert cfg.machine == "virt,virtualization=on" and cfg.memory == "512M"
    over = cfg.with_overrides(policy="kvm", smp=1, timeout=5)
    assert (over.policy, over.smp, over.timeout) == ("kvm", 1, 5)
    with pytest.raises(ConfigError, match=r"^the command line: \[hypervisor\] policy 'nope'"):
        cfg.with_overrides(policy="nope")


@pytest.mark.parametrize("change, message", [
    (("[run]", "[runs]"), r"unknown section \[runs\] \(known: \[qemu\], \[guest\]"),
    (("smp = 2", "smp = 2\ncpus = 2"), r"\[qemu\] unknown key 'cpus' \(known: machine, cpu"),
    (("smp = 2", 'smp = "2"'), r"\[qemu\] smp must be an integer, got '2'"),
    (("smp = 2", "smp = 0"), r"\[qemu\] smp must be 1\.\.64, got 0"),
    (("smp = 2", 'memory = "lots"'), r"\[qemu\] memory must be a size such as"),
    (("smp = 2", 'memory = "1500K"'), r"\[qemu\] memory must be a size"),
    (('extra = ["-no-shutdown"]', 'extra = "-no-shutdown"'), r"extra must be a list of str"),
    (('"img/initrd"', '"img/missing"'), r"\[guest\] initrd: no such file '\.\./img/missing' "
                                        r"\(paths are relative to the config's folder\)"),
    (('kernel = "img/Image"', 'image = "img/prog.bin"'), r"\[guest\] image needs load and "),
    (('kernel = "img/Image"', ''), r"\[guest\] needs exactly one of kernel, bios, image "
                                   r"\(got none\)"),
    (('kernel = "img/Image"', 'kernel = "img/Image"\nimage = "img/prog.bin"\nload = 1\n'
      'entry = 1'), r"exactly one of kernel, bios, image \(got image, kernel\)"),
    (('policy = "none"', 'policy = "nope"'), r"policy 'nope' is not one of none, rfc2013"),
    (('policy = "none"', 'kind = "external"'), r"only \"shim\" runs"),
    (("smp = 2", 'machine = "virt"'), r"the shim runs at EL2, add virtualization=on"),
    (('until = "BOOT-OK"', 'until = "BOOT-(OK"'), r"\[run\] until is not a regex"),
    (('until = "BOOT-OK"', ''), r"\[run\] until is required"),
    (("timeout = 60", "timeout = -1"), r"\[run\] timeout must be a positive number, got -1"),
    (("[qemu]", "[qemu\n"), r"not valid TOML"),
])
def test_each_mistake_is_one_line_naming_file_and_key(folder, change, message):
    path = write(folder, GOOD.replace(*change))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    text = str(exc.value)
    assert "\n" not in text and text.startswith(f"{path}: ")
    assert __import__("re").search(message, text), text


def test_firmware_and_raw_images(folder):
    """bios is firmware that finds the kernel through fw_cfg (kernel may come with it); a raw
    image needs its load address and entry."""
    cfg = load_config(write(folder, GOOD.replace('kernel = "img/Image"',
                                                 'bios = "img/u-boot.bin"\nkernel = "img/Image"')))
    assert cfg.bios == folder / "img" / "u-boot.bin" and cfg.kernel is not None
    cfg = load_config(write(folder, GOOD.replace(
        'kernel = "img/Image"', 'image = "img/prog.bin"\nload = 0x40400000\nentry = 0x40400000')))
    assert (cfg.load, cfg.entry) == (0x40400000, 0x40400000)


def test_a_missing_or_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file$"):
        load_config(tmp_path / "nope.toml")
