"""Report views of a replay: the JSON report (README.md `s2cache replay`), the findings table, the
findings x policies matrix and the coverage-versus-cost table."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..arch.sysregs import CLIDR_EL1, CTR_EL0
from ..model.engine import OBSERVED, Result
from ..model.hazards import INFO_KINDS, Finding
from ..model.policies import POLICIES

REPORT_SCHEMA = "s2cache.report/1"
L1_IPOLICY = {0: "VPIPT", 1: "AIVIVT", 2: "VIPT", 3: "PIPT"}
CTYPES = {1: "I", 2: "D", 3: "I+D", 4: "unified"}


def listed(result: Result, policy: str) -> list[tuple[Finding, bool]]:
    """Every hazard raised with no maintenance at all or under ``policy``, in event order,
    with whether ``policy``'s rules cover it (a covered one is still worth showing: a
    covered set/way op is one the hypervisor must keep trapping)."""
    active = result.findings(policy)
    out = [(f, False) for f in active]
    if "none" in result.worlds and policy != "none":
        out += [(f, True) for f in result.findings("none")
                if f.kind not in INFO_KINDS and not any(_same(f, g) for g in active)]
    return sorted(out, key=lambda pair: pair[0].seq)


def finding_dicts(result: Result, policy: str, images: dict | None = None) -> list[dict]:
    """The report's ``findings``: ``listed`` as JSON objects, each with ``covered`` and the
    ``image`` file whose symbols named its PC (``images``: {pc: file})."""
    images = images or {}
    return [dict(f.as_dict(), covered=covered, image=images.get(f.pc))
            for f, covered in listed(result, policy)]


def verdict(result: Result, policy: str, strict: bool = False) -> dict:
    """The exit status's reasons: uncovered hazards that are the hypervisor's job (and with
    ``strict`` the guest's own) make it 1."""
    uncovered = result.uncovered(policy)
    failing = result.failing(policy, strict)
    return {"exit": 1 if failing else 0, "strict": strict, "failing": len(failing),
            "uncovered": len(uncovered),
            "guest_own": sum(f.responsibility == "guest" for f in uncovered)}


def cache_geometry(cpu: dict | None) -> dict | None:
    """The traced CPU's cache facts (CTR_EL0, CLIDR_EL1) that decide the I-side checks."""
    if not cpu or cpu.get("ctr_el0") is None:
        return None
    ctr, clidr = int(cpu["ctr_el0"]), int(cpu.get("clidr_el1") or 0)
    f = CTR_EL0.parse(ctr)
    c = CLIDR_EL1.parse(clidr)
    levels = [CTYPES[t] for n in range(1, 8) if (t := c[f"Ctype{n}"]) in CTYPES]
    return {"model": cpu.get("model"), "midr_el1": cpu.get("midr_el1"), "ctr_el0": ctr,
            "clidr_el1": clidr, "dic": bool(f.DIC), "idc": bool(f.IDC),
            "l1_icache": L1_IPOLICY[f.L1Ip], "icache_line": 4 << f.IminLine,
            "dcache_line": 4 << f.DminLine, "levels": levels,
            "level_of_coherence": c.LoC, "level_of_unification": c.LoUU}


def report(result: Result, policy: str, cpu: dict | None = None, strict: bool = False,
           images: dict | None = None) -> dict:
    """The report of one run under the active ``policy`` (README.md, "Report")."""
    return {"schema": REPORT_SCHEMA, "policy": policy,
            "verdict": verdict(result, policy, strict),
            "findings": finding_dicts(result, policy, images),
            "transitions": [{k: t.get(k) for k in ("vcpu", "reg", "old", "new", "pc", "seq",
                                                   "symbol")}
                            for t in result.transitions],
            "stage2": {"maps": result.maps, "unmaps": result.unmaps},
            "cpu": cache_geometry(cpu),
            "stats": result.stats}


def cost_rows(result: Result) -> list[dict]:
    """The coverage-versus-cost trade-off, one row per world: uncovered findings by kind and
    what the policy's maintenance cost for this boot."""
    rows = []
    for name, w in result.worlds.items():
        by_kind: dict[str, int] = {}
        for f in result.uncovered(name):
            by_kind[f.kind] = by_kind.get(f.kind, 0) + 1
        rows.append({"policy": name, "uncovered": sum(by_kind.values()),
                     "uncovered_by_kind": by_kind, **w.cost.as_dict()})
    return rows


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


def print_findings(console: Console, result: Result, policy: str,
                   covered_rows: int = 40, rows: int = 200) -> None:
    """The listed findings (covered ones dimmed; past ``covered_rows`` of them, and past
    ``rows`` in all, counted by kind: the reports list them all): rule ids and kinds fold,
    never cut."""
    table = Table(title=f"findings under policy {policy}", header_style="bold")
    for col in ("seq", "kind", "vCPU", "pc", "where", "covered", "whose", "covered by",
                "observed"):
        table.add_column(col, overflow="fold")
    pairs = listed(result, policy)
    covered_pairs = [p for p in pairs if p[1]]
    hidden: dict[str, int] = {}
    if len(covered_pairs) > covered_rows:
        for f, _ in covered_pairs:
            hidden[f.kind] = hidden.get(f.kind, 0) + 1
        pairs = [p for p in pairs if not p[1]]
    for f, _ in pairs[rows:]:
        hidden[f.kind] = hidden.get(f.kind, 0) + 1
    shown = pairs[:rows]
    for f, covered in shown:
        style = "dim" if f.kind in INFO_KINDS or covered else None
        table.add_row(str(f.seq), f.kind, "-" if f.vcpu is None else str(f.vcpu),
                      pc_text(f), where_text(f),
                      "-" if f.kind in INFO_KINDS else ("yes" if covered else "[red]no[/red]"),
                      f.responsibility or "-", ", ".join(f.covered_by) or "-",
                      "-" if f.observed is None else ("yes" if f.observed else "no"),
                      style=style)
    console.print(table)
    if hidden:
        console.print(f"[dim]and {sum(hidden.values())} more findings (the covered ones "
                      f"first): {kinds_text(hidden, ', ')} (every one is in the reports)[/dim]",
                      highlight=False)
    for f, _ in pairs:
        if f.kind in INFO_KINDS:
            console.print(f"[dim]{f.kind}: {f.message}[/dim]", highlight=False)


def pc_text(f: Finding) -> str:
    if f.pc is None:
        return "-"
    return f"{f.pc:#x}" + (f" <{f.symbol}>" if f.symbol else "")


def print_compare(console: Console, result: Result) -> None:
    names = [n for n in POLICIES if n in result.worlds]
    table = Table(title="findings x policies (x = left uncovered)", header_style="bold")
    for col in ("seq", "kind", "vCPU", "where", *names):
        table.add_column(col, justify="center" if col in names else "left", overflow="fold")
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
    for col in ("policy", "uncovered", "by kind", "cleaned", "invalidated", "ops",
                "VM flushes", "I-cache invals"):
        table.add_column(col, justify="left" if col in ("policy", "by kind") else "right",
                         overflow="fold")
    for row in cost_rows(result):
        name = row["policy"]
        label = f"{name} (traced hypervisor)" if name == OBSERVED else name
        table.add_row(label, str(row["uncovered"]), kinds_text(row["uncovered_by_kind"]),
                      bytes_text(row["bytes_cleaned"]), bytes_text(row["bytes_invalidated"]),
                      str(row["operations"]), str(row["vm_flushes"]),
                      str(row["icache_invalidations"]))
    console.print(table)


def kinds_text(by_kind: dict[str, int], sep: str = "\n") -> str:
    return sep.join(f"{n} {k}" for k, n in sorted(by_kind.items())) or "-"


def bytes_text(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"
