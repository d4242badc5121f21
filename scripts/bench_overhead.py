"""bench-overhead: what `s2cache run` costs a CI job over booting the same QEMU unwatched.

Watched: ``s2cache run qemu-configs/linux-shim.toml`` with every report on (JSON, Markdown,
SARIF, SVG, the trace) and its stdout not a terminal (no live panel), timed from the
process's start to its exit: the wait a CI job sees, the drain, replay and reports included.
The watched boot's own time to its marker is printed too.
Unwatched: the same configuration's QEMU command line (``s2cache qemu-cmd``, without -S), its
work directory (guest RAM) where ``s2cache run`` puts its own, nobody reading the shim's ring
(it holds the whole boot), timed from launch to the marker on its console.  Pairs alternate
which side goes first; prints every pair, both medians, the median ratio and its spread
(target <= 1.10).
"""
from __future__ import annotations

import argparse
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.10


def s2cache(*argv) -> list[str]:
    return [sys.executable, "-m", "gdbplugin.cli", *map(str, argv)]


def watched(config: Path, policy: str, work: Path, timeout: float) -> tuple[float, str]:
    out = [a for k in ("json", "md", "sarif", "svg") for a in (f"--{k}", work / f"r.{k}")]
    t0 = time.monotonic()
    run = subprocess.run(s2cache("run", config, "--policy", policy, "--trace",
                                 work / "t.jsonl", *out),
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, timeout=timeout)
    elapsed = time.monotonic() - t0
    if run.returncode not in (0, 1):
        raise SystemExit(f"bench-overhead: s2cache run exited {run.returncode}: "
                         f"{run.stderr.strip()[-500:]}")
    summary = [x for x in run.stderr.splitlines() if x.startswith("s2cache:")]
    return elapsed, summary[-1] if summary else ""


def unwatched(argv: list[str], marker: re.Pattern, timeout: float) -> float:
    t0 = time.monotonic()
    q = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    seen = b""
    try:
        while not marker.search(seen.decode(errors="replace")):
            chunk = q.stdout.read1(65536)
            if not chunk or time.monotonic() - t0 > timeout:
                raise SystemExit(f"bench-overhead: unwatched QEMU reached no marker; "
                                 f"console tail:\n{seen.decode(errors='replace')[-1500:]}")
            seen = seen[-4096:] + chunk
        return time.monotonic() - t0
    finally:
        q.kill()
        q.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench-overhead", description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--config", default=str(ROOT / "qemu-configs" / "linux-shim.toml"))
    ap.add_argument("--policy", default="kvm")
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args(argv)
    if args.pairs < 1:
        ap.error("--pairs must be at least 1")
    config = Path(args.config)
    from gdbplugin.target.config import ConfigError, load_config
    from gdbplugin.target.qemu import parse_size, workdir_parent
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        print(f"bench-overhead: {exc}", file=sys.stderr)
        return 2
    marker = re.compile(cfg.until)
    print(f"bench-overhead: {config.name} under {args.policy}: `s2cache run` with every report "
          f"(process start to exit) vs the same QEMU command line unwatched (launch to "
          f"marker), {args.pairs} pairs alternated")
    ratios, times_w, times_u, to_marker = [], [], [], []
    # The unwatched QEMU's files (its RAM above all) go where `s2cache run` puts its own
    # (gdbplugin/target/qemu.py workdir_parent): a tmpfs when there is room.
    with tempfile.TemporaryDirectory() as d, \
            tempfile.TemporaryDirectory(dir=workdir_parent(parse_size(cfg.memory))) as q:
        work = Path(d)
        printed = subprocess.run(s2cache("qemu-cmd", config, "--policy", args.policy,
                                         "--dir", q),
                                 cwd=ROOT, capture_output=True, text=True, check=True)
        qemu = [a for a in shlex.split(printed.stdout.strip()) if a != "-S"]
        for i in range(args.pairs):
            sides = ("unwatched", "watched") if i % 2 == 0 else ("watched", "unwatched")
            got = {}
            for side in sides:
                if side == "watched":
                    got[side] = watched(config, args.policy, work, args.timeout)
                else:
                    got[side] = (unwatched(qemu, marker, args.timeout), "")
            (u, _), (w, summary) = got["unwatched"], got["watched"]
            ratios.append(w / u)
            times_w.append(w)
            times_u.append(u)
            found = re.search(r"marker after ([0-9.]+) s", summary)
            if found:
                to_marker.append(float(found.group(1)) / u)
            print(f"  pair {i + 1}: unwatched {u:6.2f} s  watched {w:6.2f} s  (x{w / u:5.3f}) "
                  f"[first: {sides[0]}]  {summary.removeprefix('s2cache: ')[:110]}")
    med = statistics.median(ratios)
    print(f"medians: watched {statistics.median(times_w):.2f} s, unwatched "
          f"{statistics.median(times_u):.2f} s")
    print(f"ratio {med:.3f} (target <= {TARGET}: {'met' if med <= TARGET else 'MISSED'})  "
          f"spread {min(ratios):.3f}..{max(ratios):.3f}")
    if to_marker:
        print(f"(the watched boot's own time to its marker, as s2cache run measured it, over "
              f"the unwatched one: median {statistics.median(to_marker):.3f}; the rest is the "
              f"session finishing its backlog and writing the reports)")
    return 0 if med <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
