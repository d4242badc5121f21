"""The SVG timeline of a run (matplotlib): one lane per vCPU with its SCTLR_EL1 MMU, D-cache
and I-cache on/off over the trace and the function (else the PC) of each transition, the
stage-2 fault rate below, and every hazard marked where it was raised, by kind (uncovered
filled, covered hollow).  The x axis is the trace's event order (``seq``), the one clock
every event has, linear over the first ``LINEAR`` events and logarithmic after: firmware and
early boot, where the caches change state, take a few hundred events of a boot's hundreds of
thousands."""
from __future__ import annotations

import subprocess

import numpy as np

from ..arch.sysregs import SCTLR_EL1
from ..model.hazards import DETECTORS, INFO_KINDS
from .live import sctlr_flags

BITS = (("I", "I-cache", "#59a14f"), ("C", "D-cache", "#4e79a7"), ("M", "MMU", "#f28e2b"))
LABELLED_TRANSITIONS = 12          # per vCPU: more would not be readable
LABEL_CHARS = 32                   # a transition's label, cut to fit the room above its lane
LINEAR = 100
# The layout, fixed in inches: what matplotlib's tight_layout chose for 1-4 vCPUs with a
# legend (it took ~0.05 s of the ~0.12 s a picture costs, on the critical path of a run's
# end).  The gap above each lane holds its transitions' rotated labels.
MARGIN_LEFT, MARGIN_TOP, MARGIN_BOTTOM, LANE_GAP = 1.55, 0.78, 0.6, 0.52
MARGIN_RIGHT, MARGIN_RIGHT_LEGEND = 0.25, 1.7


def _frame(vcpus: int):
    """(figure, axes): the parts of the picture no run changes, for ``vcpus`` lanes (the
    Drawer's helper builds them while the guest boots, ~10 ms off a run's end)."""
    _, Figure, _, FuncFormatter = _matplotlib()
    fig = Figure(figsize=(14, 1.9 * vcpus + 2.2))
    axes = fig.subplots(vcpus + 1, 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": [3] * vcpus + [2]})[:, 0]
    for v in range(vcpus):
        ax = axes[v]
        for row, (_, _, colour) in enumerate(BITS):
            ax.axhline(row + 0.5, color=colour, lw=0.6, alpha=0.5)        # the off state
        ax.set_ylim(0, 3.9)
        ax.set_yticks([0.5, 1.5, 2.5, 3.45], [b[1] for b in BITS] + ["hazards"])
        ax.set_ylabel(f"vCPU {v}", rotation=0, ha="right", va="center", fontweight="bold")
        ax.grid(axis="x", alpha=0.3)
    ax = axes[-1]
    ax.set_ylabel("stage-2 faults\nper 1k events", rotation=0, ha="right", va="center")
    ax.set_xlabel(f"trace event (seq; linear to {LINEAR}, logarithmic after)")
    ax.set_xscale("symlog", linthresh=LINEAR, linscale=1.0)
    # plain "10k" labels: the default 10^n labels go through mathtext, a third of the time
    # the whole picture took
    ax.xaxis.set_major_formatter(FuncFormatter(_events_label))
    return fig, axes


def timeline_svg(report: dict, fault_seqs: np.ndarray, vcpus: int, path: str,
                 title: str = "s2cache timeline", frame=None) -> None:
    """Draw the timeline into ``path``; ``frame``: ``_frame(vcpus)`` built beforehand."""
    matplotlib, _, Line2D, _ = _matplotlib()

    hazards = [f for f in report["findings"] if f["kind"] not in INFO_KINDS]
    end = max([int(fault_seqs.max()) if fault_seqs.size else 0]
              + [t.get("seq") or 0 for t in report["transitions"]]
              + [f["seq"] for f in hazards] + [1]) + 1
    fig, axes = frame if frame is not None else _frame(vcpus)
    colours = matplotlib.colormaps["tab10"]
    kind_colour = {k: colours(i) for i, k in enumerate(k for k in DETECTORS
                                                       if k not in INFO_KINDS)}
    for v in range(vcpus):
        ax = axes[v]
        trans = [t for t in report["transitions"]
                 if t["vcpu"] == v and t["reg"] == "SCTLR_EL1" and t.get("seq") is not None]
        for row, (bit, label, colour) in enumerate(BITS):
            ax.broken_barh(_on_spans(trans, bit, end), (row + 0.15, 0.7), color=colour)
        changes = [t for t in trans if sctlr_flags(t["old"]) != sctlr_flags(t["new"])]
        for t in changes[:LABELLED_TRANSITIONS]:
            ax.axvline(t["seq"], color="grey", lw=0.5, ls=":")
            if t["pc"] is not None:
                where = t.get("symbol") or f"{t['pc']:#x}"
                label = f"{sctlr_flags(t['new'])} @{where}"
                if len(label) > LABEL_CHARS:
                    label = label[:LABEL_CHARS - 1] + "\N{HORIZONTAL ELLIPSIS}"
                ax.annotate(label, (t["seq"], 3.0),
                            fontsize=6, rotation=30, ha="left", va="bottom",
                            annotation_clip=False)
        for f in hazards:
            if f["vcpu"] != v:
                continue
            c = kind_colour[f["kind"]]
            ax.plot(f["seq"], 3.45, marker="v", ms=8, color=c,
                    markerfacecolor="none" if f["covered"] else c, ls="none")
    ax = axes[-1]
    edges = np.unique(np.concatenate([np.linspace(0, min(LINEAR, end), 11),
                                      np.geomspace(LINEAR, max(end, LINEAR + 1), 120)]))
    counts, edges = np.histogram(fault_seqs, bins=edges)
    ax.stairs(1000 * counts / np.diff(edges), edges, fill=True, color="#bab0ac")
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
    _fixed_layout(fig, vcpus + 1, legend=bool(handles))
    fig.savefig(path, format="svg")


def _fixed_layout(fig, rows: int, legend: bool) -> None:
    """Margins and gaps in inches, whatever the figure's size (see MARGIN_LEFT)."""
    width, height = fig.get_size_inches()
    right = MARGIN_RIGHT_LEGEND if legend else MARGIN_RIGHT
    axes_and_gaps = height - MARGIN_TOP - MARGIN_BOTTOM
    # matplotlib's hspace is a gap over the mean axes height: (rows - 1) gaps of hspace * mean
    hspace = LANE_GAP * rows / (axes_and_gaps - (rows - 1) * LANE_GAP)
    fig.subplots_adjust(left=MARGIN_LEFT / width, right=1 - right / width,
                        top=1 - MARGIN_TOP / height, bottom=MARGIN_BOTTOM / height,
                        hspace=hspace)


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
    """``timeline_svg`` in a helper process started ahead of time: ``s2cache run`` starts it
    with the guest, so that it imports matplotlib (~0.5 s of a CPU) while the guest boots,
    and it draws when ``start`` (or ``draw``) hands it the report.  A plain ``python -c`` child
    with a pickle over its stdin and stdout, not multiprocessing: a spawned multiprocessing
    child re-imports the caller's main script, which for a script using s2cache as a library
    would start its session again.  Should the helper die or fail to start, ``draw`` draws
    here instead: a picture is never lost to the optimisation."""

    def __init__(self, vcpus: int | None = None):
        import os
        import sys
        from pathlib import Path
        here = str(Path(__file__).resolve().parents[2])       # the folder holding gdbplugin/
        path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
        serve = f"from gdbplugin.ui.timeline import _serve; _serve({int(vcpus or 0)})"
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", serve],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                env=dict(os.environ, PYTHONPATH=path), process_group=0)
        except OSError:
            self._proc = None

    def draw(self, report: dict, fault_seqs: np.ndarray, vcpus: int, path: str,
             title: str = "s2cache timeline") -> None:
        """Draw (raising OSError when ``path`` cannot be written, as ``timeline_svg``)."""
        self.start(report, fault_seqs, vcpus, path, title)
        self.finish()

    def start(self, report: dict, fault_seqs: np.ndarray, vcpus: int, path: str,
              title: str = "s2cache timeline") -> None:
        """Hand the helper the picture to draw and return: the caller writes its other
        reports meanwhile, then ``finish`` waits for this one."""
        import pickle
        self._args = (report, fault_seqs, vcpus, path, title)
        if self._proc is None:
            return
        try:
            self._proc.stdin.write(pickle.dumps(self._args))
            self._proc.stdin.close()
        except (OSError, ValueError):
            self.close()                         # it died: ``finish`` draws here
            return
        self._proc.stdin = None                  # closed: communicate() only reads

    def finish(self) -> None:
        """The picture ``start`` asked for, drawn (here, should the helper have died);
        OSError when its file cannot be written."""
        import pickle
        try:
            if self._proc is None:
                raise EOFError
            answer, _ = self._proc.communicate(timeout=120)
            error = pickle.loads(answer)
        except (EOFError, OSError, ValueError, pickle.UnpicklingError,
                subprocess.TimeoutExpired):
            self.close()                         # no helper, or it died: draw here
            timeline_svg(*self._args)
            return
        self.close()
        if error is not None:
            raise OSError(error)

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            for f in (self._proc.stdin, self._proc.stdout):
                if f is not None and not f.closed:
                    f.close()
            self._proc = None


def _idle() -> None:
    """This process runs only on a CPU nothing else wants (SCHED_IDLE; nice 19 where that
    is refused): at nice 19 its imports, on the core the session's drain and QEMU's main loop
    share during the boot's busiest second, still slowed a Linux boot by ~3% (A/B, 10 rounds:
    3.13 s vs 3.04 s to the marker, 3.08 s unwatched)."""
    import os
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)


def _unidle() -> None:
    """Back to the normal policy to draw: the picture is then what the run's end waits for,
    beside the session's other reports and QEMU's exit (idle, it drew in ~80 ms instead of
    ~55).  Leaving SCHED_IDLE needs CAP_SYS_NICE (or an RLIMIT_NICE of 20): without it the
    helper draws idle, on whatever CPU is left."""
    import os
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (AttributeError, OSError):
        pass


def _serve(vcpus: int = 0) -> None:
    """The helper's side of ``Drawer``: import matplotlib and build the frame of a picture of
    ``vcpus`` lanes (0: not known yet), then draw what stdin holds (a pickled argument
    tuple; nothing: the session ended without a picture) and answer on stdout (None, or why
    the file could not be written).  It ends with ``os._exit``: the session waits for its
    exit, and tearing down an interpreter holding matplotlib and numpy took ~0.1 s of the
    run's end."""
    import os
    import pickle
    import signal
    import sys
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # a terminal's Ctrl-C is the session's
    _idle()                 # its imports must not take the CPU from the guest booting now
    _warm_up()
    frame = _frame(vcpus) if vcpus else None
    data = sys.stdin.buffer.read()
    if not data:
        return
    _unidle()
    try:
        args = pickle.loads(data)
        timeline_svg(*args, frame=frame if args[2] == vcpus else None)
        error = None
    except OSError as exc:
        error = exc.strerror or str(exc)
    sys.stdout.buffer.write(pickle.dumps(error))
    sys.stdout.buffer.flush()
    os._exit(0)


def _warm_up() -> None:
    """matplotlib imported, and one small figure of the timeline's parts (broken bars, a
    symlog axis, rotated text, a legend) written as SVG to memory: the fonts
    and caches a first picture loads (~0.06 s) are loaded while the guest boots."""
    import io
    _, Figure, Line2D, _ = _matplotlib()
    fig = Figure(figsize=(4, 2))
    ax = fig.subplots()
    ax.broken_barh([(0, 1)], (0, 1))
    ax.annotate("MCI @x", (0.5, 0.5), fontsize=6, rotation=30)
    ax.set_xscale("symlog", linthresh=10)
    ax.legend(handles=[Line2D([], [], marker="v", ls="none", label="k")], title="t",
              fontsize=7, title_fontsize=7)
    fig.suptitle("s2cache", fontsize=10)
    fig.savefig(io.StringIO(), format="svg")


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
