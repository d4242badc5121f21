"""Hazard kinds and findings (DESIGN.md section 2).  Each kind is described once here; the
engine evaluates its condition at the event the kind names."""
from __future__ import annotations

from dataclasses import dataclass, field

# kind -> (whose job, seed point, what it means)
KINDS = {
    "first-map-uncached": (
        "hypervisor", 1,
        "page entered stage 2 for the first time and the guest reads it non-cacheably while "
        "lines of it may be dirty from a host cacheable write not cleaned to PoC"),
    "stage1-enable-stale": (
        "hypervisor", 2,
        "the vCPU turned SCTLR_EL1.M&C on while mapped pages were written non-cacheably after "
        "their last clean+invalidate: stale clean lines may be hit"),
    "caches-off-after-boot": (
        "guest", 3,
        "SCTLR_EL1.M or C went 1->0 after having been on, with lines written cacheably that "
        "may not be at PoC"),
    "set-way-op": (
        "hypervisor", 3,
        "the guest cleaned/invalidated by set/way at EL1: it only reaches this CPU's caches; "
        "the hypervisor must trap it (TSW) and maintain by VA"),
    "icache-not-invalidated": (
        "guest", 5,
        "the vCPU set SCTLR_EL1.I or M 0->1 with code written since the last I-cache "
        "invalidation that covers it"),
    "mismatched-alias": (
        "hypervisor", None,
        "the host wrote cacheably to a page the guest uses non-cacheably"),
    "smp-mmu-off-window": (
        None, 4,
        "the window in which every vCPU still had its MMU off, and the first maps in and out "
        "of it"),
    "unobserved-transition": (
        None, None,
        "a register write's old value differs from what the model tracked: a transition "
        "happened that the capture did not see; the model adopts the old value from here"),
}
INFO_KINDS = frozenset({"smp-mmu-off-window", "unobserved-transition"})


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

    def as_dict(self) -> dict:
        return {"kind": self.kind, "seq": self.seq, "vcpu": self.vcpu, "pc": self.pc,
                "el": self.el, "sctlr": self.sctlr, "ipa": self.ipa, "pa": self.pa,
                "size": self.size, "symbol": self.symbol, "covered_by": self.covered_by,
                "observed": self.observed, "message": self.message}

    @property
    def key(self) -> tuple:
        """Identity across worlds: the same hazard at the same event on the same pages."""
        return (self.kind, self.seq, self.vcpu, self.pa, self.size)
