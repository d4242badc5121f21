"""Trace files: ``s2cache.trace/1`` JSON lines (schema: gdbplugin/model/events.py; README.md `s2cache replay`), read into the columnar form.

A trace is one header line, ``{"schema": "s2cache.trace/1", "ram": [[base, size], ...],
"vcpus": N, ...}``, then one event per line, each a JSON object with a strictly increasing
integer ``seq``, a ``kind`` and exactly the fields ``events.KINDS`` declares for that kind.

The schema is not repeated here: each kind's fields are compiled once, at import, into a small
plan (which check, which column, which presence bit), and one loop applies the plan to every
line.  The reader and the writer validate with the same function, so whatever the writer
accepts, the reader reads back to the same events.  A live capture skips the dicts: it builds
rows with ``ROW_MAKERS`` (compiled from the same plans) and ``TraceWriter.write_rows`` checks
them against the header in one vectorized pass, taking the message of the first row it
refuses from that same function (tests/unit/test_trace_rows.py holds the two ways equal).

Reading streams line by line into preallocated chunks of ``EVENT_DTYPE`` rows.  Values that
have no column (free strings such as a TLBI ``op`` or a maintenance ``reason``, a register name
outside ``REGS``, an optional field with no presence bit) are kept per row in ``Trace.extras``
so that ``Trace.event_dict`` gives back each event exactly as it was written (a ``null``
optional field reads as absent).

Every problem with a file's content is a ``TraceError`` naming its line; nothing else escapes
``read_trace``.
"""
from __future__ import annotations

import io
import json
from bisect import bisect_right
from dataclasses import dataclass, field

import numpy as np

from .events import (EVENT_DTYPE, KIND_CODE, KIND_NAMES, KINDS, OPTIONAL_BIT, SCHEMA,
                     U64_MAX, enum_values)

__all__ = ["TraceError", "Trace", "read_trace", "TraceWriter", "write_trace", "RAM_KINDS"]

# Kinds whose [pa, pa+size) is guest RAM by definition: it must lie inside the header's RAM.
RAM_KINDS = frozenset({"host-write", "guest-access", "cmo-va", "hyp-maintenance"})
# Address fields checked against the event's size for overflow past 2^64 (by column).
_SIZED_COLUMNS = ("addr", "pa")
_HEADER_KEYS = {"schema", "ram", "vcpus", "policy", "source", "hcr", "host_zero_ram", "meta",
                "writes", "accesses", "cpu", "traps_set_way", "hyp_maintenance"}
# "cpu": the target's cache geometry and identity (integers; "model" a string).
_CPU_KEYS = {"ctr_el0", "clidr_el1", "midr_el1", "model"}
_ADDR_END = 1 << 64
_PA_END = 1 << 56               # the largest physical address size of Arm (FEAT_D128)


class TraceError(Exception):
    """A trace that cannot be read or written: ``line`` is 1-based (the header is line 1), or
    None when the problem is not one line's content (a file that cannot be opened)."""

    def __init__(self, line: int | None, message: str):
        message = " ".join(str(message).splitlines())
        super().__init__(line, message)
        self.line = line
        self.message = message

    def __str__(self) -> str:
        return self.message if self.line is None else f"line {self.line}: {self.message}"


def _show(v, limit: int = 40) -> str:
    """A value from a trace as it would appear in JSON, shortened, for error messages."""
    try:
        s = json.dumps(v)
    except (TypeError, ValueError, RecursionError):
        s = f"<{type(v).__name__}>"
    return s if len(s) <= limit else s[:limit - 3] + "..."


def _jtype(v) -> str:
    if v is None:
        return "null"
    return {bool: "bool", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(v), type(v).__name__)


# ---------------------------------------------------------------------------------------------
# The schema, compiled.

_COLS = EVENT_DTYPE.names
_COL = {name: i for i, name in enumerate(_COLS)}
_SEQ, _KIND, _PRESENT = _COL["seq"], _COL["kind"], _COL["present"]
_INT, _ENUM, _STR, _MAPPED, _BOOL = range(5)
_INT_MAX = {"u64": U64_MAX, "u32": (1 << 32) - 1, "u8": 255}


@dataclass(frozen=True)
class _Plan:
    kind: str
    keys: frozenset          # every key an event of this kind may carry
    required: frozenset
    # (name, mode, column index or None, optional, presence bit, int max or enum index,
    #  kept in extras, enum names)
    slots: tuple
    template: tuple          # a row with only ``kind`` filled
    sized: tuple             # names of address fields checked against ``size``
    has_size: bool
    has_vcpu: bool
    ram: bool


def _compile(kind: str, fields) -> _Plan:
    slots, cols, bits = [], set(), set()
    for f in fields:
        col = _COL.get(f.column)
        if col in cols:
            raise RuntimeError(f"events.KINDS[{kind!r}]: column {f.column!r} used twice")
        if col is not None:
            cols.add(col)
        if isinstance(f.type, tuple):
            mode, names = _ENUM, f.type
        elif f.type in _INT_MAX:
            mode, arg = _INT, _INT_MAX[f.type]
            names = None
        elif f.type == "bool":
            mode, arg, names = _BOOL, None, None
        elif f.type == "str":
            try:
                names = enum_values(kind, f.name)       # "reg": names index REGS
            except KeyError:
                mode, arg, names = _STR, None, None
            else:
                if "other" not in names:
                    raise RuntimeError(f"{kind}.{f.name}: its names have no 'other'")
                mode = _MAPPED
        else:
            raise RuntimeError(f"events.KINDS[{kind!r}].{f.name}: unknown type {f.type!r}")
        if names is not None:
            arg = {v: i for i, v in enumerate(names)}
        if mode == _STR:
            col = None                                   # free strings live in extras
        bit = 0
        if f.optional and col is not None:
            bit = OPTIONAL_BIT.get(f.column) or OPTIONAL_BIT.get(f.name) or 0
            if bit and bit in bits:
                raise RuntimeError(f"events.KINDS[{kind!r}]: presence bit {bit} used twice")
            bits.add(bit)
        # Kept in extras: anything without a column, and optional values whose presence
        # no bit records (the value is also in its column for the engine).
        extra = col is None or (f.optional and not bit)
        slots.append((f.name, mode, col, f.optional, bit, arg, extra, names))
    template = [0] * len(_COLS)
    template[_KIND] = KIND_CODE[kind]
    names = {f.name for f in fields}
    has_size = "size" in names
    sized = tuple(f.name for f in fields
                  if f.column in _SIZED_COLUMNS and f.name != "size") if has_size else ()
    ram = kind in RAM_KINDS
    if ram and not {"pa", "size"} <= names:
        raise RuntimeError(f"{kind} is a RAM kind but has no pa/size")
    return _Plan(kind, frozenset(names | {"seq", "kind"}),
                 frozenset({f.name for f in fields if not f.optional} | {"seq", "kind"}),
                 tuple(slots), tuple(template), sized, has_size, "vcpu" in names, ram)


_PLANS = {kind: _compile(kind, fields) for kind, fields in KINDS.items()}
_PLAN_BY_CODE = tuple(_PLANS[k] for k in KIND_NAMES)


# ---------------------------------------------------------------------------------------------
# Validation shared by the reader and the writer.

class _Context:
    """What the header says that events are checked against, and the last seq seen."""

    __slots__ = ("vcpus", "ram_lo", "ram_hi", "prev_seq")

    def __init__(self, vcpus: int, ram: list[tuple[int, int]]):
        self.vcpus = vcpus
        lo, hi = [], []
        for base, size in sorted(ram):
            if hi and hi[-1] == base:                     # adjacent ranges are one for checks
                hi[-1] = base + size
            else:
                lo.append(base)
                hi.append(base + size)
        self.ram_lo, self.ram_hi = lo, hi
        self.prev_seq = -1

    def in_ram(self, pa: int, size: int) -> bool:
        i = bisect_right(self.ram_lo, pa) - 1
        return i >= 0 and pa + size <= self.ram_hi[i]


def _u64(v) -> bool:
    return type(v) is int and 0 <= v <= U64_MAX


def _check_header(h, line: int = 1) -> _Context:
    def bad(msg):
        raise TraceError(line, msg)

    if type(h) is not dict:
        bad(f"missing header: expected a JSON object with \"schema\": \"{SCHEMA}\", "
            f"got {_show(h)}")
    if "schema" not in h:
        if "kind" in h or "seq" in h:
            bad(f"missing header: the first line is an event; a trace starts with "
                f"{{\"schema\": \"{SCHEMA}\", ...}}")
        bad(f"missing header: no \"schema\" key (expected \"{SCHEMA}\")")
    schema = h["schema"]
    if schema != SCHEMA or type(schema) is not str:
        if type(schema) is str and schema.startswith(SCHEMA.rsplit("/", 1)[0] + "/"):
            bad(f"trace schema {_show(schema)} is not supported: this reader reads "
                f"\"{SCHEMA}\"")
        bad(f"not an s2cache trace: schema is {_show(schema)}, expected \"{SCHEMA}\"")
    unknown = sorted(set(h) - _HEADER_KEYS)
    if unknown:
        bad(f"header: unknown key(s) {', '.join(_show(k) for k in unknown)} "
            f"(known: {', '.join(sorted(_HEADER_KEYS))})")

    vcpus = h.get("vcpus")
    if vcpus is None:
        bad("header: \"vcpus\" is required")
    if type(vcpus) is not int or not 1 <= vcpus <= 1 << 32:
        bad(f"header: \"vcpus\" must be an integer in 1..2^32, got {_show(vcpus)}")

    ram = h.get("ram")
    if ram is None:
        bad("header: \"ram\" is required (a list of [base, size] pairs)")
    if type(ram) is not list or not ram:
        bad(f"header: \"ram\" must be a non-empty list of [base, size] pairs, got {_show(ram)}")
    ranges = []
    for k, r in enumerate(ram):
        if type(r) is not list or len(r) != 2 or not (_u64(r[0]) and _u64(r[1])):
            bad(f"header: ram[{k}] must be [base, size] with integers in 0..2^64-1, "
                f"got {_show(r)}")
        base, size = r
        if size == 0:
            bad(f"header: ram[{k}] has size 0")
        if base + size > _ADDR_END:
            bad(f"header: ram[{k}] [{base:#x}, {size:#x}] runs past 2^64")
        if base + size > _PA_END:
            bad(f"header: ram[{k}] [{base:#x}, {size:#x}] ends above 2^56, beyond any Arm "
                f"physical address")
        ranges.append((base, size))
    ordered = sorted(ranges)
    for (b0, s0), (b1, s1) in zip(ordered, ordered[1:]):
        if b0 + s0 > b1:
            bad(f"header: ram ranges [{b0:#x}, {s0:#x}] and [{b1:#x}, {s1:#x}] overlap")

    for key, ok, what in (("policy", lambda v: type(v) is str, "a string"),
                          ("source", lambda v: type(v) is str, "a string"),
                          ("hcr", _u64, "an integer in 0..2^64-1"),
                          ("host_zero_ram", lambda v: type(v) is bool, "true or false"),
                          ("traps_set_way", lambda v: type(v) is bool, "true or false"),
                          ("writes", lambda v: v in ("tracked", "untracked"),
                           '"tracked" or "untracked"'),
                          ("accesses", lambda v: v in ("tracked", "untracked"),
                           '"tracked" or "untracked"'),
                          ("hyp_maintenance", lambda v: v in ("tracked", "untracked"),
                           '"tracked" or "untracked"'),
                          ("cpu", lambda v: type(v) is dict, "an object"),
                          ("meta", lambda v: type(v) is dict, "an object")):
        v = h.get(key)
        if v is not None and not ok(v):
            bad(f"header: {_show(key)} must be {what}, got {_show(v)}")
    for key, v in (h.get("cpu") or {}).items():
        if key not in _CPU_KEYS:
            bad(f"header: cpu: unknown key {_show(key)} (known: {', '.join(sorted(_CPU_KEYS))})")
        if not (type(v) is str if key == "model" else _u64(v)):
            bad(f"header: cpu.{key} must be {'a string' if key == 'model' else 'an integer'}"
                f", got {_show(v)}")
    return _Context(vcpus, ranges)


def _field_error(line, kind, name, v, mode, arg):
    if mode == _INT:
        want = {U64_MAX: "0..2^64-1", (1 << 32) - 1: "0..2^32-1", 255: "0..255"}.get(
            arg, f"0..{arg}")
        what = "out of range" if type(v) is int else f"not an integer ({_jtype(v)})"
        raise TraceError(line, f"{kind}: field \"{name}\" must be an integer in {want}, "
                               f"got {_show(v)} ({what})")
    if mode == _ENUM:
        raise TraceError(line, f"{kind}: field \"{name}\" must be one of "
                               f"{', '.join(arg)}, got {_show(v)}")
    if mode == _BOOL:
        raise TraceError(line, f"{kind}: field \"{name}\" must be true or false, "
                               f"got {_show(v)}")
    raise TraceError(line, f"{kind}: field \"{name}\" must be a string, got {_show(v)} "
                           f"({_jtype(v)})")


def _keys_error(line, d, plan):
    unknown = [k for k in d if k not in plan.keys]
    if unknown:
        raise TraceError(line, f"{plan.kind}: unknown field(s) "
                               f"{', '.join(_show(k) for k in unknown)}")
    missing = [k for k in ("seq", "kind", *(s[0] for s in plan.slots))
               if k in plan.required and k not in d]
    raise TraceError(line, f"{plan.kind}: missing field(s) "
                           f"{', '.join(_show(k) for k in missing)}")


def _check_event(d, ctx: _Context, line: int):
    """Validate one event against the schema and the header; return (row tuple, extras or
    None, number of string values).  ``ctx.prev_seq`` advances only if the event is valid."""
    if type(d) is not dict:
        raise TraceError(line, f"an event must be a JSON object, got {_show(d)}")
    kind = d.get("kind")
    plan = _PLANS.get(kind) if type(kind) is str else None
    if plan is None:
        if kind is None:
            raise TraceError(line, "event has no \"kind\"")
        raise TraceError(line, f"unknown kind {_show(kind)}")
    seq = d.get("seq")
    if type(seq) is not int or not 0 <= seq <= U64_MAX:
        if seq is None:
            raise TraceError(line, f"{kind}: event has no \"seq\"")
        raise TraceError(line, f"{kind}: \"seq\" must be an integer in 0..2^64-1, "
                               f"got {_show(seq)}")
    if seq <= ctx.prev_seq:
        raise TraceError(line, f"seq goes backwards/repeats: {seq} after {ctx.prev_seq}")
    if d.keys() != plan.keys and not (d.keys() <= plan.keys and plan.required <= d.keys()):
        _keys_error(line, d, plan)

    row = list(plan.template)
    row[_SEQ] = seq
    present = 0
    strings = 1
    extras = None
    for name, mode, col, optional, bit, arg, extra, _ in plan.slots:
        v = d.get(name)
        if v is None:
            if optional:
                continue
            raise TraceError(line, f"{kind}: field \"{name}\" is null")
        if mode == _INT:
            if type(v) is not int or v < 0 or v > arg:
                _field_error(line, kind, name, v, mode, arg)
            val = v
        elif mode == _ENUM:
            val = arg.get(v) if type(v) is str else None
            if val is None:
                _field_error(line, kind, name, v, mode, arg)
            strings += 1
        elif mode == _STR:
            if type(v) is not str:
                _field_error(line, kind, name, v, mode, arg)
            val = v
            strings += 1
        elif mode == _MAPPED:
            if type(v) is not str:
                _field_error(line, kind, name, v, _STR, arg)
            val = arg.get(v)
            if val is None:
                val = arg["other"]
                extra = True
            strings += 1
        else:
            if type(v) is not bool:
                _field_error(line, kind, name, v, mode, arg)
            val = int(v)
        if col is not None:
            row[col] = val
        present |= bit
        if extra:
            if extras is None:
                extras = {}
            extras[name] = v
    row[_PRESENT] = present

    if plan.has_vcpu:
        vcpu = d.get("vcpu")
        if vcpu is not None and vcpu >= ctx.vcpus:
            raise TraceError(line, f"{kind}: vcpu {vcpu} is not below the header's "
                                   f"vcpus {ctx.vcpus}")
    if plan.has_size:
        size = d.get("size")
        if size is not None:
            if size == 0:
                raise TraceError(line, f"{kind}: size is 0")
            for name in plan.sized:
                a = d.get(name)
                if a is not None and a + size > _ADDR_END:
                    raise TraceError(line, f"{kind}: {name} {a:#x} + size {size:#x} runs "
                                           f"past 2^64")
            if plan.ram and not ctx.in_ram(d["pa"], size):
                pa = d["pa"]
                raise TraceError(line, f"{kind}: PA range [{pa:#x}, {pa + size:#x}) is not "
                                       f"inside the header's RAM")
    ctx.prev_seq = seq
    return tuple(row), extras, strings


# ---------------------------------------------------------------------------------------------
# Rows: events built and encoded without a dict in between (a live capture writes ~200k a boot).
#
# Both are compiled from the plans, once per kind (and per set of optional fields given, for
# the encoder), as Python source: one tuple expression or one %-format a row, where a loop over
# the slots cost ~5x more per event.

def _row_maker(plan: _Plan):
    """A function taking a ``plan.kind`` event's fields positionally, in the schema's order
    (optional ones may be left out or None), and returning (row with seq 0, extras or None)."""
    params, body = [], []
    cols = {_SEQ: "0", _KIND: str(plan.template[_KIND]), _PRESENT: "present"}
    env = {"_bad_value": _bad_value, "KIND": plan.kind}
    for name, mode, col, optional, bit, arg, extra, names in plan.slots:
        var, c = f"v_{name}", f"c_{name}"
        params.append(f"{var}=None" if optional else var)
        if not optional:
            body.append(f"if {var} is None: _bad_value(KIND, {name!r}, None)")
        if col is not None:
            if mode in (_ENUM, _MAPPED):
                env[f"i_{name}"] = arg
                compute = [f"{c} = i_{name}.get({var})",
                           f"if {c} is None: " + (
                               f"_bad_value(KIND, {name!r}, {var})" if mode == _ENUM else
                               f"{c} = {arg['other']}; extras = {{**(extras or {{}}), "
                               f"{name!r}: {var}}}")]
            else:
                compute = [f"{c} = int({var})" if mode == _BOOL else f"{c} = {var}"]
            if optional:
                body += [f"if {var} is None: {c} = 0", "else:",
                         *(f"    {x}" for x in ([f"present |= {bit}"] if bit else []) + compute)]
            else:
                body += compute
            cols[col] = c
        if extra and mode != _MAPPED:
            body += [f"if {var} is not None: extras = {{**(extras or {{}}), {name!r}: {var}}}"]
    row = ", ".join(cols.get(i, "0") for i in range(len(_COLS)))
    src = (f"def make({', '.join(params)}):\n    present = 0\n    extras = None\n" +
           "".join(f"    {line}\n" for line in body) + f"    return ({row}), extras\n")
    exec(compile(src, f"<row maker {plan.kind}>", "exec"), env)
    return env["make"]


def _bad_value(kind: str, name: str, value) -> None:
    if value is None:
        raise TraceError(None, f"{kind}: field \"{name}\" is missing")
    raise TraceError(None, f"{kind}: field \"{name}\" cannot be {_show(value)}")


# kind -> maker: ``ROW_MAKERS["cmo-va"](vcpu, op, pa, size, va, pc, el)``
ROW_MAKERS = {kind: _row_maker(plan) for kind, plan in _PLANS.items()}

_TEMPLATES: dict[tuple, tuple] = {}
_FROM_EXTRAS = "extras"


def _line_template(kind: int, present: int, given: tuple = ()) -> tuple[str, tuple]:
    """The JSON line of every row of ``kind`` with the optional fields ``present`` says and
    the fields ``given`` in its extras, as ``_dump(_row_dict(row, extras))`` writes it: a
    %-format, and the (column or field, names) its arguments come from (names: None for a
    number, ``_FROM_EXTRAS`` for a value of the extras, else a value's text by its code)."""
    plan = _PLAN_BY_CODE[kind]

    def text(s: str) -> str:                 # literal JSON text inside a %-format
        return s.replace("%", "%%")

    parts, args = ['{"seq":%d,"kind":' + text(_dump(plan.kind))], [("seq", None)]
    for name, mode, col, optional, bit, _, extra, names in plan.slots:
        if name in given:
            parts.append("," + text(_dump(name)) + ":%s")
            args.append((name, _FROM_EXTRAS))
            continue
        if extra or (optional and not present & bit):
            continue
        parts.append("," + text(_dump(name)) + ":" + ("%d" if mode == _INT else "%s"))
        args.append((_COLS[col], None if mode == _INT else np.array(
            ("false", "true") if mode == _BOOL else [_dump(v) for v in names], dtype=object)))
    return "".join(parts) + "}", tuple(args)


def _dumped(value, cache: dict = {}) -> str:
    """``_dump`` of an extras value, remembered: a boot's extras are a few distinct strings
    (rule names, TLBI ops, register names) repeated thousands of times."""
    try:
        return cache[value]
    except KeyError:
        text = cache[value] = _dump(value)
        return text
    except TypeError:                        # unhashable: not a value a row maker gives
        return _dump(value)


def _encode_rows(rows: np.ndarray, extras: dict[int, dict]) -> list[str]:
    """The JSON lines of ``EVENT_DTYPE`` rows (schema order, optional fields only when
    given; ``extras`` by row index).  Rows are formatted a group at a time, one group per
    kind, set of present fields and set of extras, each by one %-format over its columns: a
    Linux boot writes ~200k rows, and one Python call per row cost twice as much."""
    n = len(rows)
    if not n:
        return []
    kinds, present = rows["kind"], rows["present"]
    key = (kinds.astype(np.int64) << 32) | present
    if extras:
        key[list(extras)] = -1                 # grouped below by what their extras hold
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    starts = np.flatnonzero(np.diff(ordered, prepend=ordered[0] - 1))
    groups = [((int(ordered[lo]) >> 32, int(ordered[lo]) & 0xFFFFFFFF, ()), order[lo:hi])
              for lo, hi in zip(starts.tolist(), np.append(starts[1:], n).tolist())
              if ordered[lo] >= 0]
    by_extras: dict[tuple, list[int]] = {}
    for i, x in extras.items():
        by_extras.setdefault((int(kinds[i]), int(present[i]), tuple(x)), []).append(i)
    groups += [(k, np.array(idx, dtype=np.intp)) for k, idx in by_extras.items()]
    lines = np.empty(n, dtype=object)
    for k, idx in groups:
        form = _TEMPLATES.get(k)
        if form is None:
            form = _TEMPLATES[k] = _line_template(*k)
        template, args = form
        group = rows[idx]
        columns = [[_dumped(extras[i][c]) for i in idx.tolist()] if names is _FROM_EXTRAS
                   else (group[c] if names is None else names[group[c]]).tolist()
                   for c, names in args]
        lines[idx] = list(map(template.__mod__, zip(*columns)))
    return lines.tolist()


def _compile_row_checks():
    """Per kind code, what ``_first_bad_row`` checks: vcpu and size (0 absent, 1 required,
    2 optional: given when its presence bit is set), the sized columns, RAM."""
    n = len(KIND_NAMES)
    vcpu, size = np.zeros(n, np.uint8), np.zeros(n, np.uint8)
    sized = {c: np.zeros(n, np.uint8) for c in _SIZED_COLUMNS}
    ram = np.zeros(n, bool)
    for code, plan in enumerate(_PLAN_BY_CODE):
        for name, mode, col, optional, bit, _, extra, _ in plan.slots:
            how = 2 if optional else 1
            if optional and not bit and (name in ("vcpu", "size") or name in plan.sized):
                raise RuntimeError(f"{plan.kind}.{name}: an optional field with no presence "
                                   f"bit cannot be checked in rows")
            if name == "vcpu":
                vcpu[code] = how
            elif name == "size":
                size[code] = how
            elif name in plan.sized:
                sized[_COLS[col]][code] = how
        ram[code] = plan.ram
    return vcpu, size, sized, ram


_ROW_VCPU, _ROW_SIZE, _ROW_SIZED, _ROW_RAM = _compile_row_checks()
_BIT = {"vcpu": OPTIONAL_BIT["vcpu"], "size": OPTIONAL_BIT["size"],
        **{c: OPTIONAL_BIT[c] for c in _SIZED_COLUMNS}}


def _given(how: np.ndarray, present: np.ndarray, bit: int) -> np.ndarray:
    return (how == 1) | ((how == 2) & ((present & bit) != 0))


def _first_bad_row(rows: np.ndarray, ctx: _Context) -> int | None:
    """Index of the first row that ``_check_event`` would refuse for what the header says
    (a vCPU beyond it, an empty size, a range past 2^64, a RAM range outside its RAM); rows
    built by ``ROW_MAKERS`` are well-typed, so nothing else can be wrong with them."""
    kinds, present, size = rows["kind"], rows["present"], rows["size"]
    bad = _given(_ROW_VCPU[kinds], present, _BIT["vcpu"]) & (rows["vcpu"] >= ctx.vcpus)
    has_size = _given(_ROW_SIZE[kinds], present, _BIT["size"])
    bad |= has_size & (size == 0)
    sized = has_size & (size != 0)
    room = np.uint64(U64_MAX) - size + np.uint64(1)       # 2^64 - size, for size >= 1
    for col, how in _ROW_SIZED.items():
        bad |= sized & _given(how[kinds], present, _BIT[col]) & (rows[col] > room)
    in_ram = _ROW_RAM[kinds] & sized & ~bad
    if in_ram.any():
        pa, length = rows["pa"][in_ram], size[in_ram]
        lo, hi = np.array(ctx.ram_lo, np.uint64), np.array(ctx.ram_hi, np.uint64)
        i = np.searchsorted(lo, pa, side="right") - 1
        j = np.maximum(i, 0)
        ok = (i >= 0) & (pa < hi[j]) & (length <= hi[j] - np.minimum(pa, hi[j]))
        bad[np.flatnonzero(in_ram)[~ok]] = True
    first = np.flatnonzero(bad)
    return int(first[0]) if len(first) else None


# ---------------------------------------------------------------------------------------------
# The trace.

@dataclass
class Trace:
    """A whole trace: the header as read, the events as ``EVENT_DTYPE`` rows (row i is file
    line i + 2) and, per row index, the values that the columns cannot hold."""

    header: dict
    events: np.ndarray
    extras: dict[int, dict] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.events)

    @property
    def vcpus(self) -> int:
        return self.header["vcpus"]

    @property
    def ram(self) -> list[tuple[int, int]]:
        return [(base, size) for base, size in self.header["ram"]]

    @property
    def host_zero_ram(self) -> bool:
        v = self.header.get("host_zero_ram")
        return True if v is None else v

    def event_dict(self, i: int) -> dict:
        """Event ``i`` as it appeared in the file: seq, kind and the fields given."""
        i = range(len(self.events))[i]
        return _row_dict(self.events[i].item(), self.extras.get(i))

    def to_dicts(self) -> list[dict]:
        get = self.extras.get
        return [_row_dict(row, get(i)) for i, row in enumerate(self.events.tolist())]


def _row_dict(row: tuple, extras: dict | None) -> dict:
    plan = _PLAN_BY_CODE[row[_KIND]]
    d = {"seq": row[_SEQ], "kind": plan.kind}
    present = row[_PRESENT]
    for name, mode, col, optional, bit, _, extra, names in plan.slots:
        if extras is not None and name in extras:
            d[name] = extras[name]
        elif extra or (optional and not present & bit):
            continue                        # kept in extras when given: so it was not
        elif mode == _INT:
            d[name] = row[col]
        elif mode == _BOOL:
            d[name] = bool(row[col])
        else:
            d[name] = names[row[col]]
    return d


# ---------------------------------------------------------------------------------------------
# Reading.

def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise _Duplicate(f"duplicate key {_show(k)}")
        d[k] = v
    return d


_loads = json.JSONDecoder(parse_constant=_reject_constant).decode
_loads_strict = json.JSONDecoder(parse_constant=_reject_constant,
                                 object_pairs_hook=_no_duplicates).decode


def _bad_line(line: str, lineno: int, exc: Exception | None) -> TraceError:
    """Why ``line`` is not one JSON value."""
    if not line.strip():
        return TraceError(lineno, "blank line")
    if isinstance(exc, json.JSONDecodeError):
        why = f"{exc.msg} (column {exc.colno})"
    elif isinstance(exc, RecursionError):
        why = "nested too deeply"
    else:
        why = str(exc) or type(exc).__name__
    if not line.endswith("\n"):
        return TraceError(lineno, f"truncated last line (no newline at end of file, "
                                  f"not valid JSON: {why})")
    return TraceError(lineno, f"not valid JSON: {why}")


def _check_utf8(line: str, lineno: int) -> None:
    # The file is decoded with surrogateescape: a raw surrogate in the text is a byte that
    # was not UTF-8 (JSON \\u escapes are still escapes at this point).
    if not line.isascii():
        try:
            line.encode("utf-8")
        except UnicodeEncodeError as e:
            raise TraceError(lineno, f"not valid UTF-8 (byte {ord(line[e.start]) & 0xff:#04x} "
                                     f"at column {e.start + 1})") from None


def _parse(line: str, lineno: int, strict: bool = False):
    _check_utf8(line, lineno)
    try:
        return (_loads_strict if strict else _loads)(line)
    except (ValueError, RecursionError) as e:
        if isinstance(e, _Duplicate):
            raise TraceError(lineno, str(e)) from None
        raise _bad_line(line, lineno, e) from None


_CHUNK = 1 << 16


def read_trace(path) -> Trace:
    """Read and validate a whole trace.  Raises TraceError, and only TraceError."""
    try:
        f = open(path, encoding="utf-8", errors="surrogateescape", newline="\n")
    except (OSError, ValueError, TypeError) as e:
        raise TraceError(None, f"cannot read {path}: {_reason(e)}") from None
    try:
        with f:
            return _read(f)
    except OSError as e:
        raise TraceError(None, f"cannot read {path}: {_reason(e)}") from None


def _reason(e: Exception) -> str:
    """An OS error's reason without the file name it repeats."""
    return getattr(e, "strerror", None) or str(e)


def _read(f) -> Trace:
    lineno = 1
    try:
        first = f.readline()
        if not first:
            raise TraceError(1, f"empty file: missing header "
                                f"{{\"schema\": \"{SCHEMA}\", ...}}")
        header = _parse(first, 1, strict=True)
        ctx = _check_header(header, 1)

        chunks = []
        chunk = np.zeros(min(1024, _CHUNK), EVENT_DTYPE)     # grows to _CHUNK rows
        k = 0
        n = 0
        extras = {}
        loads = _loads
        check = _check_event
        for lineno, line in enumerate(f, 2):
            if not line.isascii():
                _check_utf8(line, lineno)
            try:
                d = loads(line)
            except (ValueError, RecursionError) as e:
                raise _bad_line(line, lineno, e) from None
            row, ex, strings = check(d, ctx, lineno)
            # Duplicate keys: json keeps the last silently.  With no backslash in the line,
            # every '"' delimits a key or a string value, so the count proves uniqueness.
            if line.count('"') != 2 * (len(d) + strings) or "\\" in line:
                _parse(line, lineno, strict=True)
            if k == len(chunk):
                chunks.append(chunk)
                chunk = np.zeros(min(2 * k, _CHUNK), EVENT_DTYPE)
                k = 0
            chunk[k] = row
            if ex is not None:
                extras[n] = ex
            k += 1
            n += 1
        chunks.append(chunk[:k])
        events = np.concatenate(chunks)                  # a copy: drops the unused rows
        return Trace(header, events, extras)
    except (TraceError, OSError):
        raise
    except Exception as e:                   # a bug here must still not escape as another type
        raise TraceError(lineno, f"internal error: {type(e).__name__}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Writing.

_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_dump = _ENCODER.encode       # json.dumps would build an encoder per line


class TraceWriter:
    """Write a trace one event at a time, each line flushed as soon as it is written, so a
    capture that dies keeps everything before its last event.

    ``path_or_file`` is a path, or an open text or binary file (left open by ``close``).
    ``header`` needs ``ram`` and ``vcpus``; ``schema`` is added.  ``write`` validates an event
    exactly as the reader will and assigns ``seq`` (previous + 1, from 0) when it is missing.
    """

    def __init__(self, path_or_file, header: dict, *, flush: bool = True):
        h = dict(header)
        h.setdefault("schema", SCHEMA)
        h = {"schema": h.pop("schema"), **h}
        self._ctx = _check_header(h, 1)
        try:
            text = _dump(h)
        except (TypeError, ValueError, RecursionError) as e:
            raise TraceError(1, f"header is not JSON: {e}") from None
        self._flush_each = flush
        if hasattr(path_or_file, "write"):
            self._f, self._own = path_or_file, False
        else:
            try:
                self._f = open(path_or_file, "w", encoding="ascii", newline="\n")
            except (OSError, ValueError, TypeError) as e:
                raise TraceError(None, f"cannot write {path_or_file}: {e}") from None
            self._own = True
        self._binary = isinstance(self._f, (io.RawIOBase, io.BufferedIOBase)) or \
            "b" in getattr(self._f, "mode", "")
        self.header = h
        self.line = 1
        self._put(text)

    def _put(self, text: str) -> None:
        text += "\n"
        self._f.write(text.encode("ascii") if self._binary else text)
        if self._flush_each:
            self._f.flush()

    def write(self, event: dict) -> int:
        """Validate and write one event; return its seq."""
        seq, _, _, text = self._encode(event)
        self._put(text)
        return seq

    def write_many(self, events) -> Trace:
        """Validate and write events (flushed once, after the last); the events as a Trace
        of their own (rows and extras indexed from 0), for a consumer that replays them as
        they are written (gdbplugin/model/engine.py ``Replay.feed``)."""
        rows, extras, lines = [], {}, []
        try:
            for ev in events:
                _, row, ex, text = self._encode(ev)
                if ex is not None:
                    extras[len(rows)] = ex
                rows.append(row)
                lines.append(text)
        finally:
            if lines:
                self._put("\n".join(lines))
        return Trace(self.header, np.array(rows, dtype=EVENT_DTYPE), extras)

    def write_rows(self, rows: list[tuple], extras: dict[int, dict]) -> Trace:
        """Write rows built by ``ROW_MAKERS`` (``extras``: per index into ``rows``), giving
        them their seq; the same Trace chunk ``write_many`` returns.  The rows are checked
        against the header at once; the first one the reader would refuse raises
        ``_check_event``'s error after the rows before it were written."""
        if self._f is None:
            raise TraceError(None, "write to a closed TraceWriter")
        first = self._ctx.prev_seq + 1
        try:
            events = np.array(rows, dtype=EVENT_DTYPE).reshape(-1)
        except (OverflowError, ValueError, TypeError):   # a value beyond its column
            return self.write_many(_unnumbered(_row_dict(r, extras.get(i)))
                                   for i, r in enumerate(rows))
        events["seq"] = np.arange(first, first + len(events), dtype=np.uint64)
        bad = _first_bad_row(events, self._ctx)
        good = events if bad is None else events[:bad]
        kept = {i: x for i, x in extras.items() if i < len(good)}
        lines = _encode_rows(good, kept)
        if lines:
            self._put("\n".join(lines))
            self._ctx.prev_seq = first + len(lines) - 1
            self.line += len(lines)
        if bad is not None:
            self.write(_unnumbered(_row_dict(events[bad].item(), extras.get(bad))))
            raise TraceError(self.line, "internal error: a row the checks refused was "
                                        "written")
        return Trace(self.header, good, kept)

    def _encode(self, event: dict) -> tuple[int, tuple, dict | None, str]:
        """(seq, row, extras, line) of the next event, validated; the line counts as
        written."""
        if self._f is None:
            raise TraceError(None, "write to a closed TraceWriter")
        line = self.line + 1
        if type(event) is not dict:
            raise TraceError(line, f"an event must be a dict, got {type(event).__name__}")
        seq = event.get("seq")
        if seq is None:
            seq = self._ctx.prev_seq + 1
        ev = {"seq": seq, "kind": event.get("kind")}
        for k, v in event.items():          # a loop: ~200k lines a boot, no generator frames
            if v is not None and k not in ev:
                ev[k] = v
        row, extras, _ = _check_event(ev, self._ctx, line)
        self.line = line
        return seq, row, extras, _dump(ev)      # valid events hold only ints, strings, bools

    def close(self) -> None:
        if self._f is None:
            return
        f, self._f = self._f, None
        if self._own:
            f.close()
        else:
            f.flush()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _unnumbered(event: dict) -> dict:
    """A row's event without the seq it had (a row maker's 0): the writer numbers it."""
    del event["seq"]
    return event


def write_trace(path, trace: Trace) -> None:
    """Write a whole Trace (validated line by line, flushed once at the end)."""
    with TraceWriter(path, trace.header, flush=False) as w:
        for ev in trace.to_dicts():
            w.write(ev)
