"""Live views of a LiveSession (gdbplugin/capture/live.py): warnings and transitions printed
as they happen, one line each, with rich (a terminal gets colour, a pipe or CI plain text);
on a terminal, ``LivePanel``: the run's state redrawn in place."""
from __future__ import annotations

import time
from collections import deque

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table

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


class LivePanel:
    """A terminal's live view of a run: elapsed time against the timeout, events/s, each
    vCPU's EL and SCTLR_EL1 M/C/I, stage-2 pages mapped, and the last findings as they
    arrive.  Use as a context manager around the run; ``session`` is set once it exists."""

    RECENT = 8

    def __init__(self, console: Console, title: str, timeout: float):
        self.console, self.title, self.timeout = console, title, timeout
        self.session = None
        self.recent: deque[str] = deque(maxlen=self.RECENT)
        self.started = time.monotonic()
        self._rate = (self.started, 0, 0.0)        # (when, events, events/s) for the rate
        self._live = Live(console=console, refresh_per_second=4, get_renderable=self.render,
                          transient=False)

    def __enter__(self):
        self._live.__enter__()
        return self

    def __exit__(self, *exc):
        self._live.__exit__(*exc)

    def finding(self, session, f: Finding) -> None:
        style = "dim" if f.kind in INFO_KINDS else "bold red"
        self.recent.append(f"[{style}]{escape(finding_line(f))}[/{style}]")

    def dropped(self, session, n: int) -> None:
        self.recent.append(f"[bold red]{escape(dropped_line(n))}[/bold red]")

    def render(self):
        elapsed = time.monotonic() - self.started
        grid = Table.grid(padding=(0, 2))
        bar = ProgressBar(total=self.timeout, completed=min(elapsed, self.timeout), width=30)
        clock = Table.grid(padding=(0, 1))
        clock.add_row(bar, f"{elapsed:5.1f} s of {self.timeout:g} s")
        grid.add_row("elapsed", clock)
        st = self.session.status() if self.session is not None else None
        if st is not None:
            when, events, rate = self._rate
            now = time.monotonic()
            if now - when >= 1.0:
                rate = (st["events"] - events) / (now - when)
                self._rate = (now, st["events"], rate)
            grid.add_row("events", f"{st['events']:,} ({rate:,.0f}/s)")
            grid.add_row("stage 2", f"{st['pages_mapped']:,} pages mapped, {st['maps']:,} maps")
            grid.add_row("findings", f"{st['uncovered']} hazards, {st['findings']} in all "
                         f"(policy {st['policy']})")
            for v in st["vcpus"]:
                state = (f"EL{v['el']} SCTLR_EL1 {sctlr_flags(v['sctlr'])}"
                         if v["online"] else "off")
                grid.add_row(f"vCPU {v['vcpu']}", state)
        body = [grid]
        if self.recent:
            body += ["", *self.recent]
        return Panel(Group(*body), title=escape(self.title), border_style="blue")
