"""A shim run recorded as a trace: ring records -> trace events -> a JSONL file, as they come.

``Recorder`` is the pipeline between the shim's ring (gdbplugin/shim/ring.py) and anything that
consumes events: it waits for the shim's start record (which says the policy the shim really
ran), writes the trace header (guest memory, vCPUs, policy, CPU cache geometry, whether the
shim tracked guest writes), then the host writes QEMU made before the guest ran, then every
converted event, flushing after each batch so a capture that dies keeps what it saw.  ``feed``
returns the events it wrote as a Trace chunk (rows, as the reader would make them), so a live
consumer (``Replay.feed``, gdbplugin/model/engine.py) gets exactly what the file holds without
reading it back.  ``record`` drives a ``ShimSession`` to its console marker through a Recorder.
"""
from __future__ import annotations

from pathlib import Path

from ..model.trace import Trace, TraceWriter
from ..shim.abi import PARAM_FLAGS
from ..shim.ring import decode_fields
from .shim_trace import ShimTrace, loaded_blobs


class RecordError(Exception):
    """The ring did not describe a run that can be recorded (no start record first)."""


def guest_memory(header) -> list[tuple[int, int]]:
    """Guest memory as the model sees it: RAM below the shim's carve-out, and the flash
    windows the shim maps as read-only Normal memory."""
    ram = [(header.ram_base, header.ram_end - header.ram_base)]
    return ram + [tuple(r) for r in getattr(header, "rom", ()) if r[1]]


def header_keys(header, start) -> dict:
    """Trace-header keys a ring tells: the policy the shim ran (fwb without FEAT_S2FWB runs
    kvm), the CPU's cache geometry, and whether guest writes and the accesses after a
    caches-off were tracked."""
    tracked = lambda flag: ("tracked" if header.flags & PARAM_FLAGS.ids[flag]   # noqa: E731
                            else "untracked")
    keys = {"policy": start.extra.get("policy") or header.policy_effective,
            "writes": tracked("track_writes"), "accesses": tracked("track_access")}
    cpu = {k: v for k, v in getattr(header, "cpu", {}).items() if v}
    if cpu:
        keys["cpu"] = cpu
    return keys


class Recorder:
    """Write a trace from ring events fed in the ring's order.  ``ring_header``: a
    RingHeader (read once the shim is up); ``vcpus``: how many vCPUs the machine has;
    ``info_roms``, ``info_mtree``: the monitor's ``info roms`` and ``info mtree -f`` (QEMU's
    loads before the guest ran, and where its memory regions are); ``cpu_model``: the ``-cpu``
    name, kept in the header."""

    def __init__(self, path_or_file, ring_header, vcpus: int, info_roms: str = "",
                 cpu_model: str | None = None, info_mtree: str = ""):
        self._target = path_or_file
        self._ring_header = ring_header
        self._vcpus = vcpus
        self._blobs = loaded_blobs(info_roms, info_mtree)
        self._cpu_model = cpu_model
        self.writer: TraceWriter | None = None
        self.conv: ShimTrace | None = None
        self._host_writes: list[tuple] = []
        self.written = 0

    @property
    def header(self) -> dict | None:
        return self.writer.header if self.writer else None

    def _open(self, start) -> None:
        keys = header_keys(self._ring_header, start)
        if self._cpu_model:
            keys.setdefault("cpu", {})["model"] = self._cpu_model
        self.conv = ShimTrace(guest_memory(self._ring_header), self._vcpus, **keys)
        self.writer = TraceWriter(self._target, self.conv.header)
        self._host_writes = list(self.conv.host_writes(self._blobs))

    def _write(self, events: list[tuple]) -> Trace:
        """Write (row, extras) pairs, QEMU's loads first if they are not written yet."""
        if self._host_writes:
            events, self._host_writes = self._host_writes + events, []
        extras = {i: x for i, (_, x) in enumerate(events) if x is not None}
        chunk = self.writer.write_rows([row for row, _ in events], extras)
        self.written += len(chunk)
        return chunk

    def feed(self, records: list[tuple]) -> Trace | None:
        """Convert and write a batch of ring records (``RingReader.poll_fields``); the trace
        events written, in order (None before the shim's start record)."""
        if self.writer is None:
            if not records:
                return None
            start = decode_fields(records[0][0] - 1, records[0])
            if start.kind != "shim-start":
                raise RecordError(f"the ring starts with {start.kind!r}, not the shim's "
                                  f"start record: was it read from the beginning?")
            self._open(start)
            records = records[1:]
        events: list[tuple] = []
        try:
            self.conv.convert(records, events)
        finally:                          # a record that cannot be converted: keep the rest
            chunk = self._write(events)
        return chunk

    def close(self) -> Trace | None:
        """Write what the converter still holds and close the file; those events."""
        if self.writer is None:
            return None
        chunk = self._write(self.conv.finish())
        self.writer.close()
        return chunk


class EventRecorder:
    """A trace written from events that need no conversion (breakpoint hits on a guest that
    is not under the shim, gdbplugin/capture/unshimmed.py), with the Recorder's interface."""

    def __init__(self, path_or_file, header: dict):
        self.writer = TraceWriter(path_or_file, header)

    @property
    def header(self) -> dict:
        return self.writer.header

    def feed(self, events) -> Trace:
        return self.writer.write_many(events)

    def close(self) -> None:
        self.writer.close()


def record(session, path: str | Path, until: str | None, timeout: float, vcpus: int,
           cpu_model: str | None = None) -> tuple[str, Recorder]:
    """Run a started ShimSession to ``until`` (a console regex), writing its trace to
    ``path`` as the ring drains.  Returns (why the wait ended: match/exit/halted/timeout,
    the recorder)."""
    roms = session.qemu.monitor("info roms")
    mtree = session.qemu.monitor("info mtree -f")
    rec = None

    def sink(batch):
        nonlocal rec
        if rec is None:
            rec = Recorder(path, session.header(), vcpus, roms, cpu_model, mtree)
        rec.feed(batch)

    try:
        why = session.wait(until, timeout=timeout, sink=sink)
    finally:
        if rec is not None:
            rec.close()
    if rec is None:
        raise RecordError("the shim never started its ring (see the console)")
    return why, rec
