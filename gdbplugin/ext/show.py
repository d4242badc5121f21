"""``s2cache sctlr|hazards|explain|lines``: what the watch has seen, in words and tables."""
from __future__ import annotations

import shlex

import gdb
from rich.markup import escape
from rich.table import Table

from ..model.hazards import DETECTORS, INFO_KINDS
from ..model.policies import POLICIES
from ..ui.live import sctlr_flags
from ..ui.report import where_text
from . import state
from .state import command_errors
from .watch import _Args, at_pc, symbol


def _replay():
    L = state.live()
    if L.session.replay is None:
        raise gdb.GdbError("s2cache: nothing recorded yet (has the shim started its ring?)")
    return L, L.session.replay


class Sctlr(gdb.Command):
    """s2cache sctlr [--all] [VCPU]: each vCPU's SCTLR_EL1 transitions of M, C or I, with PC
    and symbol (--all: every SCTLR_EL1 write, e.g. Linux's per-task pointer-auth bits)."""

    def __init__(self):
        super().__init__("s2cache sctlr", gdb.COMMAND_USER)

    @command_errors
    def invoke(self, arg, from_tty):
        L, rp = _replay()
        words = arg.split()
        every = "--all" in words
        words = [w for w in words if w != "--all"]
        only = int(words[0], 0) if words else None
        with L.busy:
            writes = [t for t in rp.transitions if t["reg"] == "SCTLR_EL1"
                      and (only is None or t["vcpu"] == only)]
        shown = [t for t in writes
                 if every or sctlr_flags(t["old"]) != sctlr_flags(t["new"])]
        out = state.console()
        for t in shown:
            out.print(f"seq {t['seq']:>7} vCPU {t['vcpu']}: {sctlr_flags(t['old'])} -> "
                      f"{sctlr_flags(t['new'])} ({t['old']:#x} -> {t['new']:#x})"
                      f"{at_pc(t.get('pc'))}")
        out.print(f"{len(shown)} transition(s) shown of {len(writes)} SCTLR_EL1 write(s)")


class Hazards(gdb.Command):
    """s2cache hazards [--policy P] [--all]: the findings so far (numbered for `explain`);
    --all adds the information kinds and the findings every policy leaves uncovered."""

    def __init__(self):
        super().__init__("s2cache hazards", gdb.COMMAND_USER)

    @command_errors
    def invoke(self, arg, from_tty):
        L, rp = _replay()
        p = _Args(prog="s2cache hazards", add_help=False)
        p.add_argument("--policy", choices=list(POLICIES))
        p.add_argument("--all", action="store_true")
        a = p.parse_args(shlex.split(arg))
        policy = a.policy or L.session.policy
        with L.busy:
            found = list(L.session.findings if policy == L.session.policy
                         else rp.worlds[policy].findings)
            others = {n: {(f.kind, f.seq, f.pa) for f in w.findings}
                      for n, w in rp.worlds.items()} if a.all else {}
        table = Table(title=f"findings under {policy}", header_style="bold")
        for col in ("#", "kind", "seq", "vCPU", "pc", "where", "covered by"):
            table.add_column(col)
        if a.all:
            table.add_column("uncovered in")
        for n, f in enumerate(found, 1):
            if f.kind in INFO_KINDS and not a.all:
                continue
            row = [str(n), f.kind, str(f.seq), "-" if f.vcpu is None else str(f.vcpu),
                   "-" if f.pc is None else f"{f.pc:#x}", where_text(f),
                   ", ".join(f.covered_by) or "-"]
            if a.all:
                row.append(", ".join(w for w, keys in others.items()
                                     if (f.kind, f.seq, f.pa) in keys))
            table.add_row(*map(escape, row))
        state.console().print(table)


class Explain(gdb.Command):
    """s2cache explain N: finding N in words: what happened, why it is a hazard on silicon,
    whose job it is, which policy rules cover it and the upstream code each rule mirrors."""

    def __init__(self):
        super().__init__("s2cache explain", gdb.COMMAND_USER)

    @command_errors
    def invoke(self, arg, from_tty):
        L, rp = _replay()
        try:
            n = int(arg, 0)
            f = L.session.findings[n - 1]
            if n < 1:
                raise IndexError
        except (ValueError, IndexError):
            raise gdb.GdbError(f"s2cache: no finding {arg.strip()!r} (1.."
                               f"{len(L.session.findings)}: see `s2cache hazards`)") from None
        det = DETECTORS[f.kind]
        out = state.console()
        name = symbol(f.pc)
        where = f" at pc {f.pc:#x}" + (f" <{name}>" if name else "") if f.pc is not None else ""
        vcpu = "" if f.vcpu is None else f" by vCPU {f.vcpu}"
        out.print(f"[bold]#{n} {f.kind}[/bold] (event seq {f.seq}{vcpu}{where}), "
                  f"{where_text(f)}")
        out.print(f"what: {escape(f.message or det.meaning)}")
        if det.whose:
            out.print(f"whose job: the {det.whose}'s" + (f" (seed thread point {det.seed})"
                                                          if det.seed else ""))
        if f.observed is not None:
            out.print("the traced hypervisor's own maintenance "
                      + ("covered it" if f.observed else "did not cover it"))
        if not f.covered_by:
            out.print("no policy's rules cover it")
        for rule in f.covered_by:
            policy = POLICIES.get(rule.split(".", 1)[0])
            text = policy.RULES.get(rule, "") if policy else ""
            out.print(f"covered by {rule}: {escape(text)}")


class Lines(gdb.Command):
    """s2cache lines PA [N]: the shadow state of N (default 8) 64-byte lines from PA under the
    active policy: dirty (newer in a cache than RAM), stale (RAM newer than a clean cached
    copy), code (written since the last I-cache invalidation), the page's last writer, and
    the rules that last cleaned and I-invalidated it."""

    def __init__(self):
        super().__init__("s2cache lines", gdb.COMMAND_USER)

    @command_errors
    def invoke(self, arg, from_tty):
        L, rp = _replay()
        words = arg.split()
        if not words:
            raise gdb.GdbError("s2cache: lines PA [N]")
        pa = int(gdb.parse_and_eval(words[0])) & ((1 << 64) - 1)
        count = int(words[1], 0) if len(words) > 1 else 8
        with L.busy:
            rows = rp.lines(L.session.policy, pa, min(count, 4096))
        table = Table(title=f"lines under {L.session.policy}", header_style="bold")
        for col in ("pa", "mapped", "dirty", "stale", "code", "last writer", "cleaned by",
                    "I-invalidated by"):
            table.add_column(col)
        for r in rows:
            if not r["ram"]:
                table.add_row(f"{r['pa']:#x}", "not RAM", *[""] * 6)
                continue
            writer = "-" if r["writer"] is None else \
                f"vCPU {r['writer'][0]} pc {r['writer'][1]:#x}"
            table.add_row(f"{r['pa']:#x}", "yes" if r["mapped"] else "no",
                          *("x" if r[s] else "." for s in ("dirty", "stale", "code")),
                          writer, r["cleaned_by"], r["icache_by"])
        state.console().print(table)


COMMANDS = (Sctlr, Hazards, Explain, Lines)
