"""One live watch of a guest under the shim: ring -> events -> trace file and streaming replay
-> whatever view subscribes.

``LiveSession`` owns the pipeline, not the target: it is handed a way to the ring (a
``RingReader`` once the shim has set one up, gdbplugin/shim/ring.py) and drains it without
stopping the guest.  Each ``pump`` converts the new records (gdbplugin/capture/record.py),
appends them to the trace file (flushed per batch, so the file holds everything shown), feeds
the streaming replay (gdbplugin/model/engine.py ``Replay.feed``) and publishes what changed to
the views: SCTLR/HCR transitions, stage-2 map counts, findings of the active policy's world,
each once.  When the ring is dry the replay's held run is flushed, so a quiet guest's findings
come out within one pump.

Records the shim dropped because its ring was full (``ring_full=drop``), or that were
overwritten before they were read, are counted from the ring header whenever the ring runs dry;
the first such loss is published at once (``dropped``): findings may be missing from then on,
and nothing is lost silently.

Views are plain objects with any of ``transition(session, t)``, ``finding(session, f)``,
``dropped(session, n)``, ``progress(session)`` and ``ended(session, result)``; the gdb
extension, the rich console and the JSON report are views (gdbplugin/ui/).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from ..model.engine import Replay, Result
from ..model import events as E
from ..model.hazards import INFO_KINDS, Finding
from ..model.policies import POLICIES
from ..shim.ring import RingError, RingReader, next_search
from .record import EventRecorder, Recorder


class LiveError(Exception):
    """The live session cannot go on (the ring vanished, a record it cannot convert)."""


@dataclass
class VcpuView:
    """What a view shows per vCPU: EL of its last event that had one, SCTLR_EL1 as tracked."""

    el: int | None = None
    sctlr: int = 0
    online: bool = False


@dataclass
class LiveStats:
    records: int = 0
    events: int = 0
    maps: int = 0
    unmaps: int = 0
    pumps: int = 0
    started: float = field(default_factory=time.monotonic)


class LiveSession:
    """Drain, record, replay and publish.  ``ring``: a callable giving the RingReader, or None
    while the shim has not set it up; ``trace``: the trace file (path or open file);
    ``policy``: the active policy (default: the one the shim runs); ``drain``: how the ring is
    read, shown by ``status``; the rest is the Recorder's (QEMU's loads, the CPU model)."""

    BATCH = 2048           # ring records per pump: views hear from a busy ring often
    LATENCY_S = 0.25       # longest a finding waits in the replay's held run

    def __init__(self, ring: Callable[[], RingReader | None], *, vcpus: int, trace,
                 policy: str | None = None, drain: str = "", info_roms: str = "",
                 info_mtree: str = "", cpu_model: str | None = None, views=()):
        if policy is not None and policy not in POLICIES:
            raise LiveError(f"unknown policy {policy!r} (one of {', '.join(POLICIES)})")
        self._ring_source = ring
        self._ring: RingReader | None = None
        self._vcpus = vcpus
        self._trace = trace
        self._roms, self._mtree, self._cpu_model = info_roms, info_mtree, cpu_model
        self.requested_policy = policy
        self.drain = drain
        self.views = list(views)
        self.recorder: Recorder | None = None
        self.replay: Replay | None = None
        self.result: Result | None = None
        self.stats = LiveStats()
        self.vcpu = [VcpuView() for _ in range(vcpus)]
        self.findings: list[Finding] = []          # the active world's, as published
        self._published_transitions = 0
        self.dropped = 0                           # records the ring lost, as last counted
        self._next_try = 0.0
        self._flushed = time.monotonic()
        self._closed, self._halted_at_close = False, None   # the ring may go with its QEMU

    # -- what views read ----------------------------------------------------------------
    @property
    def policy(self) -> str | None:
        """The active policy: the one asked for, else the one the shim really runs."""
        if self.requested_policy is not None:
            return self.requested_policy
        header = self.recorder.header if self.recorder else None
        return header.get("policy") if header else None

    def set_policy(self, name: str) -> None:
        """Judge by another policy from now on: its world's findings so far become the
        published ones (every policy is replayed at once: nothing re-runs)."""
        if name not in POLICIES:
            raise LiveError(f"unknown policy {name!r} (one of {', '.join(POLICIES)})")
        self.requested_policy = name
        self.findings = list(self.replay.worlds[name].findings) if self.replay else []

    @property
    def ring(self) -> RingReader | None:
        return self._ring

    def status(self) -> dict:
        s = self.stats
        ring = self._ring
        return {"drain": self.drain, "policy": self.policy, "records": s.records,
                "events": s.events, "maps": s.maps, "unmaps": s.unmaps,
                "seconds": time.monotonic() - s.started,
                "lost": ring.lost if ring else 0, "dropped": self.dropped,
                "vcpus": [{"vcpu": i, "el": v.el, "sctlr": v.sctlr, "online": v.online}
                          for i, v in enumerate(self.vcpu)],
                "pages_mapped": int(self.replay.mapped.sum()) if self.replay else 0,
                "findings": len(self.findings),
                "uncovered": sum(1 for f in self.findings if f.kind not in INFO_KINDS),
                "halted": self._halted_at_close if self._closed
                else ring.halted() if ring else None}

    def behind(self, fraction: float = 1 / 16) -> bool:
        """The ring holds more than ``fraction`` of its capacity unread: this session is
        falling behind the guest (the live view lags by that many events, ~0.3 s of work for
        the default ring, and the shim halts, stalls or drops when the ring is full)."""
        ring = self._ring
        return ring is not None and ring.backlog() > fraction

    # -- driving ------------------------------------------------------------------------
    def pump(self, look: bool = False) -> int:
        """Drain what the ring holds now; the number of ring records read.  ``look``: look
        for a ring not found yet now, whenever the last look was (the guest stopped)."""
        if self.result is not None:
            return 0
        if look:
            self._next_try = 0.0
        ring = self._connect()
        if ring is None:
            return 0
        try:
            batch = ring.poll_fields(self.BATCH)
        except RingError as exc:
            raise LiveError(f"ring: {exc}") from None
        self.stats.pumps += 1
        now = time.monotonic()
        if not batch or now - self._flushed > self.LATENCY_S:
            # the ring is dry, or the replay has held an open run long enough
            self._flushed = now
            self._publish(self.replay.flush() if self.replay else None)
        if not batch:
            self._count_dropped(ring)
            return 0
        self.stats.records += len(batch)
        if self.recorder is None:
            self.recorder = Recorder(self._trace, ring.header(), self._vcpus, self._roms,
                                     self._cpu_model, self._mtree)
        chunk = self.recorder.feed(batch)
        self._consume(chunk)
        return len(batch)

    def push(self, events: list[dict], header: dict) -> None:
        """Events from a source other than the ring (breakpoint hits on a guest that is not
        under the shim, gdbplugin/capture/unshimmed.py), written to the trace and replayed
        like the ring's; ``header`` opens the trace at the first push."""
        if self.result is not None:
            raise LiveError("the session has ended")
        if self.recorder is None:
            self.recorder = EventRecorder(self._trace, header)
        self.stats.records += len(events)
        self._consume(self.recorder.feed(events))
        self._publish(self.replay.flush())

    def run(self, done: Callable[[], bool], interval: float = 0.02) -> None:
        """Pump until ``done()`` holds and the ring is dry."""
        while True:
            finished = done()
            if finished:
                self._next_try = 0.0               # a last look for a ring set up late
            if not self.pump() and finished:
                return
            if not finished:
                time.sleep(interval)

    def close(self) -> Result | None:
        """Drain the rest, write what the converter holds, finish the replay, tell the views;
        the Result (None if the shim never started its ring)."""
        if self.result is not None:
            return self.result
        self._next_try = 0.0
        try:
            while self.pump():
                pass
        except LiveError:
            pass                                   # what was read is still recorded below
        self._closed = True
        if self._ring is not None:
            try:
                self._halted_at_close = self._ring.halted()
            except RingError:
                pass
        if self.recorder is not None:
            self._consume(self.recorder.close())
        if self.replay is None:
            return None
        world = self.replay.worlds[self.policy]
        before = len(world.findings)
        self.result = self.replay.finish()
        self._publish({self.policy: world.findings[before:]})
        for view in self.views:
            _call(view, "ended", self, self.result)
        return self.result

    # -- inside -------------------------------------------------------------------------
    def _connect(self) -> RingReader | None:
        """The ring, once the shim has set it up.  Looking for it reads guest RAM from the top
        down (all of it while it is not there yet), so a miss waits as ``next_search``
        says."""
        if self._ring is None and time.monotonic() >= self._next_try:
            started = time.monotonic()
            try:
                self._ring = self._ring_source()
            except RingError:
                self._next_try = next_search(started, time.monotonic())
        return self._ring

    def _count_dropped(self, ring: RingReader) -> None:
        """Records the shim dropped (ring full) and records overwritten before we read them;
        views hear of the first loss."""
        try:
            dropped = ring.overflow() + ring.lost
        except RingError:
            return                                 # the ring vanished: pump says so next
        if dropped > self.dropped:
            first = self.dropped == 0
            self.dropped = dropped
            if first:
                for view in self.views:
                    _call(view, "dropped", self, dropped)

    def _consume(self, chunk) -> None:
        if chunk is None:
            return
        if self.replay is None:
            self.replay = Replay(self.recorder.header)
            if self.policy not in self.replay.worlds:
                raise LiveError(f"policy {self.policy!r} is not modelled")
        ev = chunk.events
        self.stats.events += len(ev)
        self._track_vcpus(ev)
        self._publish(self.replay.feed(ev, chunk.extras))
        for view in self.views:
            _call(view, "progress", self)

    def _track_vcpus(self, ev) -> None:
        kinds = ev["kind"]
        self.stats.maps += int((kinds == E.KIND_CODE["s2-map"]).sum())
        self.stats.unmaps += int((kinds == E.KIND_CODE["s2-unmap"]).sum())
        has_el = (ev["present"] & E.OPTIONAL_BIT["el"]) != 0
        for v in range(self._vcpus):
            mine = has_el & (ev["vcpu"] == v)
            if mine.any():
                self.vcpu[v].el = int(ev["el"][mine][-1])
        for v, vc in enumerate(self.replay.vcpus):
            self.vcpu[v].sctlr, self.vcpu[v].online = vc.sctlr, vc.online

    def _publish(self, new) -> None:
        """Transitions since the last publication, then the active world's new findings
        (``new``: per-world lists, as ``Replay.feed`` returns them)."""
        if self.replay is None:
            return
        transitions = self.replay.transitions
        for t in transitions[self._published_transitions:]:
            for view in self.views:
                _call(view, "transition", self, t)
        self._published_transitions = len(transitions)
        if not new:
            return
        for f in new.get(self.policy, ()):
            self.findings.append(f)
            for view in self.views:
                _call(view, "finding", self, f)


def _call(view, method: str, *args) -> None:
    fn = getattr(view, method, None)
    if fn is not None:
        fn(*args)
