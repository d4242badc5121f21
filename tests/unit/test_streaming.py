"""The streaming replay: ``feed`` chunks as a live session drains them, ``finish`` at the end.
Whatever the chunking, the result equals a whole-trace replay, and every finding is handed
out once, by the ``feed`` call holding the event that raised it."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gdbplugin.model.engine import OBSERVED, Replay
from gdbplugin.model.trace import TraceError, TraceWriter, read_trace

from test_model_properties import SETTINGS, findings, record, traces


def stream(trace, cuts, flush=False, **kw):
    """Replay ``trace`` fed in the chunks ``cuts`` makes (``flush``: after each);
    (result, [(seq range fed, findings handed out)])."""
    r = Replay(trace.header, **kw)
    handed = []
    bounds = [0, *sorted(set(cuts)), len(trace)]
    seqs = trace.events["seq"]
    for a, b in zip(bounds, bounds[1:]):
        extras = {i - a: x for i, x in trace.extras.items() if a <= i < b}
        got = r.feed(trace.events[a:b], extras)
        if flush:
            for name, more in r.flush().items():
                got[name] = got[name] + more
        if a < b:
            handed.append(((int(seqs[a]), int(seqs[b - 1])), got))
    return r.finish(), handed


@st.composite
def chunked(draw):
    header, events = draw(traces())
    header["hyp_maintenance"] = draw(st.sampled_from(["tracked", "untracked"]))
    n = len(events)
    cuts = draw(st.lists(st.integers(0, n), max_size=8))
    return header, events, cuts, draw(st.sampled_from([0, 1, 3, 32768]))


@SETTINGS
@given(chunked(), st.booleans())
def test_any_chunking_equals_the_whole_trace(tmp_path_factory, t, flush):
    header, events, cuts, hold = t
    trace = record(header, events, tmp_path_factory.mktemp("s") / "s.jsonl")
    whole = Replay(trace.header).run(trace)
    streamed, handed = stream(trace, cuts, flush=flush, hold=hold)
    assert findings(streamed) == findings(whole)
    assert streamed.transitions == whole.transitions
    assert streamed.stats == whole.stats                   # costs and event counts included
    assert (streamed.maps, streamed.unmaps) == (whole.maps, whole.unmaps)
    # Each finding is handed out exactly once, in order (the SMP window report is the only
    # one made at finish); what finish settled comes last.
    for name, w in streamed.worlds.items():
        out = [f for _, got in handed for f in got[name]]
        assert [id(f) for f in out] == [id(f) for f in w.findings[:len(out)]]
        assert len({id(f) for f in out}) == len(out)
        if flush or hold == 0:
            # Nothing is held over: a finding comes out of the call that fed its event
            # (a pending check settles at a later event of its vCPU, or at finish).
            for (lo, hi), got in handed:
                assert all(f.seq <= hi for f in got[name])



@SETTINGS
@given(chunked())
def test_event_by_event_feeding_equals_the_whole_trace(tmp_path_factory, t):
    """The extreme chunking (one event per feed) is also the live session's worst case."""
    header, events, _, hold = t
    trace = record(header, events, tmp_path_factory.mktemp("e") / "e.jsonl")
    whole = Replay(trace.header).run(trace)
    streamed, _ = stream(trace, range(len(trace)), hold=hold)
    assert findings(streamed) == findings(whole)
    assert streamed.stats == whole.stats


def test_the_header_declares_the_observed_world(tmp_path):
    """A capture that tracks the hypervisor's maintenance says so in its header, so the
    observed world exists before the first event: a hypervisor that did nothing is judged
    (observed = False), not left unknown (None)."""
    events = [{"kind": "vcpu-on", "vcpu": 0},
              {"kind": "s2-fault", "vcpu": 0, "ipa": 0x4000_0000, "access": "read"},
              {"kind": "s2-map", "ipa": 0x4000_0000, "pa": 0x4000_0000, "size": 4096,
               "memattr": 0xF, "vcpu": 0}]
    header = {"ram": [[0x4000_0000, 0x10000]], "vcpus": 1}
    untracked = Replay(record(header, events, tmp_path / "u.jsonl").header)
    assert OBSERVED not in untracked.worlds
    r = Replay(record({**header, "hyp_maintenance": "tracked"}, events,
                      tmp_path / "t.jsonl").header)
    assert OBSERVED in r.worlds
    trace = read_trace(tmp_path / "t.jsonl")
    first = r.feed(trace.events, trace.extras)
    assert not any(first.values())          # the open run of faults and maps is held ...
    first = r.flush()                       # ... until the ring runs dry
    hit = [f for f in first[OBSERVED] if f.kind == "first-map-uncached"]
    assert hit and hit[0].pa == 0x4000_0000
    none = [f for f in first["none"] if f.kind == "first-map-uncached"]
    assert none[0].observed is False


def test_feed_after_finish_is_an_error(tmp_path):
    """A finished replay has settled its pending checks and reported the SMP window: events
    after that would be judged against a state that no longer holds."""
    trace = record({"ram": [[0x4000_0000, 0x10000]], "vcpus": 1},
                   [{"kind": "vcpu-on", "vcpu": 0}], tmp_path / "f.jsonl")
    r = Replay(trace.header)
    r.feed(trace.events, trace.extras)
    r.finish()
    with pytest.raises(RuntimeError, match="after finish"):
        r.feed(trace.events[:0])
    assert r.finish().stats["events"] == {"vcpu-on": 1}      # finish again: the same result


def test_hyp_maintenance_key_is_validated(tmp_path):
    with pytest.raises(TraceError, match="hyp_maintenance"):
        TraceWriter(tmp_path / "x.jsonl", {"ram": [[0, 4096]], "vcpus": 1,
                                           "hyp_maintenance": True})


def test_write_many_hands_back_what_the_reader_reads(tmp_path):
    """The live path replays the rows ``write_many`` returns instead of reading the file
    back: they must be the reader's rows and extras, event for event."""
    events = [{"kind": "vcpu-on", "vcpu": 0},
              {"kind": "sysreg-write", "vcpu": 0, "reg": "SCTLR_EL1", "old": 0, "new": 0x1005},
              {"kind": "sysreg-write", "vcpu": 0, "reg": "S3_0_C1_C0_7", "old": 0, "new": 1},
              {"kind": "host-write", "pa": 0x4000_0000, "size": 64, "source": "load"}]
    path = tmp_path / "w.jsonl"
    with TraceWriter(path, {"ram": [[0x4000_0000, 0x10000]], "vcpus": 1}) as w:
        first = w.write_many(events[:2])
        rest = w.write_many(events[2:])
    back = read_trace(path)
    assert np.array_equal(np.concatenate([first.events, rest.events]), back.events)
    assert {i + len(first): x for i, x in rest.extras.items()} | first.extras == back.extras
    assert back.extras                                  # the unnamed register is an extra


def test_write_many_keeps_what_came_before_a_bad_event(tmp_path):
    """Nothing captured is lost: the valid events before a bad one are in the file."""
    path = tmp_path / "b.jsonl"
    w = TraceWriter(path, {"ram": [[0x4000_0000, 0x10000]], "vcpus": 1})
    with pytest.raises(TraceError, match="vcpu 3"):
        w.write_many([{"kind": "vcpu-on", "vcpu": 0}, {"kind": "vcpu-on", "vcpu": 3}])
    w.close()
    assert [e["kind"] for e in read_trace(path).to_dicts()] == ["vcpu-on"]


def test_ram_beyond_any_arm_physical_address_is_refused(tmp_path):
    """A RAM range ending above 2^56 (the largest Arm PA size) cannot be guest memory, and
    the model's page arithmetic would overflow on one ending at 2^64: one clear line."""
    with pytest.raises(TraceError, match="2\\^56"):
        TraceWriter(tmp_path / "r.jsonl", {"ram": [[(1 << 64) - 4096, 4096]], "vcpus": 1})
