"""Properties of the model over random traces (hypothesis): deterministic, the vectorized
replay equals the event-by-event one, record -> replay is exact, a full flush leaves nothing
to find, and the shadow cache's range operations match a naive line-by-line model."""
from __future__ import annotations

import io
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gdbplugin.model.cache import RamMap, ShadowCache
from gdbplugin.model.engine import Replay
from gdbplugin.model.hazards import INFO_KINDS
from gdbplugin.model.trace import TraceWriter, read_trace
from oracle import LoneWrites               # tests/unit/oracle.py

BASE, SIZE, PAGES = 0x4000_0000, 64 * 4096, 64
# S2CACHE_PROP_EXAMPLES: more random traces for a longer search (an engine change).
SETTINGS = settings(max_examples=int(os.environ.get("S2CACHE_PROP_EXAMPLES", 150)),
                    deadline=None, suppress_health_check=list(HealthCheck))
SCTLR_VALUES = [0, 0x1000, 0x1005, 0x5, 0x1001]


def _page(draw):
    return BASE + draw(st.integers(0, PAGES - 1)) * 4096


@st.composite
def event(draw, vcpus):
    v = draw(st.integers(0, vcpus - 1))
    kind = draw(st.sampled_from(["fault-map"] * 6 + [
        "sysreg", "context", "cmo", "cmo", "guest-write", "host-write", "set-way", "ic", "ivau", "ivau",
        "hyp", "unmap", "vcpu-on", "perm-fault", "perm-fault", "attr", "attr"]))
    if kind == "fault-map":
        pa = _page(draw)
        ipa = draw(st.sampled_from([pa, pa ^ 0x1000_0000]))
        access = draw(st.sampled_from(["read", "write", "exec"]))
        return [{"kind": "s2-fault", "vcpu": v, "ipa": ipa, "access": access},
                {"kind": "s2-map", "ipa": ipa, "pa": pa, "size": 4096,
                 "memattr": draw(st.sampled_from([0xF, 0xF, 0x5, 0x1])), "vcpu": v}]
    if kind == "perm-fault":        # on a page that may be mapped already: takes effect now
        pa = _page(draw)
        ipa = draw(st.sampled_from([pa, pa ^ 0x1000_0000]))
        return [{"kind": "s2-fault", "vcpu": v, "ipa": ipa,
                 "access": draw(st.sampled_from(["write", "exec"]))}]
    if kind == "attr":              # a leaf's attributes change (KVM relaxes permissions)
        pa = _page(draw)
        return [{"kind": "s2-attr", "ipa": draw(st.sampled_from([pa, pa ^ 0x1000_0000])),
                 "size": draw(st.sampled_from([4096, 4096, 8192])),
                 "memattr": draw(st.sampled_from([0xF, 0x5, 0x1])),
                 "xn": draw(st.sampled_from([0, 2]))}]
    if kind == "ivau":
        pa = _page(draw) + draw(st.integers(0, 63)) * 64
        ivau = {"kind": "ic-inval", "vcpu": v, "op": "ivau", "pa": pa}
        return [ivau | ({"size": 64} if draw(st.booleans()) else {})]
    if kind == "sysreg":
        return [{"kind": "sysreg-write", "vcpu": v, "reg": "SCTLR_EL1",
                 "old": draw(st.sampled_from(SCTLR_VALUES)),
                 "new": draw(st.sampled_from(SCTLR_VALUES))}]
    if kind == "context":           # registers the model records but does not follow
        return [{"kind": "sysreg-write", "vcpu": v,
                 "reg": draw(st.sampled_from(["TTBR0_EL1", "TCR_EL1", "CONTEXTIDR_EL1"])),
                 "old": draw(st.integers(0, 3)), "new": draw(st.integers(0, 3))}]
    if kind in ("cmo", "guest-write", "host-write", "hyp"):
        pa = _page(draw) + draw(st.integers(0, 63)) * 64
        size = draw(st.sampled_from([64, 128, 4096, 8192]))
        size = min(size, BASE + SIZE - pa)
        if kind == "cmo":
            return [{"kind": "cmo-va", "vcpu": v, "pa": pa, "size": size,
                     "op": draw(st.sampled_from(["civac", "cvac", "ivac", "cvau", "zva"]))}]
        if kind == "guest-write":
            return [{"kind": "guest-access", "vcpu": v, "pa": pa, "size": size,
                     "access": "write"}]
        if kind == "hyp":
            return [{"kind": "hyp-maintenance", "pa": pa, "size": size,
                     "op": draw(st.sampled_from(["clean", "inval", "clean-inval",
                                                 "icache-inval"]))}]
        return [{"kind": "host-write", "pa": pa, "size": size,
                 "source": draw(st.sampled_from(["load", "device", "host-zero"]))}]
    if kind == "set-way":
        return [{"kind": "set-way", "vcpu": v, "op": draw(st.sampled_from(["cisw", "csw"]))}]
    if kind == "ic":
        return [{"kind": "ic-inval", "vcpu": v, "op": draw(st.sampled_from(["iallu",
                                                                             "ialluis"]))}]
    if kind == "unmap":
        return [{"kind": "s2-unmap", "ipa": _page(draw), "size": 4096}]
    return [{"kind": "vcpu-on", "vcpu": v}]


@st.composite
def traces(draw):
    vcpus = draw(st.integers(1, 3))
    events = [{"kind": "vcpu-on", "vcpu": 0}]
    for group in draw(st.lists(event(vcpus), min_size=1, max_size=40)):
        events += group
    header = {"ram": [[BASE, SIZE]], "vcpus": vcpus,
              "host_zero_ram": draw(st.booleans())}
    return header, events


def record(header, events, path):
    with TraceWriter(path, header) as w:
        for e in events:
            w.write(dict(e))
    return read_trace(path)


def findings(result):
    return {name: [f.as_dict() for f in w.findings] for name, w in result.worlds.items()}


@SETTINGS
@given(traces())
def test_vectorized_equals_event_by_event_and_is_deterministic(tmp_path_factory, t):
    trace = record(*t, tmp_path_factory.mktemp("t") / "t.jsonl")
    fast = Replay(trace.header).run(trace)
    again = Replay(trace.header).run(trace)
    slow = Replay(trace.header, max_batch=1).run(trace)
    lone = LoneWrites(trace.header).run(trace)      # guest and register writes one by one
    assert findings(fast) == findings(again) == findings(slow) == findings(lone)
    assert fast.stats == again.stats == slow.stats == lone.stats
    assert fast.transitions == slow.transitions == lone.transitions
    for name in fast.worlds:
        for state in ("dirty", "stale", "code"):
            for other in (slow, lone):
                assert np.array_equal(fast.worlds[name].cache.bits[state],
                                      other.worlds[name].cache.bits[state])


@SETTINGS
@given(traces())
def test_record_then_replay_is_exact(tmp_path_factory, t):
    """Findings from the events as captured equal those replayed after a round trip through
    the trace file (written line by line as a live capture would)."""
    header, events = t
    tmp = tmp_path_factory.mktemp("r")
    trace = record(header, events, tmp / "first.jsonl")
    buf = io.StringIO()
    with TraceWriter(buf, trace.header) as w:
        for i in range(len(trace)):
            w.write(trace.event_dict(i))
    (tmp / "again.jsonl").write_text(buf.getvalue())
    again = read_trace(tmp / "again.jsonl")
    assert findings(Replay(again.header).run(again)) == \
        findings(Replay(trace.header).run(trace))


TRIGGERS = [
    {"kind": "sysreg-write", "vcpu": 0, "reg": "SCTLR_EL1", "old": 0, "new": 0x1005},
    {"kind": "sysreg-write", "vcpu": 0, "reg": "SCTLR_EL1", "old": 0x1005, "new": 0},
    {"kind": "sysreg-write", "vcpu": 0, "reg": "SCTLR_EL1", "old": 0x5, "new": 0x1005},
    {"kind": "s2-map", "ipa": BASE + 63 * 4096, "pa": BASE + 63 * 4096, "size": 4096,
     "memattr": 0xF, "vcpu": 0},
]


@SETTINGS
@given(traces(), st.sampled_from(TRIGGERS))
def test_full_flush_leaves_nothing_until_new_writes(tmp_path_factory, t, trigger):
    """After the guest cleans+invalidates all of RAM to PoC and invalidates its I-cache, a
    hazard check at the very next event finds nothing in any world: every finding needs a
    write after its last clean.  (A trigger whose old value contradicts the random history is
    an unobserved transition: information, not a hazard.)"""
    header, events = t
    events = events + [{"kind": "cmo-va", "vcpu": 0, "op": "civac", "pa": BASE, "size": SIZE},
                       {"kind": "ic-inval", "vcpu": 0, "op": "ialluis"}, dict(trigger)]
    trace = record(header, events, tmp_path_factory.mktemp("f") / "f.jsonl")
    last = int(trace.events["seq"][-1])
    result = Replay(trace.header).run(trace)
    for name, w in result.worlds.items():
        assert [f.kind for f in w.findings
                if f.seq == last and f.kind not in INFO_KINDS] == [], name


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["set", "clear"]),
                          st.sampled_from(["dirty", "stale", "code"]),
                          st.integers(0, SIZE - 1), st.integers(1, 3 * 4096)),
                max_size=30),
       st.integers(0, SIZE - 1), st.integers(1, 2 * 4096))
def test_shadow_cache_ranges_match_a_naive_model(ops, probe_at, probe_len):
    cache = ShadowCache(RamMap([(BASE, SIZE)]))
    naive = {s: np.zeros(SIZE // 64, dtype=bool) for s in ("dirty", "stale", "code")}
    for op, state, off, length in ops:
        length = min(length, SIZE - off)
        getattr(cache, op)([state], BASE + off, length)
        naive[state][off // 64:(off + length - 1) // 64 + 1] = op == "set"
    for state in naive:
        probe_len = min(probe_len, SIZE - probe_at)
        want = naive[state][probe_at // 64:(probe_at + probe_len - 1) // 64 + 1].any()
        assert cache.any(state, BASE + probe_at, probe_len) == want
        assert cache.lines(state) == naive[state].sum()
