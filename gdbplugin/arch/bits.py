"""Declarative bit layouts for 64-bit AArch64 registers and descriptors.

A layout is written once as ``name -> bit`` or ``name -> (hi, lo)`` and compiled into a
construct ``BitStruct``; construct does every parse and build.  The same construct object is
also the source of the (shift, width) pairs the vectorized numpy paths use, so the bit positions
exist in exactly one place.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import construct as cs
from rich.table import Table
from rich.text import Text

FieldSpec = int | tuple[int, int]


def _span(spec: FieldSpec) -> tuple[int, int]:
    hi, lo = (spec, spec) if isinstance(spec, int) else spec
    if not 0 <= lo <= hi:
        raise ValueError(f"bad bit span {spec!r}")
    return hi, lo


@dataclass(frozen=True)
class FieldPos:
    """Where a field sits: derived from the construct struct, never written twice."""

    name: str
    lo: int
    width: int

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lo

    def get(self, value):
        """Extract from an int or a numpy uint64 array alike."""
        return (value >> self.lo) & ((1 << self.width) - 1)


class Layout:
    """A named register/descriptor layout of ``width`` bits, parsed and built by construct."""

    def __init__(self, name: str, width: int = 64, addresses: tuple[str, ...] = (),
                 **fields: FieldSpec):
        self.name = name
        self.width = width
        self.addresses = addresses      # fields shown in place (as the address they hold)
        spans = sorted(((*_span(s), n) for n, s in fields.items()), reverse=True)
        subcons = []
        top = width - 1
        for hi, lo, fname in spans:
            if hi > top:
                raise ValueError(f"{name}.{fname} overlaps or exceeds the layout")
            if hi < top:
                subcons.append(cs.Padding(top - hi))
            subcons.append(fname / (cs.Flag if hi == lo else cs.BitsInteger(hi - lo + 1)))
            top = lo - 1
        if top >= 0:
            subcons.append(cs.Padding(top + 1))
        self.struct = cs.BitStruct(*subcons)

    @cached_property
    def fields(self) -> dict[str, FieldPos]:
        """Field positions, read back from the construct struct (MSB first)."""
        out: dict[str, FieldPos] = {}
        top = self.width
        for sub in self.struct.subcon.subcons:
            size = sub.sizeof()
            top -= size
            if sub.name:
                out[sub.name] = FieldPos(sub.name, top, size)
        return out

    def parse(self, value: int) -> cs.Container:
        return self.struct.parse(int(value).to_bytes(self.width // 8, "big"))

    def build(self, **values) -> int:
        """Build a value; fields not given are zero."""
        full = {n: (False if p.width == 1 else 0) for n, p in self.fields.items()}
        full.update(values)
        return int.from_bytes(self.struct.build(full), "big")

    def get(self, value, field: str):
        return self.fields[field].get(value)

    def decode(self, value: int) -> dict[str, int]:
        """Plain ``{field: int}`` for JSON and comparisons."""
        return {k: int(v) for k, v in self.parse(value).items() if not k.startswith("_")}

    def render(self, value: int, title: str | None = None, all_fields: bool = False) -> Table:
        """A rich table, LSB first; only the set fields unless ``all_fields``."""
        table = Table(title=title or f"{self.name} = {value:#x}", header_style="bold")
        table.add_column("field")
        table.add_column("bits", justify="right")
        table.add_column("value", justify="right")
        decoded = self.decode(value)
        for pos in sorted(self.fields.values(), key=lambda p: p.lo):
            fval = decoded[pos.name]
            if not (fval or all_fields):
                continue
            bits = str(pos.lo) if pos.width == 1 else f"{pos.lo + pos.width - 1}:{pos.lo}"
            style = "bold green" if fval else "dim"
            shown = str(fval) if pos.width == 1 else hex(self.shown(pos.name, fval))
            table.add_row(Text(pos.name, style=style), bits, Text(shown, style=style))
        return table

    def shown(self, field: str, value: int) -> int:
        """A field's value as a person reads it: address fields in place."""
        return value << self.fields[field].lo if field in self.addresses else value

    def describe(self, value: int) -> str:
        """One line: the set fields, for logs and messages."""
        parts = [k if self.fields[k].width == 1 else f"{k}={self.shown(k, v):#x}"
                 for k, v in self.decode(value).items() if v]
        return f"{self.name}={value:#x} [{' '.join(parts)}]"
