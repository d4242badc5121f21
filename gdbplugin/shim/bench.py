"""bench-shim: Linux to its console marker under the reference shim versus without it.

Three runs per round, all with the same QEMU options (``-M virt,virtualization=on``, same CPU,
RAM, vCPUs, initrd, command line, the shared RAM file): bare (Linux starts at EL2), under the
shim with only the traps KVM sets (``ShimParams.kvm_like``), and under the shim observing
(the default: TVM for every SCTLR_EL1 write, the guest's cache maintenance trapped, writes
tracked).  The order rotates from round to round so a drift of the machine hits every side.
The time is from QEMU's launch to the marker on the console.  Prints every round, each
shimmed variant's median ratio to bare (targets: KVM-like <= 1.15, observing <= 1.25), the
spread, the median ratio of QEMU's CPU time (user + system, all threads: steadier than wall
time on a shared machine), and for the shim runs the stage-2 fault count and the ring's
event count.  Exit
status 1 when a target is missed.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

from ..target.qemu import Qemu, QemuConfig
from .launch import ROOT, ShimImage, ShimParams, shim_config
from .ring import RingReader

MARKER = re.compile(r"S2CACHE-BOOT-OK[^\n]*\n")     # the whole line
TARGETS = {"kvm-like": 1.15, "observing": 1.25}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
                cpu = _cpu_seconds(q.pid)
                break
            if q._proc.poll() is not None or elapsed > timeout:
                raise SystemExit(f"bench-shim: no marker after {elapsed:.1f} s "
                                 f"({'shim' if shim else 'bare'}); console tail:\n{text[-1500:]}")
            time.sleep(0.002)
        info = {"cpu": cpu}
        if shim:
            with RingReader.from_file(q.ram_path, base) as ring:
                h = ring.header()
                info |= {"faults": h.stats["dabt"] + h.stats["iabt"],
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
    configs = {"bare": QemuConfig(machine="virt,virtualization=on", kernel=kernel,
                                  initrd=initrd, append=append, extra=["-no-reboot"], **common)}
    for name, params in (("kvm-like", ShimParams.kvm_like), ("observing", ShimParams)):
        configs[name] = shim_config(kernel, params(policy=args.policy, blocks=args.blocks,
                                                   poweroff_on_fatal=True, quiet=True),
                                    shim=shim, initrd=initrd, append=append, **common)

    print(f"bench-shim: Linux to its marker, {args.pairs} rounds (bare, KVM-like traps, "
          f"observing; order rotated), policy {args.policy}, "
          f"{'2M blocks' if args.blocks else '4K pages'}, -smp {args.smp}, -m {args.memory}, "
          f"-cpu {args.cpu}")
    names = list(configs)
    times = {n: [] for n in names}
    infos = {n: [] for n in names}
    for i in range(args.pairs):
        order = names[i % 3:] + names[:i % 3]
        got = {n: _run(configs[n], n != "bare", args.timeout) for n in order}
        line = [f"  round {i + 1}:"]
        for n in names:
            t, info = got[n]
            times[n].append(t)
            infos[n].append(info)
            line.append(f"{n} {t:6.3f} s (cpu {info['cpu']:5.2f} s)")
            if n != "bare":
                line.append(f"(x{t / got['bare'][0]:5.3f}, faults {info['faults']}, events "
                            f"{info['events']}{', OVERFLOW %d' % info['overflow'] if info['overflow'] else ''})")
        print("  ".join(line) + f"  [first: {order[0]}]")
    missed = False
    for n in names[1:]:
        ratios = [a / b for a, b in zip(times[n], times["bare"])]
        cpu = statistics.median(a["cpu"] / b["cpu"] for a, b in zip(infos[n], infos["bare"]))
        med = statistics.median(ratios)
        ok = med <= TARGETS[n]
        missed |= not ok
        sd = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
        print(f"{n}: median ratio {med:.3f} (target <= {TARGETS[n]}: "
              f"{'met' if ok else 'MISSED'})  spread {min(ratios):.3f}..{max(ratios):.3f} "
              f"(sd {sd:.3f})  QEMU CPU-time ratio {cpu:.3f}  median "
              f"{statistics.median(times[n]):.3f} s  stage-2 faults "
              f"{statistics.median(x['faults'] for x in infos[n]):.0f}  ring events "
              f"{statistics.median(x['events'] for x in infos[n]):.0f}")
    print(f"bare: median {statistics.median(times['bare']):.3f} s")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
