"""Trace files (s2cache.trace/1): round trip of every kind, every class of corruption named by
its line, and a fuzz run in which nothing but a one-line TraceError may come out of the reader.

Valid events are generated from ``events.KINDS`` (so a new kind is covered without touching
this file); the address rules the reader enforces are restated here on their own, from the
brief, rather than imported from the reader.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gdbplugin.model import trace as T
from gdbplugin.model.events import (EVENT_DTYPE, KIND_CODE, KINDS, OPTIONAL_BIT, REGS, SCHEMA,
                                    U64_MAX, enum_values)
from gdbplugin.model.trace import TraceError, TraceWriter, read_trace, write_trace

END = 1 << 64
# The brief: these kinds' [pa, pa+size) must lie inside the header's RAM.
RAM_KINDS = {"host-write", "guest-access", "cmo-va", "hyp-maintenance"}
INT_MAX = {"u64": U64_MAX, "u32": (1 << 32) - 1, "u8": 255}
RAM_BASE = 0x4000_0000
PA_END = 1 << 56
HEADER = {"schema": SCHEMA, "ram": [[RAM_BASE, 0x1000_0000]], "vcpus": 2}


# ---------------------------------------------------------------------------------------------
# Generating valid traces.

@st.composite
def headers(draw):
    n = draw(st.integers(1, 3))
    # guest RAM lies below 2^56, the largest Arm physical address size
    edge = st.sampled_from([0, 1, 0x1000, RAM_BASE, 1 << 55, PA_END - 0x1000, PA_END])
    points = draw(st.lists(st.one_of(st.integers(0, PA_END), edge), min_size=2 * n,
                           max_size=2 * n, unique=True))
    points.sort()
    ram = [[points[2 * i], min(points[2 * i + 1] - points[2 * i], U64_MAX)] for i in range(n)]
    draw(st.randoms()).shuffle(ram)
    h = {"schema": SCHEMA, "ram": ram,
         "vcpus": draw(st.one_of(st.integers(1, 8), st.just(1 << 32)))}
    for key, s in (("policy", st.text(max_size=8)), ("source", st.text(max_size=8)),
                   ("hcr", st.integers(0, U64_MAX)), ("host_zero_ram", st.booleans()),
                   ("meta", st.dictionaries(st.text(max_size=4),
                                            st.integers() | st.text(max_size=4), max_size=3))):
        if draw(st.booleans()):
            h[key] = draw(s)
    return h


def _value(draw, kind, f, vcpus):
    if f.name == "vcpu":
        return draw(st.integers(0, vcpus - 1))
    if isinstance(f.type, tuple):
        return draw(st.sampled_from(f.type))
    if f.type == "str":
        if f.name == "reg":
            return draw(st.one_of(st.sampled_from(REGS), st.text(max_size=12)))
        return draw(st.text(max_size=12))
    if f.type == "bool":
        return draw(st.booleans())
    hi = INT_MAX[f.type]
    return draw(st.one_of(st.integers(0, hi), st.sampled_from([0, hi])))


@st.composite
def events_of(draw, kind, header):
    """A valid event of ``kind`` (no seq) under ``header``; optional fields sometimes left out."""
    ev = {"kind": kind}
    for f in KINDS[kind]:
        if f.optional and draw(st.booleans()):
            continue
        ev[f.name] = _value(draw, kind, f, header["vcpus"])
    if kind in RAM_KINDS:
        base, size = draw(st.sampled_from(header["ram"]))
        ev["size"] = draw(st.one_of(st.integers(1, size), st.just(size), st.just(1)))
        ev["pa"] = draw(st.integers(base, base + size - ev["size"]))
    if "size" in ev:
        ev["size"] = ev["size"] or 1
        for f in KINDS[kind]:
            if f.name in ev and f.column in ("addr", "pa") and f.name != "size" \
                    and ev[f.name] + ev["size"] > END:
                ev[f.name] = draw(st.integers(0, END - ev["size"]))
    return ev


@st.composite
def traces(draw):
    h = draw(headers())
    kinds = list(KINDS) + draw(st.lists(st.sampled_from(list(KINDS)), max_size=12))
    draw(st.randoms()).shuffle(kinds)
    evs, seq = [], draw(st.integers(0, 10))
    for kind in kinds:
        ev = {"seq": seq, **draw(events_of(kind, h))}
        evs.append(ev)
        seq += draw(st.one_of(st.just(1), st.integers(1, 1 << 40)))
    return h, evs


def expected_row(ev):
    """The columns of one event, computed from the schema without the reader."""
    row = dict.fromkeys(EVENT_DTYPE.names, 0)
    row["seq"], row["kind"] = ev["seq"], KIND_CODE[ev["kind"]]
    for f in KINDS[ev["kind"]]:
        if f.name not in ev:
            continue
        v = ev[f.name]
        if isinstance(f.type, tuple):
            row[f.column] = f.type.index(v)
        elif f.name == "reg":
            names = enum_values(ev["kind"], "reg")
            row["reg"] = names.index(v if v in names else "other")
        elif f.type != "str" and f.column in row:
            row[f.column] = int(v)
        if f.optional and f.type != "str":
            row["present"] |= OPTIONAL_BIT.get(f.column, OPTIONAL_BIT.get(f.name, 0))
    return tuple(row[n] for n in EVENT_DTYPE.names)


def write_lines(path: Path, lines, end="\n"):
    """Lines joined by newlines; ``end`` after the last one."""
    data = b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines)
    path.write_bytes(data + end.encode())


# ---------------------------------------------------------------------------------------------
# Round trip.

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces())
def test_round_trip_every_kind(case):
    header, evs = case
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "t.jsonl"
        with TraceWriter(p, header) as w:
            for ev in evs:
                assert w.write(ev) == ev["seq"]
        t = read_trace(p)
        assert t.header == header
        assert len(t) == len(evs) and t.events.dtype == EVENT_DTYPE
        for i, ev in enumerate(evs):
            assert t.event_dict(i) == ev
        assert t.to_dicts() == evs
        assert t.events.tolist() == [expected_row(ev) for ev in evs]
        # and once more through write_trace
        p2 = Path(d) / "t2.jsonl"
        write_trace(p2, t)
        t2 = read_trace(p2)
        assert t2.header == t.header and t2.extras == t.extras
        assert np.array_equal(t2.events, t.events)


def test_extras_hold_what_the_columns_cannot():
    evs = [
        {"seq": 1, "kind": "tlbi", "vcpu": 0, "op": "vmalls12e1is"},
        {"seq": 2, "kind": "tlbi", "vcpu": 1, "op": "ipas2e1is", "ipa": 0x8000},
        {"seq": 3, "kind": "sysreg-write", "vcpu": 0, "reg": "SCTLR_EL1", "old": 0, "new": 5},
        {"seq": 4, "kind": "sysreg-write", "vcpu": 0, "reg": "CONTEXTIDR_EL1", "old": 0, "new": 1},
        {"seq": 5, "kind": "hyp-maintenance", "op": "clean-inval", "pa": RAM_BASE, "size": 64,
         "reason": "first map \"uncached\" \u00e9"},
        {"seq": 6, "kind": "guest-access", "vcpu": 1, "pa": RAM_BASE, "size": 4,
         "access": "exec", "va": 0xffff_0000_0000_0000},
    ]
    buf = io.StringIO()
    with TraceWriter(buf, HEADER) as w:
        for ev in evs:
            w.write(ev)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "t.jsonl"
        p.write_text(buf.getvalue())
        t = read_trace(p)
    assert t.to_dicts() == evs
    assert t.events["reg"][2] == REGS.index("SCTLR_EL1") and 2 not in t.extras
    assert t.events["reg"][3] == REGS.index("other")
    assert t.extras[3] == {"reg": "CONTEXTIDR_EL1"}
    assert t.extras[0]["op"] == "vmalls12e1is" and t.extras[4]["reason"] == evs[4]["reason"]
    assert t.events["addr"][1] == 0x8000 and t.event_dict(1)["ipa"] == 0x8000
    assert "ipa" not in t.event_dict(0)
    assert t.events["va"][5] == 0xffff_0000_0000_0000
    assert t.event_dict(-1) == evs[-1]
    with pytest.raises(IndexError):
        t.event_dict(len(evs))


def test_null_optional_reads_as_absent_and_defaults(tmp_path):
    p = tmp_path / "t.jsonl"
    write_lines(p, [json.dumps(HEADER),
                    '{"seq": 0, "kind": "vcpu-on", "vcpu": 1, "pc": null}',
                    '{"seq":1,"kind":"s2-fault","vcpu":0,"ipa":4096,"access":"write","esr":null,'
                    '"pc":16,"el":1}'])
    t = read_trace(p)
    assert t.event_dict(0) == {"seq": 0, "kind": "vcpu-on", "vcpu": 1}
    assert t.events["present"][0] == 0
    assert t.events["present"][1] == OPTIONAL_BIT["pc"] | OPTIONAL_BIT["el"]
    assert t.host_zero_ram is True and t.vcpus == 2 and t.ram == [(RAM_BASE, 0x1000_0000)]


def test_adjacent_ram_ranges_hold_an_access_across_them(tmp_path):
    h = {"schema": SCHEMA, "ram": [[0x2000, 0x1000], [0x1000, 0x1000]], "vcpus": 1,
         "host_zero_ram": False}
    p = tmp_path / "t.jsonl"
    write_lines(p, [json.dumps(h), json.dumps(
        {"seq": 1, "kind": "host-write", "pa": 0x1800, "size": 0x1000, "source": "load"})])
    t = read_trace(p)
    assert len(t) == 1 and t.host_zero_ram is False


def test_many_rows_cross_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "_CHUNK", 4)
    p = tmp_path / "t.jsonl"
    with TraceWriter(p, HEADER) as w:
        for i in range(11):
            w.write({"kind": "vcpu-off" if i % 2 else "vcpu-on", "vcpu": i % 2})
    t = read_trace(p)
    assert list(t.events["seq"]) == list(range(11)) and len(t) == 11
    assert [d["kind"] for d in t.to_dicts()] == ["vcpu-on", "vcpu-off"] * 5 + ["vcpu-on"]


def test_empty_event_list_and_no_final_newline(tmp_path):
    p = tmp_path / "t.jsonl"
    write_lines(p, [json.dumps(HEADER)], end="")
    assert len(read_trace(p)) == 0
    write_lines(p, [json.dumps(HEADER), '{"seq":0,"kind":"vcpu-off","vcpu":0}'], end="")
    assert len(read_trace(p)) == 1
    write_lines(p, [json.dumps(HEADER), '{"seq":0,"kind":"vcpu-off","vcpu":0}\r'])
    assert len(read_trace(p)) == 1      # CRLF line ends are JSON whitespace


# ---------------------------------------------------------------------------------------------
# Writer.

def test_writer_assigns_seq_flushes_each_line_and_refuses_bad_events(tmp_path):
    p = tmp_path / "t.jsonl"
    w = TraceWriter(p, {"ram": [[RAM_BASE, 0x1000]], "vcpus": 1})
    assert w.write({"kind": "vcpu-on", "vcpu": 0}) == 0
    assert w.write({"kind": "vcpu-on", "vcpu": 0, "seq": 10}) == 10
    assert w.write({"kind": "vcpu-off", "vcpu": 0}) == 11
    # flushed: readable while the writer is still open
    assert [e["seq"] for e in read_trace(p).to_dicts()] == [0, 10, 11]
    with pytest.raises(TraceError, match=r"^line 5: seq goes backwards/repeats"):
        w.write({"kind": "vcpu-on", "vcpu": 0, "seq": 11})
    with pytest.raises(TraceError, match=r"^line 5: .*vcpu 1 is not below"):
        w.write({"kind": "vcpu-on", "vcpu": 1})
    with pytest.raises(TraceError, match=r"^line 5: .*not inside the header's RAM"):
        w.write({"kind": "host-write", "pa": RAM_BASE + 0x800, "size": 0x1000,
                 "source": "load"})
    with pytest.raises(TraceError, match=r"^line 5: .*\"vcpu\" must be an integer"):
        w.write({"kind": "vcpu-on", "vcpu": True})
    assert w.write({"kind": "vcpu-off", "vcpu": 0}) == 12     # refused events left no trace
    w.close()
    t = read_trace(p)
    assert [e["seq"] for e in t.to_dicts()] == [0, 10, 11, 12]
    assert t.header == {"schema": SCHEMA, "ram": [[RAM_BASE, 0x1000]], "vcpus": 1}


def test_writer_to_binary_file_and_bad_header():
    buf = io.BytesIO()
    with TraceWriter(buf, HEADER) as w:
        w.write({"kind": "vcpu-on", "vcpu": 1, "pc": 0x4008_0000})
    lines = buf.getvalue().decode().splitlines()
    assert json.loads(lines[0]) == HEADER and json.loads(lines[1])["seq"] == 0
    with pytest.raises(TraceError, match=r"^line 1: trace schema \"s2cache.trace/2\""):
        TraceWriter(io.StringIO(), {**HEADER, "schema": "s2cache.trace/2"})
    with pytest.raises(TraceError, match=r"^line 1: header: \"vcpus\" is required"):
        TraceWriter(io.StringIO(), {"ram": [[0, 1]]})
    with pytest.raises(TraceError, match=r"^line 1: header is not JSON"):
        TraceWriter(io.StringIO(), {**HEADER, "meta": {"x": object()}})


def test_trace_error_shape():
    e = TraceError(7, "bad\nthing")
    assert str(e) == "line 7: bad thing" and e.line == 7
    e2 = pickle.loads(pickle.dumps(e))
    assert str(e2) == str(e) and e2.line == 7
    assert str(TraceError(None, "cannot read x")) == "cannot read x"


# ---------------------------------------------------------------------------------------------
# Each corruption class, named by its line.

BASE_EVENTS = [
    {"seq": 1, "kind": "vcpu-on", "vcpu": 0, "pc": 0x4008_0000},
    {"seq": 2, "kind": "host-write", "pa": RAM_BASE, "size": 0x1000, "source": "load"},
    {"seq": 3, "kind": "s2-map", "ipa": 0x8000_0000, "pa": RAM_BASE, "size": 0x1000,
     "memattr": 15},
    {"seq": 4, "kind": "guest-access", "vcpu": 1, "pa": RAM_BASE + 8, "size": 8,
     "access": "read"},
    {"seq": 5, "kind": "sysreg-write", "vcpu": 0, "reg": "SCTLR_EL1", "old": 0, "new": 5,
     "el": 1},
]
# line numbers: header 1, events 2..6


def base_lines():
    return [json.dumps(HEADER)] + [json.dumps(e) for e in BASE_EVENTS]


def ev_line(i, **change):
    ev = dict(BASE_EVENTS[i])
    for k, v in change.items():
        k = k.rstrip("_")
        if v is _DROP:
            del ev[k]
        else:
            ev[k] = v
    return json.dumps(ev)


_DROP = object()

CORRUPT = {
    # name: (line number to replace -> text, expected error line, message fragment)
    "unknown-kind": ({3: ev_line(1, kind="host-read")}, 3, "unknown kind \"host-read\""),
    "no-kind": ({3: ev_line(1, kind=_DROP)}, 3, "no \"kind\""),
    "kind-not-str": ({3: ev_line(1, kind=["host-write"])}, 3, "unknown kind"),
    "bool-for-int": ({2: ev_line(0, vcpu=True)}, 2, "\"vcpu\" must be an integer"),
    "str-for-int": ({3: ev_line(1, pa="0x40000000")}, 3, "\"pa\" must be an integer"),
    "float-for-int": ({3: ev_line(1, size=4096.0)}, 3, "\"size\" must be an integer"),
    "negative": ({4: ev_line(2, memattr=-1)}, 4, "out of range"),
    "u8-range": ({6: ev_line(4, el=256)}, 6, "\"el\" must be an integer in 0..255"),
    "u32-range": ({2: ev_line(0, vcpu=1 << 32)}, 2, "\"vcpu\" must be an integer in 0..2^32-1"),
    "u64-range": ({4: ev_line(2, ipa=1 << 64)}, 4, "0..2^64-1"),
    "int-for-enum": ({5: ev_line(3, access=1)}, 5, "\"access\" must be one of"),
    "bad-enum": ({3: ev_line(1, source="dma")}, 3, "\"source\" must be one of"),
    "int-for-str": ({6: ev_line(4, reg=1)}, 6, "\"reg\" must be a string"),
    "null-required": ({5: ev_line(3, size=None)}, 5, "\"size\" is null"),
    "missing-required": ({5: ev_line(3, access=_DROP)}, 5, "missing field(s) \"access\""),
    "unknown-field": ({5: ev_line(3, ipa=5)}, 5, "unknown field(s) \"ipa\""),
    "duplicate-field": ({5: ev_line(3)[:-1] + ', "vcpu": 0}'}, 5, "duplicate key \"vcpu\""),
    "duplicate-field-escaped": ({5: ev_line(3)[:-1] + ', "\\u0076cpu": 0}'}, 5,
                                "duplicate key"),
    "size-zero": ({4: ev_line(2, size=0)}, 4, "size is 0"),
    "overflow": ({4: ev_line(2, ipa=U64_MAX - 0xfff + 1, size=0x1000)}, 4, "runs past 2^64"),
    "outside-ram-below": ({3: ev_line(1, pa=RAM_BASE - 0x1000)}, 3, "not inside the header's RAM"),
    "outside-ram-straddle": ({5: ev_line(3, pa=RAM_BASE + 0x1000_0000 - 4)}, 5,
                             "not inside the header's RAM"),
    "vcpu-too-big": ({5: ev_line(3, vcpu=2)}, 5, "vcpu 2 is not below the header's vcpus 2"),
    "seq-backwards": ({4: ev_line(2, seq=1)}, 4, "seq goes backwards/repeats: 1 after 2"),
    "seq-equal": ({4: ev_line(2, seq=2)}, 4, "seq goes backwards/repeats: 2 after 2"),
    "seq-missing": ({4: ev_line(2, seq=_DROP)}, 4, "no \"seq\""),
    "seq-negative": ({2: ev_line(0, seq=-1)}, 2, "\"seq\" must be an integer"),
    "not-object": ({4: "[1, 2, 3]"}, 4, "must be a JSON object"),
    "nan": ({3: ev_line(1).replace("4096", "NaN")}, 3, "NaN is not valid JSON"),
    "truncated-mid": ({3: ev_line(1)[:20]}, 3, "not valid JSON"),
    "blank": ({3: ""}, 3, "blank line"),
    "blank-spaces": ({3: "   \t"}, 3, "blank line"),
    "bad-utf8": ({3: ev_line(1).replace('"load"', '"lo').encode() + b'\xff\xfe"'}, 3,
                 "not valid UTF-8"),
    "bad-utf8-in-key": ({5: b'{"seq": 4, "\xc3(": 1}'}, 5, "not valid UTF-8"),
    "huge-int": ({3: ev_line(1).replace("4096", "9" * 5000)}, 3, "not valid JSON"),
    "deep-nesting": ({3: "[" * 100_000}, 3, "not valid JSON"),
    # the header
    "schema-version": ({1: json.dumps({**HEADER, "schema": "s2cache.trace/2"})}, 1,
                       "trace schema \"s2cache.trace/2\" is not supported: this reader reads "
                       "\"s2cache.trace/1\""),
    "schema-other": ({1: json.dumps({**HEADER, "schema": "foo/1"})}, 1,
                     "not an s2cache trace"),
    "header-missing": ({1: ev_line(0)}, 1, "missing header: the first line is an event"),
    "header-no-schema": ({1: json.dumps({"ram": [[0, 1]], "vcpus": 1})}, 1,
                         "missing header: no \"schema\""),
    "header-not-object": ({1: "\"s2cache.trace/1\""}, 1, "missing header"),
    "header-unknown-key": ({1: json.dumps({**HEADER, "vcpu": 1})}, 1,
                           "unknown key(s) \"vcpu\""),
    "header-duplicate": ({1: json.dumps(HEADER)[:-1] + ', "vcpus": 4}'}, 1, "duplicate key"),
    "header-no-ram": ({1: json.dumps({"schema": SCHEMA, "vcpus": 2})}, 1, "\"ram\" is required"),
    "header-ram-overlap": ({1: json.dumps({**HEADER, "ram": [[0x1000, 0x2000], [0, 0x1001]]})},
                           1, "overlap"),
    "header-ram-size-0": ({1: json.dumps({**HEADER, "ram": [[0x1000, 0]]})}, 1, "size 0"),
    "header-ram-past-end": ({1: json.dumps({**HEADER, "ram": [[U64_MAX, 2]]})}, 1,
                            "runs past 2^64"),
    "header-ram-shape": ({1: json.dumps({**HEADER, "ram": [[0, 1, 2]]})}, 1, "ram[0]"),
    "header-vcpus-bool": ({1: json.dumps({**HEADER, "vcpus": True})}, 1, "\"vcpus\" must be"),
    "header-vcpus-0": ({1: json.dumps({**HEADER, "vcpus": 0})}, 1, "\"vcpus\" must be"),
    "header-hzr": ({1: json.dumps({**HEADER, "host_zero_ram": 1})}, 1,
                   "\"host_zero_ram\" must be true or false"),
    "header-hcr": ({1: json.dumps({**HEADER, "hcr": -1})}, 1, "\"hcr\" must be"),
    "header-bom": ({1: "\ufeff" + json.dumps(HEADER)}, 1, "not valid JSON"),
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_corruption_is_named_by_its_line(tmp_path, name):
    repl, line, fragment = CORRUPT[name]
    lines = base_lines()
    for k, text in repl.items():
        lines[k - 1] = text
    p = tmp_path / "t.jsonl"
    write_lines(p, lines)
    with pytest.raises(TraceError) as ei:
        read_trace(p)
    e = ei.value
    assert e.line == line, str(e)
    assert str(e).startswith(f"line {line}: ") and "\n" not in str(e)
    assert fragment in str(e), str(e)


def test_truncated_last_line(tmp_path):
    p = tmp_path / "t.jsonl"
    lines = base_lines()
    lines[-1] = lines[-1][:-7]
    write_lines(p, lines, end="")
    with pytest.raises(TraceError, match=r"^line 6: truncated last line \(no newline"):
        read_trace(p)
    write_lines(p, [json.dumps(HEADER)[:-3]], end="")
    with pytest.raises(TraceError, match=r"^line 1: truncated last line"):
        read_trace(p)


def test_blank_last_line_and_empty_file(tmp_path):
    p = tmp_path / "t.jsonl"
    write_lines(p, base_lines() + [""])
    with pytest.raises(TraceError, match=r"^line 7: blank line$"):
        read_trace(p)
    p.write_bytes(b"")
    with pytest.raises(TraceError, match=r"^line 1: empty file: missing header"):
        read_trace(p)


def test_unreadable_file(tmp_path):
    for path in (tmp_path / "nope.jsonl", tmp_path, "bad\0name"):
        with pytest.raises(TraceError) as ei:
            read_trace(path)
        assert ei.value.line is None and str(ei.value).startswith("cannot read ")


# ---------------------------------------------------------------------------------------------
# Fuzz: mutated lines.  Only a one-line TraceError may come out; when a mutation happens to
# stay valid, the result must survive a write/read round trip.

FUZZ_EVENTS = [
    {"kind": "vcpu-on", "vcpu": 0, "pc": 0x4008_0000},
    {"kind": "host-write", "pa": RAM_BASE, "size": 0x20_0000, "source": "load"},
    {"kind": "s2-map", "ipa": 0x4000_0000, "pa": RAM_BASE, "size": 0x1000, "memattr": 15,
     "xn": 1, "vcpu": 0},
    {"kind": "s2-fault", "vcpu": 1, "ipa": 0x4000_1000, "access": "exec", "esr": 0x8200_0006,
     "pc": 0x4008_0040, "el": 1},
    {"kind": "guest-access", "vcpu": 1, "pa": RAM_BASE + 8, "size": 8, "access": "write",
     "va": 0xffff_8000_0000_0008, "pc": 0x4008_0044},
    {"kind": "sysreg-write", "vcpu": 0, "reg": "SCTLR_EL1", "old": 0x30d0_0800,
     "new": 0x30d0_199d, "pc": 0x4008_0100, "el": 1},
    {"kind": "sysreg-write", "vcpu": 1, "reg": "VBAR_EL1", "old": 0, "new": 0x4009_0000},
    {"kind": "cmo-va", "vcpu": 0, "op": "civac", "pa": RAM_BASE + 0x40, "size": 64,
     "va": 0x4000_0040},
    {"kind": "set-way", "vcpu": 1, "op": "cisw", "el": 1},
    {"kind": "ic-inval", "vcpu": 0, "op": "ivau", "pa": RAM_BASE, "size": 64},
    {"kind": "tlbi", "vcpu": 0, "op": "vmalle1is", "ipa": 0x1000},
    {"kind": "hyp-maintenance", "op": "clean-inval", "pa": RAM_BASE, "size": 0x1000,
     "vcpu": 1, "reason": "first map, \"caches off\""},
    {"kind": "s2-attr", "ipa": 0x4000_0000, "size": 0x1000, "memattr": 5},
    {"kind": "s2-unmap", "ipa": 0x4000_0000, "size": 0x1000},
    {"kind": "vcpu-off", "vcpu": 1},
]


def _fuzz_base() -> list[bytes]:
    buf = io.StringIO()
    with TraceWriter(buf, {**HEADER, "policy": "kvm", "meta": {"qemu": "7.2"}}) as w:
        for ev in FUZZ_EVENTS:
            w.write(ev)
    return [ln.encode() for ln in buf.getvalue().splitlines()]


def _random_json(r: random.Random, depth=0):
    c = r.randrange(9 if depth < 3 else 6)
    if c == 0:
        return None
    if c == 1:
        return r.choice([True, False])
    if c == 2:
        return r.choice([0, 1, -1, U64_MAX, 1 << 64, 1 << 32, 255, 256, r.getrandbits(70)])
    if c == 3:
        return r.choice([0.5, 1e300, -0.0, 4096.0])
    if c == 4:
        return r.choice(["", "read", "SCTLR_EL1", "clean", "s2-map", "\u2028x\ny", "\udc80"])
    if c == 5:
        return r.choice(list(KINDS))
    if c == 6:
        return [_random_json(r, depth + 1) for _ in range(r.randrange(3))]
    keys = ["seq", "kind", "vcpu", "pa", "size", "x", "schema", "ram", "vcpus"]
    return {r.choice(keys): _random_json(r, depth + 1) for _ in range(r.randrange(4))}


def _mutate(r: random.Random, line: bytes) -> bytes:
    m = r.randrange(10)
    if m == 0:                                       # byte flips
        b = bytearray(line)
        for _ in range(r.randint(1, 3)):
            if b:
                b[r.randrange(len(b))] = r.randrange(256)
        return bytes(b)
    if m == 1:                                       # truncation
        return line[:r.randrange(len(line))]
    if m == 2:                                       # random JSON in place of the line
        return json.dumps(_random_json(r)).encode()
    if m == 3:                                       # random bytes
        return bytes(r.randrange(256) for _ in range(r.randrange(1, 40))).replace(b"\n", b"")
    obj = json.loads(line)
    keys = list(obj)
    k = r.choice(keys)
    if m == 4:                                       # field deletion
        del obj[k]
        return json.dumps(obj).encode()
    if m == 5:                                       # field duplication (text level)
        v = obj[k] if r.random() < 0.5 else _random_json(r)
        text = json.dumps(obj)
        dup = f"{json.dumps(k)}: {json.dumps(v)}"
        return (text[:-1] + ", " + dup + "}").encode() if r.random() < 0.5 \
            else ("{" + dup + ", " + text[1:]).encode()
    if m == 6:                                       # type swap
        obj[k] = _random_json(r)
        return json.dumps(obj).encode()
    if m == 7:                                       # numeric nudges, address edges
        ints = [x for x in keys if type(obj[x]) is int] or keys
        x = r.choice(ints)
        v = obj[x] if type(obj[x]) is int else 0
        obj[x] = r.choice([v + 1, v - 1, v + 0x1000_0000, U64_MAX, 1 << 63, 0, -v,
                           1 << 32, v * 2])
        return json.dumps(obj).encode()
    if m == 8:                                       # unknown field / renamed field
        obj[r.choice(["extra", "Vcpu", "addr", "ipa", "pa", "op", "reg", k + "_"])] = obj.pop(k)
        return json.dumps(obj).encode()
    return b""                                       # blank line


FUZZ_TRACES = int(os.environ.get("S2CACHE_FUZZ_TRACES", "12000"))


def test_fuzz_only_trace_error_escapes():
    """Mutated lines of a valid trace (S2CACHE_FUZZ_TRACES of them; scripts/mutate lowers it)
    give a TraceError naming the line, or a trace that round-trips; nothing else escapes."""
    base = _fuzz_base()
    n_lines = len(base)
    r = random.Random(20240607)
    outcomes = {"error": 0, "valid": 0}
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f.jsonl"
        for _ in range(FUZZ_TRACES):
            k = r.randrange(n_lines) if r.random() < 0.9 else 0
            lines = list(base)
            lines[k] = _mutate(r, lines[k])
            last = k == n_lines - 1 and r.random() < 0.5
            data = b"\n".join(lines) + (b"" if last else b"\n")
            p.write_bytes(data)
            try:
                t = read_trace(p)
            except TraceError as e:
                s = str(e)
                assert s.startswith("line ") and len(s.splitlines()) == 1, s
                assert "internal error" not in s, s
                assert e.line is not None
                if k > 0:            # an event line: itself, or the next one's seq check
                    assert e.line == k + 1 or (e.line == k + 2 and "seq" in s), (k, s)
                outcomes["error"] += 1
            else:
                outcomes["valid"] += 1
                q = Path(d) / "g.jsonl"
                write_trace(q, t)
                t2 = read_trace(q)
                assert t2.to_dicts() == t.to_dicts() and np.array_equal(t2.events, t.events)
    # both kinds of outcome are common (about 2/3 errors, 1% valid at 12,000)
    assert outcomes["error"] > FUZZ_TRACES * 2 // 3 and \
        outcomes["valid"] > FUZZ_TRACES // 120, outcomes


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_fuzz_arbitrary_bytes_as_a_line(data, newline):
    lines = _fuzz_base()[:4] + [data]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f.jsonl"
        p.write_bytes(b"\n".join(lines) + (b"\n" if newline else b""))
        try:
            read_trace(p)
        except TraceError as e:
            assert str(e).startswith("line ") and "\n" not in str(e)
            assert "internal error" not in str(e)


# ---------------------------------------------------------------------------------------------
# The header, key by key: every problem is one line naming line 1 and the key.

HEADER_ERRORS = {
    # name: (header, fragment naming what is wrong)
    "seq-only-event": ({"seq": 0, "vcpu": 0}, "the first line is an event"),
    "kind-only-event": ({"kind": "vcpu-on"}, "the first line is an event"),
    "schema-not-str": ({**HEADER, "schema": 1}, "not an s2cache trace"),
    "schema-prefix-only": ({**HEADER, "schema": "s2cache.trace"}, "not an s2cache trace"),
    "vcpus-too-many": ({**HEADER, "vcpus": (1 << 32) + 1}, "\"vcpus\" must be"),
    "vcpus-str": ({**HEADER, "vcpus": "2"}, "\"vcpus\" must be"),
    "vcpus-null": ({**HEADER, "vcpus": None}, "\"vcpus\" is required"),
    "ram-not-list": ({**HEADER, "ram": {"base": 0}}, "\"ram\" must be a non-empty list"),
    "ram-empty": ({**HEADER, "ram": []}, "\"ram\" must be a non-empty list"),
    "ram-pair-not-list": ({**HEADER, "ram": [[0, 1], 5]}, "ram[1]"),
    "ram-pair-short": ({**HEADER, "ram": [[0]]}, "ram[0]"),
    "ram-base-negative": ({**HEADER, "ram": [[-1, 1]]}, "ram[0]"),
    "ram-size-too-big": ({**HEADER, "ram": [[0, 1 << 64]]}, "ram[0]"),
    "ram-base-bool": ({**HEADER, "ram": [[True, 1]]}, "ram[0]"),
    "ram-size-str": ({**HEADER, "ram": [[0, "1"]]}, "ram[0]"),
    "ram-second-size-0": ({**HEADER, "ram": [[0, 1], [16, 0]]}, "ram[1] has size 0"),
    "ram-second-past-end": ({**HEADER, "ram": [[0, 1], [U64_MAX, 2]]}, "ram[1]"),
    "ram-overlap-third": ({**HEADER, "ram": [[0, 16], [32, 16], [40, 1]]}, "overlap"),
    "policy": ({**HEADER, "policy": 1}, "\"policy\" must be a string"),
    "source": ({**HEADER, "source": ["shim"]}, "\"source\" must be a string"),
    "hcr-big": ({**HEADER, "hcr": 1 << 64}, "\"hcr\" must be"),
    "hcr-str": ({**HEADER, "hcr": "0x80000000"}, "\"hcr\" must be"),
    "traps_set_way": ({**HEADER, "traps_set_way": "yes"}, "\"traps_set_way\" must be true"),
    "writes": ({**HEADER, "writes": "yes"}, "\"writes\" must be \"tracked\" or"),
    "accesses": ({**HEADER, "accesses": True}, "\"accesses\" must be \"tracked\" or"),
    "cpu": ({**HEADER, "cpu": [1]}, "\"cpu\" must be an object"),
    "meta": ({**HEADER, "meta": "qemu 7.2"}, "\"meta\" must be an object"),
    "cpu-unknown": ({**HEADER, "cpu": {"ctr": 1}}, "cpu: unknown key \"ctr\""),
    "cpu-model-int": ({**HEADER, "cpu": {"model": 57}}, "cpu.model must be a string"),
    "cpu-reg-str": ({**HEADER, "cpu": {"ctr_el0": "0x8444c004"}},
                    "cpu.ctr_el0 must be an integer"),
    "cpu-reg-negative": ({**HEADER, "cpu": {"midr_el1": -1}}, "cpu.midr_el1 must be an integer"),
}


@pytest.mark.parametrize("name", list(HEADER_ERRORS))
def test_bad_header_is_one_line_naming_the_key(tmp_path, name):
    """A header the reader cannot trust is refused at line 1 with the key at fault named, by
    the reader and by the writer alike (they validate with the same rules)."""
    h, fragment = HEADER_ERRORS[name]
    p = tmp_path / "t.jsonl"
    write_lines(p, [json.dumps(h)])
    with pytest.raises(TraceError) as ei:
        read_trace(p)
    assert ei.value.line == 1 and "\n" not in str(ei.value)
    assert fragment in str(ei.value), str(ei.value)
    if "schema" in h:               # (the writer adds a missing schema itself)
        with pytest.raises(TraceError) as ei:
            TraceWriter(io.StringIO(), h)
        assert ei.value.line == 1 and fragment in str(ei.value), str(ei.value)


def test_every_documented_header_key_is_accepted(tmp_path):
    """The header keys of the format, each with a valid value, and the edges of the ranges:
    2^32 vCPUs, RAM ending exactly at 2^56 (the largest Arm PA size), ranges that touch
    without overlapping."""
    h = {"schema": SCHEMA, "ram": [[PA_END - 1, 1], [0, 16], [16, 16]], "vcpus": 1 << 32,
         "policy": "kvm", "source": "shim", "hcr": U64_MAX, "host_zero_ram": False,
         "traps_set_way": True, "writes": "tracked", "accesses": "untracked",
         "hyp_maintenance": "tracked",
         "cpu": {"ctr_el0": 0x8444c004, "clidr_el1": 0, "midr_el1": U64_MAX, "model": "a72"},
         "meta": {"qemu": "7.2"}}
    p = tmp_path / "t.jsonl"
    write_lines(p, [json.dumps(h)])
    assert read_trace(p).header == h
    for v in ("tracked", "untracked"):
        write_lines(p, [json.dumps({**HEADER, "writes": v, "accesses": v})])
        assert read_trace(p).header["writes"] == v
    write_lines(p, [json.dumps({**HEADER, "vcpus": 1, "cpu": {}})])
    assert read_trace(p).vcpus == 1


def test_writer_puts_schema_first_in_the_header():
    """The header line starts with its schema, whatever order the caller's dict has, so that
    a reader (or a human) knows the format from the first key."""
    buf = io.StringIO()
    TraceWriter(buf, {"vcpus": 1, "ram": [[0, 4096]], "schema": SCHEMA})
    assert buf.getvalue().startswith('{"schema":"s2cache.trace/1",')
    buf = io.StringIO()
    TraceWriter(buf, {"vcpus": 1, "ram": [[0, 4096]]})
    assert json.loads(buf.getvalue()) == {"schema": SCHEMA, "ram": [[0, 4096]], "vcpus": 1}


# ---------------------------------------------------------------------------------------------
# Events: the remaining classes of bad value, each one line naming the field.

EVENT_ERRORS = {
    # name: (event, fragment)
    "seq-too-big": ({"seq": 1 << 64, "kind": "vcpu-off", "vcpu": 0}, "\"seq\" must be an integer"),
    "seq-bool": ({"seq": True, "kind": "vcpu-off", "vcpu": 0}, "\"seq\" must be an integer"),
    "seq-str": ({"seq": "1", "kind": "vcpu-off", "vcpu": 0}, "\"seq\" must be an integer"),
    "u8-negative": ({"seq": 0, "kind": "s2-attr", "ipa": 0, "size": 1, "memattr": -1},
                    "\"memattr\" must be an integer in 0..255"),
    "u64-str": ({"seq": 0, "kind": "vcpu-on", "vcpu": 0, "pc": "0"},
                "\"pc\" must be an integer in 0..2^64-1"),
    "free-str-int": ({"seq": 0, "kind": "tlbi", "vcpu": 0, "op": 5},
                     "\"op\" must be a string"),
    "enum-unknown": ({"seq": 0, "kind": "set-way", "vcpu": 0, "op": "dcisw"},
                     "\"op\" must be one of isw, csw, cisw"),
    "enum-list": ({"seq": 0, "kind": "s2-fault", "vcpu": 0, "ipa": 0, "access": ["read"]},
                  "\"access\" must be one of read, write, exec"),
    "null-required-str": ({"seq": 0, "kind": "tlbi", "vcpu": 0, "op": None},
                          "\"op\" is null"),
    "missing-two": ({"seq": 0, "kind": "s2-map", "ipa": 0, "pa": 0},
                    "s2-map: missing field(s) \"size\", \"memattr\""),
    "missing-seq-and-field": ({"kind": "vcpu-off"}, "vcpu-off: event has no \"seq\""),
    "unknown-two": ({"seq": 0, "kind": "vcpu-off", "vcpu": 0, "a": 1, "b": 2},
                    "vcpu-off: unknown field(s) \"a\", \"b\""),
    "vcpu-equal": ({"seq": 0, "kind": "set-way", "vcpu": 2, "op": "isw"},
                   "set-way: vcpu 2 is not below the header's vcpus 2"),
    "size-zero-optional": ({"seq": 0, "kind": "ic-inval", "vcpu": 0, "op": "ivau", "pa": RAM_BASE,
                            "size": 0}, "ic-inval: size is 0"),
    "pa-overflow": ({"seq": 0, "kind": "s2-map", "ipa": 0, "pa": U64_MAX, "size": 2,
                     "memattr": 15}, "s2-map: pa 0xffffffffffffffff + size 0x2 runs past 2^64"),
    "ram-above": ({"seq": 0, "kind": "cmo-va", "vcpu": 0, "op": "civac",
                   "pa": RAM_BASE + 0x1000_0000, "size": 64},
                  "cmo-va: PA range [0x50000000, 0x50000040) is not inside the header's RAM"),
    "ram-below": ({"seq": 0, "kind": "hyp-maintenance", "op": "clean", "pa": 0, "size": 64},
                  "hyp-maintenance: PA range [0x0, 0x40) is not inside"),
}


@pytest.mark.parametrize("name", list(EVENT_ERRORS))
def test_bad_event_is_one_line_naming_the_field(tmp_path, name):
    """Each bad event is refused on its own line, by the reader and by the writer, with the
    kind, the field and the value at fault (ranges and addresses as the format states)."""
    event, fragment = EVENT_ERRORS[name]
    p = tmp_path / "t.jsonl"
    write_lines(p, [json.dumps(HEADER), json.dumps(event)])
    with pytest.raises(TraceError) as ei:
        read_trace(p)
    assert ei.value.line == 2 and fragment in str(ei.value), str(ei.value)
    if "seq" in event and None not in event.values():    # (the writer fills in seq and
        w = TraceWriter(io.StringIO(), HEADER)           # drops nulls)
        with pytest.raises(TraceError) as ei:
            w.write(event)
        assert ei.value.line == 2 and fragment in str(ei.value), str(ei.value)


def test_error_names_the_json_type_of_a_wrong_value():
    """'must be an integer' says what was there instead, as JSON names it, and an integer out
    of range is said to be out of range."""
    w = TraceWriter(io.StringIO(), HEADER)
    for v, what in (("4096", "string"), (1.5, "number"), ([1], "array"), ({"a": 1}, "object"),
                    (True, "bool"), (1 << 64, "out of range"), (-1, "out of range")):
        with pytest.raises(TraceError) as ei:
            w.write({"kind": "vcpu-on", "vcpu": 0, "pc": v})
        assert what in str(ei.value), (v, str(ei.value))
        if what != "out of range":
            assert "out of range" not in str(ei.value)
    with pytest.raises(TraceError) as ei:
        w.write({"kind": "tlbi", "vcpu": 0, "op": 3})
    assert "(integer)" in str(ei.value)


def test_long_or_unprintable_values_are_shortened_in_errors():
    """A message stays one readable line: a long bad value is cut short with '...', and a
    value that is not JSON at all (only the writer can be handed one) is named by its type."""
    w = TraceWriter(io.StringIO(), HEADER)
    with pytest.raises(TraceError) as ei:
        w.write({"kind": "tlbi", "vcpu": 0, "op": ["x" * 200]})
    s = str(ei.value)
    assert "..." in s and "x" * 60 not in s and len(s) < 200
    with pytest.raises(TraceError) as ei:
        w.write({"kind": "tlbi", "vcpu": 0, "op": object()})
    assert "<object>" in str(ei.value) and ei.value.line == 2
    with pytest.raises(TraceError) as ei:
        w.write({"kind": "tlbi", "vcpu": 0, "op": ["x" * 30]})
    assert '["' + "x" * 30 + '"]' in str(ei.value)          # short enough: shown whole


def test_values_at_the_edges_of_their_ranges_are_accepted(tmp_path):
    """0 and the maximum of each integer type, an address ending exactly at 2^64, a vCPU
    just below the header's count and an access ending exactly at the end of RAM are valid."""
    evs = [{"seq": 0, "kind": "vcpu-on", "vcpu": 1, "pc": U64_MAX, "reinit": 255},
           {"seq": 1, "kind": "s2-map", "ipa": U64_MAX - 0xfff, "pa": 0, "size": 0x1000,
            "memattr": 0, "xn": 255, "vcpu": 0},
           {"seq": 2, "kind": "host-write", "pa": RAM_BASE + 0x1000_0000 - 1, "size": 1,
            "source": "device"},
           {"seq": U64_MAX, "kind": "vcpu-off", "vcpu": 0}]
    p = tmp_path / "t.jsonl"
    with TraceWriter(p, HEADER) as w:
        for ev in evs:
            w.write(ev)
    assert read_trace(p).to_dicts() == evs


def test_duplicate_keys_are_found_whatever_the_line_holds(tmp_path):
    """JSON would silently keep the last of two equal keys; a trace line never may have them,
    whether the line holds free strings, register names, enums or only integers."""
    cases = ['{"seq":0,"kind":"tlbi","vcpu":0,"op":"vmalle1","vcpu":0}',
             '{"seq":0,"kind":"sysreg-write","vcpu":0,"reg":"SCTLR_EL1","old":0,"new":1,"old":0}',
             '{"seq":0,"kind":"sysreg-write","vcpu":0,"reg":"VBAR_EL1","old":0,"new":1,"new":1}',
             '{"seq":0,"kind":"host-write","pa":%d,"size":1,"source":"load","size":1}' % RAM_BASE,
             '{"seq":0,"kind":"vcpu-off","vcpu":0,"vcpu":1}',
             '{"seq":0,"kind":"tlbi","vcpu":0,"op":"a","op":"b"}']
    p = tmp_path / "t.jsonl"
    for line in cases:
        write_lines(p, [json.dumps(HEADER), line])
        with pytest.raises(TraceError, match=r"^line 2: duplicate key"):
            read_trace(p)


def test_duplicate_in_a_later_line_is_named_by_that_line(tmp_path):
    p = tmp_path / "t.jsonl"
    """The strict re-parse is per line: a duplicate on line 3 is reported as line 3."""
    write_lines(p, [json.dumps(HEADER), '{"seq":0,"kind":"vcpu-off","vcpu":0}',
                    '{"seq":1,"kind":"vcpu-off","vcpu":0,"vcpu":1}'])
    with pytest.raises(TraceError, match=r"^line 3: duplicate key \"vcpu\""):
        read_trace(p)


def test_bad_json_messages_say_why(tmp_path):
    """'not valid JSON' says why: the column of a syntax error, nesting too deep, or the
    parser's reason; a byte that is not UTF-8 is named with its column."""
    p = tmp_path / "t.jsonl"
    write_lines(p, [json.dumps(HEADER), '{"seq": 0,, }'])
    with pytest.raises(TraceError, match=r"^line 2: not valid JSON: .*\(column 11\)$"):
        read_trace(p)
    write_lines(p, [json.dumps(HEADER), "[" * 100_000])
    with pytest.raises(TraceError, match=r"^line 2: not valid JSON: nested too deeply$"):
        read_trace(p)
    write_lines(p, [json.dumps(HEADER), '{"seq": 0, "kind": "vcpu-off", "vcpu": Infinity}'])
    with pytest.raises(TraceError, match=r"^line 2: not valid JSON: Infinity is not valid JSON$"):
        read_trace(p)
    write_lines(p, [json.dumps(HEADER), b'{"seq": 0, "k\xffnd": 1}'])
    with pytest.raises(TraceError, match=r"^line 2: not valid UTF-8 \(byte 0xff at column 14\)$"):
        read_trace(p)
    write_lines(p, [b'{"schema": "\xc3"}'])
    with pytest.raises(TraceError, match=r"^line 1: not valid UTF-8 \(byte 0xc3 at column 13\)$"):
        read_trace(p)
    write_lines(p, [json.dumps(HEADER), '{"seq": 0,'], end="")
    with pytest.raises(TraceError, match=r"^line 2: truncated last line .*\(column 11\)\)$"):
        read_trace(p)


def test_a_bug_in_validation_is_still_a_trace_error(tmp_path, monkeypatch):
    """Nothing but TraceError leaves read_trace: an unexpected exception while checking a line
    is reported as an internal error on that line."""
    p = tmp_path / "t.jsonl"
    write_lines(p, [json.dumps(HEADER), '{"seq":0,"kind":"vcpu-off","vcpu":0}',
                    '{"seq":1,"kind":"vcpu-off","vcpu":0}'])

    def boom(d, ctx, line):
        if line == 3:
            raise KeyError("oops")
        return real(d, ctx, line)
    real = T._check_event
    monkeypatch.setattr(T, "_check_event", boom)
    with pytest.raises(TraceError) as ei:
        read_trace(p)
    assert ei.value.line == 3 and "internal error: KeyError" in str(ei.value)


def test_read_errors_while_reading_are_trace_errors(tmp_path, monkeypatch):
    """An I/O error in the middle of the file is 'cannot read' the file (no line: it is not
    the content's fault), not an internal error."""
    p = tmp_path / "t.jsonl"
    write_lines(p, [json.dumps(HEADER), '{"seq":0,"kind":"vcpu-off","vcpu":0}'])

    def broken(d, ctx, line):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(T, "_check_event", broken)
    with pytest.raises(TraceError) as ei:
        read_trace(p)
    assert ei.value.line is None and str(ei.value).startswith(f"cannot read {p}")


# ---------------------------------------------------------------------------------------------
# Writer details.

class _CountingIO(io.StringIO):
    def __init__(self):
        super().__init__()
        self.flushes = 0

    def flush(self):
        self.flushes += 1
        super().flush()


def test_writer_flushes_each_line_or_only_at_close():
    """By default every line is flushed as written (a dying capture keeps it); with
    flush=False (write_trace) the caller's file is flushed once, at close, and left open."""
    f = _CountingIO()
    w = TraceWriter(f, HEADER)
    w.write({"kind": "vcpu-off", "vcpu": 0})
    assert f.flushes == 2                        # the header and the event
    f = _CountingIO()
    w = TraceWriter(f, HEADER, flush=False)
    w.write({"kind": "vcpu-off", "vcpu": 0})
    assert f.flushes == 0
    w.close()
    assert f.flushes == 1 and not f.closed and len(f.getvalue().splitlines()) == 2
    w.close()                                    # closing twice is harmless
    assert f.flushes == 1


def test_writer_closes_only_a_file_it_opened(tmp_path):
    """A path is opened and closed by the writer; a file handed in is the caller's."""
    p = tmp_path / "t.jsonl"
    w = TraceWriter(p, HEADER)
    f = w._f
    w.close()
    assert f.closed
    buf = io.StringIO()
    with TraceWriter(buf, HEADER):
        pass
    assert not buf.closed


def test_writer_refuses_after_close_and_non_dict_events(tmp_path):
    """Writing to a closed writer, or something that is not an event dict, is a TraceError
    (the latter naming the line it would have been)."""
    w = TraceWriter(io.StringIO(), HEADER)
    with pytest.raises(TraceError, match=r"^line 2: an event must be a dict, got list$"):
        w.write([("kind", "vcpu-off")])
    w.close()
    with pytest.raises(TraceError) as ei:
        w.write({"kind": "vcpu-off", "vcpu": 0})
    assert ei.value.line is None and "closed" in str(ei.value)


def test_writer_cannot_open_its_path(tmp_path):
    """A path that cannot be written is one TraceError with no line."""
    with pytest.raises(TraceError) as ei:
        TraceWriter(tmp_path, HEADER)
    assert ei.value.line is None and str(ei.value).startswith(f"cannot write {tmp_path}")


def test_writer_drops_null_fields_and_puts_seq_and_kind_first():
    """A null optional field reads as absent, so the writer leaves it out; each line starts
    with seq and kind."""
    buf = io.StringIO()
    with TraceWriter(buf, HEADER) as w:
        w.write({"vcpu": 1, "pc": None, "kind": "vcpu-on"})
        w.write({"vcpu": 0, "kind": "vcpu-off", "seq": 7})
    lines = buf.getvalue().splitlines()
    assert lines[1] == '{"seq":0,"kind":"vcpu-on","vcpu":1}'
    assert lines[2] == '{"seq":7,"kind":"vcpu-off","vcpu":0}'


# ---------------------------------------------------------------------------------------------
# The schema compiler: every plan must follow events.KINDS, and a broken schema is refused.

def test_compiled_plans_follow_the_schema(monkeypatch, tmp_path):
    """Each kind compiled afresh has exactly the schema's keys (plus seq and kind), its
    non-optional fields required, and validates and reads back one event per kind with every
    field and one with only the required ones."""
    plans = {k: T._compile(k, fields) for k, fields in KINDS.items()}
    for kind, fields in KINDS.items():
        plan = plans[kind]
        assert plan.kind == kind
        assert plan.keys == {f.name for f in fields} | {"seq", "kind"}
        assert plan.required == {f.name for f in fields if not f.optional} | {"seq", "kind"}
        assert plan.has_size == any(f.name == "size" for f in fields)
        assert plan.has_vcpu == any(f.name == "vcpu" for f in fields)
        assert plan.ram == (kind in RAM_KINDS)
    monkeypatch.setattr(T, "_PLANS", plans)
    monkeypatch.setattr(T, "_PLAN_BY_CODE", tuple(plans[k] for k in KINDS))
    evs, seq = [], 0
    for full in (True, False):
        for kind, fields in KINDS.items():
            ev = {"seq": seq, "kind": kind}
            for f in fields:
                if f.optional and not full:
                    continue
                if f.name == "vcpu":
                    ev[f.name] = 1
                elif isinstance(f.type, tuple):
                    ev[f.name] = f.type[-1]
                elif f.type == "str":
                    ev[f.name] = "VBAR_EL1" if f.name == "reg" else "x"
                else:
                    ev[f.name] = 7
            if "size" in ev:
                ev["size"] = 64
            if kind in RAM_KINDS:
                ev["pa"] = RAM_BASE + 64
            evs.append(ev)
            seq += 1
    p = tmp_path / "t.jsonl"
    with TraceWriter(p, HEADER) as w:
        for ev in evs:
            w.write(ev)
    t = read_trace(p)
    assert t.to_dicts() == evs
    assert t.events.tolist() == [expected_row(ev) for ev in evs]
    # extras hold only what has no column: free strings, a register outside REGS, optional
    # values whose column has no presence bit
    for i, ex in t.extras.items():
        kind = evs[i]["kind"]
        loose = {f.name for f in KINDS[kind]
                 if f.type == "str" or (f.optional and not OPTIONAL_BIT.get(f.column)
                                        and not OPTIONAL_BIT.get(f.name))}
        assert set(ex) <= loose, (kind, ex)
    # and the plans refuse what the schema refuses
    with pytest.raises(TraceError, match="unknown field"):
        TraceWriter(io.StringIO(), HEADER).write({"kind": "vcpu-off", "vcpu": 0, "pc": 1})
    with pytest.raises(TraceError, match="not inside the header's RAM"):
        TraceWriter(io.StringIO(), HEADER).write(
            {"kind": "host-write", "pa": 0, "size": 1, "source": "load"})
    with pytest.raises(TraceError, match="runs past 2"):
        TraceWriter(io.StringIO(), HEADER).write(
            {"kind": "s2-unmap", "ipa": U64_MAX, "size": 2})


def test_a_bool_field_is_true_or_false(monkeypatch, tmp_path):
    """The schema language has bool fields (events.Field): such a field takes only true or
    false, is stored as 0/1 and reads back as a bool."""
    from gdbplugin.model.events import Field
    fields = (Field("vcpu", "u32", "vcpu"), Field("flag", "bool", "op"),
              Field("maybe", "bool", "xn", optional=True))
    plan = T._compile("vcpu-off", fields)
    plans = {**T._PLANS, "vcpu-off": plan}
    monkeypatch.setattr(T, "_PLANS", plans)
    monkeypatch.setattr(T, "_PLAN_BY_CODE", tuple(plans[k] for k in KINDS))
    p = tmp_path / "t.jsonl"
    evs = [{"seq": 0, "kind": "vcpu-off", "vcpu": 0, "flag": True, "maybe": False},
           {"seq": 1, "kind": "vcpu-off", "vcpu": 1, "flag": False}]
    with TraceWriter(p, HEADER) as w:
        for ev in evs:
            w.write(ev)
        with pytest.raises(TraceError, match=r"^line 4: vcpu-off: field \"flag\" must be true "
                                             r"or false, got 1$"):
            w.write({"kind": "vcpu-off", "vcpu": 0, "flag": 1})
    t = read_trace(p)
    assert t.to_dicts() == evs
    assert t.events["op"].tolist() == [1, 0] and t.events["xn"].tolist() == [0, 0]


def test_a_broken_schema_is_refused_at_compile_time():
    """Mistakes in events.KINDS must fail loudly when the module loads, not corrupt rows:
    a column used twice, a presence bit used twice, an unknown type, a RAM kind without
    pa/size."""
    from gdbplugin.model.events import Field
    with pytest.raises(RuntimeError, match=r"column 'pc' used twice"):
        T._compile("vcpu-on", (Field("pc", "u64", "pc"), Field("x", "u64", "pc")))
    with pytest.raises(RuntimeError, match=r"presence bit 2 used twice"):
        T._compile("vcpu-on", (Field("a", "u64", "esr", True), Field("esr", "u64", "old", True)))
    with pytest.raises(RuntimeError, match=r"unknown type 'u16'"):
        T._compile("vcpu-on", (Field("a", "u16", "old"),))
    with pytest.raises(RuntimeError, match=r"host-write is a RAM kind but has no pa/size"):
        T._compile("host-write", (Field("pa", "u64", "pa"),))
    # a RAM kind with exactly pa and size is fine
    assert T._compile("host-write", (Field("pa", "u64", "pa"), Field("size", "u64", "size"))).ram
    # two optional fields whose columns have no presence bit are fine (both go to extras)
    plan = T._compile("vcpu-on", (Field("a", "u64", "old", True), Field("b", "u64", "new", True)))
    assert [s[6] for s in plan.slots] == [True, True]


# ---------------------------------------------------------------------------------------------
# write_many: a batch written at once, handed back as the rows a reader would make.

def test_write_many_returns_what_the_file_holds(tmp_path):
    """The batch comes back as a Trace of its own (rows from 0, extras by batch index) equal
    to what read_trace makes of those lines, so a live consumer sees exactly the file."""
    p = tmp_path / "t.jsonl"
    f = open(p, "w")
    w = TraceWriter(f, HEADER)
    first = w.write_many([{"kind": "vcpu-on", "vcpu": 0, "pc": 0x4008_0000}])
    chunk = w.write_many([
        {"kind": "tlbi", "vcpu": 1, "op": "vmalle1is"},
        {"kind": "s2-fault", "vcpu": 0, "ipa": 0x1000, "access": "write"},
        {"kind": "sysreg-write", "vcpu": 0, "reg": "VBAR_EL1", "old": 0, "new": 1, "pc": None}])
    w.close()
    f.close()
    t = read_trace(p)
    assert len(first) == 1 and len(chunk) == 3
    assert chunk.header == t.header and chunk.events.dtype == EVENT_DTYPE
    assert first.to_dicts() + chunk.to_dicts() == t.to_dicts()
    assert chunk.events.tolist() == t.events[1:].tolist()
    assert chunk.extras == {0: {"op": "vmalle1is"}, 2: {"reg": "VBAR_EL1"}}
    assert [e["seq"] for e in t.to_dicts()] == [0, 1, 2, 3]


def test_write_many_flushes_once_and_keeps_what_came_before_a_bad_event():
    """A batch is flushed once, after its last line; an invalid event stops it with its line
    number, the valid events before it are written, and the writer goes on after them."""
    f = _CountingIO()
    w = TraceWriter(f, HEADER)
    w.write_many([{"kind": "vcpu-off", "vcpu": 0}, {"kind": "vcpu-off", "vcpu": 1}])
    assert f.flushes == 2                        # the header, then the batch
    with pytest.raises(TraceError, match=r"^line 5: .*vcpu 2 is not below"):
        w.write_many([{"kind": "vcpu-off", "vcpu": 0}, {"kind": "vcpu-off", "vcpu": 2}])
    assert len(f.getvalue().splitlines()) == 4        # the header and three events
    assert w.write({"kind": "vcpu-off", "vcpu": 0}) == 3
    empty = w.write_many([])
    assert len(empty) == 0 and empty.events.dtype == EVENT_DTYPE
    assert len(f.getvalue().splitlines()) == 5 and f.getvalue().endswith("}\n")


# ---------------------------------------------------------------------------------------------
# Details of the contract that the tests above leave open.

def test_trace_error_args_rebuild_the_same_error():
    """A TraceError carries (line, message) as its args, as Python exceptions carry what
    their constructor took: TraceError(*e.args) is the same error, line and text."""
    for line, msg in ((7, "bad thing"), (None, "cannot read x")):
        e = TraceError(line, msg)
        assert e.args == (line, msg)
        again = TraceError(*e.args)
        assert again.line == e.line and str(again) == str(e)


def test_wrong_types_and_ranges_are_named_exactly_in_errors():
    """The kind of problem is given in parentheses after the value, as JSON names the type
    (or 'out of range' for an integer); the bad value itself follows 'got'."""
    w = TraceWriter(io.StringIO(), HEADER)
    for v, what in (("4096", "not an integer (string)"), (1.5, "not an integer (number)"),
                    ([1], "not an integer (array)"), ({"a": 1}, "not an integer (object)"),
                    (True, "not an integer (bool)"), (1 << 64, "out of range")):
        with pytest.raises(TraceError) as ei:
            w.write({"kind": "vcpu-on", "vcpu": 0, "pc": v})
        assert str(ei.value).startswith('line 2: vcpu-on: field "pc" must be an integer')
        assert f"got {json.dumps(v)} ({what})" in str(ei.value), (v, str(ei.value))
    with pytest.raises(TraceError) as ei:
        w.write({"kind": "vcpu-on", "vcpu": 0, "reinit": 256})
    assert "\"reinit\" must be an integer in 0..255, got 256 (out of range)" in str(ei.value)
    for ev, field, shown in (({"kind": "set-way", "vcpu": 0, "op": "dcisw"}, "op", '"dcisw"'),
                             ({"kind": "tlbi", "vcpu": 0, "op": 5}, "op", "5"),
                             ({"kind": "sysreg-write", "vcpu": 0, "reg": 7, "old": 0, "new": 1},
                              "reg", "7")):
        with pytest.raises(TraceError) as ei:
            w.write(ev)
        s = str(ei.value)
        assert s.startswith(f'line 2: {ev["kind"]}: field "{field}" must be'), s
        assert f"got {shown}" in s, s


def test_a_value_of_no_json_type_is_named_by_its_own_type():
    """Only the writer can be handed a value that JSON has no type for (a tuple, bytes): the
    error names that value's Python type rather than calling it anything else."""
    w = TraceWriter(io.StringIO(), HEADER)
    for v, name in (((1, 2), "tuple"), (b"ab", "bytes")):
        with pytest.raises(TraceError) as ei:
            w.write({"kind": "vcpu-on", "vcpu": 0, "pc": v})
        assert f"(not an integer ({name}))" in str(ei.value), str(ei.value)
        with pytest.raises(TraceError) as ei:
            w.write({"kind": "tlbi", "vcpu": 0, "op": v})
        assert str(ei.value).endswith(f"({name})"), str(ei.value)


def test_a_shortened_value_ends_with_an_ellipsis():
    """A long value in a message is its JSON text cut short and followed by '...', nothing
    in between."""
    w = TraceWriter(io.StringIO(), HEADER)
    with pytest.raises(TraceError) as ei:
        w.write({"kind": "tlbi", "vcpu": 0, "op": ["x" * 200]})
    assert re.search(r'got \["x+\.\.\. \(array\)$', str(ei.value)), str(ei.value)


def test_a_mapped_name_field_without_other_is_refused_at_compile_time(monkeypatch):
    """A string field whose names index a column (like "reg" and REGS) must have an 'other'
    for the names outside the list; a schema without it fails loudly, naming the field."""
    from gdbplugin.model.events import Field
    monkeypatch.setattr(T, "enum_values", lambda kind, name: ("A", "B"))
    with pytest.raises(RuntimeError, match=r"sysreg-write\.reg: .*'other'"):
        T._compile("sysreg-write", (Field("reg", "str", "reg"),))


def test_writer_refuses_a_header_the_reader_could_not_read():
    """Whatever the writer accepts the reader reads back: a header holding NaN or Infinity
    (which JSON has no text for) is refused at line 1 instead of written."""
    for bad in (float("nan"), float("inf")):
        buf = io.StringIO()
        with pytest.raises(TraceError) as ei:
            TraceWriter(buf, {**HEADER, "meta": {"x": bad}})
        assert ei.value.line == 1 and "\n" not in str(ei.value)
        assert "NaN" not in buf.getvalue() and "Infinity" not in buf.getvalue()


def test_writer_to_a_binary_file_known_by_its_mode(tmp_path):
    """A binary file is written as bytes even when it is not an io class but says so by its
    mode (a tempfile wrapper)."""
    with tempfile.NamedTemporaryFile(mode="wb", dir=tmp_path, suffix=".jsonl",
                                     delete=False) as f:
        with TraceWriter(f, HEADER) as w:
            w.write({"kind": "vcpu-off", "vcpu": 1})
    t = read_trace(f.name)
    assert t.header == HEADER and t.to_dicts() == [{"seq": 0, "kind": "vcpu-off", "vcpu": 1}]


def test_write_trace_flushes_once_at_the_end(tmp_path):
    """write_trace validates line by line but flushes once, at the end, and the file holds
    the whole trace."""
    p = tmp_path / "t.jsonl"
    write_lines(p, base_lines())
    t = read_trace(p)
    f = _CountingIO()
    write_trace(f, t)
    assert f.flushes == 1
    assert [json.loads(x) for x in f.getvalue().splitlines()] == [HEADER] + BASE_EVENTS


def test_a_line_that_is_not_an_event_shows_what_it_holds(tmp_path):
    """A line that is JSON but no event object, or whose seq is no integer, is named with the
    value found there."""
    p = tmp_path / "t.jsonl"
    for line, shown in (("[1, 2, 3]", "got [1, 2, 3]"),
                        ('{"seq": "7", "kind": "vcpu-off", "vcpu": 0}', 'got "7"')):
        write_lines(p, [json.dumps(HEADER), line])
        with pytest.raises(TraceError) as ei:
            read_trace(p)
        assert ei.value.line == 2 and str(ei.value).endswith(shown), str(ei.value)


def test_an_unexpected_failure_on_the_header_is_a_trace_error_on_line_1(tmp_path, monkeypatch):
    """Nothing but TraceError leaves read_trace, also when checking the header itself fails
    unexpectedly: an internal error on line 1."""
    p = tmp_path / "t.jsonl"
    write_lines(p, [json.dumps(HEADER), '{"seq":0,"kind":"vcpu-off","vcpu":0}'])

    def boom(h, line=1):
        raise KeyError("oops")
    monkeypatch.setattr(T, "_check_header", boom)
    with pytest.raises(TraceError) as ei:
        read_trace(p)
    assert ei.value.line == 1 and "internal error: KeyError" in str(ei.value)


def test_a_header_that_is_not_json_says_why(tmp_path):
    """The header line's syntax error is named like an event line's: with its column."""
    p = tmp_path / "t.jsonl"
    write_lines(p, ['{"schema": ,}'])
    with pytest.raises(TraceError, match=r"^line 1: not valid JSON: .*\(column \d+\)$"):
        read_trace(p)


def test_a_line_without_escapes_is_parsed_once(tmp_path, monkeypatch):
    """Duplicate keys are ruled out by counting quotes when a line has no backslash, so such
    an event line (free strings, register names and enums included) is not parsed a second
    time by the strict parser; a line with an escape is."""
    calls = []
    strict = T._loads_strict

    def counting(text):
        calls.append(text)
        return strict(text)
    monkeypatch.setattr(T, "_loads_strict", counting)
    lines = [x.decode() for x in _fuzz_base()]
    p = tmp_path / "t.jsonl"
    write_lines(p, lines)
    t = read_trace(p)
    assert len(t) == len(lines) - 1
    escaped = [x for x in lines[1:] if "\\" in x]
    assert escaped and len(escaped) < len(lines) - 1
    assert [c.rstrip("\n") for c in calls] == [lines[0]] + escaped


def test_a_bad_header_shows_the_value_found(tmp_path):
    """A header that is not an object, a foreign schema and a bad vcpus are each named with
    the value found; unknown keys are listed, then the known ones, comma-separated."""
    p = tmp_path / "t.jsonl"
    for header, shown in (('"s2cache.trace/1"', 'got "s2cache.trace/1"'),
                          (json.dumps({**HEADER, "schema": "foo/1"}), 'schema is "foo/1"'),
                          (json.dumps({**HEADER, "vcpus": 0}), "got 0")):
        write_lines(p, [header])
        with pytest.raises(TraceError) as ei:
            read_trace(p)
        assert ei.value.line == 1 and shown in str(ei.value), str(ei.value)
    write_lines(p, [json.dumps({**HEADER, "a": 1, "b": 2})])
    with pytest.raises(TraceError) as ei:
        read_trace(p)
    s = str(ei.value)
    assert 'unknown key(s) "a", "b"' in s, s
    known = s.split("(known: ", 1)[1].rstrip(")").split(", ")
    assert {"schema", "ram", "vcpus", "policy", "hcr", "host_zero_ram", "meta", "cpu",
            "writes", "accesses", "hyp_maintenance", "traps_set_way", "source"} == set(known)


def test_a_bare_carriage_return_does_not_end_a_line(tmp_path):
    """Lines end with a newline (a CR before it is JSON whitespace): two events separated by a
    lone CR are one bad line, not two events."""
    p = tmp_path / "t.jsonl"
    ev0 = '{"seq":0,"kind":"vcpu-off","vcpu":0}'
    ev1 = '{"seq":1,"kind":"vcpu-off","vcpu":1}'
    write_lines(p, [json.dumps(HEADER), ev0 + "\r" + ev1])
    with pytest.raises(TraceError) as ei:
        read_trace(p)
    assert ei.value.line == 2 and "not valid JSON" in str(ei.value), str(ei.value)


def test_header_values_are_named_with_what_they_must_be(tmp_path):
    """Each bad header value is named with the value found and what it must be (the ranges
    and words of the format); RAM must end at or below 2^56, the largest Arm physical
    address size, even where it stays below 2^64."""
    cases = [
        ({**HEADER, "ram": None}, 'line 1: header: "ram" is required'),
        ({**HEADER, "ram": "lots"}, 'got "lots"'),
        ({**HEADER, "ram": [[0, 16], [32, "x"]]}, 'ram[1] must be [base, size] with integers'
                                                  ' in 0..2^64-1, got [32, "x"]'),
        ({**HEADER, "ram": [[PA_END - 0x1000, 0x2000]]}, "ram[0]"),
        ({**HEADER, "ram": [[PA_END, 1]]}, "ram[0]"),
        ({**HEADER, "hcr": -1}, '"hcr" must be an integer in 0..2^64-1, got -1'),
        ({**HEADER, "hyp_maintenance": "all"},
         '"hyp_maintenance" must be "tracked" or "untracked", got "all"'),
        ({**HEADER, "policy": 5}, '"policy" must be a string, got 5'),
        ({**HEADER, "cpu": {"midr_el1": "x"}}, 'cpu.midr_el1 must be an integer, got "x"'),
    ]
    p = tmp_path / "t.jsonl"
    for h, fragment in cases:
        write_lines(p, [json.dumps(h)])
        with pytest.raises(TraceError) as ei:
            read_trace(p)
        assert ei.value.line == 1 and fragment in str(ei.value), (h, str(ei.value))
    for h in ({**HEADER, "ram": [[PA_END - 0x1000, 0x2000]]}, {**HEADER, "ram": [[PA_END, 1]]}):
        write_lines(p, [json.dumps(h)])
        with pytest.raises(TraceError, match=r"2\^56"):
            read_trace(p)
    write_lines(p, [json.dumps({**HEADER, "cpu": {"ctr": 1}})])
    with pytest.raises(TraceError) as ei:
        read_trace(p)
    known = str(ei.value).split("(known: ", 1)[1].rstrip(")").split(", ")
    assert set(known) == {"ctr_el0", "clidr_el1", "midr_el1", "model"}, str(ei.value)
