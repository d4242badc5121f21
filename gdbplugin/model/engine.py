"""Replay events against the shadow cache under every policy at once.

Each policy gets a *world*: its own shadow cache and the maintenance it would have done.  The
trace's own stage-2 and vCPU history is shared by all worlds.  A hazard is evaluated in every
world at the same event, so a finding knows which other policies' rules would have covered it;
an extra *observed* world applies the maintenance the traced hypervisor really did
(``hyp-maintenance`` events), which answers "did it do it".

Speed: runs of stage-2 faults, maps, attribute changes and line clears (the bulk of any boot)
are replayed vectorized; other events one at a time.  A real Linux boot under the shim
(136k events) replays in ~1 s; with only faults and maps vectorized it took ~25 s.

Guest writes are taken from evidence only, as KVM's dirty logging takes them: a stage-2 write
fault (the write follows its resolution), an explicit ``guest-access`` write, a DC ZVA.  A trace
whose hypervisor tracked writes (the shim maps pages read-only until the first write, and write-
protects again at each epoch) says ``"writes": "tracked"`` in its header; otherwise writes after
a page became writable are invisible, and the report says so.

Checks that a guest may settle with its next instructions are *pending* per vCPU: the I-cache
check of an I/M enable (Linux: ``msr sctlr_el1; isb; ic iallu``) and the caches-off check (U-Boot
and Arm's sequence: clear C and M, then clean by set/way).  Each is settled at that vCPU's next
event, after the maintenance it issues in between; other vCPUs' events do not settle it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..arch.memtype import NORMAL_WB, effective
from ..arch.sysregs import CTR_EL0, HCR_EL2, SCTLR_EL1
from . import events as E
from .cache import CLEARS, PAGE_SHIFT, STATES, RamMap, ShadowCache, line_masks, segments
from .hazards import BY_TRIGGER, DETECTORS, INFO_KINDS, Detector, Finding, SmpMmuOffWindow, \
    UnobservedTransition
from .policies import (CLEAN, CLEAN_INVAL, ICACHE_INVAL, INVAL, POLICIES, SCOPE_ALL,
                       SCOPE_PAGES, SCOPE_RANGE, SCOPE_VM, Action, Policy)

PAGE = 1 << PAGE_SHIFT
ALL_RULES = ["-"] + sorted({r for p in POLICIES.values() for r in p.RULES})
RULE_INDEX = {r: i for i, r in enumerate(ALL_RULES)}
M_C = SCTLR_EL1.fields["M"].mask | SCTLR_EL1.fields["C"].mask
M_C_I = M_C | SCTLR_EL1.fields["I"].mask
KIND = {k: np.uint8(c) for k, c in E.KIND_CODE.items()}
# Kinds replayed vectorized: stage-2 faults and maps; the line clears (guest DC by VA, IC IVAU
# of a known PA, the traced hypervisor's cleans and I-cache invalidations) and leaf attribute
# changes, which commute with everything in a run except a change of the same page; TLBIs,
# which change nothing here; the line-precise guest writes (``guest-access``), set before the
# run's other line changes when none of those touched their lines earlier (``_line_sets``).
# A Linux boot issues DC CVAU + IC IVAU per line of new code and relaxes a
# leaf's permissions after each permission fault: one by one they cut it into ~3-event runs.
# Writes of registers the model does not follow (TTBRs, TCR, ESR, CONTEXTIDR: most of what
# TVM traps, ~1,500 of a Linux boot's context switches) are only recorded as transitions.
BATCH_KINDS = np.array([E.KIND_CODE[k] for k in ("s2-fault", "s2-map", "cmo-va", "ic-inval",
                                                   "s2-attr", "hyp-maintenance", "tlbi",
                                                   "guest-access", "sysreg-write")],
                       dtype=np.uint8)
# registers whose writes change what the model tracks (``Replay.sysreg_write``)
FOLLOWED_REGS = np.array([E.REGS.index(r) for r in ("SCTLR_EL1", "HCR_EL2")], dtype=np.uint8)
IN_BATCH = np.zeros(256, dtype=bool)
IN_BATCH[BATCH_KINDS] = True
# Events of a run applied whole before or after its page changes (``Replay._order``).
ORDERED = np.zeros(256, dtype=bool)
ORDERED[[E.KIND_CODE[k] for k in ("cmo-va", "ic-inval", "s2-attr", "hyp-maintenance")]] = True
# DC by VA operations that clear no line state (CVAU: to PoU only), unordered like TLBIs.
DC_CLEARS_NOTHING = np.zeros(256, dtype=bool)
DC_CLEARS_NOTHING[[i for i, op in enumerate(E.DC_VA_OPS) if op in CLEARS and not CLEARS[op]]] = True
OBSERVED = "observed"
WINDOW_MIN, WINDOW_MAX = 16, 1 << 16      # events ``batch`` looks at to find a run's end
NO_EVENT = np.iinfo(np.int64).max          # "no such event in this run" in per-page scratch
# Events a vCPU issues, which settle its pending checks.  hyp-maintenance is the hypervisor's;
# guest-access writes are reported after the fact (the lines a write epoch changed, at the
# epoch's end), not where the vCPU is now.
VCPU_KINDS = frozenset(k for k, fields in E.KINDS.items() if any(f.name == "vcpu" for f in fields)
                       ) - {"hyp-maintenance", "guest-access"}
IS_VCPU_KIND = np.zeros(256, dtype=bool)
IS_VCPU_KIND[[E.KIND_CODE[k] for k in VCPU_KINDS]] = True


@dataclass
class Cost:
    """What a policy's maintenance costs: the other half of the trade-off table."""

    bytes_cleaned: int = 0
    bytes_invalidated: int = 0
    operations: int = 0
    vm_flushes: int = 0
    icache_invalidations: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Vcpu:
    sctlr: int = 0
    hcr: int = 0
    online: bool = False
    was_online: bool = False
    caches_ever_on: bool = False
    pending: dict = field(default_factory=dict)   # hazard kind -> ctx of a check to settle

    @property
    def caches_on(self) -> bool:
        return self.sctlr & M_C == M_C


class Traced(Policy):
    """The traced hypervisor, as the observed world knows it: its maintenance comes from the
    trace (``hyp-maintenance``); the header says whether it trapped set/way (HCR_EL2.TSW), so a
    recorded set/way operation reached it, and its conversion to maintenance by VA is in the
    trace too."""

    name = OBSERVED

    def __init__(self, vcpus: int, traps_set_way: bool):
        super().__init__(vcpus)
        self._traps_set_way = traps_set_way

    def traps_set_way(self):
        return "observed.trap-set-way" if self._traps_set_way else None


class World:
    """One hypothesis about the hypervisor: a policy with its own shadow cache and costs."""

    def __init__(self, name: str, policy: Policy, ram: RamMap):
        self.name = name
        self.policy = policy
        self.cache = ShadowCache(ram)
        self.cleaned_by = np.zeros(ram.pages, dtype=np.uint8)   # rule of the last D-side clean
        self.icache_by = np.zeros(ram.pages, dtype=np.uint8)    # rule of the last I-side inval
        self.executable = np.zeros(ram.pages, dtype=bool)       # leaf executable in this world
        self.cost = Cost()
        self.findings: list[Finding] = []
        self._cacheable: dict[tuple[int, int, int], bool] = {}

    @property
    def observed(self) -> bool:
        return self.name == OBSERVED

    def cacheable(self, vcpu: Vcpu, memattr: int) -> bool:
        """Are the vCPU's data accesses to a page of this stage-2 MemAttr cacheable here?  The
        observed world runs with the traced HCR_EL2; a policy's world with its own bits."""
        hcr = (vcpu.hcr | HCR_EL2.fields["VM"].mask) if self.observed else self.policy.hcr
        key = (vcpu.sctlr & M_C, hcr, memattr)
        hit = self._cacheable.get(key)
        if hit is None:
            hit = self._cacheable[key] = effective(
                vcpu.sctlr, hcr, NORMAL_WB, self.policy.stage2_memattr(memattr, True)).cacheable
        return hit


@dataclass
class Result:
    """What a replay found: per world, findings and costs; shared facts about the run."""

    worlds: dict[str, World]
    transitions: list[dict]
    maps: int
    unmaps: int
    stats: dict = field(default_factory=dict)
    fault_seqs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def findings(self, policy: str) -> list[Finding]:
        return self.worlds[policy].findings

    def uncovered(self, policy: str) -> list[Finding]:
        return [f for f in self.worlds[policy].findings if f.kind not in INFO_KINDS]

    def failing(self, policy: str, strict: bool = False) -> list[Finding]:
        """The findings that make the verdict 1 under ``policy``: uncovered hazards that are
        the hypervisor's job (a checker of hypervisors does not fail one for its guest's own
        I-cache maintenance: those are listed, flagged ``guest``); ``strict`` counts the
        guest's own too."""
        return [f for f in self.uncovered(policy) if strict or f.responsibility != "guest"]


class Replay:
    """Replay a whole Trace (gdbplugin/model/trace.py) with ``run``, or stream it: ``feed``
    chunks of events as they come (each call returns the findings they raised), then
    ``finish`` for the Result."""

    def __init__(self, header: dict, policies: list[str] | None = None,
                 max_batch: int | None = None, hold: int = 32768):
        self.ram = RamMap([tuple(r) for r in header["ram"]])
        self.nvcpus = int(header["vcpus"])
        hcr = int(header.get("hcr", 0) or 0)
        self.vcpus = [Vcpu(hcr=hcr) for _ in range(self.nvcpus)]
        names = list(POLICIES) if policies is None else policies
        self.worlds = {n: World(n, POLICIES[n](self.nvcpus), self.ram) for n in names}
        self.host_zero = header.get("host_zero_ram", True)
        self.writes_tracked = header.get("writes") == "tracked"
        self.accesses_tracked = header.get("accesses") == "tracked"
        self.traps_set_way = bool(header.get("traps_set_way", False))
        cpu = header.get("cpu") or {}
        # CTR_EL0.DIC: no I-cache invalidation is needed for instruction coherence
        self.dic = bool(CTR_EL0.get(int(cpu.get("ctr_el0", 0)), "DIC"))
        self.mapped = np.zeros(self.ram.pages, dtype=bool)
        self.ever_mapped = np.zeros(self.ram.pages, dtype=bool)
        self.memattr = np.zeros(self.ram.pages, dtype=np.uint8)
        self._page_slot = np.full(self.ram.pages, -1, dtype=np.int32)   # scratch for _order
        self._page_first = np.full(self.ram.pages, NO_EVENT, dtype=np.int64)   # _page_changes
        self.ipa_of_pa: dict[int, int] = {}          # RAM page -> IPA, where not identity
        self.pa_of_ipa: dict[int, int] = {}          # IPA page -> PA, where not identity
        self.transitions: list[dict] = []
        self.maps = self.unmaps = 0
        self.window = {"start_seq": None, "end_seq": None, "first_maps_inside": 0,
                       "first_maps_outside": 0, "pages_inside": 0, "pages_outside": 0}
        self.any_mmu_enabled = False
        self.last_fault = {}                  # vcpu -> (pc, el, access code, IPA page)
        self.last_fault_vcpu = 0
        self.set_way_open: dict[int, list] = {}   # vcpu -> [operations, findings] of its sweep
        self.last_writer: dict[int, tuple[int, int]] = {}   # PA page -> (vcpu, pc) of a write
        # Lines the host wrote (loaded, not zeroed) that no guest write replaced since: whose
        # job an I-cache invalidation of them is (gdbplugin/model/hazards.py).
        self.host_code = ShadowCache(self.ram, ("host",))
        self.counts: dict[str, int] = {}
        self.max_batch = max_batch        # 1 replays strictly event by event (a test oracle)
        self._open_first_map: dict[tuple, tuple] = {}   # (kind, world) -> (finding, outcome)
        self._kind_counts = np.zeros(len(E.KIND_NAMES), dtype=np.int64)
        self._fault_seqs: list[np.ndarray] = []       # when stage-2 faults came (timelines)
        self._started = self._finished = False
        self.hold = hold                  # events of an open vectorized run ``feed`` may hold
        self._held: list[tuple[np.ndarray, dict]] = []
        self._held_events = 0
        if header.get("hyp_maintenance") == "tracked":
            self.observe()

    # -- driving ------------------------------------------------------------------------
    def observe(self) -> None:
        """Add the observed world: the maintenance the traced hypervisor really did.  A trace
        declares it in its header (``"hyp_maintenance": "tracked"``), so that a streaming
        replay has it from the first event."""
        if OBSERVED not in self.worlds:
            self.worlds[OBSERVED] = World(OBSERVED, Traced(self.nvcpus, self.traps_set_way),
                                          self.ram)

    def run(self, trace) -> Result:
        """Replay a whole Trace.  A header that does not say whether hypervisor maintenance
        was tracked (hand-written traces) gets the observed world when any is in the trace."""
        if "hyp_maintenance" not in trace.header and \
                np.any(trace.events["kind"] == KIND["hyp-maintenance"]):
            self.observe()
        self.feed(trace.events, trace.extras)
        return self.finish()

    def feed(self, ev: np.ndarray, extras: dict | None = None) -> dict[str, list[Finding]]:
        """Replay the next events (``EVENT_DTYPE`` rows; ``extras`` keyed by row index in
        ``ev``), in trace order, chunked any way: the state carries over, so findings, costs
        and transitions after ``finish`` equal a whole-trace replay.

        A run of stage-2 faults, maps and clears still open at the end of ``ev`` is held (up
        to ``hold`` events) and replayed with what follows: a vectorized run costs about as
        much per call as per event, so 1,000-event chunks replayed one by one ran at 30% of
        the whole-trace rate.  ``flush`` replays what is held (a live session calls it when
        its ring runs dry).  Returns the findings each world raised in the events replayed by
        this call (a first-map finding may still grow afterwards: the next map of the
        following page by the same vCPU extends it)."""
        if self._finished:
            raise RuntimeError("feed after finish")
        before = {name: len(w.findings) for name, w in self.worlds.items()}
        if not self._started:
            self._started = True
            if self.host_zero:
                for b, s in self.ram.ranges:
                    self.host_write(-1, "host-zero", b, s)
        n = len(ev)
        if n:
            self._kind_counts += np.bincount(ev["kind"], minlength=len(self._kind_counts))
            self._fault_seqs.append(ev["seq"][ev["kind"] == E.KIND_CODE["s2-fault"]]
                                    .astype(np.int64))
            extras = extras or {}
            in_batch = self._batchable(ev)
            lone = np.flatnonzero(~in_batch)
            tail = int(lone[-1]) + 1 if lone.size else 0     # the open run: ev[tail:]
            if tail:
                self._held.append((ev[:tail], {i: x for i, x in extras.items() if i < tail}))
                self._replay_held()
            if tail < n:
                self._held.append((ev[tail:], {i - tail: x for i, x in extras.items()
                                               if i >= tail}))
                self._held_events += n - tail
                if self._held_events >= self.hold:
                    self._replay_held()
        return self._new_findings(before)

    def flush(self) -> dict[str, list[Finding]]:
        """Replay the events ``feed`` holds; the findings they raised."""
        before = {name: len(w.findings) for name, w in self.worlds.items()}
        self._replay_held()
        return self._new_findings(before)

    def _new_findings(self, before: dict) -> dict[str, list[Finding]]:
        return {name: w.findings[before.get(name, 0):] for name, w in self.worlds.items()}

    @staticmethod
    def _batchable(ev: np.ndarray) -> np.ndarray:
        """Which events may be replayed vectorized (``batch``), the others one by one."""
        in_batch = IN_BATCH[ev["kind"]]
        # DC ZVA writes zeros: not a clear, one by one.
        in_batch &= ~((ev["kind"] == KIND["cmo-va"]) & (ev["op"] == E.DC_VA_OPS.index("zva")))
        # Of the guest's I-cache invalidations only IC IVAU of a known PA clears lines.
        in_batch &= ~((ev["kind"] == KIND["ic-inval"])
                      & ((ev["op"] != E.IC_OPS.index("ivau"))
                         | ((ev["present"] & E.OPTIONAL_BIT["pa"]) == 0)))
        in_batch &= ~((ev["kind"] == KIND["sysreg-write"]) & np.isin(ev["reg"], FOLLOWED_REGS))
        return in_batch

    def _replay_held(self) -> None:
        """Replay the held pieces as one array, in order."""
        if not self._held:
            return
        if len(self._held) == 1:
            ev, extras = self._held[0]
        else:
            ev = np.concatenate([piece for piece, _ in self._held])
            extras, base = {}, 0
            for piece, ex in self._held:
                extras.update((base + i, x) for i, x in ex.items())
                base += len(piece)
        self._held, self._held_events = [], 0
        self._replay(ev, extras)

    def _replay(self, ev: np.ndarray, extras: dict) -> None:
        in_batch = self._batchable(ev)
        n = len(ev)
        # where in_batch changes: the end of the batchable run an index is in, found at once
        edges = np.flatnonzero(np.diff(in_batch.astype(np.int8), append=np.int8(0)) != 0) + 1
        i = 0
        while i < n:
            if in_batch[i]:
                j = int(edges[np.searchsorted(edges, i, side="right")])
                if self.max_batch is not None:
                    j = min(j, i + self.max_batch)
                self.batch(ev[i:j], extras, i)
                i = j
            else:
                self.one(ev[i], extras.get(i, {}))
                i += 1

    def finish(self) -> Result:
        """End of the trace: settle what is pending, report the SMP window; the Result."""
        if not self._finished:
            if not self._started:
                self.feed(np.zeros(0, dtype=E.EVENT_DTYPE))
            self._replay_held()
            self._finished = True
            for v in range(self.nvcpus):
                self.settle(v)
            win = self.window
            if win["start_seq"] is not None:
                text = SmpMmuOffWindow.message(win)
                for w in self.worlds.values():
                    w.findings.append(Finding(SmpMmuOffWindow.kind, win["start_seq"], None,
                                              message=text))
            self.counts = {E.KIND_NAMES[k]: int(c) for k, c in enumerate(self._kind_counts)
                           if c}
        return Result(self.worlds, self.transitions, self.maps, self.unmaps, self.stats(),
                      np.concatenate(self._fault_seqs or [np.zeros(0, dtype=np.int64)]))

    def settle(self, v: int, e=None) -> None:
        """Settle vCPU ``v``'s pending checks at its event ``e`` (None: the end of the trace),
        before ``e`` takes effect: each detector says which events it waits through and which
        make it unnecessary (gdbplugin/model/hazards.py)."""
        vc = self.vcpus[v]
        if not vc.pending:
            return
        kind = E.KIND_NAMES[e["kind"]] if e is not None else None
        op = E.IC_OPS[e["op"]] if kind == "ic-inval" else None
        for name in list(vc.pending):
            det = DETECTORS[name]
            if det.waits_through(kind):
                continue
            ctx = vc.pending.pop(name)
            if not det.discharged_by(kind, op):
                self.judge(det, ctx, np.flatnonzero(self.mapped))

    def trigger(self, trigger: str, ctx: dict, vc: Vcpu) -> None:
        """A trigger over the mapped pages: each detector on it judges now, or at the vCPU's
        next event (``settles``)."""
        for det in BY_TRIGGER.get(trigger, ()):
            if not det.armed(self, vc, trigger):
                continue
            if det.settles:
                vc.pending[det.kind] = ctx
            else:
                self.judge(det, ctx, np.flatnonzero(self.mapped))

    def judge(self, det: Detector, ctx: dict, pages: np.ndarray) -> None:
        """One detector over candidate pages, in every world; findings per run of pages."""
        self._emit_pages(det.kind, {name: pages[det.fires(self, w, ctx, pages)]
                                    for name, w in self.worlds.items()}, ctx)

    def judge_at_once(self, trigger: str, ctx: dict, vc: Vcpu, page: int) -> dict:
        """A trigger about one RAM page, judged now by every detector armed on it; the
        findings each world got from it."""
        before = {name: len(w.findings) for name, w in self.worlds.items()}
        for det in BY_TRIGGER.get(trigger, ()):
            if det.armed(self, vc, trigger):
                self.judge(det, ctx, np.array([page], dtype=np.int64))
        return {name: w.findings[before[name]:] for name, w in self.worlds.items()}

    def _pa_page(self, ipa_page: int) -> int:
        """The PA page an IPA page is mapped to (identity unless a map said otherwise)."""
        return self.pa_of_ipa.get(ipa_page, ipa_page)

    def _vcpu_of(self, e) -> int | None:
        """The vCPU that issued event ``e``, if any."""
        kind = E.KIND_NAMES[e["kind"]]
        if kind not in VCPU_KINDS:
            return None
        if kind == "s2-map" and not e["present"] & E.OPTIONAL_BIT["vcpu"]:
            return None
        return int(e["vcpu"])

    def one(self, e, extras: dict) -> None:
        v = self._vcpu_of(e)
        kind = E.KIND_NAMES[e["kind"]]
        if v is not None:
            self.settle(v, e)
            if kind not in ("s2-fault", "s2-map"):
                self.last_fault.pop(v, None)       # the guest ran: its fault is answered
        seq = int(e["seq"])
        if kind != "set-way":
            self.set_way_open.clear()
        if kind == "vcpu-on":
            self.vcpu_on(seq, int(e["vcpu"]), bool(e["op"]))
        elif kind == "vcpu-off":
            self.vcpus[int(e["vcpu"])].online = False
        elif kind == "sysreg-write":
            self.sysreg_write(seq, e, self._transition(e, extras))
        elif kind == "s2-unmap":
            self.unmap(int(e["addr"]), int(e["size"]))
        elif kind == "s2-access":
            self.access(seq, e)
        elif kind == "fetch":
            self.fetch(seq, e)
        elif kind == "s2-attr":
            xn = int(e["xn"]) if e["present"] & E.OPTIONAL_BIT["xn"] else None
            self.attr(int(e["addr"]), int(e["size"]), int(e["memattr"]), xn)
        elif kind == "host-write":
            self.host_write(seq, E.SOURCES[e["op"]], int(e["pa"]), int(e["size"]))
        elif kind == "guest-access":
            self.guest_access(int(e["vcpu"]), E.ACCESS[e["access"]], int(e["pa"]),
                              int(e["size"]))
            if E.ACCESS[e["access"]] == "write" and e["present"] & E.OPTIONAL_BIT["pc"]:
                self._note_writer(e)
        elif kind == "cmo-va":
            self.cmo(int(e["vcpu"]), E.DC_VA_OPS[e["op"]], int(e["pa"]), int(e["size"]))
        elif kind == "set-way":
            self.set_way(seq, e)
        elif kind == "ic-inval":
            op = E.IC_OPS[e["op"]]
            if op == "ivau" and e["present"] & E.OPTIONAL_BIT["pa"]:
                for w in self.worlds.values():
                    w.cache.clear(CLEARS["icache-inval"], int(e["pa"]), int(e["size"]) or 4)
            elif op != "ivau":
                for w in self.worlds.values():
                    w.cache.bits["code"][:] = 0
        elif kind == "hyp-maintenance" and OBSERVED in self.worlds:
            op = E.HYP_OPS[e["op"]]
            self.apply(self.worlds[OBSERVED],
                       Action("observed." + op, op, SCOPE_RANGE, int(e["pa"]), int(e["size"])))
        # tlbi: no effect on caches.

    # -- maintenance ----------------------------------------------------------------------
    def apply(self, w: World, a: Action, pages: np.ndarray | None = None,
              ops: int | None = None) -> None:
        """Carry out one action in world ``w``; ``pages`` are the event's RAM pages, and
        ``ops`` how many maintenance calls that was (default: one per page)."""
        rule = RULE_INDEX.get(a.rule, 0)
        if a.scope == SCOPE_VM:
            pages = np.flatnonzero(self.mapped)
            w.cost.vm_flushes += a.op != ICACHE_INVAL
            w.cost.operations += 1
        elif a.scope == SCOPE_ALL:
            pages = np.arange(self.ram.pages)
            w.cost.operations += 1
        elif a.scope == SCOPE_RANGE:
            pages = None
            w.cost.operations += 1
        else:
            w.cost.operations += len(pages) if ops is None else ops
        if pages is None:
            nbytes = sum((lp - fp + 1) * PAGE for fp, _, lp, _ in self.ram.clip(a.pa, a.size))
            nbytes = min(nbytes, a.size)
        else:
            nbytes = len(pages) * PAGE
        if a.op == ICACHE_INVAL:
            w.cost.icache_invalidations += 1 if a.scope != SCOPE_PAGES \
                else (len(pages) if ops is None else ops)
            self._clear(w, CLEARS[a.op], a, pages)
            self._mark(w.icache_by, rule, a, pages)
            return
        self._clear(w, CLEARS[a.op], a, pages)
        self._mark(w.cleaned_by, rule, a, pages)
        if a.op in (CLEAN, CLEAN_INVAL):
            w.cost.bytes_cleaned += nbytes
        if a.op in (INVAL, CLEAN_INVAL):
            w.cost.bytes_invalidated += nbytes

    def _clear(self, w, names, a, pages):
        if pages is None:
            w.cache.clear(names, a.pa, a.size)
        else:
            w.cache.clear_pages(names, pages)

    def _mark(self, arr, rule, a, pages):
        if pages is None:
            for fp, _, lp, _ in self.ram.clip(a.pa, a.size):
                arr[fp:lp + 1] = rule
        else:
            arr[pages] = rule

    # -- events ---------------------------------------------------------------------------
    def vcpu_on(self, seq: int, v: int, reinit: bool) -> None:
        """A vCPU enters the guest with its MMU and caches off (reset, or PSCI CPU_ON)."""
        vc = self.vcpus[v]
        first = not vc.was_online
        vc.online = vc.was_online = True
        vc.sctlr &= ~M_C_I
        if self.window["start_seq"] is None:
            self.window["start_seq"] = seq
        for w in self.worlds.values():
            for a in w.policy.on_vcpu_on(v, first, reinit) if not w.observed else []:
                self.apply(w, a)

    def host_write(self, seq: int, source: str, pa: int, size: int) -> None:
        """The host (VMM, builder, kernel zeroing) wrote through its cacheable mapping."""
        if source != "host-zero":
            self.host_code.set(["host"], pa, size)
        for w in self.worlds.values():
            w.cache.set(["dirty", "code"], pa, size)
            w.cache.clear(["stale"], pa, size)
            if not w.observed:
                for a in w.policy.on_host_write(source, pa, size):
                    self.apply(w, a)
        if seq >= 0 and any(vc.online for vc in self.vcpus):
            self.check_mismatched_alias(seq, pa, size)

    def guest_access(self, v: int, access: str, pa: int, size: int) -> None:
        if access != "write":
            return
        vc = self.vcpus[v]
        page = self.ram.page_index(pa)
        if page < 0 or size > PAGE - (pa & (PAGE - 1)) or self.host_code.bits["host"][page]:
            self.host_code.clear(["host"], pa, size)
        memattr = int(self.memattr[page]) if page >= 0 else 0xF
        for w in self.worlds.values():
            state = "dirty" if w.cacheable(vc, memattr) else "stale"
            w.cache.set([state, "code"], pa, size)

    def guest_writes(self, vcpus: np.ndarray, pages: np.ndarray) -> None:
        """vCPU ``vcpus[i]`` wrote somewhere in RAM page ``pages[i]`` (a write fault's page):
        every line of it may now be dirty (cacheable write) or stale (non-cacheable)."""
        if not pages.size:
            return
        memattr = self.memattr[pages]
        self.host_code.clear_pages(["host"], pages)
        for w in self.worlds.values():
            ok = self.cacheable(w, vcpus, memattr)
            w.cache.set_pages(["dirty", "code"], pages[ok])
            w.cache.set_pages(["stale", "code"], pages[~ok])

    def cmo(self, v: int, op: str, pa: int, size: int) -> None:
        """DC by VA from the guest (cache.CLEARS says what each clears); zva writes zeros."""
        if op == "zva":
            self.guest_access(v, "write", pa, size)
            return
        for w in self.worlds.values():
            w.cache.clear(CLEARS[op], pa, size)

    def _forget_leaf(self, ipa_page: int) -> None:
        """IPA page's leaf is gone or replaced: drop its PA, and the PA's name if it was
        this IPA (another IPA's leaf onto the same PA is untouched)."""
        old_pa = self.pa_of_ipa.pop(ipa_page, None)
        if old_pa is not None and self.ipa_of_pa.get(old_pa) == ipa_page:
            del self.ipa_of_pa[old_pa]

    def unmap(self, ipa: int, size: int) -> None:
        self.unmaps += 1
        for ipa_page in E.pages(ipa, size):
            pa_page = self.pa_of_ipa.get(ipa_page, ipa_page)
            self._forget_leaf(ipa_page)
            idx = self.ram.page_index(pa_page << PAGE_SHIFT)
            if idx >= 0:
                self.mapped[idx] = False
                self.ever_mapped[idx] = False       # a new fault there is a first map again
                for w in self.worlds.values():
                    w.executable[idx] = False
                    if not w.observed:
                        for a in w.policy.on_unmap(pa_page << PAGE_SHIFT, PAGE):
                            self.apply(w, a)

    def attr(self, ipa: int, size: int, memattr: int, xn: int | None) -> None:
        span = E.pages(ipa, size)
        ipa_pages = np.arange(span.start, span.stop, dtype=np.int64)
        pages = self._ram_pages(self._translate(ipa_pages))
        self._set_attr(pages[pages >= 0], memattr, bool(xn))

    def _set_attr(self, pages: np.ndarray, memattr, xn) -> None:
        """Mapped leaves' attributes change: RAM ``pages`` (each once) get ``memattr`` and
        execute-never ``xn`` (one for all, or one each).  The execute permission counts only
        in the observed world: a policy's world decides executability by its own rule."""
        self.memattr[pages] = memattr
        if OBSERVED in self.worlds:
            mapped = self.mapped[pages]
            self.worlds[OBSERVED].executable[pages[mapped]] = \
                ~(xn[mapped] if np.ndim(xn) else np.bool_(xn))

    def _translate(self, ipa_pages: np.ndarray) -> np.ndarray:
        """PA page of each IPA page under the current leaves."""
        if not self.pa_of_ipa:
            return ipa_pages.copy()
        return np.array([self.pa_of_ipa.get(p, p) for p in ipa_pages.tolist()], dtype=np.int64)

    def _ram_pages(self, pa_pages: np.ndarray) -> np.ndarray:
        """RAM page index of each PA page (-1 outside RAM)."""
        return self.ram.page_index(pa_pages.astype(np.uint64) << np.uint64(PAGE_SHIFT))

    def _translate_in_run(self, ev, maps: np.ndarray, at: np.ndarray,
                          ipa_pages: np.ndarray) -> np.ndarray:
        """PA page of each IPA page named by the run's event ``at``: the latest map of the
        run before that event decides, else the leaves the run started with."""
        pa_pages = self._translate(ipa_pages)
        if maps.size and (self.pa_of_ipa or np.any(ev["addr"][maps] != ev["pa"][maps])):
            first = (ev["addr"][maps] >> np.uint64(PAGE_SHIFT)).astype(np.int64)
            last = ((ev["addr"][maps] + np.maximum(ev["size"][maps], np.uint64(1))
                     - np.uint64(1)) >> np.uint64(PAGE_SHIFT)).astype(np.int64)
            pa_first = (ev["pa"][maps] >> np.uint64(PAGE_SHIFT)).astype(np.int64)
            for m, f, la, p in zip(maps.tolist(), first.tolist(), last.tolist(),
                                   pa_first.tolist()):
                sel = (at > m) & (ipa_pages >= f) & (ipa_pages <= la)
                pa_pages[sel] = p + (ipa_pages[sel] - f)
        return pa_pages

    def _transition(self, e, extras: dict) -> str:
        """Record a register write as a transition; the register's name."""
        reg = extras.get("reg") or E.REGS[e["reg"]]
        self.transitions.append({"vcpu": int(e["vcpu"]), "reg": reg, "old": int(e["old"]),
                                 "new": int(e["new"]), "pc": _pc_el(e)[0],
                                 "seq": int(e["seq"])})
        return reg

    def sysreg_write(self, seq: int, e, reg: str) -> None:
        """A write of a register the model follows (recorded as a transition already)."""
        v, old, new = int(e["vcpu"]), int(e["old"]), int(e["new"])
        pc, el = _pc_el(e)
        vc = self.vcpus[v]
        if reg == "HCR_EL2":
            vc.hcr = new
            return
        if reg != "SCTLR_EL1":
            return
        ctx = dict(seq=seq, vcpu=v, pc=pc, el=el, sctlr=new)
        if (old ^ vc.sctlr) & M_C_I:
            self.unobserved_transition(ctx, vc.sctlr, old)    # ``old`` is what it was
            vc.caches_ever_on |= old & M_C == M_C
        was_on = old & M_C == M_C
        now_on = new & M_C == M_C
        bit = lambda value, f: SCTLR_EL1.get(value, f)  # noqa: E731
        mmu_now = bool(bit(new, "M"))
        for w in self.worlds.values():
            if not w.observed:
                for a in w.policy.on_sctlr(v, was_on, now_on, mmu_now):
                    self.apply(w, a)
        vc.sctlr = new
        if now_on and not was_on:
            self.trigger("caches-on", ctx, vc)
        if was_on and not now_on:
            self.trigger("caches-off", ctx, vc)
        if (not bit(old, "I") and bit(new, "I")) or (not bit(old, "M") and mmu_now):
            self.trigger("fetch-enable", ctx, vc)
        vc.caches_ever_on |= now_on
        if mmu_now and not self.any_mmu_enabled:
            self.any_mmu_enabled = True
            self.window["end_seq"] = seq

    def access(self, seq: int, e) -> None:
        """The vCPU's first access to a page after a caches-off (the hypervisor hid the page
        to see it): with its accesses non-cacheable, dirty lines there mean it reads (or
        writes under) data that is not at PoC.  Contiguous pages in a row make one finding."""
        v = int(e["vcpu"])
        vc = self.vcpus[v]
        idx = self.ram.page_index(self._pa_page(int(e["addr"]) >> PAGE_SHIFT) << PAGE_SHIFT)
        if idx < 0:
            return
        pc, el = _pc_el(e)
        ctx = dict(seq=seq, vcpu=v, pc=pc, el=el, sctlr=vc.sctlr)
        for name, made in self.judge_at_once("nc-access", ctx, vc, idx).items():
            w = self.worlds[name]
            if len(made) == 1 and len(w.findings) > 1:
                last, new = w.findings[-2], w.findings[-1]
                if (last.kind, last.vcpu, last.covered_by, last.observed,
                        last.responsibility) == (new.kind, new.vcpu, new.covered_by,
                                                 new.observed, new.responsibility) \
                        and last.pa + last.size == new.pa:
                    last.size += new.size
                    w.findings.pop()

    def fetch(self, seq: int, e) -> None:
        """An observed fetch from rewritten code: the fetched line is checked (the lines
        written came before it as guest-access writes, the guest's I-cache maintenance of
        them before that)."""
        v = int(e["vcpu"])
        vc = self.vcpus[v]
        ipa = int(e["addr"])
        pa = (self._pa_page(ipa >> PAGE_SHIFT) << PAGE_SHIFT) | (ipa & (PAGE - 1))
        idx = self.ram.page_index(pa)
        if idx < 0:
            return
        pc, el = _pc_el(e)
        ctx = dict(seq=seq, vcpu=v, pc=pc, el=el, sctlr=vc.sctlr, line=(ipa >> 6) & 63,
                   ok=bool(e["op"]))
        writer = self.last_writer.get(pa >> PAGE_SHIFT)
        words = (f" (instruction {int(e['old']):#010x} -> {int(e['new']):#010x})"
                 if e["old"] or e["new"] else "")
        where = "" if pc is None else f" at pc {pc:#x}"
        for made in self.judge_at_once("fetch", ctx, vc, idx).values():
            for f in made:
                f.message = (f"vCPU {v} fetched line {pa & ~63:#x}{where}{words}, rewritten "
                             "since the last I-cache invalidation covering it"
                             + (f" (written by vCPU {writer[0]} at pc {writer[1]:#x})"
                                if writer else ""))

    def unobserved_transition(self, ctx: dict, tracked: int, old: int) -> None:
        """The write says SCTLR_EL1 was ``old``; the model last saw ``tracked``: an M, C or I
        change happened that the capture did not record (an info finding, never silent)."""
        names = ("M", "C", "I")
        diff = ", ".join(f"{n} {SCTLR_EL1.get(tracked, n)}->{SCTLR_EL1.get(old, n)}"
                         for n in names if SCTLR_EL1.get(tracked, n) != SCTLR_EL1.get(old, n))
        text = UnobservedTransition.message(ctx["vcpu"], diff, tracked, old)
        for w in self.worlds.values():
            w.findings.append(Finding(UnobservedTransition.kind, ctx["seq"], ctx["vcpu"],
                                      ctx["pc"], ctx["el"], old, message=text))

    def cacheable(self, w: World, vcpus: np.ndarray, memattr: np.ndarray) -> np.ndarray:
        """Per page: are the data accesses of vCPU ``vcpus[i]`` to a page of stage-2 MemAttr
        ``memattr[i]`` cacheable in world ``w``?  One lookup per distinct (vCPU, MemAttr)."""
        if not memattr.size:
            return np.zeros(0, dtype=bool)
        key = vcpus.astype(np.intp) * 256 + memattr
        present = _small_unique(key)
        table = np.zeros(int(present[-1]) + 1, dtype=bool)
        for k in present.tolist():
            table[k] = w.cacheable(self.vcpus[k >> 8], k & 0xFF)
        return table[key]

    def set_way(self, seq: int, e) -> None:
        """One finding per sweep (consecutive set/way operations of a vCPU), counting them."""
        v = int(e["vcpu"])
        for w in self.worlds.values():
            if not w.observed:
                for a in w.policy.on_set_way(v):
                    self.apply(w, a)
        op = f"DC {E.SET_WAY_OPS[e['op']].upper()}"
        sweep = self.set_way_open.get(v)
        if sweep is not None:
            sweep[0] += 1
            for f in sweep[1]:
                f.message = f"{op} by set/way: {sweep[0]} operations in this sweep"
            return
        pc, el = _pc_el(e)
        det = DETECTORS["set-way-op"]
        fires = {name: bool(det.fires(self, w, None, None)) for name, w in self.worlds.items()}
        made = []
        for name, w in self.worlds.items():
            if fires[name]:
                f = Finding(det.kind, seq, v, pc, el, self.vcpus[v].sctlr,
                            message=f"{op} by set/way: 1 operation in this sweep")
                f.covered_by, f.observed = self._coverage(
                    name, fires, lambda other: [self.worlds[other].policy.traps_set_way()],
                    None)
                w.findings.append(f)
                made.append(f)
        self.set_way_open[v] = [1, made]

    # -- findings -------------------------------------------------------------------------
    def check_mismatched_alias(self, seq, pa, size):
        pages = np.array([p for fp, _, lp, _ in self.ram.clip(pa, size)
                          for p in range(fp, lp + 1)], dtype=np.int64)
        pages = pages[self.mapped[pages]] if pages.size else pages
        for det in BY_TRIGGER.get("host-write", ()):
            self.judge(det, dict(seq=seq, vcpu=None), pages)

    def _rules_for(self, w: World, kind: str, pages: np.ndarray) -> list[str]:
        """The rules of ``w`` that would account for a finding on ``pages`` not firing: the
        rule that last cleaned them, or for the I-side the one that last invalidated them, or
        (exec-on-demand) the one that will invalidate when a fetch makes them executable."""
        if w.policy.type_rule() and kind != "icache-not-invalidated":
            return [w.policy.type_rule()]
        by = w.icache_by if kind == "icache-not-invalidated" else w.cleaned_by
        idx = _small_unique(by[pages]).tolist()
        out = [ALL_RULES[i] for i in idx if i]
        if kind == "icache-not-invalidated" and pages.size and not w.executable[pages].all():
            out += [a.rule for a in w.policy.on_exec_grant()]
        return sorted(set(out))

    def _emit_pages(self, kind, fires: dict[str, np.ndarray], ctx) -> None:
        """Findings for runs of contiguous pages, one list per world, with covered_by from the
        worlds where none of those pages fired."""
        for name, w in self.worlds.items():
            for run in _runs(fires[name]):
                pa, size = self.ram.page_pa(int(run[0])), len(run) * PAGE
                f = Finding(kind, ctx["seq"], ctx.get("vcpu"), ctx.get("pc"), ctx.get("el"),
                            ctx.get("sctlr"), ipa=self._ipa(int(run[0])), pa=pa, size=size,
                            message=DETECTORS[kind].meaning,
                            responsibility=DETECTORS[kind].responsibility(
                                self, *((pa + 64 * ctx["line"], 64) if "line" in ctx
                                        else (pa, size))))
                f.covered_by, f.observed = self._coverage(
                    name, fires, lambda other, run=run: self._rules_for(
                        self.worlds[other], kind, run), run)
                w.findings.append(f)

    def _coverage(self, name, fires, rules, run) -> tuple[list[str], bool | None]:
        """(rules of the other policies under which the hazard did not fire, whether the
        traced hypervisor's own maintenance covered it); ``run`` is the finding's pages, or
        None for a hazard that is not about pages (``fires`` then holds booleans);
        ``rules(world)`` names the rules of that world that kept it from firing."""
        covered, observed = set(), None
        for other, hit in fires.items():
            clear = (not hit) if run is None else not np.isin(run, hit).any()
            if other == OBSERVED:
                observed = clear
            elif other not in (name, "none") and clear:
                covered.update(r for r in rules(other) if r)
        return sorted(covered), observed

    def _ipa(self, page_index: int) -> int:
        pa = self.ram.page_pa(page_index)
        return self.ipa_of_pa.get(pa >> PAGE_SHIFT, pa >> PAGE_SHIFT) << PAGE_SHIFT

    # -- the vectorized stage-2 path --------------------------------------------------------
    def batch(self, ev: np.ndarray, extras: dict, base: int) -> None:
        """A run of faults, maps and line clears: no vCPU state changes inside it.  Clears
        commute with each other and with page-state changes (maps, write and exec faults) of
        other pages, so each is applied before them (if it precedes every change of its pages
        in the run) or after them; a clear between two changes of the same page splits the
        run there, and so do a page mapped twice or both written and fetched, and the event
        at which a vCPU's pending check settles.

        Each split costs a look at what follows it, so the look is bounded: a window that
        doubles while runs are taken whole and shrinks to twice the last split (a Linux boot
        splits its runs every few events, at permission faults on pages written again)."""
        window = WINDOW_MAX
        while len(ev):
            head = ev[:window]
            settle = self._settle_point(head)
            if settle is not None and settle[0] == 0:
                self.settle(settle[1], ev[0])       # pops what settles here: no loop
                continue
            end = len(head) if settle is None else settle[0]
            n = self._run(head[:end], extras, base)
            window = min(WINDOW_MAX, 2 * window) if n == end else max(WINDOW_MIN, 2 * n)
            ev, base = ev[n:], base + n

    def _run(self, ev: np.ndarray, extras: dict, base: int) -> int:
        """Replay the longest prefix of ``ev`` that needs no split; how many events it took."""
        ordered = ORDERED[ev["kind"]] & ~((ev["kind"] == KIND["cmo-va"])
                                          & DC_CLEARS_NOTHING[ev["op"]])
        state = self._page_changes(ev)
        before, split = self._order(ev, ordered, state)
        sets = np.flatnonzero((ev["kind"] == KIND["guest-access"])
                              & (ev["access"] == E.ACCESS.index("write")))
        if sets.size:
            cut = self._line_sets_cut(ev, sets, ordered, state)
            if cut is not None:
                split = cut if split is None else min(split, cut)
        if split is not None:
            if split:
                self._run(ev[:split], extras, base)   # conflict-free: taken whole
            if not (ordered[split] or ev["kind"][split] == KIND["guest-access"]):
                return split
            self.one(ev[split], extras.get(base + split, {}))
            return split + 1
        self.set_way_open.clear()
        for i in np.flatnonzero(ev["kind"] == KIND["sysreg-write"]).tolist():
            self._transition(ev[i], extras.get(base + i, {}))
        if sets.size:
            self._line_sets(ev[sets])
        if before.any():
            self._apply_ordered(ev, before, state)
        self._faults_and_maps(ev, state)
        after = ordered & ~before
        if after.any():
            self._apply_ordered(ev, after, state)
        return len(ev)

    def _line_sets_cut(self, ev, sets: np.ndarray, ordered: np.ndarray,
                       state: dict) -> int | None:
        """Where the run must be cut for its guest writes (``sets``) to be set first, before
        everything else of the run: at a write whose page the run also maps, faults on or
        retypes before it (its lines' memory type and the first-map checks depend on the
        order; a permission change that keeps the type, KVM's write grant, does not count),
        or whose lines a clear of the run cleared before it; at the first change of the page
        when every change of it comes after the write.  None: no cut."""
        cuts = []
        idx, page, lo, hi = self.ram.pieces(ev["pa"][sets], ev["size"][sets])
        who = sets[idx]
        retyped = state["attr_retypes"]
        changed = np.concatenate([state["page"], state["attr_page"][retyped]])
        if changed.size:
            changer = np.concatenate([state["who"], state["attr_who"][retyped]])
            first = self._page_first                # RAM page -> its first change in the run
            np.minimum.at(first, changed, changer)
            at = first[page]
            first[changed] = NO_EVENT
            hit = at != NO_EVENT
            cuts += np.where(at[hit] < who[hit], who[hit], at[hit]).tolist()
        clears = np.flatnonzero(ordered & (ev["kind"] != KIND["s2-attr"]))
        if clears.size:
            c_idx, c_page, c_lo, c_hi = self.ram.pieces(ev["pa"][clears],
                                                        _clear_sizes(ev[clears]))
            # every (write piece, clear piece) pair on one page: a clear before the write
            # that shares a line with it
            by_page = np.argsort(c_page, kind="stable")
            c_page = c_page[by_page]
            start = np.searchsorted(c_page, page, side="left")
            w_of, c_of = segments(start, np.searchsorted(c_page, page, side="right") - start)
            if w_of.size:
                c_of = by_page[c_of]
                shared = line_masks(c_lo[c_of], c_hi[c_of]) & line_masks(lo[w_of], hi[w_of])
                hit = (clears[c_idx[c_of]] < who[w_of]) & (shared != 0)
                if hit.any():
                    cuts.append(int(who[w_of[hit]].min()))
        return min(cuts) if cuts else None

    def _line_sets(self, ev: np.ndarray) -> None:
        """Guest writes of a run, vectorized ``guest_access``: their lines become dirty (a
        cacheable write) or stale (not), and new code, in every world; they are no longer
        what the host wrote.  The memory type is their first page's, as ``guest_access``."""
        idx, page, lo, hi = self.ram.pieces(ev["pa"], ev["size"])
        if not idx.size:
            return
        mask = line_masks(lo, hi)
        pages, inverse = np.unique(page, return_inverse=True)
        every = np.zeros(pages.size, dtype=np.uint64)
        np.bitwise_or.at(every, inverse, mask)
        self.host_code.bits["host"][pages] &= ~every
        first = self.ram.page_index(ev["pa"])
        memattr = np.where(first >= 0, self.memattr[np.clip(first, 0, None)], 0xF)[idx]
        vcpu = ev["vcpu"][idx].astype(np.int64)
        for w in self.worlds.values():
            ok = np.zeros(idx.size, dtype=bool)
            for v, m in set(zip(vcpu.tolist(), memattr.tolist())):
                ok[(vcpu == v) & (memattr == m)] = w.cacheable(self.vcpus[v], m)
            for state, sel in (("dirty", ok), ("stale", ~ok)):
                if sel.any():
                    part = np.zeros(pages.size, dtype=np.uint64)
                    np.bitwise_or.at(part, inverse[sel], mask[sel])
                    w.cache.bits[state][pages] |= part
            w.cache.bits["code"][pages] |= every
        for e in ev[(ev["present"] & E.OPTIONAL_BIT["pc"]) != 0]:
            self._note_writer(e)

    def _note_writer(self, e) -> None:
        """A guest write that has a PC: who last wrote each page it touches (named by the
        I-cache check at a fetch)."""
        for p in E.pages(int(e["pa"]), int(e["size"])):
            self.last_writer[p] = (int(e["vcpu"]), int(e["pc"]))

    def _settle_point(self, ev) -> tuple[int, int] | None:
        """(index, vCPU) of the first event in the run at which a pending check settles."""
        best = None
        for v, vc in enumerate(self.vcpus):
            if not vc.pending:
                continue
            mine = (ev["vcpu"] == v) & IS_VCPU_KIND[ev["kind"]] & (
                (ev["kind"] != KIND["s2-map"]) | ((ev["present"] & E.OPTIONAL_BIT["vcpu"]) != 0))
            waited = [KIND[k] for k in ("s2-fault", "s2-map", "cmo-va", "ic-inval", "tlbi",
                                        "sysreg-write")
                      if all(DETECTORS[p].waits_through(k) for p in vc.pending)]
            if waited:
                mine &= ~np.isin(ev["kind"], waited)
            hit = np.flatnonzero(mine)
            if hit.size and (best is None or hit[0] < best[0]):
                best = (int(hit[0]), v)
        return best

    def _attr_pages(self, ev, maps: np.ndarray, attrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(attribute change, RAM page) for every RAM page the run's ``attrs`` change."""
        first = (ev["addr"][attrs] >> np.uint64(PAGE_SHIFT)).astype(np.int64)
        count = ((ev["addr"][attrs] + ev["size"][attrs] + np.uint64(PAGE - 1))
                 >> np.uint64(PAGE_SHIFT)).astype(np.int64) - first
        owner, ipa_pages = segments(first, count)
        who = attrs[owner]
        page = self._ram_pages(self._translate_in_run(ev, maps, who, ipa_pages))
        return who[page >= 0], page[page >= 0]

    def _page_changes(self, ev) -> dict:
        """Which events of a run change the state of which RAM page: maps (every page) and
        the write and exec faults on pages already mapped when they were taken (permission
        faults, which take effect at the fault; a fault that a map answers takes effect with
        that map)."""
        maps = np.flatnonzero(ev["kind"] == KIND["s2-map"])
        m_idx, m_page, _, _ = self.ram.pieces(ev["pa"][maps], ev["size"][maps])
        m_who = maps[m_idx]
        faults = np.flatnonzero(ev["kind"] == KIND["s2-fault"])
        access = _access(ev, faults)
        effect = faults[(access == E.ACCESS.index("write")) | (access == E.ACCESS.index("exec"))]
        f_page = self._ram_pages(self._translate_in_run(
            ev, maps, effect, (ev["addr"][effect] >> np.uint64(PAGE_SHIFT)).astype(np.int64)))
        ok = f_page >= 0
        effect, f_page = effect[ok], f_page[ok]
        at_fault = self.mapped[f_page]
        if m_page.size and f_page.size:
            first_map = self._page_first            # RAM page -> its first map in the run
            np.minimum.at(first_map, m_page, m_who)
            at_fault |= first_map[f_page] < effect
            first_map[m_page] = NO_EVENT
        effect, f_page = effect[at_fault], f_page[at_fault]
        attrs = np.flatnonzero(ev["kind"] == KIND["s2-attr"])
        a_who, a_page = self._attr_pages(ev, maps, attrs) if attrs.size else (attrs, attrs)
        return {"who": np.concatenate([m_who, effect]), "page": np.concatenate([m_page, f_page]),
                # an attribute change giving its page another memory type than it has now
                "attr_retypes": ev["memattr"][a_who] != self.memattr[a_page],
                "maps": maps, "faults": faults, "effects": effect, "effect_pages": f_page,
                "attr_who": a_who, "attr_page": a_page}

    def _order(self, ev, ordered, state) -> tuple[np.ndarray, int | None]:
        """Which ordered events (line clears, attribute changes) go before the page changes,
        and the first event that must split the run (an ordered event between two changes of
        its page, or the later of a write and an exec fault on one page)."""
        before = np.zeros(len(ev), dtype=bool)
        who, page = state["who"], state["page"]
        if not who.size:
            return before, None
        # Effects of faults are applied after the run's maps, in no order among themselves:
        # a page mapped twice, or written and fetched, needs its events in order.
        cuts = []
        is_fault = ev["kind"][who] == KIND["s2-fault"]
        mw, mp = who[~is_fault], page[~is_fault]
        if mp.size > 1 and np.bincount(mp).max() > 1:
            order = np.lexsort((mw, mp))
            twice = np.flatnonzero(mp[order][1:] == mp[order][:-1]) + 1
            cuts.append(int(mw[order][twice].min()))
        if is_fault.any():
            fw, fp = who[is_fault], page[is_fault]
            write = ev["access"][fw] == E.ACCESS.index("write")
            if write.any() and not write.all():
                cuts += [max(int(fw[write & (fp == p)].min()),
                             int(fw[~write & (fp == p)].min()))
                         for p in np.intersect1d(fp[write], fp[~write]).tolist()]
            first = self._page_first                 # RAM page -> its first fault effect
            np.minimum.at(first, fp, fw)
            later = mw[mw > first[mp]]                # a map after a fault's effect
            first[fp] = NO_EVENT
            if later.size:
                cuts.append(int(later.min()))
        split = min(cuts) if cuts else None
        if not ordered.any():
            return before, split
        if is_fault.any():
            order = np.argsort(who, kind="stable")
            who, page = who[order], page[order]
        # first and last change of each page: one stable sort (who is in event order)
        by_page = np.argsort(page, kind="stable")
        sorted_pages = page[by_page]
        starts = np.flatnonzero(np.diff(sorted_pages, prepend=sorted_pages[0] - 1))
        pages = sorted_pages[starts]
        first = who[by_page[starts]]
        last = who[by_page[np.append(starts[1:], sorted_pages.size) - 1]]
        clears = np.flatnonzero(ordered & (ev["kind"] != KIND["s2-attr"]))
        c_idx, c_page, _, _ = self.ram.pieces(ev["pa"][clears], ev["size"][clears])
        c_who = np.concatenate([clears[c_idx], state["attr_who"]])
        c_page = np.concatenate([c_page, state["attr_page"]])
        slot = self._page_slot                  # RAM page -> its index in ``pages``, or -1
        slot[pages] = np.arange(pages.size, dtype=np.int32)
        pos = slot[c_page]
        slot[pages] = -1
        hit = pos >= 0
        if not hit.any():
            return before, split
        c_who, c_page = c_who[hit], c_page[hit]
        f, la = first[pos[hit]], last[pos[hit]]
        is_before, is_after = c_who < f, c_who > la
        between = ~(is_before | is_after)
        if between.any():
            is_attr = ev["kind"][c_who] == KIND["s2-attr"]
            attrs = np.flatnonzero(between & is_attr)
            if attrs.size:
                is_after[attrs] = self._attr_commutes(ev, state, c_who[attrs], c_page[attrs])
            lines = np.flatnonzero(between & ~is_attr)
            if lines.size:
                is_before[lines] = self._rewritten(ev, state, pages)[pos[hit][lines]]
        # Between two changes of a page, or before one page's change and after another's.
        after = np.zeros(len(ev), dtype=bool)
        after[c_who[is_after]] = True
        ahead = c_who[is_before]
        bad = np.concatenate([c_who[~(is_before | is_after)], ahead[after[ahead]]])
        if bad.size:
            b = int(bad.min())
            return before, b if split is None else min(b, split)
        before[ahead] = True
        return before, split

    def _rewritten(self, ev, state, pages: np.ndarray) -> np.ndarray:
        """For each of the run's changed ``pages``: every change of it is a write fault's
        effect, all by one vCPU, and no attribute change in the run gives it another memory
        type.  Each such write sets the whole page's dirty (or stale) and code state alike, so
        a line clear between two of them may be applied before all of them: the later write
        sets again what the earlier one set.  A shim that tracks writes line by line while
        the writer's caches are off re-protects the page after each write, so Linux's DC
        CIVAC between two write faults of one page is common."""
        who, page = state["who"], state["page"]
        slot = self._page_slot
        slot[pages] = np.arange(pages.size, dtype=np.int32)
        pos = slot[page]
        attr_pos = slot[state["attr_page"]]
        slot[pages] = -1
        write = (ev["kind"][who] == KIND["s2-fault"]) & \
            (ev["access"][who] == E.ACCESS.index("write"))
        bad = np.zeros(pages.size, dtype=bool)
        np.logical_or.at(bad, pos, ~write)
        vcpu = ev["vcpu"][who].astype(np.int64)
        low = np.full(pages.size, np.iinfo(np.int64).max)
        high = np.full(pages.size, -1, dtype=np.int64)
        np.minimum.at(low, pos, vcpu)
        np.maximum.at(high, pos, vcpu)
        bad |= low != high
        bad[attr_pos[(attr_pos >= 0) & state["attr_retypes"]]] = True
        return ~bad

    def _attr_commutes(self, ev, state, attrs: np.ndarray, pages: np.ndarray) -> np.ndarray:
        """Whether each attribute change ``attrs[i]`` of RAM page ``pages[i]``, lying between
        two changes of that page in the run, may still be applied after the run: the page's
        memory type is the same before, in and after the run (what the run's write effects
        read), and no later map of the run sets the page's execute permission again.  KVM
        relaxing a leaf's permissions at each write fault is this case."""
        who, page = state["who"], state["page"]
        is_map = (ev["kind"][who] == KIND["s2-map"]) & (page >= 0)
        map_who, map_page = who[is_map], page[is_map]
        attr_ram = state["attr_page"] >= 0
        attr_who, attr_page = state["attr_who"][attr_ram], state["attr_page"][attr_ram]
        # pages whose type some map or attribute change of the run differs from
        retyped = np.concatenate([
            map_page[ev["memattr"][map_who] != self.memattr[map_page]],
            attr_page[ev["memattr"][attr_who] != self.memattr[attr_page]]])
        out = ~np.isin(pages, retyped)
        if map_page.size:                    # a map of the page after the change
            order = np.lexsort((map_who, map_page))
            mapped, last = map_page[order], map_who[order]
            ends = np.append(np.flatnonzero(mapped[1:] != mapped[:-1]), mapped.size - 1)
            mapped, last = mapped[ends], last[ends]          # each page's last map
            k = np.minimum(np.searchsorted(mapped, pages), mapped.size - 1)
            out &= ~((mapped[k] == pages) & (last[k] > attrs))
        return out

    def _apply_ordered(self, ev: np.ndarray, mask: np.ndarray, state: dict) -> None:
        """The run's ordered events in ``mask``: line clears at once, attribute changes one
        after another (on the RAM pages ``_page_changes`` found for them)."""
        is_attr = ev["kind"] == KIND["s2-attr"]
        if (mask & ~is_attr).any():
            self._clears(ev[mask & ~is_attr])
        if (mask & is_attr).any():
            mine = mask[state["attr_who"]]          # the pieces of these changes, in order
            who, page = state["attr_who"][mine], state["attr_page"][mine]
            # one after another: the last change of a page is what it keeps
            _, last = np.unique(page[::-1], return_index=True)
            who, page = who[::-1][last], page[::-1][last]
            xn = ((ev["present"][who] & E.OPTIONAL_BIT["xn"]) != 0) & (ev["xn"][who] != 0)
            self._set_attr(page, ev["memattr"][who], xn)

    def _clears(self, ev: np.ndarray) -> None:
        """Guest DC by VA and IC IVAU (every world) and traced hypervisor maintenance (the
        observed world), as per-page line masks OR-ed together, then applied once per state."""
        idx, page, lo, hi = self.ram.pieces(ev["pa"], _clear_sizes(ev))
        masks = line_masks(lo, hi)
        code = ev["kind"].astype(np.int64) * 256 + ev["op"]
        codes = _small_unique(code).tolist()
        for c in codes:
            kind = E.KIND_NAMES[c >> 8]
            op = {"cmo-va": E.DC_VA_OPS, "ic-inval": ("icache-inval",) * len(E.IC_OPS),
                  "hyp-maintenance": E.HYP_OPS}[kind][c & 0xFF]
            observed_only = kind == "hyp-maintenance"
            events = np.flatnonzero(code == c)
            sel = np.isin(idx, events) if len(codes) > 1 else slice(None)
            pages, inverse = np.unique(page[sel], return_inverse=True)
            mask = np.zeros(pages.size, dtype=np.uint64)
            np.bitwise_or.at(mask, inverse, masks[sel])
            for name in CLEARS[op]:
                for wname, w in self.worlds.items():
                    if not observed_only or wname == OBSERVED:
                        w.cache.bits[name][pages] &= ~mask
            if observed_only and OBSERVED in self.worlds:
                c_ = self.worlds[OBSERVED].cost
                nbytes = int(ev["size"][events].sum())
                c_.operations += int(events.size)
                c_.icache_invalidations += int(events.size) if op == ICACHE_INVAL else 0
                c_.bytes_cleaned += nbytes if op in (CLEAN, CLEAN_INVAL) else 0
                c_.bytes_invalidated += nbytes if op in (INVAL, CLEAN_INVAL) else 0

    def _faults_and_maps(self, ev: np.ndarray, state: dict) -> None:
        """The stage-2 part of a run; clears and TLBIs in it are ignored here.  A map answers
        its vCPU's latest fault (the map's own ``vcpu`` field, else the latest fault's) when
        that fault's IPA lies inside the map and the vCPU has not run since (an event of its
        own: it waits in the hypervisor while its fault is handled): an instruction fetch makes the new leaf
        executable, a write writes the faulting page after the map.  A write or exec fault
        on a page already mapped (a permission fault) takes effect at the fault."""
        maps, faults = state["maps"], state["faults"]
        has_vcpu = (ev["present"][maps] & E.OPTIONAL_BIT["vcpu"]) != 0
        before = np.searchsorted(faults, maps) - 1          # latest fault of any vCPU
        fault_vcpu = ev["vcpu"][faults[np.clip(before, 0, None)]] if faults.size else 0
        vcpu = np.where(has_vcpu, ev["vcpu"][maps],
                        np.where(before >= 0, fault_vcpu, self.last_fault_vcpu)
                        ).astype(np.int64)
        if faults.size:
            self.last_fault_vcpu = int(ev["vcpu"][faults[-1]])
        # The answered fault of each map: access (-1 none), IPA page, pc/el context.
        answer = np.full(maps.size, -1, dtype=np.int16)
        answer_ipa = np.zeros(maps.size, dtype=np.int64)
        ctx = np.zeros(maps.size, dtype=[("pc", "<u8"), ("has_pc", "?"), ("el", "<i2")])
        ctx["el"] = -1
        ipa_page = (ev["addr"] >> np.uint64(PAGE_SHIFT)).astype(np.int64)
        # The guest ran again (an event of its own): its fault is answered, later maps are not
        # for it.  Between a fault and its map the vCPU waits in the hypervisor.
        ran = IS_VCPU_KIND[ev["kind"]] & (ev["kind"] != KIND["s2-fault"]) & \
            (ev["kind"] != KIND["s2-map"])
        for v in _small_unique(np.concatenate([vcpu, ev["vcpu"][faults].astype(np.int64),
                                               ev["vcpu"][ran].astype(np.int64)])).tolist():
            mine = faults[ev["vcpu"][faults] == v]
            back = np.flatnonzero(ran & (ev["vcpu"] == v))
            sel = np.flatnonzero(vcpu == v)
            prev = self.last_fault.get(v)
            if sel.size:
                k = np.searchsorted(mine, maps[sel]) - 1
                ran_before = np.searchsorted(back, maps[sel])     # guest events before each map
                if prev is not None:
                    pc0, el0, acc0, page0 = prev
                    old = (k < 0) & (ran_before == 0)
                    ctx["pc"][sel[old]] = pc0 or 0
                    ctx["has_pc"][sel[old]] = pc0 is not None
                    ctx["el"][sel[old]] = -1 if el0 is None else el0
                    answer[sel[old]] = acc0
                    answer_ipa[sel[old]] = page0
                if mine.size:
                    f = mine[k[k >= 0]]
                    waiting = np.searchsorted(back, f) == ran_before[k >= 0]
                    got, f = sel[k >= 0][waiting], f[waiting]
                    present = ev["present"][f]
                    ctx["pc"][got] = ev["pc"][f]
                    ctx["has_pc"][got] = (present & E.OPTIONAL_BIT["pc"]) != 0
                    ctx["el"][got] = np.where(present & E.OPTIONAL_BIT["el"],
                                              ev["el"][f].astype(np.int16), -1)
                    answer[got] = _access(ev, f)
                    answer_ipa[got] = ipa_page[f]
            if mine.size:
                i = int(mine[-1])
                self.last_fault[v] = (*_pc_el(ev[i]), int(_access(ev, mine[-1:])[0]),
                                      int(ipa_page[i]))
            if back.size and (not mine.size or back[-1] > mine[-1]):
                self.last_fault.pop(v, None)
        # A fault is answered by the maps of its IPA until its vCPU runs again.
        m_first = ipa_page[maps]
        m_last = ((ev["addr"][maps] + np.maximum(ev["size"][maps], np.uint64(1))
                   - np.uint64(1)) >> np.uint64(PAGE_SHIFT)).astype(np.int64)
        inside = (answer >= 0) & (answer_ipa >= m_first) & (answer_ipa <= m_last)
        answer = np.where(inside, answer, -1)
        self.maps += maps.size
        if maps.size:
            self._maps(ev[maps], vcpu, answer, answer_ipa, ctx)
        f, pages = state["effects"], state["effect_pages"]
        if f.size:
            x = ev["access"][f] == E.ACCESS.index("exec")
            self._exec_grants(pages[x], ops=int(np.count_nonzero(x)))
            self.guest_writes(ev["vcpu"][f[~x]].astype(np.int64), pages[~x])

    def _exec_grants(self, pages: np.ndarray, ops: int) -> None:
        """Leaves on ``pages`` become executable at an instruction fault: in the worlds of
        exec-on-demand policies this is where their I-cache maintenance happens, once per
        leaf that was not executable yet."""
        if not pages.size:
            return
        for w in self.worlds.values():
            if w.observed or not w.policy.exec_on_demand:
                continue
            new = np.unique(pages[~w.executable[pages]])
            if new.size:
                w.executable[new] = True
                for a in w.policy.on_exec_grant():
                    self.apply(w, a, new, ops=min(ops, new.size))

    def _maps(self, ev: np.ndarray, vcpu: np.ndarray, answer: np.ndarray,
              answer_ipa: np.ndarray, ctx: np.ndarray) -> None:
        size = np.maximum(ev["size"], np.uint64(1))
        npages = ((ev["addr"] + size + np.uint64(PAGE - 1)) >> np.uint64(PAGE_SHIFT)) \
            - (ev["addr"] >> np.uint64(PAGE_SHIFT))
        npages = npages.astype(np.int64)
        rep, offset = segments(np.zeros(len(ev), dtype=np.int64), npages)
        ipa = (ev["addr"][rep] >> np.uint64(PAGE_SHIFT)) + offset.astype(np.uint64)
        pa = (ev["pa"][rep] >> np.uint64(PAGE_SHIFT)) + offset.astype(np.uint64)
        ident = ipa == pa
        if not ident.all() or self.pa_of_ipa:
            # the latest leaf alone says where an IPA goes: forget what it replaced
            for i, p in zip(ipa.tolist(), pa.tolist()):
                if i != p or i in self.pa_of_ipa or p in self.ipa_of_pa:
                    self._forget_leaf(i)
                    if i != p:
                        self.pa_of_ipa[i] = p
                        self.ipa_of_pa[p] = i          # the latest IPA to name this PA
                    else:
                        self.ipa_of_pa.pop(p, None)
        page = self.ram.page_index(pa << np.uint64(PAGE_SHIFT))
        ram = page >= 0
        written = ram & (answer[rep] == E.ACCESS.index("write")) \
            & (ipa.astype(np.int64) == answer_ipa[rep])
        written_vcpu, written_page = vcpu[rep[written]], page[written]
        page, rep, ipa = page[ram], rep[ram], ipa[ram]
        if not page.size:
            return
        memattr = ev["memattr"][rep]
        vc_of = vcpu[rep]
        first = ~self.ever_mapped[page]
        key = "inside" if not self.any_mmu_enabled else "outside"
        self.window[f"first_maps_{key}"] += int(np.count_nonzero(first))
        self._map_pages(page, memattr, vc_of, first, ipa, ev["seq"][rep],
                        lambda i: _known(ctx[rep[i]]))     # each page once: batch() splits
        # Who may fetch: the observed world as the trace's permissions say, a world that maps
        # executable at once everything, an exec-on-demand world the leaves of exec faults.
        xn_known = (ev["present"][rep] & E.OPTIONAL_BIT["xn"]) != 0
        for w in self.worlds.values():
            if w.observed:
                w.executable[page] = ~xn_known | (ev["xn"][rep] == 0)
            elif not w.policy.exec_on_demand:
                w.executable[page] = True
        # Maintenance calls: one per map event (a block is cleaned in one call).
        events_with_ram = rep[np.flatnonzero(np.diff(rep, prepend=-1))]   # rep is sorted
        for w in self.worlds.values():
            if w.observed:
                continue
            for v in _small_unique(vcpu[events_with_ram]).tolist():
                n = int(np.count_nonzero(vcpu[events_with_ram] == v))
                w.cost.operations += n * len(w.policy.on_map(self.vcpus[v].caches_on))
        exec_events = answer[events_with_ram] == E.ACCESS.index("exec")
        self._exec_grants(page[answer[rep] == E.ACCESS.index("exec")],
                          ops=int(np.count_nonzero(exec_events)))
        self.guest_writes(written_vcpu, written_page)

    def _map_pages(self, page, memattr, vc_of, first, ipa, seqs, fault_ctx) -> None:
        for w in self.worlds.values():
            if w.observed:
                continue
            for v in _small_unique(vc_of).tolist():
                for a in w.policy.on_map(self.vcpus[v].caches_on):
                    self.apply(w, a, page[vc_of == v], ops=0)   # counted per event in _maps
        ctx = {"first": first, "vcpus": vc_of, "memattr": memattr}
        for det in BY_TRIGGER.get("first-map", ()):
            fires = {name: det.fires(self, w, ctx, page) for name, w in self.worlds.items()}
            if any(f.any() for f in fires.values()):
                self._emit_first_maps(det.kind, fires, page, vc_of, ipa, seqs, fault_ctx)
        self.mapped[page] = True
        self.ever_mapped[page] = True
        self.memattr[page] = memattr

    def _emit_first_maps(self, kind, fires, page, vc_of, ipa, seqs, fault_ctx) -> None:
        """Findings at first maps (first-map-uncached): runs of contiguous pages mapped one after another by
        one vCPU with the same outcome in every world.  A run continues the world's previous
        finding when it extends it, so findings do not depend on how events were batched."""
        names = list(self.worlds)
        outcome = np.stack([fires[n] for n in names], axis=1)      # page x world
        for col, (name, w) in enumerate(self.worlds.items()):
            idx = np.flatnonzero(outcome[:, col])
            if not idx.size:
                continue
            brk = np.ones(idx.size, dtype=bool)
            brk[1:] = ((page[idx[1:]] != page[idx[:-1]] + 1) | (vc_of[idx[1:]] != vc_of[idx[:-1]])
                       | (outcome[idx[1:]] != outcome[idx[:-1]]).any(axis=1))
            starts = np.flatnonzero(brk)
            for s0, e0 in zip(starts.tolist(), np.append(starts[1:], idx.size).tolist()):
                i0 = int(idx[s0])
                run = page[idx[s0:e0]]
                sig = tuple(outcome[i0].tolist())
                fired = dict(zip(names, sig))
                covered = {r for other, ow in self.worlds.items() if not fired[other]
                           and other not in (name, "none", OBSERVED)
                           for r in self._rules_for(ow, kind, run)}
                v = int(vc_of[i0])
                pa = self.ram.page_pa(int(run[0]))
                last = self._open_first_map.get((kind, name))
                if last is not None and w.findings and w.findings[-1] is last[0] \
                        and last[1] == (v, sig) and last[0].pa + last[0].size == pa:
                    last[0].size += len(run) * PAGE
                    last[0].covered_by = sorted(set(last[0].covered_by) | covered)
                    continue
                pc, el = fault_ctx(i0)
                f = Finding(kind, int(seqs[i0]), v, pc, el,
                            self.vcpus[v].sctlr, ipa=int(ipa[i0]) << PAGE_SHIFT, pa=pa,
                            size=len(run) * PAGE, covered_by=sorted(covered),
                            observed=(not fired[OBSERVED]) if OBSERVED in fired else None,
                            message=DETECTORS[kind].meaning)
                w.findings.append(f)
                self._open_first_map[(kind, name)] = (f, (v, sig))

    # -- end of run -----------------------------------------------------------------------
    def lines(self, world: str, pa: int, count: int) -> list[dict]:
        """The shadow state of ``count`` 64-byte lines from ``pa`` in one world: dirty, stale,
        code; the last writer seen on the page (vCPU, PC); the rules that last cleaned and
        I-invalidated the page (``-``: none)."""
        w = self.worlds[world]
        out = []
        for k in range(count):
            line = (pa & ~0x3F) + 64 * k
            page = self.ram.page_index(line)
            if page < 0:
                out.append({"pa": line, "ram": False})
                continue
            bit = np.uint64(1 << ((line >> 6) & 63))
            writer = self.last_writer.get(line >> PAGE_SHIFT)
            out.append({"pa": line, "ram": True, "mapped": bool(self.mapped[page]),
                        **{s: bool(w.cache.bits[s][page] & bit) for s in STATES},
                        "writer": writer, "cleaned_by": ALL_RULES[w.cleaned_by[page]],
                        "icache_by": ALL_RULES[w.icache_by[page]]})
        return out

    def stats(self) -> dict:
        return {"events": self.counts, "ram_pages": self.ram.pages,
                "pages_mapped": int(self.mapped.sum()),
                "pages_ever_mapped": int(self.ever_mapped.sum()),
                "window": dict(self.window),
                "guest_writes": "tracked" if self.writes_tracked else "untracked",
                "model_bytes": sum(w.cache.nbytes + w.cleaned_by.nbytes + w.icache_by.nbytes
                                   + w.executable.nbytes
                                   for w in self.worlds.values()) + self.mapped.nbytes
                + self.ever_mapped.nbytes + self.memattr.nbytes,
                "cost": {n: w.cost.as_dict() for n, w in self.worlds.items()}}


def _access(ev, faults: np.ndarray) -> np.ndarray:
    """The access each fault is evidence of: a deferred write (its lines come later as
    guest-access writes) counts as a read."""
    access = ev["access"][faults]
    return np.where((access == E.ACCESS.index("write")) & (ev["op"][faults] == 1),
                    E.ACCESS.index("read"), access)


def _clear_sizes(ev) -> np.ndarray:
    """The bytes each line clear covers: an IC IVAU without a size covers its one
    instruction (``one`` does the same: ``size or 4``)."""
    return np.where((ev["kind"] == KIND["ic-inval"]) & (ev["size"] == 0), np.uint64(4),
                    ev["size"])


def _small_unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an array of small non-negative integers (vCPU numbers,
    MemAttr codes): a bincount, several times faster than np.unique's sort or hash."""
    if not values.size:
        return np.zeros(0, dtype=np.intp)
    return np.flatnonzero(np.bincount(values.astype(np.intp, copy=False)))


def _pc_el(e) -> tuple[int | None, int | None]:
    """(pc, el) of one event row, None where the trace did not give it."""
    present = int(e["present"])
    return (int(e["pc"]) if present & E.OPTIONAL_BIT["pc"] else None,
            int(e["el"]) if present & E.OPTIONAL_BIT["el"] else None)


def _known(row) -> tuple[int | None, int | None]:
    """(pc, el) of a fault-context row, None where unknown."""
    return (int(row["pc"]) if row["has_pc"] else None,
            int(row["el"]) if row["el"] >= 0 else None)


def _runs(pages: np.ndarray):
    """Split a sorted page array into runs of consecutive pages."""
    if not pages.size:
        return []
    pages = np.sort(pages)
    cuts = np.flatnonzero(np.diff(pages) != 1) + 1
    return np.split(pages, cuts)
