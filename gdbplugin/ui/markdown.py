"""The Markdown report: the JSON report (gdbplugin/ui/report.py) laid out for a person -- the
verdict, the findings, the SCTLR_EL1 transitions, the policy comparison and the CPU's cache
geometry.  A pure function of the report dict, so every view tells the same story."""
from __future__ import annotations

from ..model.hazards import DETECTORS, INFO_KINDS
from .live import sctlr_flags
from .report import bytes_text, kinds_text


def markdown(report: dict, title: str = "s2cache report") -> str:
    v = report["verdict"]
    lines = [f"# {title}", ""]
    run = report.get("run") or {}
    if run.get("config"):
        lines.append(f"Configuration `{run['config']}`, ended by **{run.get('ended')}**; "
                     f"trace `{run.get('trace')}`.")
        lines.append("")
    hazards = [f for f in report["findings"] if f["kind"] not in INFO_KINDS]
    lines.append(f"**Verdict under `{report['policy']}`: "
                 + ("findings (exit 1)" if v["exit"] else "nothing left uncovered (exit 0)")
                 + f"**: {v['uncovered']} uncovered ({v['guest_own']} the guest's own"
                 + (", counted: --strict" if v["strict"] else ", not counted") + "), "
                 f"{sum(f['covered'] for f in hazards)} covered by the policy.")
    lines += ["", "## Findings", ""]
    if hazards:
        lines += _table(("seq", "kind", "vCPU", "pc", "where", "covered", "whose", "covered by",
                         "observed"),
                        [(f["seq"], f["kind"], _opt(f["vcpu"]), _pc(f), _where(f),
                          "yes" if f["covered"] else "**no**", f["responsibility"] or "-",
                          ", ".join(f["covered_by"]) or "-", _yes_no(f["observed"]))
                         for f in hazards])
        lines.append("")
        kinds = sorted({f["kind"] for f in hazards})
        lines += [f"- `{k}`: {DETECTORS[k].meaning}" for k in kinds]
        lines += [f"- seq {f['seq']}: {f['message']}" for f in hazards
                  if f["message"] != DETECTORS[f["kind"]].meaning]
    else:
        lines.append("None.")
    info = [f for f in report["findings"] if f["kind"] in INFO_KINDS]
    if info:
        lines += ["", "Context:", ""] + [f"- `{f['kind']}`: {f['message']}" for f in info]
    lines += ["", "## SCTLR_EL1 transitions (MMU, D-cache, I-cache)", ""]
    changes = [t for t in report["transitions"] if t["reg"] == "SCTLR_EL1"
               and sctlr_flags(t["old"]) != sctlr_flags(t["new"])]
    if changes:
        lines += _table(("seq", "vCPU", "old", "new", "M/C/I", "pc"),
                        [(t.get("seq", "-"), t["vcpu"], _hex(t["old"]), _hex(t["new"]), _mci(t),
                          _pc(t)) for t in changes])
    else:
        lines.append("None recorded.")
    others = len(report["transitions"]) - len(changes)
    if others:
        lines += ["", f"{others} other register writes (SCTLR_EL1 bits other than M/C/I, "
                      f"TTBRs, TCR, MAIR, HCR_EL2) are in the JSON report."]
    compare = report.get("compare_cost")
    if compare:
        lines += ["", "## Policy comparison (the same boot under every policy)", ""]
        lines += _table(("policy", "uncovered", "by kind", "cleaned", "invalidated", "ops",
                         "VM flushes", "I-cache invals"),
                        [(r["policy"], r["uncovered"], kinds_text(r["uncovered_by_kind"], ", "),
                          bytes_text(r["bytes_cleaned"]), bytes_text(r["bytes_invalidated"]),
                          r["operations"], r["vm_flushes"], r["icache_invalidations"])
                         for r in compare])
    cpu = report.get("cpu")
    if cpu:
        lines += ["", "## CPU", "",
                  f"`{cpu['model']}`: L1 I-cache {cpu['l1_icache']}, lines I {cpu['icache_line']}"
                  f" B / D {cpu['dcache_line']} B, CTR_EL0.DIC={int(cpu['dic'])} "
                  f"IDC={int(cpu['idc'])}, levels {' / '.join(cpu['levels']) or '-'}."]
    return "\n".join(lines) + "\n"


def _table(head, rows) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return out


def _mci(t: dict) -> str:
    return f"{sctlr_flags(t['old'])} -> {sctlr_flags(t['new'])}"


def _opt(v) -> str:
    return "-" if v is None else str(v)


def _hex(v) -> str:
    return "-" if v is None else f"`{v:#x}`"


def _pc(f: dict) -> str:
    if f["pc"] is None:
        return "-"
    return f"`{f['pc']:#x}`" + (f" `{f['symbol']}`" if f.get("symbol") else "")


def _where(f: dict) -> str:
    if f["pa"] is None:
        return "-"
    ipa = f"ipa `{f['ipa']:#x}` " if f["ipa"] is not None and f["ipa"] != f["pa"] else ""
    return f"{ipa}pa `{f['pa']:#x}`+`{f['size']:#x}`"


def _yes_no(v) -> str:
    return "-" if v is None else ("yes" if v else "no")
