"""The replay oracle the hand-written engine tests share: a trace written and read back, then
replayed four ways that must agree exactly -- vectorized (``Replay.run``), event by event
(``max_batch=1``), with every guest write and register write replayed alone (``LoneWrites``:
the vectorized ``_line_sets`` and transitions checked against the plain ones) and streamed in
chunks of three events (``Replay.feed``): findings, stats, transitions, every shadow bit and
executability."""
from __future__ import annotations

import numpy as np

from gdbplugin.model.engine import KIND, Replay
from gdbplugin.model.trace import TraceWriter, read_trace

BASE, RAM = 0x4000_0000, 16 << 20


class LoneWrites(Replay):
    """A replay that takes every guest write (``guest-access``) and register write out of the
    vectorized runs (``one`` -> ``guest_access``, ``sysreg_write``), as the engine did before
    those were batched."""

    @staticmethod
    def _batchable(ev):
        return Replay._batchable(ev) & (ev["kind"] != KIND["guest-access"]) & \
            (ev["kind"] != KIND["sysreg-write"])


def replay(tmp_path, events, vcpus=1, ram=None, **header):
    head = {"ram": ram or [[BASE, RAM]], "vcpus": vcpus, "host_zero_ram": False, **header}
    path = tmp_path / "t.jsonl"
    with TraceWriter(path, head) as w:
        for e in events:
            w.write(dict(e))
    trace = read_trace(path)
    fast = Replay(trace.header).run(trace)
    slow = Replay(trace.header, max_batch=1).run(trace)
    lone = LoneWrites(trace.header).run(trace)
    # Fed in chunks of three events, holding at most four (Replay.feed: "chunked any way ...
    # findings, costs and transitions after finish equal a whole-trace replay").
    rp = Replay(trace.header, hold=4)
    if "hyp_maintenance" not in head and any(e["kind"] == "hyp-maintenance" for e in events):
        rp.observe()                # what run() does for a header that does not say
    raised = []
    for i in range(0, len(trace.events), 3):
        extras = {k - i: x for k, x in trace.extras.items() if i <= k < i + 3}
        raised += [f for fs in rp.feed(trace.events[i:i + 3], extras).values() for f in fs]
    chunked = rp.finish()
    assert all(any(f is g for w in chunked.worlds.values() for g in w.findings) for f in raised)
    for other in (slow, lone, chunked):
        assert {n: [f.as_dict() for f in w.findings] for n, w in fast.worlds.items()} == \
            {n: [f.as_dict() for f in w.findings] for n, w in other.worlds.items()}
        assert fast.stats == other.stats
        assert fast.transitions == other.transitions
    for name, w in fast.worlds.items():
        for other in (slow, lone):
            for state in ("dirty", "stale", "code"):
                assert np.array_equal(w.cache.bits[state], other.worlds[name].cache.bits[state])
            assert np.array_equal(w.executable, other.worlds[name].executable), name
    return fast
