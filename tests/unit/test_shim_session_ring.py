"""How a ShimSession finds the shim's ring (gdbplugin/shim/launch.py ``ShimSession.ring``)
and the params block a config loads (``ShimParams.unpack``, ``ShimParams.loaded_by``).

The ring is looked for first where boot_main will put it for the params block the config
loads (``ShimImage.layout``): one page read.  A search of all of guest RAM (a read of every
page: ~0.15 s for 512 MiB, far more at nice 19 during a boot) comes only when the ring is not
there ``SEARCH_AFTER_S`` after QEMU started, and a search that found nothing is not repeated
before twice as long as it took.  A RAM file built by hand stands for QEMU's; no QEMU needed.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from gdbplugin.shim import ring as ring_module
from gdbplugin.shim.abi import RING_HEADER, RING_MAGIC, offset_of
from gdbplugin.shim.launch import ShimError, ShimParams, ShimSession
from gdbplugin.target.qemu import Loader, QemuConfig

BASE = 0x4000_0000
SIZE = 8 << 20
PARAMS_AT = 0x401F_F000
EXPECTED = BASE + SIZE - (2 << 20) + 0x3000        # where the fake layout says


@pytest.mark.parametrize("params", [
    ShimParams(),
    ShimParams.kvm_like(policy="none"),
    ShimParams(policy="xen", blocks=True, poweroff_on_fatal=True, quiet=True,
               ring_records=1 << 12, ring_full="drop", observe=1,
               hook_kinds=("s2-fault", "diag"), dtb=0x4800_0000, pool_size=1 << 22,
               entry=0x4100_0000, entry_x0=7, trap_cmo=False),
])
def test_unpack_is_the_inverse_of_pack(params):
    assert ShimParams.unpack(params.pack()) == params


def test_unpack_refuses_what_is_not_a_params_block():
    raw = bytearray(ShimParams().pack())
    for bad in (bytes(raw[:-8]), bytes(96), bytes(raw[:16]) + (99).to_bytes(8, "little")
                + bytes(raw[24:])):
        with pytest.raises(ShimError):
            ShimParams.unpack(bad)


def test_the_params_a_config_loads_are_read_back_from_its_loaders():
    params = ShimParams(policy="fwb", ring_records=1 << 10, track_writes=False)
    payload = Loader(file=__file__, addr=0x4008_0000, force_raw=True)
    config = QemuConfig(loaders=[payload, *params.loaders(PARAMS_AT)])
    assert ShimParams.loaded_by(config, PARAMS_AT) == params
    assert ShimParams.loaded_by(config, PARAMS_AT + 8) is None       # not a whole block
    partial = QemuConfig(loaders=params.loaders(PARAMS_AT)[:-1])
    assert ShimParams.loaded_by(partial, PARAMS_AT) is None
    assert ShimParams.loaded_by(QemuConfig(), PARAMS_AT) is None


def session(tmp_path, config: QemuConfig, started: float) -> ShimSession:
    """A ShimSession over a RAM file of SIZE bytes at BASE, as __enter__ leaves it."""
    ram = tmp_path / "ram"
    ram.write_bytes(bytes(SIZE))
    s = ShimSession.__new__(ShimSession)
    s.qemu = SimpleNamespace(config=config, ram_path=ram, ram_size=SIZE)
    s.shim = SimpleNamespace(params_addr=PARAMS_AT,
                             layout=lambda base, size, params: SimpleNamespace(
                                 ring_header=EXPECTED if params.ring_records > 64 else None))
    s.consume, s._ring, s.ram_base, s.started = False, None, BASE, started
    s._next_search, s._expected_header, s._ram_map = 0.0, None, None
    return s


def set_up_ring(s: ShimSession, at: int) -> None:
    with open(s.qemu.ram_path, "r+b") as f:
        for field, value in (("magic", RING_MAGIC), ("shim_base", BASE + SIZE - (2 << 20))):
            f.seek(at - BASE + offset_of(RING_HEADER, field))
            f.write(value.to_bytes(8, "little"))


@pytest.fixture
def searches(monkeypatch) -> list[int]:
    """Every search of all of RAM, counted."""
    calls = []
    find = ring_module.RingReader.find

    def counted(self, near=None):
        calls.append(1)
        return find(self, near)
    monkeypatch.setattr(ring_module.RingReader, "find", counted)
    return calls


def test_the_ring_is_looked_for_where_the_layout_says_before_any_search(tmp_path, searches):
    s = session(tmp_path, QemuConfig(loaders=ShimParams().loaders(PARAMS_AT)), time.monotonic())
    assert s.ring() is None and s.ring() is None            # not set up yet: no search
    assert searches == []
    set_up_ring(s, EXPECTED)
    r = s.ring()
    assert r is not None and r.header_pa == EXPECTED and searches == []
    assert s.ring() is r


def test_a_ring_elsewhere_is_searched_for_once_the_grace_is_over(tmp_path, searches):
    s = session(tmp_path, QemuConfig(loaders=ShimParams().loaders(PARAMS_AT)),
                time.monotonic() - ShimSession.SEARCH_AFTER_S - 1)
    assert s.ring() is None and len(searches) == 1           # nothing anywhere yet
    assert s.ring() is None and len(searches) == 1           # not again straight away
    elsewhere = BASE + SIZE - 0x1000
    set_up_ring(s, elsewhere)
    s._next_search = 0.0                                     # as if the pause were over
    r = s.ring()
    assert r is not None and r.header_pa == elsewhere and len(searches) == 2


def test_without_a_foreseeable_layout_ram_is_searched_at_once(tmp_path, searches):
    s = session(tmp_path, QemuConfig(), time.monotonic())     # no params block loaded
    set_up_ring(s, BASE + SIZE - 0x1000)
    assert s.ring() is not None and len(searches) == 1
