"""Rich renderings of decoded state: registers, table walks.  Views only: no decoding here."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..arch.sysregs import HCR_EL2, REGISTERS, current_el


def size_text(n: int) -> str:
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return hex(n)


def attr_summary(attrs: dict) -> str:
    flags = [k for k in ("ng", "pxn", "uxn", "contiguous", "dbm") if attrs.get(k)]
    if not attrs.get("af"):
        flags.append("!AF")
    if "s2ap" in attrs:
        xn = {0: "X", 1: "PXN", 2: "XN", 3: "UXN"}[attrs["xn"]]
        head = f"{attrs['memtype']} {attrs['s2ap']} {attrs['sh']} {xn}"
    else:
        mt = attrs["memtype"] or f"AttrIndx{attrs['attr_index']}"
        head = f"{mt} {attrs['ap']} {attrs['sh']}"
    return " ".join([head, *flags])


def mappings_table(mappings, limit: int | None = None) -> Table:
    table = Table(show_header=True, header_style="bold")
    for col in ("input", "output", "size", "level", "attributes"):
        table.add_column(col, justify="right" if col in ("size", "level") else "left",
                         no_wrap=col != "attributes")
    shown = mappings if limit is None else mappings[:limit]
    for m in shown:
        table.add_row(f"{m.ia:#x}", f"{m.oa:#x}", size_text(m.size), str(m.level),
                      attr_summary(m.attrs))
    if len(shown) < len(mappings):
        table.add_row("…", "", "", "", f"{len(mappings) - len(shown)} more runs")
    return table


def print_walk(console: Console, title: str, regime, mappings, errors, limit=None) -> None:
    if title:
        console.print(f"[bold cyan]{title}[/bold cyan]")
    if not regime.fatal:
        console.print(regime.describe(), highlight=False)
    console.print(mappings_table(mappings, limit))
    console.print(f"{len(mappings)} runs, {sum(m.size for m in mappings):#x} bytes mapped",
                  highlight=False)
    for e in errors:
        console.print(f"[red]error[/red] {e['kind']}: {e['message']}", highlight=False)


def print_vcpu(console: Console, state) -> None:
    console.print(f"[bold]vCPU {state.vcpu}[/bold] at EL{current_el(state.regs['CPSR'])}")
    e2h = bool(HCR_EL2.get(state.regs.get("HCR_EL2", 0), "E2H"))
    for name, value in state.regs.items():
        layout = REGISTERS.get(name)
        label = name
        if name == "TCR_EL2" and e2h:       # HCR_EL2.E2H=1: TCR_EL2 takes TCR_EL1's format
            layout, label = REGISTERS["TCR_EL1"], "TCR_EL2 (E2H=1, TCR_EL1 format)"
        if layout is not None:
            console.print("  " + layout.describe(value).replace(layout.name, label, 1),
                          highlight=False)
