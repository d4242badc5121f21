"""The seed thread's points as hand-written traces (tests/scenarios/), replayed under every
policy.  Each expectation is argued from the rule that produces it, not read off the tool."""
from __future__ import annotations

from pathlib import Path

import pytest

from gdbplugin.model.engine import Replay
from gdbplugin.model.trace import read_trace

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
POLICIES = ("none", "rfc2013", "kvm", "xen", "fwb")
RAM_BYTES = 16 << 20
PAGE = 4096


def replay(name):
    trace = read_trace(SCENARIOS / name)
    return Replay(trace.header).run(trace)


def kinds(result, policy, kind):
    return [f for f in result.findings(policy) if f.kind == kind]


def uncovered_under(result, kind):
    return {p for p in POLICIES if kinds(result, p, kind)}


def test_seed1_first_map_uncached():
    """The host wrote the kernel (and zeroed all RAM) through cacheable mappings; the guest
    fetches and reads two pages with its MMU off, i.e. Device-nGnRnE, so it reads RAM under
    possibly dirty lines.  Nothing cleans them under `none`.  rfc2013 cleans a page on a fault
    while the vCPU's caches are off (seed point 1), kvm on every translation fault
    (stage2_map_walker_try_leaf), Xen flushed at allocation and after the builder's copy, and
    FWB makes the access Normal WB so no clean is needed."""
    r = replay("seed1-first-map-uncached.jsonl")
    assert uncovered_under(r, "first-map-uncached") == {"none"}
    (f,) = kinds(r, "none", "first-map-uncached")
    # The two pages are contiguous and were mapped by the same vCPU: one finding.
    assert (f.pa, f.size, f.vcpu, f.seq) == (0x4020_0000, 2 * PAGE, 0, 4)
    assert f.pc == 0x4020_0000 and f.el == 1     # the fault that first mapped the run
    assert set(f.covered_by) == {"rfc2013.clean-first-map-uncached",
                                 "kvm.clean-on-translation-fault",
                                 "xen.builder-flush", "fwb.force-write-back"}
    assert f.observed is None                     # no hypervisor maintenance was traced


def test_seed1_costs_counted_by_hand():
    """kvm cleans exactly the pages first mapped (two 4 KiB faults) and invalidates the
    I-cache once for the exec fault; rfc2013 cleans the same two pages (caches off, every vCPU
    MMU-off) and does no I-side work; Xen flushes all 16 MiB at allocation plus the 64 KiB the
    builder copied, and each of those ends with an I-cache invalidation (flush_page_to_ram with
    sync_icache at allocation, invalidate_icache() at the end of p2m_cache_flush_range): four
    calls, two of them I-side; FWB cleans nothing and keeps KVM's exec-fault I-cache
    invalidation."""
    cost = replay("seed1-first-map-uncached.jsonl").stats["cost"]
    assert cost["none"] == {"bytes_cleaned": 0, "bytes_invalidated": 0, "operations": 0,
                            "vm_flushes": 0, "icache_invalidations": 0}
    assert cost["kvm"] == {"bytes_cleaned": 2 * PAGE, "bytes_invalidated": 2 * PAGE,
                           "operations": 3, "vm_flushes": 0, "icache_invalidations": 1}
    assert cost["rfc2013"] == {"bytes_cleaned": 2 * PAGE, "bytes_invalidated": 2 * PAGE,
                               "operations": 2, "vm_flushes": 0, "icache_invalidations": 0}
    assert cost["xen"] == {"bytes_cleaned": RAM_BYTES + 65536,
                           "bytes_invalidated": RAM_BYTES + 65536, "operations": 4,
                           "vm_flushes": 0, "icache_invalidations": 2}
    assert cost["fwb"]["bytes_cleaned"] == 0 and cost["fwb"]["icache_invalidations"] == 1


def test_seed2_stage1_enable_stale():
    """The guest wrote a mapped page non-cacheably and then set M and C.  A clean line from a
    speculative fill through a cacheable alias may now shadow RAM.  rfc2013 flushes every
    mapped page when stage 1 is enabled (seed point 2); kvm traps SCTLR with TVM from vCPU
    reset and kvm_toggle_cache flushes the VM; Xen arms TVM only after a set/way operation, so
    it leaves this uncovered; with FWB the write was Normal WB and nothing went stale."""
    r = replay("seed2-stage1-enable-stale.jsonl")
    assert uncovered_under(r, "stage1-enable-stale") == {"none", "xen"}
    (f,) = kinds(r, "none", "stage1-enable-stale")
    assert (f.pa, f.size, f.seq, f.sctlr) == (0x4040_0000, PAGE, 6, 0x1005)
    assert set(f.covered_by) == {"rfc2013.flush-on-stage1-enable",
                                 "kvm.flush-on-cache-toggle", "fwb.force-write-back"}
    # RAM was not host-zeroed in this trace and the I-cache was invalidated first.
    assert not uncovered_under(r, "first-map-uncached")
    assert not uncovered_under(r, "icache-not-invalidated")


def test_seed3_caches_off_after_boot_and_set_way():
    """A guest with caches on dirtied a page, flushed by set/way and turned M and C off.
    Set/way reaches only the issuing CPU's caches, so without a trap the dirty lines are not
    at PoC when the guest goes non-cacheable: set-way-op and caches-off-after-boot under `none`
    and rfc2013 (which has no set/way rule).  kvm traps DC CISW (access_dcsw ->
    kvm_set_way_flush flushes the VM and arms TVM, then kvm_toggle_cache flushes again); Xen's
    p2m_set_way_flush and p2m_toggle_cache do the same; FWB makes set/way a NOP and keeps the
    accesses cacheable, so nothing is left behind."""
    r = replay("seed3-caches-off-set-way.jsonl")
    assert uncovered_under(r, "set-way-op") == {"none", "rfc2013"}
    (sw,) = kinds(r, "none", "set-way-op")
    assert sw.seq == 6 and "3 operations in this sweep" in sw.message   # one sweep
    assert set(sw.covered_by) == {"kvm.trap-set-way", "xen.trap-set-way", "fwb.set-way-nop"}
    assert uncovered_under(r, "caches-off-after-boot") == {"none", "rfc2013"}
    (off,) = kinds(r, "none", "caches-off-after-boot")
    assert (off.pa, off.size, off.seq) == (0x4040_0000, PAGE, 9)
    assert "fwb.force-write-back" in off.covered_by
    assert {"kvm.flush-on-cache-toggle", "xen.flush-on-toggle"} <= set(off.covered_by)


def test_seed4_smp_window():
    """vCPU 0 first-maps a page while every vCPU has its MMU off, enables its MMU, and vCPU 1
    (MMU still off) first-maps another page afterwards.  The window report counts one first
    map inside the window and one outside.  rfc2013 stops its clean once any vCPU enabled the
    MMU (seed point 4), so vCPU 1's uncached first map stays uncovered under it; kvm cleans
    every fault, Xen flushed all RAM at allocation, FWB needs nothing."""
    r = replay("seed4-smp-window.jsonl")
    (win,) = kinds(r, "kvm", "smp-mmu-off-window")
    assert r.stats["window"]["first_maps_inside"] == 1
    assert r.stats["window"]["first_maps_outside"] == 1
    assert (r.stats["window"]["start_seq"], r.stats["window"]["end_seq"]) == (1, 6)
    assert "1 pages first mapped inside" in win.message
    maps = {p: [(f.vcpu, f.pa) for f in kinds(r, p, "first-map-uncached")] for p in POLICIES}
    assert maps["none"] == [(0, 0x4040_0000), (1, 0x4080_0000)]
    assert maps["rfc2013"] == [(1, 0x4080_0000)]
    assert maps["kvm"] == maps["xen"] == maps["fwb"] == []
    # Both pages were only read: RAM did not change under any line, so vCPU 0's stage-1
    # enable finds nothing stale in any world (writes are taken from evidence only).
    assert not uncovered_under(r, "stage1-enable-stale")


def test_seed5_icache_not_invalidated():
    """Code loaded by the host, I-cache turned on without IC IALLU.  With no maintenance at
    all (and under rfc2013, which leaves the I-cache to the guest, seed point 5) a fetch may
    hit stale lines.  KVM maps the page non-executable on the data fault (user_mem_abort) and
    invalidates the I-cache when a fetch makes the leaf executable (stage2_attr_walker /
    stage2_map_walker_try_leaf -> icache_inval_pou), so no fetch precedes an invalidation:
    covered, and likewise with FWB.  Xen invalidated the I-cache after the builder's copy
    (p2m_cache_flush_range ends with invalidate_icache()).  The clean twin invalidates first
    and has no such finding anywhere."""
    r = replay("seed5-icache-not-invalidated.jsonl")
    assert uncovered_under(r, "icache-not-invalidated") == {"none", "rfc2013"}
    (f,) = kinds(r, "none", "icache-not-invalidated")
    assert (f.pa, f.size, f.seq) == (0x4020_0000, 16 * PAGE, 5)
    assert set(f.covered_by) == {"kvm.icache-inval-on-exec-fault", "xen.builder-flush"}
    twin = replay("seed5-clean-twin.jsonl")
    assert not uncovered_under(twin, "icache-not-invalidated")


def test_mismatched_alias():
    """The VMM writes 64 bytes cacheably into a page the MMU-off guest reads non-cacheably:
    no flush rule of kvm, rfc2013 or Xen runs on device emulation writes; only FWB, by making
    the guest's access cacheable, removes the mismatch."""
    r = replay("mismatched-alias.jsonl")
    assert uncovered_under(r, "mismatched-alias") == {"none", "rfc2013", "kvm", "xen"}
    (f,) = kinds(r, "kvm", "mismatched-alias")
    assert (f.pa, f.size, f.covered_by) == (0x4040_0000, PAGE, ["fwb.force-write-back"])


@pytest.mark.parametrize("name", sorted(p.name for p in SCENARIOS.glob("*.jsonl")))
def test_replay_is_deterministic(name):
    a, b = replay(name), replay(name)
    for p in POLICIES:
        assert [f.as_dict() for f in a.findings(p)] == [f.as_dict() for f in b.findings(p)]
    assert a.stats == b.stats


def test_shim_rule_ids_are_the_models():
    """The shim reports which rule each maintenance operation carried out; those names must be
    the model's, or a traced run could not be matched against the policies."""
    from gdbplugin.model.policies import POLICIES
    from gdbplugin.shim.ring import RULES
    model = {r for p in POLICIES.values() for r in p.RULES}
    maintenance = {r for r in RULES.values() if r and ".tvm-" not in r and r != "observe"}
    assert maintenance <= model, maintenance - model


def test_icache_invalidated_right_after_the_enable_counts(tmp_path):
    """Linux's set_sctlr_el1 writes SCTLR_EL1 and then does ISB; IC IALLU before fetching
    anything new: an invalidation immediately after the enable covers it, one after any other
    event of that vCPU does not (then only the policies that invalidate on their own cover
    it: kvm and fwb at the fetch's permission fault, Xen after the builder's copy)."""
    lines = (SCENARIOS / "seed5-icache-not-invalidated.jsonl").read_text().splitlines()
    after = lines + ['{"seq": 6, "kind": "ic-inval", "vcpu": 0, "op": "iallu"}']
    late = lines + ['{"seq": 6, "kind": "tlbi", "vcpu": 0, "op": "vmalle1"}',
                    '{"seq": 7, "kind": "ic-inval", "vcpu": 0, "op": "iallu"}']
    for name, body, expect in (("after", after, set()), ("late", late, {"none", "rfc2013"})):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join(body) + "\n")
        trace = read_trace(path)
        r = Replay(trace.header).run(trace)
        assert uncovered_under(r, "icache-not-invalidated") == expect, name
