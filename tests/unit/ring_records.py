"""Hand-made ring records for converter and recorder tests: an ``Event`` as the shim would have
written it (the record layout of gdbplugin/shim/shim.h, as ``RingReader.poll_fields`` unpacks
it), and the converter's (row, extras) pairs back as trace-event dicts.

``fields`` is the inverse of ``gdbplugin.shim.ring.decode_fields`` and checks itself: decoding
what it packed must give back every field and ``extra`` key the test set, so a test cannot
state a record the shim could not write.
"""
from __future__ import annotations

import numpy as np

from gdbplugin.model.events import EVENT_DTYPE
from gdbplugin.model.trace import Trace
from gdbplugin.shim.abi import (ACCESS, CMO_FLAGS, DIAGS, FAULT_FLAGS, FW_CFG_CONTROL, GUEST_CMO_OPS,
                                IC_OPS, KINDS, MEMTYPES, PERMS, POLICIES, RULES, SET_WAY_OPS,
                                SYSREGS)
from gdbplugin.shim.ring import Event, decode_fields

_SYSREG_IDS = {name: code for code, name in SYSREGS.items()}


def _bits(codes, names) -> int:
    return sum(codes.ids[n] for n in names)


def _code(codes, name) -> int:
    """A name's code; an unknown code decodes as its number, so "7" packs as 7."""
    return codes.ids[name] if name in codes.ids else int(name)


def fields(e: Event) -> tuple:
    """The record ``e`` decodes from: (seq, kind, vcpu, el, access, op, flags, pc, esr, ipa,
    pa, size, va)."""
    x = e.extra
    access = ACCESS.ids.get(e.access, 0)
    op = flags = 0
    ipa, pa, size, va, esr = e.ipa or 0, e.pa or 0, e.size or 0, e.va or 0, e.esr or 0
    k = e.kind
    if k == "s2-fault":
        op = x.get("fsc", 0)
        flags = _bits(FAULT_FLAGS, [n for n, on in (
            ("s1ptw", x.get("s1ptw")), ("fnv", x.get("far_valid") is False),
            ("deferred", x.get("deferred")), ("fetch", x.get("fetch")),
            ("fetch-ok", x.get("fetch_ok"))) if on])
        if x.get("fetch") and "insn_old" in x:
            size = x["insn_old"] << 32 | x["insn_new"]
    elif k in ("s2-map", "s2-perm"):
        op = _code(MEMTYPES, x.get("memtype", "normal"))
        flags = _bits(PERMS, list(x.get("perms", ""))) | \
            (PERMS.ids["observer"] if x.get("observer") else 0)
    elif k in ("dc", "ic", "flush-vm"):
        flags = RULES.ids[e.rule]
        if k == "ic":
            op = _code(IC_OPS, e.op)
        if k == "flush-vm":
            pa, va = x.get("end", 0), x.get("leaves", 0)
    elif k == "sysreg-write":
        op, ipa, pa, va = _SYSREG_IDS[e.reg], e.old, e.new, x.get("encoding", 0)
    elif k == "set-way":
        op = _code(SET_WAY_OPS, e.op)
        size, ipa, pa = x.get("count", 0), x.get("first", 0), x.get("last", 0)
    elif k == "guest-cmo":
        op = _code(GUEST_CMO_OPS, e.op)
        if e.pa is None and e.op not in ("ic-iallu", "ic-ialluis"):
            flags = CMO_FLAGS.ids["no-ipa"]
    elif k == "host-dma":
        flags, va = x.get("selector", 0), x.get("descriptor", 0)
        op = _bits(FW_CFG_CONTROL, x.get("control", ()))
    elif k == "s2-written":
        va = x.get("lines", 0)
    elif k == "vcpu-start":
        op, va = x.get("slot", 0), x.get("x0", 0)
    elif k == "shim-start":
        op = POLICIES.ids[x["policy"]] if x.get("policy") else 0
        flags = POLICIES.ids[x["requested"]] if x.get("requested") else 0
    elif k == "diag":
        op, pa, flags = _code(DIAGS, e.op), x.get("info", 0), int(bool(x.get("fatal")))
    elif k == "psci-cpu-on":
        op, ipa, pa, va = x.get("target", 0), x.get("entry", 0), x.get("shim_entry", 0), \
            x.get("mpidr", 0)
    elif k == "s2-wrprotect":
        pa, va = x.get("end", 0), x.get("leaves", 1 if e.ipa is not None else 0)
    elif k in ("tvm", "s2-hide"):
        op = {"arm": 1, "hide": 1}.get(e.op, 0)
    record = (e.seq + 1, KINDS.ids[k], 0xFF if e.vcpu is None else e.vcpu, e.el or 0, access,
              op, flags, e.pc or 0, esr, ipa, pa, size, va)
    back = decode_fields(e.seq, record)
    for name in ("kind", "vcpu", "el", "pc", "access", "ipa", "pa", "size", "va", "op",
                 "reg", "old", "new", "rule"):
        want = getattr(e, name)
        if want is not None and getattr(back, name) != want:
            raise AssertionError(f"{k}: a record cannot say {name}={want!r} "
                                 f"(it decodes as {getattr(back, name)!r})")
    for key, want in x.items():
        if back.extra.get(key) != want:
            raise AssertionError(f"{k}: a record cannot say extra {key}={want!r} "
                                 f"(it decodes as {back.extra.get(key)!r})")
    return record


def records(events) -> list[tuple]:
    return [fields(e) for e in events]


def dicts(pairs) -> list[dict]:
    """(row, extras) pairs of the converter as trace events, without the seq the writer
    gives them."""
    pairs = list(pairs)
    rows = np.array([row for row, _ in pairs], dtype=EVENT_DTYPE).reshape(-1)
    extras = {i: x for i, (_, x) in enumerate(pairs) if x is not None}
    out = Trace({}, rows, extras).to_dicts()
    for d in out:
        del d["seq"]
    return out
