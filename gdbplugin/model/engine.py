"""Replay events against the shadow cache under every policy at once.

Each policy gets a *world*: its own shadow cache and the maintenance it would have done.  The
trace's own stage-2 and vCPU history is shared by all worlds.  A hazard is evaluated in every
world at the same event, so a finding knows which other policies' rules would have covered it;
an extra *observed* world applies the maintenance the traced hypervisor really did
(``hyp-maintenance`` events), which answers "did it do it".

Speed: runs of stage-2 faults and maps (the bulk of any boot) are replayed vectorized; other
events one at a time.  The guest's own writes are rarely visible, so the model assumes a vCPU
may write any page it has mapped, cacheably or not as its SCTLR_EL1 and stage 2 say.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..arch.memtype import NORMAL_WB, effective
from ..arch.sysregs import HCR_EL2, SCTLR_EL1
from . import events as E
from .cache import PAGE_SHIFT, RamMap, ShadowCache, line_masks
from .hazards import INFO_KINDS, KINDS as HAZARD_KINDS, Finding
from .policies import (CLEAN, CLEAN_INVAL, ICACHE_INVAL, INVAL, POLICIES, SCOPE_PAGES,
                       SCOPE_RANGE, SCOPE_VM, Action, Policy)

PAGE = 1 << PAGE_SHIFT
ALL_RULES = ["-"] + sorted({r for p in POLICIES.values() for r in p.RULES})
RULE_INDEX = {r: i for i, r in enumerate(ALL_RULES)}
M_C = SCTLR_EL1.fields["M"].mask | SCTLR_EL1.fields["C"].mask
KIND = {k: np.uint8(c) for k, c in E.KIND_CODE.items()}
# Kinds replayed vectorized: stage-2 faults and maps, and the line clears that commute with
# everything in a run except a map of the same page (guest DC by VA, traced hypervisor
# maintenance of the D-side), plus TLBIs, which change nothing here.
BATCH_KINDS = np.array([E.KIND_CODE[k] for k in ("s2-fault", "s2-map", "cmo-va",
                                                   "hyp-maintenance", "tlbi")], dtype=np.uint8)
CLEAR_NAMES = {("cmo-va", "civac"): ("dirty", "stale"), ("cmo-va", "ivac"): ("dirty", "stale"),
               ("cmo-va", "cvac"): ("dirty",), ("cmo-va", "cvap"): ("dirty",),
               ("cmo-va", "cvadp"): ("dirty",), ("cmo-va", "cvau"): (),
               ("hyp-maintenance", "clean"): ("dirty",),
               ("hyp-maintenance", "inval"): ("dirty", "stale"),
               ("hyp-maintenance", "clean-inval"): ("dirty", "stale")}
OBSERVED = "observed"


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

    @property
    def caches_on(self) -> bool:
        return self.sctlr & M_C == M_C


class World:
    """One hypothesis about the hypervisor: a policy with its own shadow cache and costs."""

    def __init__(self, name: str, policy: Policy, ram: RamMap):
        self.name = name
        self.policy = policy
        self.cache = ShadowCache(ram)
        self.cleaned_by = np.zeros(ram.pages, dtype=np.uint8)   # rule of the last D-side clean
        self.icache_by = np.zeros(ram.pages, dtype=np.uint8)    # rule of the last I-side inval
        self.cost = Cost()
        self.findings: list[Finding] = []
        self._cacheable: dict[tuple[int, int, int], bool] = {}

    def cacheable(self, vcpu: Vcpu, memattr: int) -> bool:
        """Are the vCPU's data accesses to a page of this stage-2 MemAttr cacheable here?"""
        key = (vcpu.sctlr & M_C, vcpu.hcr, memattr)
        hit = self._cacheable.get(key)
        if hit is None:
            hcr = vcpu.hcr | (HCR_EL2.fields["FWB"].mask if self.policy.fwb else 0)
            hcr |= HCR_EL2.fields["VM"].mask
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

    def findings(self, policy: str) -> list[Finding]:
        return self.worlds[policy].findings

    def uncovered(self, policy: str) -> list[Finding]:
        return [f for f in self.worlds[policy].findings if f.kind not in INFO_KINDS]


class Replay:
    """Feed it a Trace (gdbplugin.model.trace) with ``run``; get a Result."""

    def __init__(self, header: dict, policies: list[str] | None = None,
                 max_batch: int | None = None):
        self.ram = RamMap([tuple(r) for r in header["ram"]])
        self.nvcpus = int(header["vcpus"])
        hcr = int(header.get("hcr", 0) or 0)
        self.vcpus = [Vcpu(hcr=hcr) for _ in range(self.nvcpus)]
        names = list(POLICIES) if policies is None else policies
        self.worlds = {n: World(n, POLICIES[n](self.nvcpus), self.ram) for n in names}
        self.host_zero = header.get("host_zero_ram", True)
        self.mapped = np.zeros(self.ram.pages, dtype=bool)
        self.ever_mapped = np.zeros(self.ram.pages, dtype=bool)
        self.memattr = np.zeros(self.ram.pages, dtype=np.uint8)
        self.ipa_of_pa: dict[int, int] = {}          # RAM page -> IPA, where not identity
        self.pa_of_ipa: dict[int, int] = {}          # IPA page -> PA, where not identity
        self.transitions: list[dict] = []
        self.maps = self.unmaps = 0
        self.window = {"start_seq": None, "end_seq": None, "first_maps_inside": 0,
                       "first_maps_outside": 0, "pages_inside": 0, "pages_outside": 0}
        self.any_mmu_enabled = False
        self.last_fault = {}                  # vcpu -> (pc, el, access, IPA page)
        self.last_fault_vcpu = 0
        self.set_way_open: dict[int, list] = {}   # vcpu -> [operations, findings] of its sweep
        self.counts: dict[str, int] = {}
        self.max_batch = max_batch        # 1 replays strictly event by event (a test oracle)
        self.icache_check = None          # (ctx, vcpu) of an I-cache enable to settle
        self._open_first_map: dict[str, tuple] = {}   # world -> (finding, its run's outcome)

    # -- driving ------------------------------------------------------------------------
    def run(self, trace) -> Result:
        ev = trace.events
        observed = bool(np.any(ev["kind"] == KIND["hyp-maintenance"]))
        if observed:
            self.worlds[OBSERVED] = World(OBSERVED, Policy(self.nvcpus), self.ram)
        if self.host_zero:
            for b, s in self.ram.ranges:
                self.host_write(-1, "host-zero", b, s)
        in_batch = np.isin(ev["kind"], BATCH_KINDS)
        # DC ZVA writes and I-cache maintenance by the hypervisor are not clears: one by one.
        in_batch &= ~((ev["kind"] == KIND["cmo-va"]) & (ev["op"] == E.DC_VA_OPS.index("zva")))
        in_batch &= ~((ev["kind"] == KIND["hyp-maintenance"])
                      & (ev["op"] == E.HYP_OPS.index("icache-inval")))
        i, n = 0, len(ev)
        while i < n:
            if in_batch[i]:
                j = i + 1
                limit = n if self.max_batch is None else min(n, i + self.max_batch)
                while j < limit and in_batch[j]:
                    j += 1
                self.batch(ev[i:j], trace.extras, i)
                i = j
            else:
                self.one(ev[i], trace.extras.get(i, {}))
                i += 1
        self.finish()
        kinds, counts = np.unique(ev["kind"], return_counts=True)
        self.counts = {E.KIND_NAMES[k]: int(c) for k, c in zip(kinds, counts)}
        return Result(self.worlds, self.transitions, self.maps, self.unmaps, self.stats())

    def settle_icache(self, e=None) -> None:
        """The I-cache check of an I/M 0->1 write, made at the next event: an IC IALLU(IS) by
        the same vCPU right after the write (Linux's set_sctlr_el1 does msr; isb; ic iallu)
        discards stale lines before anything new is fetched, so it covers the enable."""
        if self.icache_check is None:
            return
        ctx, vc = self.icache_check
        self.icache_check = None
        if e is not None and E.KIND_NAMES[e["kind"]] == "ic-inval" \
                and int(e["vcpu"]) == ctx["vcpu"] and E.IC_OPS[e["op"]] != "ivau":
            return
        self.check_mapped("icache-not-invalidated", "code", ctx, vc)

    def one(self, e, extras: dict) -> None:
        self.settle_icache(e)
        kind = E.KIND_NAMES[e["kind"]]
        seq = int(e["seq"])
        if kind != "set-way":
            self.set_way_open.clear()
        if kind == "vcpu-on":
            self.vcpu_on(seq, int(e["vcpu"]))
        elif kind == "vcpu-off":
            self.vcpus[int(e["vcpu"])].online = False
        elif kind == "sysreg-write":
            reg = extras.get("reg") or E.REGS[e["reg"]]
            self.sysreg_write(seq, e, reg)
        elif kind == "s2-unmap":
            self.unmap(int(e["addr"]), int(e["size"]))
        elif kind == "s2-attr":
            self.attr(int(e["addr"]), int(e["size"]), int(e["memattr"]))
        elif kind == "host-write":
            self.host_write(seq, E.SOURCES[e["op"]], int(e["pa"]), int(e["size"]))
        elif kind == "guest-access":
            self.guest_access(int(e["vcpu"]), E.ACCESS[e["access"]], int(e["pa"]),
                              int(e["size"]))
        elif kind == "cmo-va":
            self.cmo(int(e["vcpu"]), E.DC_VA_OPS[e["op"]], int(e["pa"]), int(e["size"]))
        elif kind == "set-way":
            self.set_way(seq, e)
        elif kind == "ic-inval":
            op = E.IC_OPS[e["op"]]
            if op == "ivau" and e["present"] & E.OPTIONAL_BIT["pa"]:
                for w in self.worlds.values():
                    w.cache.clear(["code"], int(e["pa"]), int(e["size"]) or 4)
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
            w.cost.vm_flushes += 1
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
            self._clear(w, ["code"], a, pages)
            self._mark(w.icache_by, rule, a, pages)
            return
        names = {CLEAN: ["dirty"], CLEAN_INVAL: ["dirty", "stale"], INVAL: ["dirty", "stale"]}
        self._clear(w, names[a.op], a, pages)
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
    def vcpu_on(self, seq: int, v: int) -> None:
        vc = self.vcpus[v]
        reinit = vc.was_online
        vc.online = vc.was_online = True
        if reinit:
            vc.sctlr = 0
        if self.window["start_seq"] is None:
            self.window["start_seq"] = seq
        for w in self.worlds.values():
            for a in w.policy.on_vcpu_on(v, reinit) if w.name != OBSERVED else []:
                self.apply(w, a)

    def host_write(self, seq: int, source: str, pa: int, size: int) -> None:
        """The host (VMM, builder, kernel zeroing) wrote through its cacheable mapping."""
        for w in self.worlds.values():
            w.cache.set(["dirty", "code"], pa, size)
            w.cache.clear(["stale"], pa, size)
            if w.name != OBSERVED:
                for a in w.policy.on_host_write(source, pa, size):
                    self.apply(w, a)
        if seq >= 0 and any(vc.online for vc in self.vcpus):
            self.check_mismatched_alias(seq, pa, size)

    def guest_access(self, v: int, access: str, pa: int, size: int) -> None:
        if access != "write":
            return
        vc = self.vcpus[v]
        for w in self.worlds.values():
            page = self.ram.page_index(pa)
            memattr = int(self.memattr[page]) if page >= 0 else 0xF
            state = "dirty" if w.cacheable(vc, memattr) else "stale"
            w.cache.set([state, "code"], pa, size)

    def cmo(self, v: int, op: str, pa: int, size: int) -> None:
        """DC by VA from the guest: to PoC for civac/cvac/ivac/cvap/cvadp; cvau stops at PoU,
        which is no help to a non-cacheable observer; zva writes zeros."""
        if op == "zva":
            self.guest_access(v, "write", pa, size)
            return
        names = {"civac": ["dirty", "stale"], "ivac": ["dirty", "stale"], "cvac": ["dirty"],
                 "cvap": ["dirty"], "cvadp": ["dirty"]}.get(op)
        if names:
            for w in self.worlds.values():
                w.cache.clear(names, pa, size)

    def unmap(self, ipa: int, size: int) -> None:
        self.unmaps += 1
        for ipa_page in E.pages(ipa, size):
            pa_page = self.pa_of_ipa.pop(ipa_page, ipa_page)
            idx = self.ram.page_index(pa_page << PAGE_SHIFT)
            if idx >= 0:
                self.mapped[idx] = False
                for w in self.worlds.values():
                    if w.name != OBSERVED:
                        for a in w.policy.on_unmap(pa_page << PAGE_SHIFT, PAGE):
                            self.apply(w, a)

    def attr(self, ipa: int, size: int, memattr: int) -> None:
        for ipa_page in E.pages(ipa, size):
            idx = self.ram.page_index(self.pa_of_ipa.get(ipa_page, ipa_page) << PAGE_SHIFT)
            if idx >= 0:
                self.memattr[idx] = memattr

    def sysreg_write(self, seq: int, e, reg: str) -> None:
        v, old, new = int(e["vcpu"]), int(e["old"]), int(e["new"])
        pc = int(e["pc"]) if e["present"] & E.OPTIONAL_BIT["pc"] else None
        el = int(e["el"]) if e["present"] & E.OPTIONAL_BIT["el"] else None
        self.transitions.append({"vcpu": v, "reg": reg, "old": old, "new": new, "pc": pc,
                                 "seq": seq})
        vc = self.vcpus[v]
        if reg == "HCR_EL2":
            vc.hcr = new
            return
        if reg != "SCTLR_EL1":
            return
        was_on = old & M_C == M_C
        now_on = new & M_C == M_C
        bit = lambda value, f: SCTLR_EL1.get(value, f)  # noqa: E731
        mmu_now = bool(bit(new, "M"))
        for w in self.worlds.values():
            if w.name != OBSERVED:
                for a in w.policy.on_sctlr(v, was_on, now_on, mmu_now):
                    self.apply(w, a)
        vc.sctlr = new
        ctx = dict(seq=seq, vcpu=v, pc=pc, el=el, sctlr=new)
        if now_on and not was_on:
            self.check_mapped("stage1-enable-stale", "stale", ctx, vc)
        if vc.caches_ever_on and was_on and not now_on:
            self.check_mapped("caches-off-after-boot", "dirty", ctx, vc)
        if (not bit(old, "I") and bit(new, "I")) or (not bit(old, "M") and mmu_now):
            self.icache_check = (ctx, vc)      # settled at the vCPU's next event
        vc.caches_ever_on |= now_on
        if mmu_now and not self.any_mmu_enabled:
            self.any_mmu_enabled = True
            self.window["end_seq"] = seq
        # From now on the vCPU may write any mapped page, cacheably or not.
        mapped = np.flatnonzero(self.mapped)
        for w in self.worlds.values():
            ok = self._cacheable_pages(w, vc, mapped)
            w.cache.set_pages(["dirty"], mapped[ok])
            w.cache.set_pages(["stale"], mapped[~ok])

    def _cacheable_pages(self, w: World, vc: Vcpu, pages: np.ndarray) -> np.ndarray:
        """Per page: the vCPU's data accesses to it are cacheable in world ``w``."""
        attrs = self.memattr[pages]
        table = np.zeros(256, dtype=bool)
        for m in np.unique(attrs).tolist():
            table[m] = w.cacheable(vc, m)
        return table[attrs]

    def set_way(self, seq: int, e) -> None:
        """One finding per sweep (consecutive set/way operations of a vCPU), counting them."""
        v = int(e["vcpu"])
        for w in self.worlds.values():
            if w.name != OBSERVED:
                for a in w.policy.on_set_way(v):
                    self.apply(w, a)
        op = f"DC {E.SET_WAY_OPS[e['op']].upper()}"
        sweep = self.set_way_open.get(v)
        if sweep is not None:
            sweep[0] += 1
            for f in sweep[1]:
                f.message = f"{op} by set/way: {sweep[0]} operations in this sweep"
            return
        pc = int(e["pc"]) if e["present"] & E.OPTIONAL_BIT["pc"] else None
        el = int(e["el"]) if e["present"] & E.OPTIONAL_BIT["el"] else None
        fires = {name: w.policy.traps_set_way() is None for name, w in self.worlds.items()}
        rules = {name: [w.policy.traps_set_way()] for name, w in self.worlds.items()}
        made = []
        for name, w in self.worlds.items():
            if fires[name]:
                f = Finding("set-way-op", seq, v, pc, el, self.vcpus[v].sctlr,
                            message=f"{op} by set/way: 1 operation in this sweep")
                f.covered_by, f.observed = self._coverage(name, fires, rules, None)
                w.findings.append(f)
                made.append(f)
        self.set_way_open[v] = [1, made]

    # -- hazards --------------------------------------------------------------------------
    def check_mapped(self, kind, state, ctx, vc):
        """Hazard over every mapped RAM page with ``state`` lines, world by world; in a world
        where the vCPU's accesses stay cacheable the non-cacheable kinds cannot happen."""
        mapped = np.flatnonzero(self.mapped)
        fires, rules = {}, {}
        for name, w in self.worlds.items():
            hit = mapped[w.cache.pages_with(state, mapped)]
            if kind == "caches-off-after-boot" and hit.size:
                hit = hit[~self._cacheable_pages(w, vc, hit)]
            fires[name] = hit
            rules[name] = self._rules_for(w, kind, mapped)
        self._emit_pages(kind, fires, rules, ctx)

    def check_mismatched_alias(self, seq, pa, size):
        fires, rules = {}, {}
        pages = np.array([p for fp, _, lp, _ in self.ram.clip(pa, size)
                          for p in range(fp, lp + 1)], dtype=np.int64)
        pages = pages[self.mapped[pages]] if pages.size else pages
        for name, w in self.worlds.items():
            nc = np.zeros(pages.size, dtype=bool)
            for vc in self.vcpus:
                if vc.online:
                    nc |= ~self._cacheable_pages(w, vc, pages)
            fires[name] = pages[nc & w.cache.pages_with("dirty", pages)]
            rules[name] = self._rules_for(w, "mismatched-alias", pages)
        self._emit_pages("mismatched-alias", fires, rules, dict(seq=seq, vcpu=None))

    def _rules_for(self, w: World, kind: str, pages: np.ndarray) -> list[str]:
        """The rules of ``w`` that would account for a finding on ``pages`` not firing."""
        if w.policy.type_rule() and kind != "icache-not-invalidated":
            return [w.policy.type_rule()]
        by = w.icache_by if kind == "icache-not-invalidated" else w.cleaned_by
        idx = np.unique(by[pages]) if pages.size else []
        return [ALL_RULES[i] for i in idx if i]

    def _emit_pages(self, kind, fires: dict[str, np.ndarray], rules, ctx) -> None:
        """Findings for runs of contiguous pages, one list per world, with covered_by from the
        worlds where those pages did not fire."""
        for name, w in self.worlds.items():
            for run in _runs(fires[name]):
                f = Finding(kind, ctx["seq"], ctx.get("vcpu"), ctx.get("pc"), ctx.get("el"),
                            ctx.get("sctlr"), ipa=self._ipa(int(run[0])),
                            pa=self.ram.page_pa(int(run[0])), size=len(run) * PAGE,
                            message=HAZARD_KINDS[kind][2])
                f.covered_by, f.observed = self._coverage(name, fires, rules, run)
                w.findings.append(f)

    def _coverage(self, name, fires, rules, run) -> tuple[list[str], bool | None]:
        """(rules of the other policies under which the hazard did not fire, whether the
        traced hypervisor's own maintenance covered it); ``run`` is the finding's pages, or
        None for a hazard that is not about pages (``fires`` then holds booleans)."""
        covered, observed = set(), None
        for other, hit in fires.items():
            clear = (not hit) if run is None else not np.isin(run, hit).any()
            if other == OBSERVED:
                observed = clear
            elif other not in (name, "none") and clear:
                covered.update(r for r in rules[other] if r)
        return sorted(covered), observed

    def _ipa(self, page_index: int) -> int:
        pa = self.ram.page_pa(page_index)
        return self.ipa_of_pa.get(pa >> PAGE_SHIFT, pa >> PAGE_SHIFT) << PAGE_SHIFT

    # -- the vectorized stage-2 path --------------------------------------------------------
    def batch(self, ev: np.ndarray, extras: dict, base: int) -> None:
        """A run of faults, maps and line clears: no vCPU state changes inside it.  Clears
        commute with each other and with maps of other pages, so each is applied before the
        maps (if it precedes every map of its pages in the run) or after them; a clear between
        two maps of the same page splits the run there."""
        self.settle_icache(ev[0])
        kinds = ev["kind"]
        is_clear = (kinds == KIND["cmo-va"]) | (kinds == KIND["hyp-maintenance"])
        before = np.zeros(len(ev), dtype=bool)
        if is_clear.any():
            before, split = self._order_clears(ev, is_clear)
            if split is not None:
                if split:
                    self.batch(ev[:split], extras, base)
                self.one(ev[split], extras.get(base + split, {}))
                if split + 1 < len(ev):
                    self.batch(ev[split + 1:], extras, base + split + 1)
                return
        self.set_way_open.clear()
        if before.any():
            self._clears(ev[before])
        self._faults_and_maps(ev)
        after = is_clear & ~before
        if after.any():
            self._clears(ev[after])

    def _order_clears(self, ev, is_clear) -> tuple[np.ndarray, int | None]:
        """Which clears go before the maps, and the first clear that must split the run."""
        before = np.zeros(len(ev), dtype=bool)
        maps = np.flatnonzero(ev["kind"] == KIND["s2-map"])
        if not maps.size:
            return before, None
        m_idx, m_page, _, _ = self.ram.pieces(ev["pa"][maps], ev["size"][maps])
        if not m_page.size:
            return before, None
        pages, first_at = np.unique(m_page, return_index=True)
        first = maps[m_idx[first_at]]
        _, last_at = np.unique(m_page[::-1], return_index=True)
        last = maps[m_idx[::-1][last_at]]
        clears = np.flatnonzero(is_clear)
        c_idx, c_page, _, _ = self.ram.pieces(ev["pa"][clears], ev["size"][clears])
        pos = np.searchsorted(pages, c_page)
        hit = (pos < pages.size) & (pages[np.minimum(pos, pages.size - 1)] == c_page)
        if not hit.any():
            return before, None
        who = clears[c_idx[hit]]
        f, la = first[pos[hit]], last[pos[hit]]
        is_before, is_after = who < f, who > la
        # Between two maps of a page, or before one page's map and after another's: split.
        bad = np.union1d(who[~(is_before | is_after)],
                         np.intersect1d(who[is_before], who[is_after]))
        if bad.size:
            return before, int(bad.min())
        before[who[is_before]] = True
        return before, None

    def _clears(self, ev: np.ndarray) -> None:
        """Guest DC by VA (every world) and traced hypervisor maintenance (the observed
        world), as per-page line masks OR-ed together, then applied once per state."""
        idx, page, lo, hi = self.ram.pieces(ev["pa"], ev["size"])
        masks = line_masks(lo, hi)
        code = ev["kind"].astype(np.int64) * 256 + ev["op"]
        for c in np.unique(code).tolist():
            kind = E.KIND_NAMES[c >> 8]
            op = (E.DC_VA_OPS if kind == "cmo-va" else E.HYP_OPS)[c & 0xFF]
            observed_only = kind == "hyp-maintenance"
            events = np.flatnonzero(code == c)
            sel = np.isin(idx, events)
            pages, inverse = np.unique(page[sel], return_inverse=True)
            mask = np.zeros(pages.size, dtype=np.uint64)
            np.bitwise_or.at(mask, inverse, masks[sel])
            for name in CLEAR_NAMES[(kind, op)]:
                for wname, w in self.worlds.items():
                    if not observed_only or wname == OBSERVED:
                        w.cache.bits[name][pages] &= ~mask
            if observed_only and OBSERVED in self.worlds:
                c_ = self.worlds[OBSERVED].cost
                nbytes = int(ev["size"][events].sum())
                c_.operations += int(events.size)
                c_.bytes_cleaned += nbytes if op in (CLEAN, CLEAN_INVAL) else 0
                c_.bytes_invalidated += nbytes if op in (INVAL, CLEAN_INVAL) else 0

    def _faults_and_maps(self, ev: np.ndarray) -> None:
        """The stage-2 part of a run; clears and TLBIs in it are ignored here.  A map belongs
        to its vCPU's latest fault (its own ``vcpu`` field, else the latest fault's); the map
        is an exec map when that fault was an instruction fetch at the same IPA page."""
        kinds = ev["kind"]
        maps = np.flatnonzero(kinds == KIND["s2-map"])
        faults = np.flatnonzero(kinds == KIND["s2-fault"])
        has_vcpu = (ev["present"][maps] & E.OPTIONAL_BIT["vcpu"]) != 0
        before = np.searchsorted(faults, maps) - 1          # latest fault of any vCPU
        fault_vcpu = ev["vcpu"][faults[np.clip(before, 0, None)]] if faults.size else 0
        vcpu = np.where(has_vcpu, ev["vcpu"][maps],
                        np.where(before >= 0, fault_vcpu, self.last_fault_vcpu)
                        ).astype(np.int64)
        if faults.size:
            self.last_fault_vcpu = int(ev["vcpu"][faults[-1]])
        exec_map = np.zeros(maps.size, dtype=bool)
        # The pc and el of the fault each map answers (has_pc False, el -1 where unknown).
        ctx = np.zeros(maps.size, dtype=[("pc", "<u8"), ("has_pc", "?"), ("el", "<i2")])
        ctx["el"] = -1
        ipa_page = (ev["addr"] >> np.uint64(PAGE_SHIFT)).astype(np.int64)
        exec_code = E.ACCESS.index("exec")
        for v in np.unique(np.concatenate([vcpu, ev["vcpu"][faults]])).tolist():
            mine = faults[ev["vcpu"][faults] == v]
            sel = np.flatnonzero(vcpu == v)
            prev = self.last_fault.get(v)
            if sel.size:
                k = np.searchsorted(mine, maps[sel]) - 1
                exec_in = np.zeros(sel.size, dtype=bool)
                if mine.size:
                    f = mine[np.clip(k, 0, None)]
                    exec_in = (k >= 0) & (ev["access"][f] == exec_code) \
                        & (ipa_page[f] == ipa_page[maps[sel]])
                exec_prev = (k < 0) & (prev is not None and prev[2] == "exec") \
                    & (ipa_page[maps[sel]] == (prev[3] if prev else -1))
                exec_map[sel] = exec_in | exec_prev
                pc0, el0 = prev[:2] if prev else (None, None)
                ctx["pc"][sel] = pc0 or 0
                ctx["has_pc"][sel] = pc0 is not None
                ctx["el"][sel] = -1 if el0 is None else el0
                if mine.size:
                    got = sel[k >= 0]
                    f = mine[k[k >= 0]]
                    present = ev["present"][f]
                    ctx["pc"][got] = ev["pc"][f]
                    ctx["has_pc"][got] = (present & E.OPTIONAL_BIT["pc"]) != 0
                    ctx["el"][got] = np.where(present & E.OPTIONAL_BIT["el"],
                                              ev["el"][f].astype(np.int16), -1)
            if mine.size:
                i = int(mine[-1])
                self.last_fault[v] = (*self._fault_ctx(ev, i), E.ACCESS[ev["access"][i]],
                                      int(ipa_page[i]))
        self.maps += maps.size
        if maps.size:
            self._maps(ev[maps], vcpu, exec_map, ctx)

    @staticmethod
    def _fault_ctx(ev, i: int) -> tuple[int | None, int | None]:
        present = int(ev["present"][i])
        return (int(ev["pc"][i]) if present & E.OPTIONAL_BIT["pc"] else None,
                int(ev["el"][i]) if present & E.OPTIONAL_BIT["el"] else None)

    def _maps(self, ev: np.ndarray, vcpu: np.ndarray, exec_map: np.ndarray, ctx: np.ndarray
              ) -> None:
        size = np.maximum(ev["size"], np.uint64(1))
        npages = ((ev["addr"] + size + np.uint64(PAGE - 1)) >> np.uint64(PAGE_SHIFT)) \
            - (ev["addr"] >> np.uint64(PAGE_SHIFT))
        npages = npages.astype(np.int64)
        rep = np.repeat(np.arange(len(ev)), npages)
        offset = np.arange(rep.size) - np.repeat(np.cumsum(npages) - npages, npages)
        ipa = (ev["addr"][rep] >> np.uint64(PAGE_SHIFT)) + offset.astype(np.uint64)
        pa = (ev["pa"][rep] >> np.uint64(PAGE_SHIFT)) + offset.astype(np.uint64)
        ident = ipa == pa
        if not ident.all():
            for i, p in zip(ipa[~ident].tolist(), pa[~ident].tolist()):
                self.pa_of_ipa[i] = p
                self.ipa_of_pa[p] = i
        page = self.ram.page_index(pa << np.uint64(PAGE_SHIFT))
        ram = page >= 0
        page, rep, ipa = page[ram], rep[ram], ipa[ram]
        if not page.size:
            return
        memattr = ev["memattr"][rep]
        vc_of = vcpu[rep]
        uniq, first_idx = np.unique(page, return_index=True)
        first = np.zeros(page.size, dtype=bool)
        first[first_idx] = ~self.ever_mapped[uniq]
        all_off = not self.any_mmu_enabled
        key = "inside" if all_off else "outside"
        self.window[f"first_maps_{key}"] += int(np.count_nonzero(first))
        order = np.sort(first_idx)            # each page once, in event order
        repeat = np.setdiff1d(np.arange(page.size), order)
        self._map_pages(page[order], memattr[order], vc_of[order], first[order], ipa[order],
                        ev["seq"][rep[order]], all_off, lambda i: _known(ctx[rep[order[i]]]))
        for i in repeat.tolist():            # the rare page mapped twice in one run
            self._map_pages(page[i:i + 1], memattr[i:i + 1], vc_of[i:i + 1], first[i:i + 1],
                            ipa[i:i + 1], ev["seq"][rep[i:i + 1]], all_off,
                            lambda _, i=i: _known(ctx[rep[i]]))
        # Maintenance calls: one per map event (a block is cleaned in one call), and an
        # I-cache invalidation for each map an instruction fetch faulted in.
        events_with_ram = np.unique(rep)
        x_pages = page[exec_map[rep]]
        for w in self.worlds.values():
            if w.name == OBSERVED:
                continue
            for v in np.unique(vcpu[events_with_ram]).tolist():
                n = int(np.count_nonzero(vcpu[events_with_ram] == v))
                w.cost.operations += n * len(w.policy.on_map(self.vcpus[v].caches_on, all_off))
            if x_pages.size:
                n_exec = int(np.count_nonzero(exec_map[events_with_ram]))
                for a in w.policy.on_exec_fault():
                    self.apply(w, a, x_pages, ops=n_exec)

    def _map_pages(self, page, memattr, vc_of, first, ipa, seqs, all_off, fault_ctx) -> None:
        fires = {}
        cacheable_of = {}
        for name, w in self.worlds.items():
            ok = np.zeros(page.size, dtype=bool)
            for v in np.unique(vc_of).tolist():
                vc = self.vcpus[v]
                sel = vc_of == v
                table = np.zeros(256, dtype=bool)
                for m in np.unique(memattr[sel]).tolist():
                    table[m] = w.cacheable(vc, m)
                ok[sel] = table[memattr[sel]]
                if name != OBSERVED:
                    for a in w.policy.on_map(vc.caches_on, all_off):
                        self.apply(w, a, page[sel], ops=0)   # counted per event in _maps
            cacheable_of[name] = ok
            fires[name] = first & ~ok & w.cache.pages_with("dirty", page)
        if any(f.any() for f in fires.values()):
            self._emit_first_maps(fires, page, vc_of, ipa, seqs, fault_ctx)
        for name, w in self.worlds.items():
            ok = cacheable_of[name]
            w.cache.set_pages(["dirty"], page[ok])
            w.cache.set_pages(["stale"], page[~ok])
        self.mapped[page] = True
        self.ever_mapped[page] = True
        self.memattr[page] = memattr

    def _emit_first_maps(self, fires, page, vc_of, ipa, seqs, fault_ctx) -> None:
        """first-map-uncached findings: runs of contiguous pages mapped one after another by
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
                           for r in self._rules_for(ow, "first-map-uncached", run)}
                v = int(vc_of[i0])
                pa = self.ram.page_pa(int(run[0]))
                last = self._open_first_map.get(name)
                if last is not None and w.findings and w.findings[-1] is last[0] \
                        and last[1] == (v, sig) and last[0].pa + last[0].size == pa:
                    last[0].size += len(run) * PAGE
                    last[0].covered_by = sorted(set(last[0].covered_by) | covered)
                    continue
                pc, el = fault_ctx(i0)
                f = Finding("first-map-uncached", int(seqs[i0]), v, pc, el,
                            self.vcpus[v].sctlr, ipa=int(ipa[i0]) << PAGE_SHIFT, pa=pa,
                            size=len(run) * PAGE, covered_by=sorted(covered),
                            observed=(not fired[OBSERVED]) if OBSERVED in fired else None,
                            message=HAZARD_KINDS["first-map-uncached"][2])
                w.findings.append(f)
                self._open_first_map[name] = (f, (v, sig))

    # -- end of run -----------------------------------------------------------------------
    def finish(self) -> None:
        self.settle_icache()
        win = self.window
        if win["start_seq"] is None:
            return
        text = (f"every vCPU had its MMU off from seq {win['start_seq']} to "
                f"{win['end_seq'] if win['end_seq'] is not None else 'the end'}: "
                f"{win['first_maps_inside']} pages first mapped inside the window, "
                f"{win['first_maps_outside']} after it")
        for w in self.worlds.values():
            w.findings.append(Finding("smp-mmu-off-window", win["start_seq"], None,
                                      message=text))

    def stats(self) -> dict:
        return {"events": self.counts, "ram_pages": self.ram.pages,
                "pages_mapped": int(self.mapped.sum()),
                "pages_ever_mapped": int(self.ever_mapped.sum()),
                "window": dict(self.window),
                "model_bytes": sum(w.cache.nbytes + w.cleaned_by.nbytes + w.icache_by.nbytes
                                   for w in self.worlds.values()) + self.mapped.nbytes
                + self.ever_mapped.nbytes + self.memattr.nbytes,
                "cost": {n: w.cost.as_dict() for n, w in self.worlds.items()}}


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
