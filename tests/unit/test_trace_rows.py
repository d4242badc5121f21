"""Events as rows (gdbplugin/model/trace.py ``ROW_MAKERS``, ``TraceWriter.write_rows``): the
live capture builds and writes ~200k events a boot without a dict per event, so the row path
must say exactly what the dict path says.

For every kind and any fields: the maker's row and extras are the ones the reader makes of the
same event, and the row's line is the line ``write`` writes.  ``write_rows`` refuses the first
row the reader would refuse for what the header says (vCPU, size, range past 2^64, RAM), with
the reader's message, after writing the rows before it.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import given, strategies as st

from gdbplugin.model import trace as T
from gdbplugin.model.events import EVENT_DTYPE, KINDS, REGS
from gdbplugin.model.trace import ROW_MAKERS, TraceError, TraceWriter, read_trace
from test_model_properties import SETTINGS

RAM = (0x4000_0000, 0x100_0000)
HEADER = {"ram": [list(RAM)], "vcpus": 2}


def value(f):
    """Any value a field of this type may hold (addresses kept inside RAM)."""
    if isinstance(f.type, tuple):
        return st.sampled_from(f.type)
    if f.type == "str":
        return st.sampled_from(REGS + ("ESR_EL1", "vmalle1is", "kvm.clean-on-translation-fault",
                                       "q\"uote\\"))
    if f.type == "bool":
        return st.booleans()
    if f.name == "vcpu":
        return st.integers(0, 1)
    if f.name in ("pa", "ipa"):
        return st.integers(RAM[0], RAM[0] + RAM[1] - 0x1000)
    if f.name == "size":
        return st.integers(1, 0x1000)
    return st.integers(0, {"u64": 2**64 - 1, "u32": 2**32 - 1, "u8": 255}[f.type])


@st.composite
def events(draw):
    kind = draw(st.sampled_from(sorted(KINDS)))
    fields = {}
    for f in KINDS[kind]:
        v = draw(value(f))
        fields[f.name] = None if f.optional and draw(st.booleans()) else v
    return kind, fields


@SETTINGS
@given(evs=st.lists(events(), min_size=1, max_size=12))
def test_a_row_is_the_readers_row_and_writes_the_same_line(tmp_path_factory, evs):
    by_dict, by_row = io.StringIO(), io.StringIO()
    rows, extras = [], {}
    with TraceWriter(by_dict, HEADER) as w:
        for kind, fields in evs:
            w.write({"kind": kind, **fields})
    for i, (kind, fields) in enumerate(evs):
        row, x = ROW_MAKERS[kind](*fields.values())
        rows.append(row)
        if x is not None:
            extras[i] = x
    with TraceWriter(by_row, HEADER) as w:
        chunk = w.write_rows(rows, extras)
    assert by_row.getvalue() == by_dict.getvalue()
    path = tmp_path_factory.mktemp("rows") / "t.jsonl"
    path.write_text(by_dict.getvalue())
    back = read_trace(path)
    assert chunk.events.tolist() == back.events.tolist() and chunk.extras == back.extras


BAD = [("s2-fault", (2, RAM[0], "read"), "s2-fault: vcpu 2 is not below the header's vcpus 2"),
       ("s2-map", (0x1000, RAM[0], 0, 0xF), "s2-map: size is 0"),
       ("s2-map", (2**64 - 0x1000, RAM[0], 0x2000, 0xF),
        "s2-map: ipa 0xfffffffffffff000 + size 0x2000 runs past 2^64"),
       ("cmo-va", (0, "civac", RAM[0] + RAM[1] - 64, 128),
        "cmo-va: PA range [0x40ffffc0, 0x41000040) is not inside the header's RAM"),
       ("hyp-maintenance", ("clean", 0x1000, 0x1000, 1, "shim"),
        "hyp-maintenance: PA range [0x1000, 0x2000) is not inside the header's RAM"),
       ("ic-inval", (0, "ivau", 2**64 - 64, 128),
        "ic-inval: pa 0xffffffffffffffc0 + size 0x80 runs past 2^64"),
       ("s2-map", (0x1000, RAM[0], 0x1000, 0xF, 0, 5),
        "s2-map: vcpu 5 is not below the header's vcpus 2")]


@pytest.mark.parametrize("kind,fields,message", BAD)
def test_write_rows_stops_at_the_first_row_the_reader_would_refuse(kind, fields, message):
    good = ROW_MAKERS["s2-fault"](1, RAM[0], "write")[0]
    buf = io.StringIO()
    w = TraceWriter(buf, HEADER)
    with pytest.raises(TraceError) as e:
        w.write_rows([good, good, ROW_MAKERS[kind](*fields)[0], good], {})
    assert str(e.value) == f"line 4: {message}"
    lines = buf.getvalue().splitlines()
    assert [json.loads(x)["seq"] for x in lines[1:]] == [0, 1]


def line(row: tuple, extras: dict | None) -> str:
    """One row's JSON line, as ``write_rows`` writes it."""
    return T._encode_rows(np.array([row], dtype=EVENT_DTYPE), {0: extras} if extras else {})[0]


def test_optional_fields_left_out_are_absent_and_a_register_outside_the_list_is_kept():
    row, x = ROW_MAKERS["sysreg-write"](0, "CONTEXTIDR_EL1", 1, 2)
    assert x == {"reg": "CONTEXTIDR_EL1"}
    assert line(row, x) == ('{"seq":0,"kind":"sysreg-write","vcpu":0,'
                                      '"reg":"CONTEXTIDR_EL1","old":1,"new":2}')
    row, x = ROW_MAKERS["s2-fault"](0, RAM[0], "exec", None, 0x40)
    assert x is None and line(row, x) == (
        '{"seq":0,"kind":"s2-fault","vcpu":0,"ipa":1073741824,"access":"exec","pc":64}')


def test_a_maker_refuses_a_name_outside_its_enum_and_a_missing_field():
    with pytest.raises(TraceError, match='set-way: field "op" cannot be "wipe"'):
        ROW_MAKERS["set-way"](0, "wipe")
    with pytest.raises(TraceError, match='s2-fault: field "vcpu" is missing'):
        ROW_MAKERS["s2-fault"](None, RAM[0], "read")


@SETTINGS
@given(evs=st.lists(events(), min_size=1, max_size=12))
def test_makers_and_encoders_compiled_afresh_agree_with_the_reader(evs):
    """The same, with each kind's maker and line template compiled here (``ROW_MAKERS`` and
    the line templates are built once, at import or first use): the row and extras are
    ``_check_event``'s, the line is ``json.dumps`` of the event in schema order."""
    ctx = T._Context(HEADER["vcpus"], [tuple(HEADER["ram"][0])])
    for seq, (kind, fields) in enumerate(evs):
        event = {"seq": seq, "kind": kind,
                 **{k: v for k, v in fields.items() if v is not None}}
        row, extras, _ = T._check_event(event, ctx, seq + 2)
        made, made_extras = T._row_maker(T._PLANS[kind])(*fields.values())
        assert (made[1:], made_extras) == (row[1:], extras)
        if extras is None:
            T._TEMPLATES.clear()
            assert line(row, None) == json.dumps(event, separators=(",", ":"))
