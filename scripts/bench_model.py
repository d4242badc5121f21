"""bench-model: replay throughput and model memory on a synthetic 1 GiB-guest trace.

The trace is what a KVM-like shim records booting an SMP guest: for every 4 KiB page of a
1 GiB guest a stage-2 fault, the hypervisor's clean+invalidate of the page and the map (so the
observed world has work too), guest DC CIVAC line cleans sprinkled through, TTBR0 switches,
MMU/cache transitions on both vCPUs, and a set/way sweep with caches turned off at the end.
The engine's rate excludes JSON parsing, which is measured separately on the same events.
The streaming replay (a live session's: ``feed`` in chunks of --chunk events, then ``finish``)
is timed in the same runs, alternated with the whole-trace one, and printed as a ratio.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from gdbplugin.model import events as E
from gdbplugin.model.engine import Replay
from gdbplugin.model.trace import Trace, TraceWriter, read_trace

RAM_BASE, RAM_SIZE = 0x4000_0000, 1 << 30
SCTLR_ON, SCTLR_OFF = 0x30D0_1805 | 0x1005, 0x30D0_0800


class Builder:
    def __init__(self):
        self.rows: list[tuple] = []

    def add(self, kind: str, **f):
        self.rows.append((kind, f))

    def trace(self) -> Trace:
        ev = np.zeros(len(self.rows), dtype=E.EVENT_DTYPE)
        extras = {}
        for i, (kind, f) in enumerate(self.rows):
            ev[i]["seq"] = i + 1
            ev[i]["kind"] = E.KIND_CODE[kind]
            for field in E.KINDS[kind]:
                if field.name not in f:
                    continue
                v = f[field.name]
                if isinstance(field.type, tuple):
                    v = field.type.index(v)
                elif field.name == "reg":
                    v = E.REGS.index(v)
                ev[i][field.column] = v
                if field.optional and field.column in E.OPTIONAL_BIT:
                    ev[i]["present"] |= E.OPTIONAL_BIT[field.column]
            if "vcpu" in f:
                ev[i]["present"] |= E.OPTIONAL_BIT["vcpu"]
        header = {"schema": E.SCHEMA, "ram": [[RAM_BASE, RAM_SIZE]], "vcpus": 2,
                  "hyp_maintenance": "tracked"}
        return Trace(header, ev, extras)


def synthetic(seed: int = 1) -> Trace:
    rng = np.random.default_rng(seed)
    b = Builder()
    b.add("host-write", pa=RAM_BASE + 0x20_0000, size=32 << 20, source="load")
    b.add("vcpu-on", vcpu=0, pc=RAM_BASE + 0x20_0000)
    pages = RAM_SIZE >> 12
    order = np.concatenate([np.arange(0x200, 0x2200), rng.permutation(
        np.setdiff1d(np.arange(pages), np.arange(0x200, 0x2200)))])
    for n, page in enumerate(order.tolist()):
        pa = RAM_BASE + (page << 12)
        vcpu = 0 if n < 0x4000 else n & 1
        if n == 0x2000:            # vCPU 0 turns its MMU and caches on, then starts vCPU 1
            b.add("ic-inval", vcpu=0, op="iallu")
            b.add("sysreg-write", vcpu=0, reg="SCTLR_EL1", old=0, new=SCTLR_ON, pc=pa, el=1)
            b.add("vcpu-on", vcpu=1, pc=RAM_BASE + 0x20_0000)
        if n == 0x4000:
            b.add("ic-inval", vcpu=1, op="iallu")
            b.add("sysreg-write", vcpu=1, reg="SCTLR_EL1", old=0, new=SCTLR_ON, pc=pa, el=1)
        b.add("s2-fault", vcpu=vcpu, ipa=pa, access="exec" if n < 0x400 else "write",
              pc=RAM_BASE + 0x20_0000 + (n & 0xFFF) * 4, el=1)
        b.add("hyp-maintenance", op="clean-inval", pa=pa, size=4096, vcpu=vcpu)
        b.add("s2-map", ipa=pa, pa=pa, size=4096, memattr=0xF, vcpu=vcpu)
        if n % 64 == 63:           # the guest cleans a few lines of pages it mapped earlier
            for old in rng.choice(order[:n], size=4).tolist():
                b.add("cmo-va", vcpu=vcpu, op="civac", pa=RAM_BASE + (old << 12), size=64)
        if n % 8192 == 8191:
            b.add("sysreg-write", vcpu=vcpu, reg="TTBR0_EL1", old=n, new=n + 1, pc=pa, el=1)
    for _ in range(256):
        b.add("set-way", vcpu=1, op="cisw", pc=RAM_BASE + 0x30_0000, el=1)
    b.add("sysreg-write", vcpu=1, reg="SCTLR_EL1", old=SCTLR_ON, new=SCTLR_OFF,
          pc=RAM_BASE + 0x30_0004, el=1)
    return b.trace()


def stream(trace: Trace, chunk: int):
    """Replay ``trace`` fed ``chunk`` events at a time, as a live session drains a ring."""
    r = Replay(trace.header)
    ev, extras = trace.events, trace.extras
    for a in range(0, len(ev), chunk):
        r.feed(ev[a:a + chunk], {i - a: x for i, x in extras.items() if a <= i < a + chunk})
    return r.finish()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=1000)
    args = ap.parse_args()
    t0 = time.perf_counter()
    trace = synthetic()
    gen = time.perf_counter() - t0
    n = len(trace.events)
    times, stream_times, result = [], [], None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        result = Replay(trace.header).run(trace)
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        streamed = stream(trace, args.chunk)
        stream_times.append(time.perf_counter() - t0)
    best = min(times)
    best_stream = min(stream_times)
    same = all(len(streamed.findings(n)) == len(result.findings(n)) for n in result.worlds)
    lines = RAM_SIZE >> 6
    t0 = time.perf_counter()
    single = Replay(trace.header, policies=["kvm"]).run(trace)
    single_s = time.perf_counter() - t0
    single_bytes = single.stats["model_bytes"]
    model = result.stats["model_bytes"]
    per_world = (result.worlds["kvm"].cache.nbytes + result.worlds["kvm"].cleaned_by.nbytes
                 + result.worlds["kvm"].icache_by.nbytes)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.jsonl"
        sample = min(n, 200_000)
        with TraceWriter(path, trace.header) as w:
            for i in range(sample):
                w.write(trace.event_dict(i))
        t0 = time.perf_counter()
        read_trace(path)
        parse = time.perf_counter() - t0
    kinds = result.stats["events"]
    print(f"trace: {n} events (generated in {gen:.1f} s): " + ", ".join(
        f"{k} {v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])))
    print(f"replay (5 policies + observed world): best {best:.2f} s of {args.repeat} -> "
          f"{n / best:,.0f} events/s (target >= 1,000,000)")
    print(f"streaming replay, {args.chunk}-event chunks: best {best_stream:.2f} s -> "
          f"{n / best_stream:,.0f} events/s = {best / best_stream:.0%} of the whole-trace rate "
          f"(target >= 80%; same findings: {same})")
    print(f"replay (kvm alone + observed world): {single_s:.2f} s -> {n / single_s:,.0f} events/s")
    print(f"model memory, one policy (kvm + observed): {single_bytes / 2**20:.1f} MiB for 1 GiB "
          f"= {single_bytes / lines:.2f} bytes per 64-byte line (target <= 1)")
    print(f"model memory, all five policies + observed: {model / 2**20:.1f} MiB = "
          f"{model / lines:.2f} bytes per line ({per_world / lines:.2f} per policy world)")
    print(f"JSONL parse: {sample / parse:,.0f} lines/s ({sample} lines)")
    for name in ("none", "rfc2013", "kvm", "xen", "fwb", "observed"):
        print(f"  {name:9s} uncovered {len(result.uncovered(name)):4d}  "
              f"cost {result.stats['cost'][name]}")


if __name__ == "__main__":
    main()
