"""bench-live: Debian Linux to its console marker under the shim, watched live versus not.

Both sides run the same observing shim (``ShimParams`` defaults, policy kvm) and QEMU options.
Watched: a LiveSession (gdbplugin/capture/live.py) drains the ring from the shared RAM file as
the guest runs (handing records back, so the ring never fills), converts them, writes the trace
and replays it as a stream under every policy, with the warning printer on (into a buffer).
Unwatched: nobody reads the ring.  Rounds alternate which side goes first.  The time is from
QEMU's launch to the marker on the console; the watched side then drains what is left (its
session time and event count are printed too).  Prints every round and the median ratio with
its spread (target <= 1.05).
"""
from __future__ import annotations

import argparse
import io
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from gdbplugin.capture.live import LiveSession
from gdbplugin.shim.launch import ROOT, ShimImage, ShimParams, shim_config
from gdbplugin.shim.ring import RingReader
from gdbplugin.target.qemu import Qemu
from gdbplugin.ui.live import WarningPrinter

MARKER = re.compile(r"S2CACHE-BOOT-OK[^\n]*\n")
TARGET = 1.05


def _console(q: Qemu) -> str:
    try:
        return q.serial_log.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def run(config, watched: bool, timeout: float, tmp: Path) -> tuple[float, dict]:
    t0 = time.monotonic()
    info = {}
    with Qemu(config) as q:
        base = q.ram_base()
        live = None
        if watched:
            out = io.StringIO()
            live = LiveSession(lambda: RingReader.from_file(q.ram_path, base, consume=True),
                               vcpus=config.smp, trace=tmp / "live.jsonl",
                               drain="shared RAM file", info_roms=q.monitor("info roms"),
                               info_mtree=q.monitor("info mtree -f"),
                               views=[WarningPrinter(Console(file=out, width=120))])
        while not MARKER.search(_console(q)):
            if q._proc.poll() is not None or time.monotonic() - t0 > timeout:
                raise SystemExit(f"bench-live: no marker ({'watched' if watched else 'bare'})"
                                 f"; console tail:\n{_console(q)[-1500:]}")
            if live is None or not live.pump():
                time.sleep(0.01)
        elapsed = time.monotonic() - t0
        if live is not None:
            result = live.close()
            info = {"events": live.stats.events, "findings": len(live.findings),
                    "session": time.monotonic() - t0, "lost": live.ring.lost,
                    "uncovered": len(result.uncovered("kvm"))}
    return elapsed, info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench-live", description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--smp", type=int, default=1)
    ap.add_argument("--memory", default="512M")
    ap.add_argument("--cpu", default="max,pauth-impdef=on")
    ap.add_argument("--timeout", type=float, default=180)
    args = ap.parse_args(argv)
    if args.pairs < 1:
        ap.error("--pairs must be at least 1")
    images = ROOT / "build" / "images"
    kernel, initrd = images / "vmlinuz", images / "initramfs.cpio.gz"
    for f in (kernel, initrd):
        if not f.is_file():
            print(f"bench-live: {f} missing: run scripts/fetch-images", file=sys.stderr)
            return 2
    shim = ShimImage.load()
    config = shim_config(kernel, ShimParams(policy="kvm", poweroff_on_fatal=True, quiet=True),
                         shim=shim, initrd=initrd, append="console=ttyAMA0 panic=-1",
                         cpu=args.cpu, memory=args.memory, smp=args.smp, paused=False)
    print(f"bench-live: Linux to its marker under the observing shim (policy kvm), watched "
          f"live vs unwatched, {args.pairs} pairs alternated, -smp {args.smp}, -m "
          f"{args.memory}, -cpu {args.cpu}")
    ratios = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(args.pairs):
            order = (False, True) if i % 2 == 0 else (True, False)
            got = {w: run(config, w, args.timeout, Path(d)) for w in order}
            (bare, _), (watched, info) = got[False], got[True]
            ratios.append(watched / bare)
            print(f"  pair {i + 1}: unwatched {bare:6.3f} s  watched {watched:6.3f} s "
                  f"(x{watched / bare:5.3f}; {info['events']} events, {info['findings']} "
                  f"findings, {info['uncovered']} uncovered under kvm, {info['lost']} lost, "
                  f"session {info['session']:.1f} s)  [first: "
                  f"{'watched' if order[0] else 'unwatched'}]")
    med = statistics.median(ratios)
    print(f"watched/unwatched: median ratio {med:.3f} (target <= {TARGET}: "
          f"{'met' if med <= TARGET else 'MISSED'})  spread {min(ratios):.3f}..{max(ratios):.3f}")
    return 0 if med <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
