"""Report views of a replay: the JSON report (README.md `s2cache replay`), the findings table, the
findings x policies matrix and the coverage-versus-cost table."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..model.engine import OBSERVED, Result
from ..model.hazards import INFO_KINDS, Finding
from ..model.policies import POLICIES

REPORT_SCHEMA = "s2cache.report/1"


def report(result: Result, policy: str) -> dict:
    """The report of one run under the active ``policy``."""
    return {"schema": REPORT_SCHEMA, "policy": policy,
            "findings": [f.as_dict() for f in result.findings(policy)],
            "transitions": [{k: t[k] for k in ("vcpu", "reg", "old", "new", "pc")}
                            for t in result.transitions],
            "stage2": {"maps": result.maps, "unmaps": result.unmaps},
            "stats": result.stats}


def matrix(result: Result) -> list[dict]:
    """For each finding of the no-maintenance baseline: which policies leave it uncovered (a
    finding of the same kind at the same event overlapping it)."""
    rows = []
    for f in result.findings("none"):
        if f.kind in INFO_KINDS:
            continue
        rows.append({"finding": f.as_dict(), "uncovered": {
            name: any(_same(f, g) for g in result.findings(name))
            for name in POLICIES if name in result.worlds}})
    return rows


def _same(a: Finding, b: Finding) -> bool:
    if (a.kind, a.seq, a.vcpu) != (b.kind, b.seq, b.vcpu):
        return False
    if a.pa is None or b.pa is None:
        return True
    return a.pa < b.pa + (b.size or 0) and b.pa < a.pa + (a.size or 0)


def where_text(f: Finding) -> str:
    if f.pa is None:
        return "-"
    ipa = f"ipa {f.ipa:#x} " if f.ipa is not None and f.ipa != f.pa else ""
    return f"{ipa}pa {f.pa:#x}+{f.size:#x}"


def print_findings(console: Console, result: Result, policy: str) -> None:
    findings = result.findings(policy)
    table = Table(title=f"findings under policy {policy}", header_style="bold")
    for col in ("seq", "kind", "vCPU", "pc", "where", "covered by", "observed"):
        table.add_column(col)
    for f in findings:
        style = "dim" if f.kind in INFO_KINDS else None
        table.add_row(str(f.seq), f.kind, "-" if f.vcpu is None else str(f.vcpu),
                      "-" if f.pc is None else f"{f.pc:#x}", where_text(f),
                      ", ".join(f.covered_by) or "-",
                      "-" if f.observed is None else ("yes" if f.observed else "no"),
                      style=style)
    console.print(table)
    for f in findings:
        if f.kind in INFO_KINDS:
            console.print(f"[dim]{f.kind}: {f.message}[/dim]", highlight=False)


def print_compare(console: Console, result: Result) -> None:
    names = [n for n in POLICIES if n in result.worlds]
    table = Table(title="findings x policies (x = left uncovered)", header_style="bold")
    for col in ("seq", "kind", "vCPU", "where", *names):
        table.add_column(col, justify="center" if col in names else "left")
    for row in matrix(result):
        f = row["finding"]
        table.add_row(str(f["seq"]), f["kind"], "-" if f["vcpu"] is None else str(f["vcpu"]),
                      where_text(Finding(**{k: f[k] for k in Finding.__dataclass_fields__})),
                      *("[red]x[/red]" if row["uncovered"][n] else "[green]ok[/green]"
                        for n in names))
    console.print(table)
    print_cost(console, result)


def print_cost(console: Console, result: Result) -> None:
    table = Table(title="coverage versus maintenance cost", header_style="bold")
    for col in ("policy", "uncovered", "cleaned", "invalidated", "ops", "VM flushes",
                "I-cache invals"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for name, w in result.worlds.items():
        c = w.cost
        label = f"{name} (traced hypervisor)" if name == OBSERVED else name
        table.add_row(label, str(len(result.uncovered(name))), _bytes(c.bytes_cleaned),
                      _bytes(c.bytes_invalidated), str(c.operations), str(c.vm_flushes),
                      str(c.icache_invalidations))
    console.print(table)


def _bytes(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"
