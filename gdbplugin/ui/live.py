"""Live views of a LiveSession (gdbplugin/capture/live.py): warnings and transitions printed
as they happen, one line each, with rich (a terminal gets colour, a pipe or CI plain text)."""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from ..model.hazards import INFO_KINDS, Finding
from .report import where_text

SCTLR_BITS = (("M", 1 << 0), ("C", 1 << 2), ("I", 1 << 12))


def sctlr_flags(value: int) -> str:
    """SCTLR_EL1's cache-relevant bits as M/C/I letters, lower case when off."""
    return "".join(n if value & bit else n.lower() for n, bit in SCTLR_BITS)


def finding_line(f: Finding, symbol: str | None = None) -> str:
    """One line: kind, event, vCPU, PC (and ``symbol`` or the finding's own), pages, rules."""
    vcpu = "-" if f.vcpu is None else str(f.vcpu)
    name = symbol or f.symbol
    pc = "" if f.pc is None else f" pc {f.pc:#x}" + (f" <{name}>" if name else "")
    covered = ", ".join(f.covered_by) or "no policy rule"
    return f"{f.kind} seq {f.seq} vCPU {vcpu}{pc} {where_text(f)} (covered by: {covered})"


class WarningPrinter:
    """Prints each finding of the active policy once, and every SCTLR_EL1 transition that
    changes M, C or I, as the session publishes them."""

    def __init__(self, console: Console, transitions: bool = True):
        self.console = console
        self.transitions = transitions

    def transition(self, session, t: dict) -> None:
        if not self.transitions or t["reg"] != "SCTLR_EL1":
            return
        old, new = t["old"], t["new"]
        if sctlr_flags(old) == sctlr_flags(new):
            return
        pc = "" if t.get("pc") is None else f" pc {t['pc']:#x}"
        self.console.print(f"[cyan]vCPU {t['vcpu']} SCTLR_EL1 {sctlr_flags(old)} -> "
                           f"{sctlr_flags(new)}{pc}[/cyan]", highlight=False)

    def dropped(self, session, n: int) -> None:
        self.console.print(f"[bold red]{escape(dropped_line(n))}[/bold red]", highlight=False)

    def finding(self, session, f: Finding) -> None:
        style = "dim" if f.kind in INFO_KINDS else "bold red"
        tag = "info" if f.kind in INFO_KINDS else "hazard"
        self.console.print(f"[{style}]{tag}: {escape(finding_line(f))}[/{style}]",
                           highlight=False)


def dropped_line(n: int) -> str:
    """The one line that says the ring lost records."""
    return (f"s2cache: {n} ring record(s) lost (the ring was full; run the shim with "
            f"ring_full=wait so nothing is lost): findings may be missing from here on")
