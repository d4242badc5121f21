"""The SVG timeline of a run (matplotlib): one lane per vCPU with its SCTLR_EL1 MMU, D-cache
and I-cache on/off over the trace and the function (else the PC) of each transition, the
stage-2 fault rate below, and every hazard marked where it was raised, by kind (uncovered
filled, covered hollow).  The x axis is the trace's event order (``seq``), the one clock
every event has, linear over the first ``LINEAR`` events and logarithmic after: firmware and
early boot, where the caches change state, take a few hundred events of a boot's hundreds of
thousands."""
from __future__ import annotations

import numpy as np

from ..arch.sysregs import SCTLR_EL1
from ..model.hazards import DETECTORS, INFO_KINDS
from .live import sctlr_flags

BITS = (("I", "I-cache", "#59a14f"), ("C", "D-cache", "#4e79a7"), ("M", "MMU", "#f28e2b"))
LABELLED_TRANSITIONS = 12          # per vCPU: more would not be readable
LINEAR = 100


def timeline_svg(report: dict, fault_seqs: np.ndarray, vcpus: int, path: str,
                 title: str = "s2cache timeline") -> None:
    matplotlib, Figure, Line2D, FuncFormatter = _matplotlib()

    hazards = [f for f in report["findings"] if f["kind"] not in INFO_KINDS]
    end = max([int(fault_seqs.max()) if fault_seqs.size else 0]
              + [t.get("seq") or 0 for t in report["transitions"]]
              + [f["seq"] for f in hazards] + [1]) + 1
    fig = Figure(figsize=(14, 1.9 * vcpus + 2.2))
    axes = fig.subplots(vcpus + 1, 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": [3] * vcpus + [2]})
    axes = axes[:, 0]
    colours = matplotlib.colormaps["tab10"]
    kind_colour = {k: colours(i) for i, k in enumerate(k for k in DETECTORS
                                                       if k not in INFO_KINDS)}
    for v in range(vcpus):
        ax = axes[v]
        trans = [t for t in report["transitions"]
                 if t["vcpu"] == v and t["reg"] == "SCTLR_EL1" and t.get("seq") is not None]
        for row, (bit, label, colour) in enumerate(BITS):
            ax.broken_barh(_on_spans(trans, bit, end), (row + 0.15, 0.7), color=colour)
            ax.axhline(row + 0.5, color=colour, lw=0.6, alpha=0.5)        # the off state
        changes = [t for t in trans if sctlr_flags(t["old"]) != sctlr_flags(t["new"])]
        for t in changes[:LABELLED_TRANSITIONS]:
            ax.axvline(t["seq"], color="grey", lw=0.5, ls=":")
            if t["pc"] is not None:
                where = t.get("symbol") or f"{t['pc']:#x}"
                ax.annotate(f"{sctlr_flags(t['new'])} @{where}", (t["seq"], 3.0),
                            fontsize=6, rotation=30, ha="left", va="bottom",
                            annotation_clip=False)
        for f in hazards:
            if f["vcpu"] != v:
                continue
            c = kind_colour[f["kind"]]
            ax.plot(f["seq"], 3.45, marker="v", ms=8, color=c,
                    markerfacecolor="none" if f["covered"] else c, ls="none")
        ax.set_ylim(0, 3.9)
        ax.set_yticks([0.5, 1.5, 2.5, 3.45], [b[1] for b in BITS] + ["hazards"])
        ax.set_ylabel(f"vCPU {v}", rotation=0, ha="right", va="center", fontweight="bold")
        ax.grid(axis="x", alpha=0.3)
    ax = axes[-1]
    edges = np.unique(np.concatenate([np.linspace(0, min(LINEAR, end), 11),
                                      np.geomspace(LINEAR, max(end, LINEAR + 1), 120)]))
    counts, edges = np.histogram(fault_seqs, bins=edges)
    ax.stairs(1000 * counts / np.diff(edges), edges, fill=True, color="#bab0ac")
    ax.set_ylabel("stage-2 faults\nper 1k events", rotation=0, ha="right", va="center")
    ax.set_xlabel(f"trace event (seq; linear to {LINEAR}, logarithmic after)")
    ax.set_xscale("symlog", linthresh=LINEAR, linscale=1.0)
    # plain "10k" labels: the default 10^n labels go through mathtext, a third of the time
    # the whole picture took
    ax.xaxis.set_major_formatter(FuncFormatter(_events_label))
    ax.set_xlim(0, end)
    handles = [Line2D([], [], marker="v", ls="none", color=c, label=k)
               for k, c in kind_colour.items() if any(f["kind"] == k for f in hazards)]
    if handles:
        axes[0].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                       fontsize=7, title="hazards (hollow: covered)", title_fontsize=7)
    v = report["verdict"]
    fig.suptitle(f"{title} - policy {report['policy']}: {v['failing']} failing, "
                 f"{v['uncovered']} uncovered, {len(hazards) - v['uncovered']} covered",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="svg")


def _matplotlib():
    """matplotlib, imported when a picture is drawn (0.5-0.7 s of a run's end otherwise).  The
    Figure API, not pyplot: pyplot's import (its GUI backend machinery) cost more than drawing
    the figure, and a headless run needs no figure manager."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter
    matplotlib.rcParams["svg.fonttype"] = "none"      # text stays text: searchable, small
    return matplotlib, Figure, Line2D, FuncFormatter


class Drawer:
    """``timeline_svg`` in a helper process started ahead of time: it imports matplotlib on
    another CPU while the session finishes its backlog (the guest is paused by then, so the
    CPU is free), and draws when ``draw`` hands it the report.  Should the helper die or fail
    to start, ``draw`` draws here instead: a picture is never lost to the optimisation."""

    def __init__(self):
        import multiprocessing
        ctx = multiprocessing.get_context("spawn")    # no fork of a process with threads
        self._conn, child = ctx.Pipe()
        try:
            self._proc = ctx.Process(target=_draw_worker, args=(child,), daemon=True,
                                     name="s2cache-timeline")
            self._proc.start()
        except OSError:
            self._proc = None
        child.close()

    def draw(self, report: dict, fault_seqs: np.ndarray, vcpus: int, path: str,
             title: str = "s2cache timeline") -> None:
        """Draw (raising OSError when ``path`` cannot be written, as ``timeline_svg``)."""
        args = (report, fault_seqs, vcpus, path, title)
        try:
            if self._proc is None:
                raise EOFError
            self._conn.send(args)
            error = self._conn.recv()
        except (EOFError, OSError):              # no helper: draw here
            self.close()
            timeline_svg(*args)
            return
        self.close()
        if error is not None:
            raise OSError(error)

    def close(self) -> None:
        self._conn.close()
        if self._proc is not None:
            self._proc.join(timeout=5)
            if self._proc.is_alive():
                self._proc.kill()
            self._proc = None


def _draw_worker(conn) -> None:
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # a terminal's Ctrl-C is the session's
    _matplotlib()
    try:
        args = conn.recv()
    except EOFError:
        return                                # the session ended without a picture
    try:
        timeline_svg(*args)
        conn.send(None)
    except OSError as exc:
        conn.send(exc.strerror or str(exc))


def _events_label(x: float, _pos=None) -> str:
    """An event count as an axis label: 0, 50, 100, 1k, 10k, 1M."""
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:g}{unit}"
    return f"{x:g}"


def _on_spans(trans: list[dict], bit: str, end: int) -> list[tuple[int, int]]:
    """(start, width) of the intervals where SCTLR_EL1.<bit> was 1 on this vCPU."""
    spans, since = [], None
    for t in trans:
        was, now = SCTLR_EL1.get(t["old"], bit), SCTLR_EL1.get(t["new"], bit)
        if since is None and was:
            since = 0                              # on before the trace showed it
        if now and since is None:
            since = t["seq"]
        elif not now and since is not None:
            spans.append((since, t["seq"] - since))
            since = None
    if since is not None:
        spans.append((since, end - since))
    return spans
