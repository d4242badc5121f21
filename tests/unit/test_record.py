"""Ring records -> trace, without QEMU: the converter and the recorder on hand-made ring
events, in the order the shim writes them (gdbplugin/shim/ring.c)."""
from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest

from gdbplugin.capture.record import RecordError, Recorder
from gdbplugin.shim.abi import PARAM_FLAGS
from gdbplugin.capture.shim_trace import ShimTrace, loaded_blobs
from gdbplugin.model.engine import Replay
from gdbplugin.model.trace import read_trace
from gdbplugin.shim.ring import Event

RAM, END = 0x4000_0000, 0x5F00_0000
KERNEL = 0x4040_0000
ROMS = ('addr=0000000040400000 size=0x0000000002000000 mem=ram name="vmlinuz"\n'
        'addr=0000000000000000 size=0x0000000000200000 mem=rom name="QEMU_EFI.fd"\n'
        'addr=0000000048000000 size=0x0000000000001000 mem=ram name="dtb"\n')


def header(flags=0, rom=((0, 0x400_0000),), cpu=None):
    return SimpleNamespace(ram_base=RAM, ram_end=END, flags=flags, policy_effective="kvm",
                           policy="fwb", rom=list(rom), cpu=cpu or {})


def ev(seq, kind, vcpu=0, **kw):
    return Event(seq=seq, kind=kind, vcpu=vcpu, el=kw.pop("el", 1), **kw)


def start(seq=0, policy="kvm"):
    return ev(seq, "shim-start", vcpu=None, el=2, extra={"policy": policy, "requested": "fwb"})


def boot():
    """The shim's records for: vCPU 0 starts, an exec fault maps the kernel's first page
    (the kvm policy cleans it and invalidates the I-cache, both recorded before the map is
    released to the guest), a data write fault maps a page, the guest turns its caches on
    (trapped) and the kvm policy flushes the VM."""
    return [start(), ev(1, "vcpu-start", pc=KERNEL),
            ev(2, "s2-fault", pc=KERNEL, access="exec", ipa=KERNEL, pa=KERNEL),
            ev(3, "s2-map", pc=KERNEL, ipa=KERNEL, pa=KERNEL, size=4096,
               extra={"memtype": "normal", "perms": "rwx"}),
            ev(4, "dc", el=2, ipa=KERNEL, pa=KERNEL, size=4096, op="civac",
               rule="kvm.clean-on-translation-fault"),
            ev(5, "ic", el=2, ipa=KERNEL, pa=KERNEL, size=4096, op="ivau",
               rule="kvm.icache-inval-on-exec-fault"),
            ev(6, "s2-fault", pc=KERNEL + 8, access="write", ipa=KERNEL + 0x10_0000),
            ev(7, "s2-map", ipa=KERNEL + 0x10_0000, pa=KERNEL + 0x10_0000, size=4096,
               extra={"memtype": "normal", "perms": "rw"}),
            ev(8, "dc", el=2, ipa=KERNEL + 0x10_0000, pa=KERNEL + 0x10_0000, size=4096,
               op="civac", rule="kvm.clean-on-translation-fault"),
            ev(9, "sysreg-write", pc=KERNEL + 12, reg="SCTLR_EL1", old=0x30d00980,
               new=0x30d0198d),
            ev(10, "flush-vm", el=2, size=8192, op="civac", rule="kvm.flush-on-cache-toggle"),
            ev(11, "guest-cmo", pc=KERNEL + 16, op="ic-iallu"),
            ev(12, "host-dma", pc=0x1000, ipa=KERNEL + 0x20_0000, pa=KERNEL + 0x20_0000,
               size=0x3000, op="fw-cfg-dma"),
            ev(13, "s2-map", ipa=0x1000, pa=0x1000, size=4096,
               extra={"memtype": "rom", "perms": "rx"})]


def test_recorder_writes_header_host_writes_and_ordered_events():
    buf = io.StringIO()
    rec = Recorder(buf, header(flags=PARAM_FLAGS.ids["track_writes"], cpu={"ctr_el0": 0x8444c004}), 1,
                   ROMS, "cortex-a72")
    out = rec.feed(boot()[:5])
    out += rec.feed(boot()[5:])
    out += rec.close()
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    head = lines[0]
    # The policy the shim ran (its start record), not the one requested; flash is memory.
    assert head["policy"] == "kvm" and head["writes"] == "tracked"
    assert head["ram"] == [[0, 0x400_0000], [RAM, END - RAM]]
    assert head["cpu"] == {"ctr_el0": 0x8444c004, "model": "cortex-a72"}
    assert head["traps_set_way"] is True
    assert lines[1:] == out                       # what feed returned is what the file holds
    kinds = [e["kind"] for e in out]
    # info roms: the kernel, the firmware in flash and the DTB are host writes first.
    assert [(e["pa"], e["source"]) for e in out[:3]] == [(0, "load"), (KERNEL, "load"),
                                                         (0x4800_0000, "load")]
    # The map is released after the maintenance done for it; the SCTLR write after its flush.
    assert kinds[3:] == ["vcpu-on", "s2-fault", "hyp-maintenance", "hyp-maintenance",
                         "s2-map", "s2-fault", "hyp-maintenance", "s2-map",
                         "hyp-maintenance", "hyp-maintenance", "sysreg-write", "ic-inval",
                         "host-write", "s2-map"]
    flush = out[11:13]          # the mapped pages, as ranges of contiguous pages
    assert [(e["pa"], e["size"]) for e in flush] == [(KERNEL, 4096),
                                                     (KERNEL + 0x10_0000, 4096)]
    dma = out[15]
    assert (dma["pa"], dma["size"], dma["source"]) == (KERNEL + 0x20_0000, 0x3000, "device")
    assert out[16]["memattr"] == 0xF and out[16]["xn"] == 0   # flash: Normal, executable


def test_recorded_trace_replays(tmp_path):
    path = tmp_path / "t.jsonl"
    rec = Recorder(path, header(), 1, ROMS)
    rec.feed(boot())
    rec.close()
    trace = read_trace(path)
    result = Replay(trace.header).run(trace)
    # The exec fault's page was cleaned and invalidated by the shim: observed covers it.
    first = [f for f in result.findings("none") if f.kind == "first-map-uncached"]
    assert first and all(f.observed for f in first if f.pa == KERNEL)
    assert not result.uncovered("observed")


def test_recorder_needs_the_start_record_first():
    with pytest.raises(RecordError, match="shim's start record"):
        Recorder(io.StringIO(), header(), 1).feed(boot()[1:])


def test_nothing_written_before_the_start_record():
    buf = io.StringIO()
    rec = Recorder(buf, header(), 1)
    assert rec.feed([]) == [] and buf.getvalue() == "" and rec.header is None


def test_blobs_are_clipped_to_guest_memory():
    conv = ShimTrace([(RAM, 0x1000)], 1, "kvm")
    blobs = loaded_blobs('addr=000000003ffff000 size=0x0000000000003000 mem=ram name="x"')
    assert list(conv.host_writes(blobs)) == [{"kind": "host-write", "pa": RAM, "size": 0x1000,
                                              "source": "load"}]


def test_maintenance_outside_guest_memory_is_dropped():
    conv = ShimTrace([(RAM, 0x10000)], 1, "kvm")
    out = list(conv.convert([ev(1, "dc", el=2, ipa=0x900_0000, pa=0x900_0000, size=4096,
                                   op="civac", rule="kvm.clean-on-translation-fault")]))
    assert out == []


def test_written_lines_become_guest_writes():
    """A K_S2_WRITTEN mask of lines 0, 1 and 5 is two guest writes: 128 bytes and 64."""
    conv = ShimTrace([(RAM, 0x100000)], 1, "kvm")
    page = RAM + 0x3000
    out = list(conv.convert([
        ev(1, "s2-fault", access="write", ipa=page + 8, extra={"deferred": True}),
        ev(2, "s2-written", el=2, access="write", ipa=page, pa=page, size=4096,
           extra={"lines": 0b100011})]))
    assert out[0]["deferred"] == 1
    assert [(e["kind"], e["pa"], e["size"]) for e in out[1:]] == [
        ("guest-access", page, 128), ("guest-access", page + 320, 64)]


def test_write_xor_execute_records_become_a_fetch_the_policy_never_sees():
    """The observer's cycle on code: a deferred write, the line it changed (with the writer's
    PC), the fetch (flag fetch, the old and new instruction words) and X given back (s2-perm
    with observer).  The trace gets the writes and a fetch event; no s2-attr, no exec fault
    (KVM's world must not see an exec-on-demand grant there)."""
    conv = ShimTrace([(RAM, 0x100000)], 1, "kvm")
    page = RAM + 0x5000
    out = list(conv.convert([
        ev(1, "s2-fault", pc=0x1000, access="write", ipa=page + 0x48,
           extra={"deferred": True}),
        ev(2, "s2-perm", access="write", ipa=page, pa=page, size=4096,
           extra={"memtype": "normal", "perms": "rwx", "observer": False}),
        ev(3, "s2-written", el=2, pc=0x1000, access="write", ipa=page, pa=page, size=4096,
           extra={"lines": 0b10}),
        ev(4, "s2-fault", pc=page + 0x48, access="exec", ipa=page + 0x48,
           extra={"fetch": True, "fetch_ok": False, "insn_old": 0xD503201F,
                  "insn_new": 0xAA1E03E9}),
        ev(5, "s2-perm", access="exec", ipa=page, pa=page, size=4096,
           extra={"memtype": "normal", "perms": "rx", "observer": True})]))
    kinds = [e["kind"] for e in out]
    assert kinds == ["s2-fault", "s2-attr", "guest-access", "fetch"]
    assert (out[2]["pa"], out[2]["size"], out[2]["pc"]) == (page + 64, 64, 0x1000)
    assert out[3] == {"kind": "fetch", "vcpu": 0, "ipa": page + 0x48, "pc": page + 0x48,
                      "el": 1, "old": 0xD503201F, "new": 0xAA1E03E9}


def test_blobs_in_memory_regions_are_placed_by_the_memory_tree():
    """-bios puts the firmware straight into virt.flash0: `info roms` names the region, `info
    mtree -f` says where it is."""
    roms = ('virt.flash0 size=0x200000 name="QEMU_EFI.fd"\n'
            '/rom@etc/acpi/tables size=0x200000 name="etc/acpi/tables"\n'
            'addr=0000000040000000 size=0x100000 mem=ram name="dtb"\n')
    mtree = ('  0000000000000000-0000000003ffffff (prio 0, romd): virt.flash0\n'
             '  0000000004000000-0000000007ffffff (prio 0, romd): virt.flash1\n')
    assert loaded_blobs(roms, mtree) == [(0, 0x200000, "QEMU_EFI.fd"),
                                         (RAM, 0x100000, "dtb")]
    assert loaded_blobs(roms) == [(RAM, 0x100000, "dtb")]
