"""Ring events -> trace events (gdbplugin/capture/shim_trace.py), kind by kind.

Every expectation restates the documented contract: the record fields of gdbplugin/shim/shim.h
and gdbplugin/shim/README.md (what the shim recorded), the trace kinds of
gdbplugin/model/events.py (what the model reads), and the converter's own docstrings (the
shim's maintenance becomes ``hyp-maintenance``, a trapped map or SCTLR write is held until its
vCPU's maintenance has been emitted, QEMU's loads and DMA are host writes, guest memory is RAM
plus the flash windows).  Events are hand-made ``ring.Event`` values, no QEMU.
"""
from __future__ import annotations

from gdbplugin.capture.shim_trace import ShimTrace, loaded_blobs
from gdbplugin.shim.ring import Event
from ring_records import dicts, records

RAM = 0x4000_0000
SIZE = 0x10_0000                 # 1 MiB of RAM in most tests
FLASH = (0, 0x400_0000)
PAGE = 4096
NORMAL, DEVICE = 0xF, 0x1        # stage-2 MemAttr: Normal WB, Device-nGnRE (KVM's)
XN_NONE, XN_ALL = 0, 2           # stage-2 XN[1:0]: executable at EL1 and EL0 / at neither


def ev(kind, vcpu=0, el=1, seq=0, **kw):
    return Event(seq=seq, kind=kind, vcpu=vcpu, el=el, **kw)


def conv(ram=((RAM, SIZE),), vcpus=1, policy="kvm", **header):
    return ShimTrace(list(ram), vcpus, policy, **header)


def run(events, c=None):
    c = c or conv()
    return convert(c, events) + dicts(c.finish())


def convert(c, events):
    """``events`` as the shim's records through ``c``, as trace-event dicts."""
    return dicts(c.convert(records(events), []))


def one(event, c=None):
    out = run([event], c)
    assert len(out) == 1, out
    return out[0]


# ---------------------------------------------------------------------------------------------
# info roms / info mtree

def test_loaded_blobs_are_sorted_by_address():
    """The recorder writes host loads in address order whatever order QEMU lists them in."""
    roms = ('addr=0000000048000000 size=0x0000000000001000 mem=ram name="dtb"\n'
            'addr=0000000040400000 size=0x0000000000200000 mem=ram name="Image"\n'
            'addr=0000000000000000 size=0x0000000000100000 mem=rom name="bios"\n')
    assert loaded_blobs(roms) == [(0, 0x10_0000, "bios"), (0x4040_0000, 0x20_0000, "Image"),
                                  (0x4800_0000, 0x1000, "dtb")]


def test_region_blob_without_its_region_in_the_tree_is_left_out():
    """A blob loaded into a region the memory tree does not list cannot be placed: it is
    dropped rather than put at a wrong address."""
    roms = 'virt.flash1 size=0x1000 name="vars"\n'
    mtree = '  0000000000000000-0000000003ffffff (prio 0, romd): virt.flash0\n'
    assert loaded_blobs(roms, mtree) == []
    mtree += '  0000000004000000-0000000007ffffff (prio 0, romd): virt.flash1\n'
    assert loaded_blobs(roms, mtree) == [(0x400_0000, 0x1000, "vars")]


# ---------------------------------------------------------------------------------------------
# The header

def test_header_says_guest_memory_vcpus_policy_and_source():
    """The trace header is what replay checks every event against: guest memory (sorted
    ranges), the vCPU count, the policy the shim ran, that the trace comes from the shim,
    which traps set/way (TSW), and any extra keys the recorder passes on."""
    c = ShimTrace([(RAM, SIZE), FLASH], 2, "xen", writes="tracked", cpu={"model": "a72"})
    assert c.ram == [FLASH, (RAM, SIZE)]
    want = {"ram": [[0, 0x400_0000], [RAM, SIZE]], "vcpus": 2, "policy": "xen",
            "source": "shim", "traps_set_way": True, "writes": "tracked",
            "cpu": {"model": "a72"}}
    assert {k: c.header.get(k) for k in want} == want


# ---------------------------------------------------------------------------------------------
# Host writes (QEMU's loads)

def test_host_writes_are_clipped_to_each_memory_range():
    """A blob is a host write only where it lands in guest memory: one that spans flash, a
    hole and RAM becomes one host write per range it touches, none for the hole."""
    c = conv(ram=[(RAM, 0x2000), (0x1000, 0x1000)])
    out = dicts(c.host_writes([(0x1800, RAM + 0x800 - 0x1800, "x")]))
    assert out == [{"kind": "host-write", "pa": 0x1800, "size": 0x800, "source": "load"},
                   {"kind": "host-write", "pa": RAM, "size": 0x800, "source": "load"}]


def test_host_write_blob_inside_ram_and_blobs_touching_its_edges():
    """A blob inside RAM is written whole; blobs that end where RAM begins or begin where it
    ends hold no guest byte and write nothing."""
    c = conv(ram=[(RAM, 0x2000)])
    blobs = [(RAM - 0x1000, 0x1000, "below"), (RAM + 0x100, 0x200, "in"),
             (RAM + 0x2000, 0x1000, "above")]
    assert dicts(c.host_writes(blobs)) == [
        {"kind": "host-write", "pa": RAM + 0x100, "size": 0x200, "source": "load"}]


# ---------------------------------------------------------------------------------------------
# Guest events, one by one

def test_vcpu_start_is_vcpu_on_at_its_entry_pc():
    """K_VCPU_START: the vCPU starts at pc."""
    assert one(ev("vcpu-start", vcpu=1, pc=0x4008_0000), conv(vcpus=2)) == {
        "kind": "vcpu-on", "vcpu": 1, "pc": 0x4008_0000}


def test_stage2_fault_keeps_access_syndrome_pc_and_el():
    """An s2-fault carries what the shim trapped: ipa, the access (read/write/exec), ESR_EL2,
    the guest PC and EL; a fault the shim could not classify (access none) is a read."""
    assert one(ev("s2-fault", el=0, pc=0x1234, access="exec", ipa=RAM, esr=0x8200_0006)) == {
        "kind": "s2-fault", "vcpu": 0, "ipa": RAM, "access": "exec", "esr": 0x8200_0006,
        "pc": 0x1234, "el": 0}
    assert one(ev("s2-fault", ipa=RAM + 8, access=None, extra={"deferred": False})) == {
        "kind": "s2-fault", "vcpu": 0, "ipa": RAM + 8, "access": "read", "esr": 0, "pc": 0,
        "el": 1}


def test_deferred_fault_is_flagged():
    """FAULT_DEFERRED: the lines changed come later as s2-written, so the model must not take
    the fault itself as write evidence (events.py: deferred 1)."""
    out = one(ev("s2-fault", ipa=RAM, access="write", extra={"deferred": True}))
    assert out["deferred"] == 1


def test_fetch_fault_is_a_fetch_event():
    """FAULT_FETCH: a fetch from a page written since it was last fetchable; FAULT_FETCH_OK
    becomes ok 1 and the two instruction words become old/new (events.py fetch)."""
    out = one(ev("s2-fault", pc=RAM + 0x40, el=0, access="exec", ipa=RAM + 0x40,
                 extra={"fetch": True, "fetch_ok": True, "insn_old": 0xD503201F,
                        "insn_new": 0x14000001}))
    assert out == {"kind": "fetch", "vcpu": 0, "ipa": RAM + 0x40, "pc": RAM + 0x40, "el": 0,
                   "ok": 1, "old": 0xD503201F, "new": 0x14000001}
    out = one(ev("s2-fault", access="exec", ipa=RAM, extra={"fetch": True, "fetch_ok": False}))
    assert out == {"kind": "fetch", "vcpu": 0, "ipa": RAM, "pc": 0, "el": 1}


def test_first_access_after_caches_off():
    """K_S2_ACCESS: the vCPU's first access to a page after a caches-off, with its access
    (a read when the shim recorded none), PC and EL."""
    assert one(ev("s2-access", pc=0x88, access="write", ipa=RAM + PAGE)) == {
        "kind": "s2-access", "vcpu": 0, "ipa": RAM + PAGE, "access": "write", "pc": 0x88,
        "el": 1}
    assert one(ev("s2-access", ipa=RAM, access=None))["access"] == "read"


def test_set_way_and_tlbi():
    """Set/way operations and TLB invalidations pass through with the vCPU and op."""
    assert one(ev("set-way", op="cisw", pc=0x10, extra={"count": 3})) == {
        "kind": "set-way", "vcpu": 0, "op": "cisw", "pc": 0x10, "el": 1}
    assert one(ev("tlbi", el=2, op="ipas2e1+vmalle1", ipa=RAM)) == {
        "kind": "tlbi", "vcpu": 0, "op": "ipas2e1+vmalle1"}


def test_records_with_no_trace_meaning_are_dropped():
    """The shim's own bookkeeping (start, TVM arming, SMC/HVC, diagnostics, PSCI, write
    protection, hiding) is no guest event: nothing is written for it."""
    events = [ev("shim-start", vcpu=None, el=2), ev("tvm", op="arm"), ev("smc", op="psci"),
              ev("hvc", op="psci"), ev("diag", op="unknown-trap"),
              ev("psci-cpu-on", extra={"target": 1}), ev("s2-wrprotect", ipa=RAM, size=PAGE),
              ev("s2-hide", op="hide")]
    assert run(events) == []


# ---------------------------------------------------------------------------------------------
# Maps and permission changes

def test_map_attributes_by_memory_type_and_permissions():
    """K_S2_MAP op: normal and rom (flash, KVM's read-only memslot) are Normal memory,
    device is Device-nGnRE; PERM_X makes the leaf executable (XN 0), else XN at every EL.
    The map names the faulting vCPU so the model knows whose fault it answers."""
    cases = [("normal", "rwx", NORMAL, XN_NONE), ("rom", "rx", NORMAL, XN_NONE),
             ("device", "rw", DEVICE, XN_ALL), ("normal", "rw", NORMAL, XN_ALL)]
    for memtype, perms, attr, xn in cases:
        out = one(ev("s2-map", vcpu=1, ipa=RAM, pa=RAM + PAGE, size=PAGE,
                     extra={"memtype": memtype, "perms": perms}), conv(vcpus=2))
        assert out == {"kind": "s2-map", "ipa": RAM, "pa": RAM + PAGE, "size": PAGE,
                       "memattr": attr, "xn": xn, "vcpu": 1}, memtype


def test_map_without_memtype_is_normal_and_unknown_memtype_is_device():
    """A map record with no memory type is RAM (Normal); one whose type the decoder did not
    know (ring.py keeps it as a number) is treated as device, never as cacheable memory;
    no perms means no X."""
    out = one(ev("s2-map", ipa=RAM, pa=RAM, size=PAGE))
    assert (out["memattr"], out["xn"]) == (NORMAL, XN_ALL)
    out = one(ev("s2-map", ipa=RAM, pa=RAM, size=PAGE, extra={"memtype": "7", "perms": "x"}))
    assert (out["memattr"], out["xn"]) == (DEVICE, XN_NONE)


def test_perm_relaxation_is_an_attribute_change():
    """K_S2_PERM (not observer-only) changes the leaf's permissions: an s2-attr over the leaf
    with the memory type's attribute and XN from PERM_X."""
    assert one(ev("s2-perm", ipa=RAM, pa=RAM, size=PAGE, access="exec",
                  extra={"memtype": "normal", "perms": "rx", "observer": False})) == {
        "kind": "s2-attr", "ipa": RAM, "size": PAGE, "memattr": NORMAL, "xn": XN_NONE}
    assert one(ev("s2-perm", ipa=RAM, pa=RAM, size=PAGE, access="read",
                  extra={"memtype": "device", "perms": "r"})) == {
        "kind": "s2-attr", "ipa": RAM, "size": PAGE, "memattr": DEVICE, "xn": XN_ALL}
    out = one(ev("s2-perm", ipa=RAM, pa=RAM, size=PAGE, access="read", extra={}))
    assert (out["memattr"], out["xn"]) == (NORMAL, XN_ALL)
    # a memory type the decoder did not know is device, never cacheable memory
    out = one(ev("s2-perm", ipa=RAM, pa=RAM, size=PAGE, access="exec",
                 extra={"memtype": "7", "perms": "rx"}))
    assert (out["memattr"], out["xn"]) == (DEVICE, XN_NONE)


def test_observer_only_perm_change_is_invisible():
    """PERM_OBSERVER: write-xor-execute gave X back; the policy's view is as before and the
    policy did nothing, so the trace gets nothing (not even block write evidence)."""
    assert run([ev("s2-perm", ipa=RAM, pa=RAM, size=0x20_0000, access="write",
                   extra={"memtype": "normal", "perms": "rwx", "observer": True})],
               conv(ram=[(RAM, 0x40_0000)])) == []


# ---------------------------------------------------------------------------------------------
# Block-mode write evidence

BLOCK = 0x20_0000


def test_write_granted_on_a_block_is_write_evidence_for_the_whole_block():
    """2 MiB block mode: a write grant (s2-map or s2-perm with access write and PERM_W) is
    evidence for the whole block (shim README), a guest-access write of the leaf."""
    c = conv(ram=[(RAM, 2 * BLOCK)])
    out = run([ev("s2-map", vcpu=0, access="write", ipa=RAM, pa=RAM, size=BLOCK,
                  extra={"memtype": "normal", "perms": "rw"})], c)
    assert out[1:] == [{"kind": "guest-access", "vcpu": 0, "pa": RAM, "size": BLOCK,
                        "access": "write"}]
    out = run([ev("s2-perm", access="write", ipa=RAM + BLOCK, pa=RAM + BLOCK, size=BLOCK,
                  extra={"memtype": "normal", "perms": "rw"})], c)
    assert [e["kind"] for e in out] == ["s2-attr", "guest-access"]
    assert (out[1]["pa"], out[1]["size"]) == (RAM + BLOCK, BLOCK)


def test_no_block_write_evidence_for_pages_reads_or_read_only_grants():
    """Only a write grant on a leaf larger than a page is block evidence: a page's write is
    the fault's own evidence, a read fault or a grant without W is no write at all, and a
    block outside guest memory is not guest RAM."""
    c = conv(ram=[(RAM, 2 * BLOCK)])
    for access, perms, pa, size in (("write", "rw", RAM, PAGE),
                                    ("read", "rw", RAM, BLOCK),
                                    ("write", "r", RAM, BLOCK),
                                    ("write", "rw", RAM + 2 * BLOCK, BLOCK),
                                    ("write", "rw", RAM + BLOCK, 2 * BLOCK)):
        out = run([ev("s2-map", access=access, ipa=pa, pa=pa, size=size,
                      extra={"memtype": "normal", "perms": perms})], c)
        assert [e["kind"] for e in out] == ["s2-map"], (access, perms, pa, size)
    out = run([ev("s2-map", access="write", ipa=RAM, pa=RAM, size=2 * PAGE,
                  extra={"memtype": "normal", "perms": "rw"})], c)
    assert [e["kind"] for e in out] == ["s2-map", "guest-access"]   # two pages: larger


def test_block_write_evidence_needs_perms():
    """A perm record without perms grants nothing: no write evidence."""
    c = conv(ram=[(RAM, 2 * BLOCK)])
    out = run([ev("s2-perm", access="write", ipa=RAM, pa=RAM, size=BLOCK,
                  extra={"memtype": "normal"})], c)
    assert [e["kind"] for e in out] == ["s2-attr"]


# ---------------------------------------------------------------------------------------------
# Holding trapped events until their maintenance is out

def test_map_is_held_until_its_vcpus_maintenance_is_emitted():
    """The shim records a fault's map before the maintenance done for it, but the guest runs
    on only after both: the map comes out after the maintenance, released by the vCPU's next
    record that is not maintenance."""
    c = conv()
    out = convert(c, [ev("s2-map", ipa=RAM, pa=RAM, size=PAGE,
                             extra={"memtype": "normal", "perms": "rwx"}),
                          ev("dc", el=2, pa=RAM, size=PAGE, rule="kvm.clean-on-translation-fault")])
    assert [e["kind"] for e in out] == ["hyp-maintenance"]
    out = convert(c, [ev("vcpu-start")])
    assert [e["kind"] for e in out] == ["s2-map", "vcpu-on"]
    assert dicts(c.finish()) == []


def test_sysreg_write_is_held_and_keeps_its_fields():
    """An SCTLR_EL1 write (trapped by TVM) comes out after the VM flush it caused, with the
    register, the old and new values, PC and EL."""
    c = conv()
    out = run([ev("s2-map", ipa=RAM, pa=RAM, size=PAGE, extra={"perms": "rw"}),
               ev("sysreg-write", pc=0x40, reg="SCTLR_EL1", old=0x30d00980, new=0x30d0198d,
                  esr=0x1234),
               ev("flush-vm", el=2, size=PAGE, rule="kvm.flush-on-cache-toggle")], c)
    assert out[0]["kind"] == "s2-map"
    assert out[1:] == [{"kind": "hyp-maintenance", "op": "clean-inval", "pa": RAM, "size": PAGE,
                    "reason": "kvm.flush-on-cache-toggle"},
                   {"kind": "sysreg-write", "vcpu": 0, "reg": "SCTLR_EL1", "old": 0x30d00980,
                    "new": 0x30d0198d, "pc": 0x40, "el": 1}]


def test_other_vcpus_records_do_not_release_a_held_event():
    """Only the trapping vCPU's own next record releases its event; another vCPU's records
    (and records of no vCPU) go first, and finish() releases what is left, by vCPU."""
    c = conv(vcpus=3)
    m2 = ev("s2-map", vcpu=2, ipa=RAM, pa=RAM, size=PAGE, extra={"perms": "rw"})
    m1 = ev("s2-map", vcpu=1, ipa=RAM + PAGE, pa=RAM + PAGE, size=PAGE, extra={"perms": "rw"})
    out = convert(c, [m2, m1, ev("vcpu-start", vcpu=0), ev("shim-start", vcpu=None, el=2)])
    assert out == [{"kind": "vcpu-on", "vcpu": 0, "pc": 0}]
    rest = dicts(c.finish())
    assert [(e["kind"], e["vcpu"]) for e in rest] == [("s2-map", 1), ("s2-map", 2)]
    assert dicts(c.finish()) == []                  # released once


def test_vcpu_zero_releases_its_held_event():
    """vCPU 0 is a vCPU like any other (0 is not 'no vCPU'): its next record releases its
    held map before that record's own event."""
    c = conv()
    out = convert(c, [ev("s2-map", vcpu=0, ipa=RAM, pa=RAM, size=PAGE, extra={}),
                          ev("s2-fault", vcpu=0, ipa=RAM + PAGE, access="read")])
    assert [e["kind"] for e in out] == ["s2-map", "s2-fault"]


def test_a_new_trap_releases_the_previous_one_first():
    """Two trapped events of one vCPU in a row: the first is released when the second
    arrives, so both come out, in order."""
    c = conv()
    out = run([ev("sysreg-write", reg="SCTLR_EL1", old=0, new=1),
               ev("sysreg-write", reg="SCTLR_EL1", old=1, new=5)], c)
    assert [(e["kind"], e["new"]) for e in out] == [("sysreg-write", 1), ("sysreg-write", 5)]


def test_block_write_is_held_with_its_map():
    """The whole-block write evidence belongs to the map: it is held and released with it,
    after the maintenance."""
    c = conv(ram=[(RAM, 2 * BLOCK)])
    out = run([ev("s2-map", access="write", ipa=RAM, pa=RAM, size=BLOCK,
                  extra={"memtype": "normal", "perms": "rw"}),
               ev("dc", el=2, pa=RAM, size=BLOCK, rule="kvm.clean-on-translation-fault")], c)
    assert [e["kind"] for e in out] == ["hyp-maintenance", "s2-map", "guest-access"]


# ---------------------------------------------------------------------------------------------
# The shim's maintenance

def test_dc_is_a_clean_invalidate_by_the_rule():
    """K_DC: DC CIVAC over [pa, pa+size) by the vCPU it was done for, reason = the rule id."""
    assert one(ev("dc", vcpu=0, el=2, ipa=RAM, pa=RAM + PAGE, size=PAGE, op="civac",
                  rule="kvm.clean-on-translation-fault")) == {
        "kind": "hyp-maintenance", "op": "clean-inval", "pa": RAM + PAGE, "size": PAGE,
        "vcpu": 0, "reason": "kvm.clean-on-translation-fault"}


def test_maintenance_without_a_rule_is_the_shims_own():
    """R_NONE: maintenance the shim did on its own (no policy rule) is reason 'shim'."""
    assert one(ev("dc", el=2, pa=RAM, size=64, op="civac"))["reason"] == "shim"


def test_ic_ivau_is_an_icache_invalidate_of_its_range():
    """K_IC IC_IVAU with a size: I-cache invalidate of that range."""
    assert one(ev("ic", el=2, pa=RAM, size=PAGE, op="ivau",
                  rule="kvm.icache-inval-on-exec-fault")) == {
        "kind": "hyp-maintenance", "op": "icache-inval", "pa": RAM, "size": PAGE, "vcpu": 0,
        "reason": "kvm.icache-inval-on-exec-fault"}


def test_ic_ialluis_or_sizeless_ivau_invalidates_all_guest_memory():
    """IC IALLUIS (or an IVAU that names no range) invalidates the whole I-cache: one
    icache-inval per guest memory range."""
    c = conv(ram=[(RAM, SIZE), FLASH])
    whole = [{"kind": "hyp-maintenance", "op": "icache-inval", "pa": 0, "size": 0x400_0000,
              "reason": "kvm.icache-inval-on-exec-fault"},
             {"kind": "hyp-maintenance", "op": "icache-inval", "pa": RAM, "size": SIZE,
              "reason": "kvm.icache-inval-on-exec-fault"}]
    assert run([ev("ic", el=2, op="ialluis", pa=RAM, size=PAGE,
                   rule="kvm.icache-inval-on-exec-fault")], c) == whole
    assert run([ev("ic", el=2, op="ivau", pa=RAM, size=0,
                   rule="kvm.icache-inval-on-exec-fault")], c) == whole


def test_maintenance_must_lie_in_guest_memory():
    """hyp-maintenance is a RAM kind: a range outside guest memory, straddling its end, or
    with no PA is dropped; one ending exactly at the end is kept."""
    c = conv(ram=[(RAM, 0x2000)])
    assert run([ev("dc", el=2, pa=RAM + 0x1000, size=0x2000, rule="kvm.flush-on-cache-toggle")], c) == []
    assert run([ev("dc", el=2, pa=None, size=0x1000, rule="kvm.flush-on-cache-toggle")], c) == []
    assert run([ev("ic", el=2, op="ivau", pa=RAM - 64, size=128, rule="kvm.flush-on-cache-toggle")], c) == []
    out = run([ev("dc", el=2, pa=RAM + 0x1000, size=0x1000, rule="kvm.flush-on-cache-toggle")], c)
    assert [(e["pa"], e["size"]) for e in out] == [(RAM + 0x1000, 0x1000)]
    out = run([ev("dc", el=2, pa=RAM, size=0x2000, rule="kvm.flush-on-cache-toggle")], c)
    assert [(e["pa"], e["size"]) for e in out] == [(RAM, 0x2000)]


def test_flush_vm_cleans_every_page_mapped_normal_as_runs():
    """K_FLUSH_VM: the policy flushed the VM; what that cleaned is every RAM page mapped
    Normal so far, as runs of contiguous pages (a block map counts all its pages); device
    maps are not cached memory and are not included."""
    c = conv(ram=[(RAM, 0x40_0000)])
    maps = [ev("s2-map", ipa=RAM + 0x3000, pa=RAM + 0x3000, size=PAGE,
               extra={"memtype": "normal", "perms": "rw"}),
            ev("s2-map", ipa=RAM, pa=RAM, size=2 * PAGE,
               extra={"memtype": "normal", "perms": "rw"}),
            ev("s2-map", ipa=RAM + 0x2000, pa=RAM + 0x2000, size=PAGE,
               extra={"memtype": "device", "perms": "rw"}),
            ev("s2-map", ipa=RAM + 0x10_0000, pa=RAM + 0x10_0000, size=0x4000,
               extra={"perms": "rw"})]
    out = [e for e in run(maps + [ev("flush-vm", el=2, size=0x7000,
                                     rule="kvm.flush-on-cache-toggle")], c)
           if e["kind"] == "hyp-maintenance"]
    assert out == [
        {"kind": "hyp-maintenance", "op": "clean-inval", "pa": RAM, "size": 2 * PAGE,
         "reason": "kvm.flush-on-cache-toggle"},
        {"kind": "hyp-maintenance", "op": "clean-inval", "pa": RAM + 0x3000, "size": PAGE,
         "reason": "kvm.flush-on-cache-toggle"},
        {"kind": "hyp-maintenance", "op": "clean-inval", "pa": RAM + 0x10_0000,
         "size": 0x4000, "reason": "kvm.flush-on-cache-toggle"}]


def test_flush_vm_before_any_map_cleans_nothing():
    """A VM flush before anything was mapped Normal has nothing to clean."""
    assert run([ev("flush-vm", el=2, size=0, rule="xen.flush-on-toggle")]) == []


def test_maintenance_does_not_release_a_held_event():
    """Maintenance records are what a held event waits for: they must come out before it,
    whichever vCPU they name."""
    c = conv()
    out = convert(c, [ev("s2-map", vcpu=0, ipa=RAM, pa=RAM, size=PAGE, extra={}),
                          ev("sysreg-write", reg="SCTLR_EL1", old=0, new=1),
                          ev("dc", el=2, pa=RAM, size=64, rule="kvm.flush-on-cache-toggle"),
                          ev("ic", el=2, op="ivau", pa=RAM, size=64, rule="kvm.flush-on-cache-toggle"),
                          ev("flush-vm", el=2, size=PAGE, rule="kvm.flush-on-cache-toggle")])
    assert [e["kind"] for e in out] == ["s2-map"] + ["hyp-maintenance"] * 3
    assert [e["kind"] for e in dicts(c.finish())] == ["sysreg-write"]


# ---------------------------------------------------------------------------------------------
# Host DMA

def test_fw_cfg_dma_into_ram_is_a_device_host_write():
    """K_HOST_DMA: QEMU's fw_cfg DMA wrote [pa, pa+size) of guest RAM: a host write from a
    device; DMA that is not wholly inside guest memory is not."""
    c = conv(ram=[(RAM, 0x4000)])
    assert run([ev("host-dma", pc=0x1000, ipa=RAM, pa=RAM + 0x1000, size=0x3000,
                   op="fw-cfg-dma")], c) == [
        {"kind": "host-write", "pa": RAM + 0x1000, "size": 0x3000, "source": "device"}]
    assert run([ev("host-dma", pa=RAM + 0x1000, size=0x4000, op="fw-cfg-dma")], c) == []
    assert run([ev("host-dma", pa=RAM, size=0, op="fw-cfg-dma")], c) == []


# ---------------------------------------------------------------------------------------------
# Deferred writes: the lines changed

def test_written_lines_are_runs_of_64_byte_lines():
    """K_S2_WRITTEN: va is a mask of the page's 64-byte lines that changed; each run of set
    bits is one guest write of those lines, by the epoch's vCPU and with the writer's PC.
    Line 63 (the mask's top bit) is the page's last line."""
    page = RAM + 0x3000
    mask = 1 | (0b111 << 3) | (1 << 62) | (1 << 63)
    out = run([ev("s2-written", el=2, pc=0x80, access="write", ipa=page,
                                pa=page, size=PAGE, extra={"lines": mask})])
    assert out == [
        {"kind": "guest-access", "vcpu": 0, "pa": page, "size": 64, "access": "write",
         "pc": 0x80},
        {"kind": "guest-access", "vcpu": 0, "pa": page + 3 * 64, "size": 3 * 64,
         "access": "write", "pc": 0x80},
        {"kind": "guest-access", "vcpu": 0, "pa": page + 62 * 64, "size": 128,
         "access": "write", "pc": 0x80}]
    assert out[-1]["pa"] + out[-1]["size"] == page + PAGE


def test_written_whole_page_and_no_lines():
    """All 64 lines changed: one write of the whole page.  No line changed (or no mask):
    nothing was written."""
    page = RAM
    out = run([ev("s2-written", el=2, pa=page, size=PAGE, extra={"lines": (1 << 64) - 1})])
    assert out == [{"kind": "guest-access", "vcpu": 0, "pa": page, "size": PAGE,
                    "access": "write", "pc": 0}]
    assert run([ev("s2-written", el=2, pa=page, size=PAGE, extra={"lines": 0})]) == []
    assert run([ev("s2-written", el=2, pa=page, size=PAGE)]) == []


def test_written_lines_outside_guest_memory_are_dropped():
    """Written lines of a page that is not guest memory are not guest RAM writes."""
    c = conv(ram=[(RAM, PAGE)])
    out = run([ev("s2-written", el=2, pa=RAM + PAGE, size=PAGE, extra={"lines": 0b11})], c)
    assert out == []
    # A run that reaches past the end of guest memory is dropped, one inside it kept.
    out = run([ev("s2-written", el=2, pa=RAM + PAGE - 128, size=PAGE,
                  extra={"lines": 0b1 | 0b1100})], c)
    assert [(e["pa"], e["size"]) for e in out] == [(RAM + PAGE - 128, 64)]


# ---------------------------------------------------------------------------------------------
# The guest's own cache maintenance (trap_cmo)

def test_guest_dc_by_va_is_a_cmo_va():
    """K_GUEST_CMO dc-*: the guest's DC by VA, performed on [pa, pa+size); the trace op is the
    DC operation's name (civac, cvac, ivac, cvau, cvap)."""
    for op, name in (("dc-civac", "civac"), ("dc-cvac", "cvac"), ("dc-ivac", "ivac"),
                     ("dc-cvau", "cvau"), ("dc-cvap", "cvap")):
        assert one(ev("guest-cmo", el=0, pc=0x44, op=op, va=0xffff_0000_0000_1000, ipa=RAM,
                      pa=RAM, size=128, extra={"translated": True})) == {
            "kind": "cmo-va", "vcpu": 0, "op": name, "pa": RAM, "size": 128,
            "va": 0xffff_0000_0000_1000, "pc": 0x44, "el": 0}, op


def test_guest_dc_not_performed_or_outside_memory_is_dropped():
    """CMO_NO_IPA: the VA did not translate, nothing was performed (no PA): no event; nor
    for a range outside guest memory."""
    assert run([ev("guest-cmo", op="dc-civac", va=0x1000, size=64,
                   extra={"translated": False})]) == []
    assert run([ev("guest-cmo", op="dc-cvac", va=0x1000, pa=0x1000, size=64)]) == []


def test_guest_ic_ops():
    """IC IVAU names a range (kept when it is in guest memory); IC IALLU/IALLUIS name none.
    All become ic-inval with the IC operation's name."""
    assert one(ev("guest-cmo", pc=0x8, op="ic-ivau", va=0x9000, ipa=RAM, pa=RAM + 64,
                  size=64)) == {"kind": "ic-inval", "vcpu": 0, "op": "ivau", "pc": 0x8,
                                "pa": RAM + 64, "size": 64}
    assert one(ev("guest-cmo", op="ic-ivau", va=0x9000, size=64)) == {
        "kind": "ic-inval", "vcpu": 0, "op": "ivau", "pc": 0}
    assert one(ev("guest-cmo", op="ic-ivau", pa=0x1000, size=64)) == {
        "kind": "ic-inval", "vcpu": 0, "op": "ivau", "pc": 0}
    assert one(ev("guest-cmo", pc=0x8, op="ic-iallu")) == {
        "kind": "ic-inval", "vcpu": 0, "op": "iallu", "pc": 0x8}
    assert one(ev("guest-cmo", op="ic-ialluis")) == {
        "kind": "ic-inval", "vcpu": 0, "op": "ialluis", "pc": 0}


def test_unknown_guest_cmo_op_is_dropped():
    """An op the decoder did not know (kept as its number) is no DC/IC the model knows."""
    assert run([ev("guest-cmo", op="9", pa=RAM, size=64)]) == []


def test_written_lines_at_the_end_of_guest_memory():
    """The in-memory check is on each run's own bytes: the page's last two lines, when guest
    memory ends with the page, are kept; when guest memory ends one line earlier, the run
    reaches past it and is dropped."""
    lines = (1 << 62) | (1 << 63)
    out = run([ev("s2-written", el=2, pa=RAM, size=PAGE, extra={"lines": lines})],
              conv(ram=[(RAM, PAGE)]))
    assert [(e["pa"], e["size"]) for e in out] == [(RAM + 62 * 64, 128)]
    out = run([ev("s2-written", el=2, pa=RAM, size=PAGE, extra={"lines": lines})],
              conv(ram=[(RAM, 63 * 64)]))
    assert out == []


# ---------------------------------------------------------------------------------------------
# Codes a record may hold that no name stands for (raw records: the test helper speaks names)

def raw(kind, vcpu=0, access=0, op=0, flags=0, pc=0x40, esr=0, ipa=RAM, pa=RAM, size=PAGE,
        va=0, seq=1):
    """One record's unpacked fields (shim.h struct record, RECORD_FORMAT order)."""
    from gdbplugin.shim.abi import KINDS
    return (seq, KINDS.ids[kind], vcpu, 1, access, op, flags, pc, esr, ipa, pa, size, va)


def test_codes_without_a_name_keep_their_number_or_their_default():
    """An access code beyond none/read/write/exec is a read (as access none is); a register
    number beyond the TVM list is kept as its number (an 'other' register, in the extras);
    a rule number without a name is the maintenance's reason as its number; a guest CMO op
    without a name is dropped and the records after it are still converted."""
    c = conv()
    out = dicts(c.convert([raw("s2-fault", access=7), raw("s2-access", access=9, seq=2),
                           raw("guest-cmo", op=99, seq=3),
                           raw("dc", flags=99, seq=4),
                           raw("sysreg-write", op=77, ipa=1, pa=2, seq=5),
                           raw("tlbi", seq=6)], []))
    assert [(e["kind"], e.get("access")) for e in out[:2]] == [("s2-fault", "read"),
                                                               ("s2-access", "read")]
    assert (out[2]["kind"], out[2]["reason"]) == ("hyp-maintenance", "99")
    assert out[3] == {"kind": "sysreg-write", "vcpu": 0, "reg": "77", "old": 1, "new": 2,
                      "pc": 0x40, "el": 1}
    assert [e["kind"] for e in out] == ["s2-fault", "s2-access", "hyp-maintenance",
                                        "sysreg-write", "tlbi"]


def test_a_set_way_op_without_a_name_is_refused():
    """The trace's set-way op is an enum: a number the shim never writes is an error (one
    line naming the field), not an event the model would misread."""
    import pytest
    from gdbplugin.model.trace import TraceError
    with pytest.raises(TraceError, match='set-way: field "op" cannot be "5"'):
        conv().convert([raw("set-way", op=5)], [])


def test_records_of_no_vcpu_wait_for_nothing():
    """A map the shim made for no vCPU (vcpu 0xFF) is released at once, and the events
    before it are kept; its maintenance names no vCPU."""
    c = conv()
    out = dicts(c.convert([raw("vcpu-start", seq=1),
                           raw("s2-map", vcpu=0xFF, flags=3, seq=2),
                           raw("dc", vcpu=0xFF, flags=1, seq=3)], []))
    assert [e["kind"] for e in out] == ["vcpu-on", "s2-map", "hyp-maintenance"]
    assert "vcpu" not in out[1] and "vcpu" not in out[2]
    assert dicts(c.finish()) == []
