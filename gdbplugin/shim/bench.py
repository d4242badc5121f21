"""bench-shim: Linux to its console marker under the reference shim versus without it.

Both runs use the same QEMU options (``-M virt,virtualization=on``, same CPU, RAM, vCPUs,
initrd, command line, the shared RAM file); without the shim Linux starts at EL2, under it at
EL1.  Runs are paired and alternated (shim first in even pairs, bare first in odd ones) so a
drift of the machine hits both sides.  The time is from QEMU's launch to the marker on the
console.  Prints every pair, the median ratio (target <= 1.25), the spread, and for the shim
runs the stage-2 fault count and the ring's event count.  Exit status 1 when the target is
missed.
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import time

from ..target.qemu import Qemu, QemuConfig
from .launch import ROOT, ShimImage, ShimParams, shim_config
from .ring import RingReader

MARKER = re.compile(r"S2CACHE-BOOT-OK[^\n]*\n")     # the whole line
TARGET = 1.25


def _run(config: QemuConfig, shim: bool, timeout: float) -> tuple[float, dict]:
    t0 = time.monotonic()
    with Qemu(config) as q:
        base = q.ram_base()
        while True:
            elapsed = time.monotonic() - t0
            try:
                text = q.serial_log.read_text(errors="replace")
            except FileNotFoundError:
                text = ""
            if MARKER.search(text):
                break
            if q._proc.poll() is not None or elapsed > timeout:
                raise SystemExit(f"bench-shim: no marker after {elapsed:.1f} s "
                                 f"({'shim' if shim else 'bare'}); console tail:\n{text[-1500:]}")
            time.sleep(0.002)
        info = {}
        if shim:
            with RingReader(q.ram_path, base) as ring:
                h = ring.header()
                info = {"faults": h.stats["dabt"] + h.stats["iabt"],
                        "events": h.write_index, "overflow": h.overflow,
                        "halted": h.halted}
        if "EL1" not in text.split("S2CACHE-BOOT-OK", 1)[1].splitlines()[0] and shim:
            raise SystemExit("bench-shim: under the shim Linux did not start at EL1")
    return elapsed, info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench-shim", description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--policy", default="kvm")
    ap.add_argument("--smp", type=int, default=1)
    ap.add_argument("--memory", default="512M")
    ap.add_argument("--cpu", default="max,pauth-impdef=on")
    ap.add_argument("--blocks", action="store_true", help="2 MiB stage-2 blocks")
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args(argv)
    if args.pairs < 1:
        ap.error("--pairs must be at least 1")

    images = ROOT / "build" / "images"
    kernel, initrd = images / "vmlinuz", images / "initramfs.cpio.gz"
    for f in (kernel, initrd):
        if not f.is_file():
            print(f"bench-shim: {f} missing: run scripts/fetch-images", file=sys.stderr)
            return 2
    shim = ShimImage.load()
    append = "console=ttyAMA0 panic=-1"
    common = dict(cpu=args.cpu, memory=args.memory, smp=args.smp, paused=False)
    bare = QemuConfig(machine="virt,virtualization=on", kernel=kernel, initrd=initrd,
                      append=append, extra=["-no-reboot"], **common)
    shimmed = shim_config(kernel, ShimParams(policy=args.policy, blocks=args.blocks,
                                             poweroff_on_fatal=True, quiet=True),
                          shim=shim, initrd=initrd, append=append, **common)

    print(f"bench-shim: Linux to its marker, {args.pairs} alternated pairs, policy "
          f"{args.policy}, {'2M blocks' if args.blocks else '4K pages'}, -smp {args.smp}, "
          f"-m {args.memory}, -cpu {args.cpu}")
    ratios, t_shim, t_bare, infos = [], [], [], []
    for i in range(args.pairs):
        order = [True, False] if i % 2 == 0 else [False, True]
        got = {}
        for with_shim in order:
            got[with_shim] = _run(shimmed if with_shim else bare, with_shim, args.timeout)
        (ts, info), (tb, _) = got[True], got[False]
        ratios.append(ts / tb)
        t_shim.append(ts)
        t_bare.append(tb)
        infos.append(info)
        print(f"  pair {i + 1}: shim {ts:6.3f} s  bare {tb:6.3f} s  ratio {ts / tb:5.3f}  "
              f"({'shim' if order[0] else 'bare'} first)  stage-2 faults {info['faults']}  "
              f"ring events {info['events']}" + (f"  OVERFLOW {info['overflow']}"
                                                 if info["overflow"] else ""))
    med = statistics.median(ratios)
    spread = max(ratios) - min(ratios)
    sd = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
    print(f"median ratio {med:.3f} (target <= {TARGET}: {'met' if med <= TARGET else 'MISSED'})"
          f"  spread {min(ratios):.3f}..{max(ratios):.3f} ({spread:.3f}, sd {sd:.3f})")
    print(f"median time: shim {statistics.median(t_shim):.3f} s, bare "
          f"{statistics.median(t_bare):.3f} s")
    print(f"stage-2 faults per boot: {statistics.median(i['faults'] for i in infos):.0f}, "
          f"ring events per boot: {statistics.median(i['events'] for i in infos):.0f}")
    return 0 if med <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
