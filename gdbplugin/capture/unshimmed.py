"""Watching a guest that is not under the shim: SCTLR_EL1 from breakpoints.

Without the shim there is no stage 2 of ours and no ring: stage-2 hazards cannot be checked.
What can still be watched is each vCPU's SCTLR_EL1 (MMU, D-cache, I-cache), through
breakpoints on the instructions that write it (gdbplugin/capture/sites.py).  Each hit
becomes a ``sysreg-write`` event, recorded and replayed through the same LiveSession as the
shim's ring (``LiveSession.push``), so views, `s2cache sctlr` and the trace are the same.  A
write the breakpoints missed shows up as an ``unobserved-transition`` at the next one (the
engine compares each write's old value with the one it tracked): nothing is missed silently.

A vCPU turning caches off after they were on (kexec, a reboot path, a hypervisor's guest
doing it) is reported from the transition itself: under the shim that is where a
caches-off-after-boot hazard would be judged.

This module holds no gdb: the debugger is the gdbplugin/target/debugger.py interface (the
selected vCPU stopped at a site), breakpoints are planted by the caller (the gdb extension,
gdbplugin/ext/unshimmed.py) at the addresses ``addresses`` gives.
"""
from __future__ import annotations

import time
from dataclasses import replace

from ..arch.sysregs import HCR_EL2, SCTLR_EL1
from ..arch.walker import TranslatedMemory, Walker
from ..target.registers import Registers
from .live import LiveSession
from .sites import Sites, aliases, find_sites
from .snapshot import STAGE2_REGS, VcpuState, stage1_regimes, stage2_regime

M_C = SCTLR_EL1.fields["M"].mask | SCTLR_EL1.fields["C"].mask


class BreakpointWatch:
    """SCTLR_EL1 writes of every vCPU as breakpoint hits, into ``live``."""

    def __init__(self, debugger, mem, regions: list[tuple[int, int]], live: LiveSession,
                 vcpus: int):
        self.debugger = debugger
        self.registers = Registers(debugger)
        self.mem = mem
        self.live = live
        self.regions = regions
        self.sites = Sites([], [])
        self.rt_of_pa: dict[int, int] = {}
        self.scans = 0
        self.scan_seconds = 0.0
        self.rescan()
        self.header = {"ram": [[b, s] for b, s in regions], "vcpus": vcpus,
                       "source": "gdb-breakpoints", "policy": "none",
                       "hyp_maintenance": "untracked", "writes": "untracked",
                       "accesses": "untracked", "host_zero_ram": False}
        self.hits = 0
        self.hit_seconds = 0.0
        self.caches_off: list[dict] = []       # transitions that turned caches off after on
        self._was_on = [False] * vcpus
        self._seen = [False] * vcpus

    def rescan(self) -> None:
        """Find the write sites in RAM again (code loaded or moved since); sites found
        before stay (their breakpoints cost nothing where the code is gone)."""
        started = time.monotonic()
        found = find_sites(self.mem, self.regions)
        self.sites = Sites(sorted({*self.sites.writes, *found.writes}, key=lambda s: s.pa),
                           found.set_way)
        self.rt_of_pa = {s.pa: s.rt for s in self.sites.writes}
        self.scans += 1
        self.scan_seconds += time.monotonic() - started

    def addresses(self, states: list[VcpuState], turning_on: dict[int, int] | None = None
                  ) -> dict[int, int]:
        """Where a breakpoint must be now, with the register each site writes from: every
        site at its PA, and at each VA an executable stage-1 leaf of a vCPU maps it to
        (``turning_on``: vCPU -> the SCTLR_EL1 value it is writing, for a vCPU about to
        turn its MMU on, whose tables are read as they will be used)."""
        out = dict(self.rt_of_pa)
        pas = list(self.rt_of_pa)
        walked = set()                  # vCPUs in the same regimes (SMP Linux) walk them once
        for index, state in enumerate(states):
            if turning_on and index in turning_on:
                state = replace(state, regs={**state.regs, "SCTLR_EL1": turning_on[index]})
            s2 = stage2_regime(state)
            guest = s2 is not None and state.el < 2
            s1 = stage1_regimes(state)
            key = (guest and tuple(state.regs.get(r) for r in STAGE2_REGS),
                   tuple(tuple(sorted(regs.items())) for _, regs, _ in s1))
            if key in walked:
                continue
            walked.add(key)
            s2_runs = Walker(s2, self.mem).mappings() if guest else None
            s1_mem = TranslatedMemory(Walker(s2, self.mem), self.mem) if guest else self.mem
            runs = [m for _, _, regime in s1 for m in Walker(regime, s1_mem).mappings()]
            for pa, vas in aliases(pas, runs, s2_runs).items():
                for va in vas:
                    out[va] = self.rt_of_pa[pa]
        return out

    def hit(self, vcpu: int, pc: int, rt: int) -> dict:
        """The selected vCPU stopped at a write site (``pc``, writing from X``rt``): record
        the write; the event."""
        started = time.monotonic()
        regs = self.debugger.read_registers([self.registers.resolve("CPSR")] +
                                            ([f"x{rt}"] if rt != 31 else []))
        el = (regs[self.registers.resolve("CPSR")] >> 2) & 3
        new = regs.get(f"x{rt}", 0)
        reg = "SCTLR_EL1"
        if el == 2:   # a hypervisor's own: SCTLR_EL2 under VHE, else a guest context switch
            e2h = HCR_EL2.get(self.debugger.read_register("HCR_EL2"), "E2H")
            reg = "SCTLR_EL2" if e2h else "SCTLR_EL1@EL2"
        old = self.debugger.read_register(self.registers.resolve(
            "SCTLR_EL2" if reg == "SCTLR_EL2" else "SCTLR_EL1"))
        event = {"kind": "sysreg-write", "vcpu": vcpu, "reg": reg, "old": old, "new": new,
                 "pc": pc, "el": el}
        events = [] if self._seen[vcpu] else [{"kind": "vcpu-on", "vcpu": vcpu}]
        self._seen[vcpu] = True                # running, as far as we can tell
        if reg == "SCTLR_EL1":
            on = new & M_C == M_C
            if self._was_on[vcpu] and not on:
                self.caches_off.append(event)
            self._was_on[vcpu] |= on
        self.live.push(events + [event], self.header)
        self.hits += 1
        self.hit_seconds += time.monotonic() - started
        return event
