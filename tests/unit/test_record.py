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
from ring_records import dicts as pairs_dicts, records

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


def feed(rec, events):
    """``events`` as the shim's records, fed to ``rec``."""
    return rec.feed(records(events))


def dicts(chunk):
    """The events a Recorder call wrote, as the file's lines (None: nothing was written)."""
    return [] if chunk is None else chunk.to_dicts()


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
    out = dicts(feed(rec, boot()[:5]))
    out += dicts(feed(rec, boot()[5:]))
    out += dicts(rec.close())
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
    feed(rec, boot())
    rec.close()
    trace = read_trace(path)
    result = Replay(trace.header).run(trace)
    # The exec fault's page was cleaned and invalidated by the shim: observed covers it.
    first = [f for f in result.findings("none") if f.kind == "first-map-uncached"]
    assert first and all(f.observed for f in first if f.pa == KERNEL)
    assert not result.uncovered("observed")


def test_recorder_needs_the_start_record_first():
    with pytest.raises(RecordError, match="shim's start record"):
        feed(Recorder(io.StringIO(), header(), 1), boot()[1:])


def test_nothing_written_before_the_start_record():
    buf = io.StringIO()
    rec = Recorder(buf, header(), 1)
    assert feed(rec, []) is None and buf.getvalue() == "" and rec.header is None


def test_blobs_are_clipped_to_guest_memory():
    conv = ShimTrace([(RAM, 0x1000)], 1, "kvm")
    blobs = loaded_blobs('addr=000000003ffff000 size=0x0000000000003000 mem=ram name="x"')
    assert pairs_dicts(conv.host_writes(blobs)) == [{"kind": "host-write", "pa": RAM, "size": 0x1000,
                                              "source": "load"}]


def test_maintenance_outside_guest_memory_is_dropped():
    conv = ShimTrace([(RAM, 0x10000)], 1, "kvm")
    out = pairs_dicts(conv.convert(records([ev(1, "dc", el=2, ipa=0x900_0000, pa=0x900_0000, size=4096,
                                   op="civac", rule="kvm.clean-on-translation-fault")]), []))
    assert out == []


def test_written_lines_become_guest_writes():
    """A K_S2_WRITTEN mask of lines 0, 1 and 5 is two guest writes: 128 bytes and 64."""
    conv = ShimTrace([(RAM, 0x100000)], 1, "kvm")
    page = RAM + 0x3000
    out = pairs_dicts(conv.convert(records([
        ev(1, "s2-fault", access="write", ipa=page + 8, extra={"deferred": True}),
        ev(2, "s2-written", el=2, access="write", ipa=page, pa=page, size=4096,
           extra={"lines": 0b100011})]), []))
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
    out = pairs_dicts(conv.convert(records([
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
           extra={"memtype": "normal", "perms": "rx", "observer": True})]), []))
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


# ---------------------------------------------------------------------------------------------
# guest_memory / header_keys

from gdbplugin.capture.record import guest_memory, header_keys, record  # noqa: E402


def test_guest_memory_is_ram_below_the_carve_out_plus_mapped_flash():
    """Guest memory is [ram_base, ram_end) (the guest-visible RAM, the shim's carve-out
    excluded) and each flash window the shim maps; unused rom slots (size 0) are none."""
    h = header(rom=[(0, 0x400_0000), (0x400_0000, 0x400_0000), (0, 0)])
    assert guest_memory(h) == [(RAM, END - RAM), (0, 0x400_0000), (0x400_0000, 0x400_0000)]
    h = SimpleNamespace(ram_base=RAM, ram_end=END)         # a header without flash windows
    assert guest_memory(h) == [(RAM, END - RAM)]


def test_header_keys_policy_is_what_the_shim_ran():
    """fwb without FEAT_S2FWB runs kvm: the start record's policy wins over the one asked
    for; a start record without one falls back to the ring header's effective policy."""
    assert header_keys(header(), start(policy="xen"))["policy"] == "xen"
    no_policy = ev(0, "shim-start", vcpu=None, el=2, extra={"policy": None})
    assert header_keys(header(), no_policy)["policy"] == "kvm"


def test_header_keys_tracking_flags_are_read_separately():
    """PF_TRACK_WRITES and PF_TRACK_ACCESS each say one thing: the trace header's writes and
    accesses say tracked exactly when their own flag was set."""
    w, a = PARAM_FLAGS.ids["track_writes"], PARAM_FLAGS.ids["track_access"]
    other = PARAM_FLAGS.ids["trap_cmo"] | PARAM_FLAGS.ids["blocks"]
    for flags, writes, accesses in ((0, "untracked", "untracked"),
                                    (other, "untracked", "untracked"),
                                    (w, "tracked", "untracked"),
                                    (a, "untracked", "tracked"),
                                    (w | a | other, "tracked", "tracked")):
        keys = header_keys(header(flags=flags), start())
        assert (keys["writes"], keys["accesses"]) == (writes, accesses), flags


def test_header_keys_cpu_keeps_only_registers_read():
    """The CPU's ID registers as the ring header holds them; a register left 0 was not read
    and is left out, and no register at all means no cpu key."""
    keys = header_keys(header(cpu={"ctr_el0": 0x8444c004, "clidr_el1": 0, "midr_el1": 0x410fd083}),
                       start())
    assert keys["cpu"] == {"ctr_el0": 0x8444c004, "midr_el1": 0x410fd083}
    assert "cpu" not in header_keys(header(cpu={"ctr_el0": 0}), start())
    assert "cpu" not in header_keys(SimpleNamespace(flags=0, policy_effective="kvm"), start())
    assert set(header_keys(header(), start())) == {"policy", "writes", "accesses"}


# ---------------------------------------------------------------------------------------------
# Recorder

def test_cpu_model_alone_makes_a_cpu_key():
    """The -cpu name is kept in the header even when the ring read no cache registers."""
    buf = io.StringIO()
    rec = Recorder(buf, header(), 2, cpu_model="max")
    feed(rec, [start()])
    head = json.loads(buf.getvalue().splitlines()[0])
    assert head["cpu"] == {"model": "max"} and head["vcpus"] == 2
    assert rec.header == head
    assert head["writes"] == "untracked" and head["accesses"] == "untracked"
    assert head["source"] == "shim"


def test_no_cpu_model_no_cpu_key():
    """Without a -cpu name and without registers the header has no cpu key."""
    buf = io.StringIO()
    feed(Recorder(buf, header(), 1), [start()])
    assert "cpu" not in json.loads(buf.getvalue().splitlines()[0])


def test_mtree_places_region_blobs_as_host_writes():
    """A blob QEMU put into a memory region (-bios into virt.flash0) is a host load at the
    region's address, given info mtree."""
    buf = io.StringIO()
    rec = Recorder(buf, header(), 1, 'virt.flash0 size=0x1000 name="QEMU_EFI.fd"\n',
                   info_mtree="  0000000000000000-0000000003ffffff (prio 0, romd): virt.flash0\n")
    out = dicts(feed(rec, [start()]))
    assert out == [{"seq": 0, "kind": "host-write", "pa": 0, "size": 0x1000, "source": "load"}]


def test_events_written_get_consecutive_seqs_and_are_counted():
    """Each event written gets the next seq (from 0), feed returns the events with it, and
    written counts every event written, host writes and held events included."""
    buf = io.StringIO()
    rec = Recorder(buf, header(), 1, ROMS)
    out = dicts(feed(rec, [start(), ev(1, "vcpu-start", pc=KERNEL)]))
    out += dicts(feed(rec, [ev(2, "s2-map", ipa=KERNEL, pa=KERNEL, size=4096,
                        extra={"memtype": "normal", "perms": "rw"})]))
    assert rec.written == len(out) == 4                 # 3 loads, vcpu-on; the map is held
    tail = dicts(rec.close())
    assert [e["kind"] for e in tail] == ["s2-map"]
    assert rec.written == 5
    assert [e["seq"] for e in out + tail] == list(range(5))
    assert [json.loads(x)["seq"] for x in buf.getvalue().splitlines()[1:]] == list(range(5))


def test_feed_after_the_start_converts_every_event_of_the_batch():
    """Only the very first record is the start record: later batches are converted whole,
    their first event included."""
    buf = io.StringIO()
    rec = Recorder(buf, header(), 1)
    assert dicts(feed(rec, [start()])) == []
    out = dicts(feed(rec, [ev(1, "vcpu-start", pc=KERNEL), ev(2, "vcpu-start", pc=KERNEL + 4)]))
    assert [(e["kind"], e["pc"]) for e in out] == [("vcpu-on", KERNEL), ("vcpu-on", KERNEL + 4)]
    assert dicts(feed(rec, [])) == []


def test_recorder_names_the_first_record_when_it_is_not_the_start():
    """A ring read from the middle cannot be a trace: the error names the record found."""
    with pytest.raises(RecordError, match=r"starts with 'vcpu-start'"):
        feed(Recorder(io.StringIO(), header(), 1), [ev(1, "vcpu-start")])


def test_close_without_a_start_writes_nothing_and_close_closes_a_path(tmp_path):
    """Closing a recorder that never saw the start writes nothing; closing one that wrote to
    a path leaves a complete, readable trace (file closed)."""
    rec = Recorder(io.StringIO(), header(), 1)
    assert rec.close() is None
    path = tmp_path / "t.jsonl"
    rec = Recorder(path, header(), 1)
    feed(rec, [start(), ev(1, "sysreg-write", reg="SCTLR_EL1", old=0, new=1)])
    rec.close()
    assert rec.writer._f is None
    trace = read_trace(path)
    assert [trace.event_dict(i)["kind"] for i in range(len(trace))] == ["sysreg-write"]


# ---------------------------------------------------------------------------------------------
# record(): a ShimSession driven through a Recorder

class FakeQemu:
    def __init__(self):
        self.asked = []

    def monitor(self, cmd):
        self.asked.append(cmd)
        return {"info roms": ROMS + 'virt.flash1 size=0x1000 name="vars"\n',
                "info mtree -f": "  0000000004000000-0000000007ffffff (prio 0, romd): "
                                 "virt.flash1\n"}[cmd]


class FakeSession:
    """What record() uses of a ShimSession: its QEMU monitor, the ring header, and wait(),
    which hands the ring's batches to ``sink`` and returns why it stopped."""

    def __init__(self, batches, why="match", fail=None):
        self.qemu = FakeQemu()
        self.batches, self.why, self.fail = batches, why, fail
        self.waited = None

    def header(self):
        return header(cpu={"ctr_el0": 0x8444c004}, rom=[(0, 0x400_0000), (0x400_0000, 0x400_0000)])

    def wait(self, until, timeout, sink):
        self.waited = (until, timeout)
        for b in self.batches:
            sink(records(b))
        if self.fail:
            raise self.fail
        return self.why


def test_record_writes_the_whole_run_and_says_why_it_stopped(tmp_path):
    """record() asks QEMU for its loads and memory tree, waits for the marker, writes every
    batch and closes the trace (held events out); it returns why the wait ended."""
    path = tmp_path / "t.jsonl"
    s = FakeSession([boot()[:4], boot()[4:]], why="exit")
    why, rec = record(s, path, "All CPU", 30.0, 1, cpu_model="cortex-a57")
    assert why == "exit" and s.waited == ("All CPU", 30.0)
    assert s.qemu.asked == ["info roms", "info mtree -f"]
    trace = read_trace(path)
    assert trace.header["cpu"] == {"ctr_el0": 0x8444c004, "model": "cortex-a57"}
    kinds = [trace.event_dict(i)["kind"] for i in range(len(trace))]
    assert kinds[-1] == "s2-map" and len(trace) == rec.written
    assert rec.writer._f is None
    # QEMU_EFI.fd was loaded at 0; "vars" went into virt.flash1, placed by the memory tree.
    assert trace.event_dict(0) == {"seq": 0, "kind": "host-write", "pa": 0, "size": 0x200000,
                                   "source": "load"}
    assert trace.event_dict(1) == {"seq": 1, "kind": "host-write", "pa": 0x400_0000,
                                   "size": 0x1000, "source": "load"}


def test_record_closes_the_trace_when_the_wait_fails(tmp_path):
    """A capture that dies keeps what it saw: the trace is closed (held events written)
    before the error propagates."""
    path = tmp_path / "t.jsonl"
    s = FakeSession([[start(), ev(1, "sysreg-write", reg="SCTLR_EL1", old=0, new=1)]],
                    fail=TimeoutError("qemu died"))
    with pytest.raises(TimeoutError):
        record(s, path, None, 1.0, 1)
    trace = read_trace(path)
    assert trace.event_dict(len(trace) - 1)["kind"] == "sysreg-write"


def test_record_without_a_ring_is_an_error(tmp_path):
    """No batch ever came: the shim never started its ring, nothing was written."""
    path = tmp_path / "t.jsonl"
    with pytest.raises(RecordError, match=r"^the shim never started its ring"):
        record(FakeSession([]), path, None, 1.0, 1)
    assert not path.exists()
