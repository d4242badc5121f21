"""Hazard kinds and findings (the kinds of README.md's model section).  Each kind is one
``Detector`` here: whose job it is, the seed point, what it means, the engine event that
judges it (``trigger``) and its condition.  The engine (gdbplugin/model/engine.py) only says
when a trigger happens and which pages are candidates; adding a kind on an existing trigger
is one new class.

Triggers (raised by the engine):
  ``first-map``    pages entering stage 2 (ctx: ``first`` mask, ``vcpus`` and ``memattr``
                   per page)
  ``caches-on``    a vCPU's SCTLR_EL1.M&C went 0->1; candidates: mapped pages
  ``caches-off``   a vCPU's M&C went 1->0; candidates: mapped pages
  ``fetch-enable`` a vCPU's SCTLR_EL1.I or M went 0->1; candidates: mapped pages
  ``nc-access``    a vCPU's first access to a page after a caches-off (``s2-access``)
  ``host-write``   the host wrote RAM; candidates: mapped pages it wrote
  ``set-way``      a vCPU cleaned or invalidated by set/way (no pages)
  ``fetch``        a vCPU fetched from a page written since it could last fetch from it
                   (ctx: ``line``, the fetched 64-byte line; ``ok``)
A detector with ``settles`` set is judged at the same vCPU's next event instead of at once
when a trigger over the mapped pages raises it (the guest may complete the sequence with its
next instructions); a fetch is judged at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..arch.sysregs import SCTLR_EL1

SCTLR_I = SCTLR_EL1.fields["I"].mask


class Detector:
    kind: ClassVar[str]
    whose: ClassVar[str | None]             # "hypervisor", "guest", or None (info)
    seed: ClassVar[int | None]              # the seed thread's point, if any
    meaning: ClassVar[str]
    info: ClassVar[bool] = False            # context, not a hazard
    triggers: ClassVar[tuple[str, ...]] = ()
    settles: ClassVar[bool] = False         # judged at the vCPU's next event

    def armed(self, rp, vc, trigger: str) -> bool:
        """Does this trigger start a check for vCPU ``vc`` at all?"""
        return True

    def fires(self, rp, w, ctx: dict, pages: np.ndarray) -> np.ndarray:
        """Mask over the candidate ``pages``: where the hazard is present in world ``w``."""
        raise NotImplementedError

    def discharged_by(self, event_kind: str | None, op: str | None) -> bool:
        """A pending check this event makes unnecessary (it did what the check asks)."""
        return False

    def waits_through(self, event_kind: str | None) -> bool:
        """A pending check stays pending across this event of the vCPU."""
        return False

    def responsibility(self, rp, pa: int, size: int) -> str | None:
        """Whose job it was to prevent the hazard on [pa, pa+size): by default the kind's."""
        return self.whose


DETECTORS: dict[str, Detector] = {}


def detector(cls: type[Detector]) -> type[Detector]:
    DETECTORS[cls.kind] = cls()
    return cls


@detector
class FirstMapUncached(Detector):
    kind = "first-map-uncached"
    whose, seed = "hypervisor", 1
    meaning = ("page entered stage 2 for the first time and the guest reads it non-cacheably "
               "while lines of it may be dirty from a host cacheable write not cleaned to PoC")
    triggers = ("first-map",)

    def fires(self, rp, w, ctx, pages):
        nc = ~rp.cacheable(w, ctx["vcpus"], ctx["memattr"])
        return ctx["first"] & nc & w.cache.pages_with("dirty", pages)


@detector
class Stage1EnableStale(Detector):
    kind = "stage1-enable-stale"
    whose, seed = "hypervisor", 2
    meaning = ("the vCPU turned SCTLR_EL1.M&C on while mapped pages were written "
               "non-cacheably after their last clean+invalidate: stale clean lines may be hit")
    triggers = ("caches-on",)

    def fires(self, rp, w, ctx, pages):
        return w.cache.pages_with("stale", pages)


@detector
class CachesOffAfterBoot(Detector):
    """Judged at the vCPU's next event after the caches-off, past its maintenance (U-Boot and
    Arm's sequence clear C and M, then clean by set/way); or, when the hypervisor observed the
    accesses after it, at each first non-cacheable access."""

    kind = "caches-off-after-boot"
    whose, seed = "guest", 3
    meaning = ("SCTLR_EL1.M or C went 1->0 after having been on, with lines written "
               "cacheably that may not be at PoC")
    triggers = ("caches-off", "nc-access")
    settles = True
    MAINTENANCE = frozenset({"set-way", "cmo-va", "ic-inval"})

    def armed(self, rp, vc, trigger):
        if trigger == "caches-off" and rp.accesses_tracked:
            return False                     # judged where the guest really goes NC
        return vc.caches_ever_on

    def fires(self, rp, w, ctx, pages):
        return w.cache.pages_with("dirty", pages) & ~rp.cacheable(
            w, np.full(pages.size, ctx["vcpu"]), rp.memattr[pages])

    def waits_through(self, event_kind):
        return event_kind in self.MAINTENANCE


@detector
class SetWayOp(Detector):
    kind = "set-way-op"
    whose, seed = "hypervisor", 3
    meaning = ("the guest cleaned/invalidated by set/way at EL1: it only reaches this CPU's "
               "caches; the hypervisor must trap it (TSW) and maintain by VA")
    triggers = ("set-way",)

    def fires(self, rp, w, ctx, pages):
        return w.policy.traps_set_way() is None


@detector
class IcacheNotInvalidated(Detector):
    """At an I/M enable, judged at the vCPU's next event: Linux's set_sctlr_el1 is
    ``msr; isb; ic iallu``, and an IC IALLU(IS) right after the enable discards stale lines
    before anything new is fetched.  Pages a world has not made executable yet get their
    invalidation when they become executable (exec-on-demand).  At an observed fetch from
    rewritten code, the fetched line only, when the vCPU's I-cache is on (with SCTLR_EL1.I
    clear, fetches are non-cacheable) and the instruction is not one the architecture lets
    a PE execute while it is modified.  CTR_EL0.DIC: the I-cache is coherent, nothing to
    find."""

    kind = "icache-not-invalidated"
    whose, seed = "guest", 5
    meaning = ("code written since the last I-cache invalidation that covers it may be "
               "fetched stale: the vCPU set SCTLR_EL1.I or M 0->1, or fetched a rewritten line")
    triggers = ("fetch-enable", "fetch")
    settles = True

    def armed(self, rp, vc, trigger):
        return trigger != "fetch" or bool(vc.sctlr & SCTLR_I)

    def fires(self, rp, w, ctx, pages):
        if rp.dic or ctx.get("ok"):
            return np.zeros(pages.size, dtype=bool)
        if "line" in ctx:
            code = (w.cache.bits["code"][pages] >> np.uint64(ctx["line"])) & np.uint64(1)
            return w.executable[pages] & (code != 0)
        return w.executable[pages] & w.cache.pages_with("code", pages)

    def discharged_by(self, event_kind, op):
        return event_kind == "ic-inval" and op != "ivau"

    def responsibility(self, rp, pa, size):
        """The seed thread's rule: I-cache maintenance after the guest's own writes is the
        guest's job; code the host wrote (and the guest did not rewrite since) is the
        hypervisor's to invalidate before the guest can fetch it."""
        return "hypervisor" if rp.host_code.any("host", pa, size) else "guest"


@detector
class MismatchedAlias(Detector):
    kind = "mismatched-alias"
    whose, seed = "hypervisor", None
    meaning = "the host wrote cacheably to a page the guest uses non-cacheably"
    triggers = ("host-write",)

    def fires(self, rp, w, ctx, pages):
        nc = np.zeros(pages.size, dtype=bool)
        for v, vc in enumerate(rp.vcpus):
            if vc.online:
                nc |= ~rp.cacheable(w, np.full(pages.size, v), rp.memattr[pages])
        return nc & w.cache.pages_with("dirty", pages)


@detector
class SmpMmuOffWindow(Detector):
    kind = "smp-mmu-off-window"
    whose, seed = None, 4
    meaning = ("the window in which every vCPU still had its MMU off, and the first maps in "
               "and out of it")
    info = True

    @staticmethod
    def message(window: dict) -> str:
        return (f"every vCPU had its MMU off from seq {window['start_seq']} to "
                f"{window['end_seq'] if window['end_seq'] is not None else 'the end'}: "
                f"{window['first_maps_inside']} pages first mapped inside the window, "
                f"{window['first_maps_outside']} after it")


@detector
class UnobservedTransition(Detector):
    kind = "unobserved-transition"
    whose, seed = None, None
    meaning = ("a register write's old value differs from what the model tracked: a "
               "transition happened that the capture did not see; the model adopts the old "
               "value from here")
    info = True

    @staticmethod
    def message(vcpu: int, changes: str, tracked: int, old: int) -> str:
        return (f"SCTLR_EL1 of vCPU {vcpu} changed without a recorded write ({changes}; "
                f"tracked {tracked:#x}, the write's old value {old:#x}): adopted from here")


# kind -> (whose job, seed point, what it means)
KINDS = {k: (d.whose, d.seed, d.meaning) for k, d in DETECTORS.items()}
INFO_KINDS = frozenset(k for k, d in DETECTORS.items() if d.info)
BY_TRIGGER: dict[str, list[Detector]] = {}
for _d in DETECTORS.values():
    for _t in _d.triggers:
        BY_TRIGGER.setdefault(_t, []).append(_d)


@dataclass
class Finding:
    kind: str
    seq: int
    vcpu: int | None
    pc: int | None = None
    el: int | None = None
    sctlr: int | None = None
    ipa: int | None = None
    pa: int | None = None
    size: int | None = None
    symbol: str | None = None
    covered_by: list[str] = field(default_factory=list)
    observed: bool | None = None
    message: str = ""
    responsibility: str | None = None       # "hypervisor", "guest", None (info)

    def __post_init__(self):
        if self.responsibility is None and self.kind in DETECTORS:
            self.responsibility = DETECTORS[self.kind].whose

    def as_dict(self) -> dict:
        return {"kind": self.kind, "seq": self.seq, "vcpu": self.vcpu, "pc": self.pc,
                "el": self.el, "sctlr": self.sctlr, "ipa": self.ipa, "pa": self.pa,
                "size": self.size, "symbol": self.symbol, "covered_by": self.covered_by,
                "observed": self.observed, "responsibility": self.responsibility,
                "message": self.message}

    @property
    def key(self) -> tuple:
        """Identity across worlds: the same hazard at the same event on the same pages."""
        return (self.kind, self.seq, self.vcpu, self.pa, self.size)
