"""The scenario guests of tests/guests/scenarios (one per hazard kind of gdbplugin/model/hazards.py,
each with a clean twin) under the reference shim: the ring must show, in order, what each one
does -- the faults, maps and maintenance of the policy, the guest's SCTLR_EL1 transitions
(``observe=2``: TVM stays armed for observation) and the guest's own cache maintenance
(``trap_cmo``) -- and the twin must differ exactly where its maintenance makes it clean.

Addresses: tests/guests/scenarios/scenario.h.  Runs ~0.1-1 s each.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from gdbplugin.capture.record import record
from gdbplugin.model.engine import Replay
from gdbplugin.model.hazards import INFO_KINDS
from gdbplugin.model.trace import read_trace
from gdbplugin.shim.launch import ShimImage, ShimParams, ShimSession, shim_config
from gdbplugin.shim.ring import Event
from gdbplugin.target.qemu import Loader

pytestmark = pytest.mark.qemu

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "build" / "shim" / "scenarios"
BUF, BLOB, CODE, DMA_BUF = 0x4100_0000, 0x4110_0000, 0x4120_0000, 0x4130_0000
BUF2, BUF3 = 0x4140_0000, 0x4150_0000
FW_CFG = 0x0902_0000
IMAGE = (0x4040_0000, 0x4100_0000)            # the scenario's own code, data and stacks
M, C, I = 1 << 0, 1 << 2, 1 << 12


@pytest.fixture(scope="module")
def blob(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scenario") / "blob.bin"
    path.write_bytes(bytes(range(256)) * 16)   # what "the host" wrote at BLOB
    return path


def run(shim: ShimImage, blob: Path, name: str, policy: str = "kvm") -> tuple[list, str]:
    smp = 2 if name.startswith("smp") else 1
    params = ShimParams(policy=policy, poweroff_on_fatal=True, trap_cmo=True, observe=2)
    config = shim_config(SCENARIOS / f"{name}.bin", params, shim=shim, smp=smp, paused=False)
    config.loaders.append(Loader(file=blob, addr=BLOB, force_raw=True))
    with ShimSession(config, shim) as s:
        why = s.wait(timeout=30)
        console = s.console()
        assert why == "exit" and s.returncode == 0, f"{name}: {why}\n{console}"
        assert f"SCENARIO-DONE {name}" in console, console
        assert "SCENARIO-FAULT" not in console
        assert s.header().halted is None and s.header().overflow == 0
        assert [e.seq for e in s.events] == list(range(s.header().write_index))
        # the guest's own image pages are noise here
        events = [e for e in s.events if not (e.ipa is not None and IMAGE[0] <= e.ipa < IMAGE[1]
                                              and e.kind in ("s2-fault", "s2-map", "dc", "ic",
                                                             "s2-perm", "tlbi"))]
        return events, console


def field(e: Event, key: str):
    return getattr(e, key) if hasattr(e, key) else e.extra.get(key)


def matches(e: Event, kind: str, want: dict) -> bool:
    if e.kind != kind:
        return False
    for key, value in want.items():
        got = field(e, key)
        if callable(value):
            if got is None or not value(got):
                return False
        elif got != value:
            return False
    return True


def in_order(events: list[Event], *steps: tuple[str, dict]) -> list[Event]:
    """Find the steps as a subsequence of events; returns the matched events."""
    found, i = [], 0
    for kind, want in steps:
        while i < len(events) and not matches(events[i], kind, want):
            i += 1
        assert i < len(events), (f"no {kind} {want} after "
                                 f"{found[-1].as_dict() if found else 'the start'}:\n"
                                 + "\n".join(str(e.as_dict()) for e in events))
        found.append(events[i])
        i += 1
    return found


def between(events: list[Event], a: Event, b: Event) -> list[Event]:
    return [e for e in events if a.seq < e.seq < b.seq]


def sctlr_on(bits=M | C):
    return {"reg": "SCTLR_EL1", "new": lambda v: v & bits == bits}


SCTLR_OFF = {"reg": "SCTLR_EL1", "old": lambda v: v & (M | C) == M | C,
             "new": lambda v: v & (M | C) == 0}


def page(address):
    return {"ipa": lambda v: v & ~0xFFF == address}


KVM_CLEAN = "kvm.clean-on-translation-fault"


# -- first-map-uncached ---------------------------------------------------------------------
def test_first_map_uncached(shim, blob):
    events, _ = run(shim, blob, "first_map_uncached")
    fault, _, _ = in_order(events, ("s2-fault", {"access": "read", **page(BLOB)}),
                           ("s2-map", {"ipa": BLOB, "memtype": "normal"}),
                           ("dc", {"ipa": BLOB, "size": 4096, "rule": KVM_CLEAN}))
    assert not [e for e in events if e.seq < fault.seq and matches(e, "sysreg-write", sctlr_on(M))]


def test_first_map_uncached_clean(shim, blob):
    events, _ = run(shim, blob, "first_map_uncached_clean")
    in_order(events, ("sysreg-write", sctlr_on(M | C | I)),
             ("s2-fault", {"access": "read", **page(BLOB)}),
             ("s2-map", {"ipa": BLOB}), ("dc", {"ipa": BLOB, "rule": KVM_CLEAN}))


@pytest.mark.parametrize("policy", ["none", "rfc2013", "xen", "fwb"])
def test_first_map_covered_per_policy(shim, blob, policy):
    """Who cleans the host-written page on its first uncached map: kvm (always) and rfc2013
    (caches off, no vCPU has enabled them) at the fault, xen before the guest ran; none and
    fwb never (fwb needs none: stage 2 forces write-back)."""
    bad, _ = run(shim, blob, "first_map_uncached", policy)
    good, _ = run(shim, blob, "first_map_uncached_clean", policy)
    def cleaned(events):
        return [e.rule for e in events if e.kind == "dc" and e.ipa <= BLOB < e.ipa + e.size]
    expect = {"none": ([], []), "fwb": ([], []),
              "rfc2013": (["rfc2013.clean-first-map-uncached"], []),
              "xen": (["xen.flush-on-alloc"], ["xen.flush-on-alloc"])}[policy]
    assert (cleaned(bad), cleaned(good)) == expect


# -- stage1-enable-stale --------------------------------------------------------------------
def test_stage1_enable_stale(shim, blob):
    events, _ = run(shim, blob, "stage1_enable_stale")
    _, _, dc, on, sweep = in_order(
        events, ("s2-fault", {"access": "write", **page(BUF)}), ("s2-map", {"ipa": BUF}),
        ("dc", {"ipa": BUF, "rule": KVM_CLEAN}), ("sysreg-write", sctlr_on()),
        ("flush-vm", {"rule": "kvm.flush-on-cache-toggle"}))
    assert sweep.ipa <= BUF < sweep.extra["end"]       # the sweep covered the stale page
    assert not [e for e in between(events, dc, on) if e.kind == "guest-cmo"]


def test_stage1_enable_stale_clean(shim, blob):
    events, _ = run(shim, blob, "stage1_enable_stale_clean")
    in_order(events, ("s2-map", {"ipa": BUF}), ("dc", {"ipa": BUF}),
             ("guest-cmo", {"op": "dc-ivac", "ipa": BUF, "va": BUF, "size": 4096}),
             ("sysreg-write", sctlr_on()))


# -- caches-off-after-boot ------------------------------------------------------------------
def test_caches_off_after_boot(shim, blob):
    events, _ = run(shim, blob, "caches_off_after_boot")
    _, write, _, off = in_order(events, ("sysreg-write", sctlr_on()),
                                ("s2-fault", {"access": "write", **page(BUF)}),
                                ("s2-map", {"ipa": BUF}), ("sysreg-write", SCTLR_OFF))
    assert not [e for e in between(events, write, off) if e.kind == "guest-cmo"]


def test_caches_off_after_boot_clean(shim, blob):
    events, _ = run(shim, blob, "caches_off_after_boot_clean")
    in_order(events, ("sysreg-write", sctlr_on()), ("s2-map", {"ipa": BUF}),
             ("guest-cmo", {"op": "dc-civac", "ipa": BUF, "size": 4096}),
             ("sysreg-write", SCTLR_OFF))


# -- set-way-op -----------------------------------------------------------------------------
def test_set_way_op(shim, blob):
    """kvm_set_way_flush: the first DC CISW flushes the VM and arms TVM; the rest of the loop is
    coalesced; turning the caches off then flushes again (kvm_toggle_cache)."""
    events, _ = run(shim, blob, "set_way_op")
    _, _, first, sweep, arm, rest, off, again = in_order(
        events, ("sysreg-write", sctlr_on()), ("s2-map", {"ipa": BUF}),
        ("set-way", {"op": "cisw", "count": 1}),
        ("flush-vm", {"rule": "kvm.trap-set-way"}),
        ("tvm", {"op": "arm", "policy": True}),        # (already armed for observation)
        ("set-way", {"op": "cisw", "count": lambda n: n > 100}),
        ("sysreg-write", SCTLR_OFF),
        ("flush-vm", {"rule": "kvm.flush-on-cache-toggle"}))
    assert sweep.ipa <= BUF < sweep.extra["end"] and again.ipa <= BUF < again.extra["end"]
    assert first.pc == rest.pc


def test_set_way_op_clean(shim, blob):
    events, _ = run(shim, blob, "set_way_op_clean")
    _, _, _, off = in_order(events, ("sysreg-write", sctlr_on()), ("s2-map", {"ipa": BUF}),
                            ("guest-cmo", {"op": "dc-civac", "ipa": BUF, "size": 4096}),
                            ("sysreg-write", SCTLR_OFF))
    assert not [e for e in events if e.kind == "set-way"]
    assert not [e for e in events if e.kind == "flush-vm" and e.seq > off.seq]   # TVM not armed


# -- icache-not-invalidated -----------------------------------------------------------------
def test_icache_not_invalidated(shim, blob):
    events, console = run(shim, blob, "icache_not_invalidated")
    assert "code ran" in console
    write, _, on, _, _, _ = in_order(
        events, ("s2-fault", {"access": "write", **page(CODE)}),
        ("s2-map", {"ipa": CODE, "perms": "rw"}),
        ("sysreg-write", sctlr_on(M | C | I)),
        ("s2-fault", {"access": "exec", **page(CODE)}),
        # the caches-on write ended the write epoch: the page is read-only again
        ("s2-perm", {"ipa": CODE, "perms": "rx"}),
        ("ic", {"ipa": CODE, "rule": "kvm.icache-inval-on-exec-fault"}))
    assert not [e for e in between(events, write, on) if e.kind == "guest-cmo"]


def test_icache_not_invalidated_clean(shim, blob):
    events, console = run(shim, blob, "icache_not_invalidated_clean")
    assert "code ran" in console
    in_order(events, ("s2-map", {"ipa": CODE}), ("guest-cmo", {"op": "ic-iallu"}),
             ("sysreg-write", sctlr_on(M | C | I)), ("s2-fault", {"access": "exec", **page(CODE)}))


# -- icache-not-invalidated at a fetch: code rewritten after it ran ---------------------------
MOV_W0_42, MOV_W0_43 = 0x52800540, 0x52800560


def replayed(shim, blob, name: str, tmp_path) -> dict:
    """The scenario recorded to a trace (gdbplugin/capture/record.py) and replayed: the
    findings per world, without the info kinds."""
    params = ShimParams(policy="kvm", poweroff_on_fatal=True)
    config = shim_config(SCENARIOS / f"{name}.bin", params, shim=shim, paused=False)
    config.loaders.append(Loader(file=blob, addr=BLOB, force_raw=True))
    path = tmp_path / "trace.jsonl"
    with ShimSession(config, shim, consume=True) as s:
        why, _ = record(s, path, f"SCENARIO-DONE {name}", timeout=60, vcpus=1)
        assert why == "match", s.console()
    trace = read_trace(path)
    result = Replay(trace.header).run(trace)
    return {w: [f for f in result.findings(w) if f.kind not in INFO_KINDS]
            for w in result.worlds}


def test_code_rewritten(shim, blob, tmp_path):
    events, console = run(shim, blob, "code_rewritten")
    assert "code ran" in console
    in_order(events,
             # the first run: the policy makes the page executable (KVM invalidates there)
             ("s2-fault", {"access": "exec", "fetch": False, **page(CODE)}),
             ("s2-perm", {"ipa": CODE, "perms": "rx", "observer": False}),
             ("ic", {"ipa": CODE, "rule": "kvm.icache-inval-on-exec-fault"}),
             # the rewrite: write-xor-execute copies the page and takes X away
             ("s2-fault", {"access": "write", "deferred": True, **page(CODE)}),
             ("s2-written", {"pa": CODE, "lines": 1}),
             # the next fetch: the line written is recorded first, then the fetch, old -> new
             ("s2-fault", {"access": "exec", "fetch": True, "fetch_ok": False,
                           "insn_old": MOV_W0_42, "insn_new": MOV_W0_43, **page(CODE)}),
             ("s2-perm", {"ipa": CODE, "perms": "rx", "observer": True}))
    found = replayed(shim, blob, "code_rewritten", tmp_path)
    for world in ("none", "kvm", "xen", "fwb", "observed"):
        at_fetch = [f for f in found[world] if f.kind == "icache-not-invalidated"
                    and f.pc == CODE and f.pa == CODE]
        assert len(at_fetch) == 1, (world, found[world])
        assert "0x52800540 -> 0x52800560" in at_fetch[0].message
    assert not [f for f in found["kvm"] if f.pc != CODE]


def test_code_rewritten_clean(shim, blob, tmp_path):
    events, console = run(shim, blob, "code_rewritten_clean")
    assert "code ran" in console
    in_order(events, ("s2-fault", {"access": "write", "deferred": True, **page(CODE)}),
             ("guest-cmo", {"op": "dc-cvau", **page(CODE)}),
             ("s2-written", {"pa": CODE, "lines": 1}),     # before the invalidation
             ("guest-cmo", {"op": "ic-ivau", **page(CODE)}),
             ("s2-fault", {"access": "exec", "fetch": True, "fetch_ok": True, **page(CODE)}))
    found = replayed(shim, blob, "code_rewritten_clean", tmp_path)
    assert found["kvm"] == [] and found["observed"] == []
    assert not [f for w in found for f in found[w] if f.pa == CODE]


# -- mismatched-alias -----------------------------------------------------------------------
def test_mismatched_alias(shim, blob):
    events, console = run(shim, blob, "mismatched_alias")
    assert "fw_cfg signature 0x00000000554d4551" in console      # "QEMU", written by the host
    # fw_cfg is never mapped: the shim performs the doorbell write and records the host write
    in_order(events, ("s2-fault", {"access": "write", **page(DMA_BUF)}),
             ("s2-map", {"ipa": DMA_BUF, "memtype": "normal"}),
             ("host-dma", {"pa": DMA_BUF, "size": 4, "selector": 0,
                           "control": ["read", "select"]}))
    assert not [e for e in events
                if e.kind in ("s2-fault", "s2-map") and e.ipa >> 12 == FW_CFG >> 12]
    assert not [e for e in events if matches(e, "sysreg-write", sctlr_on(M))]


def test_mismatched_alias_clean(shim, blob):
    events, console = run(shim, blob, "mismatched_alias_clean")
    assert "fw_cfg signature 0x00000000554d4551" in console
    in_order(events, ("sysreg-write", sctlr_on()), ("s2-map", {"ipa": DMA_BUF}),
             ("host-dma", {"pa": DMA_BUF, "size": 4}))


# -- smp-mmu-off-window (info) --------------------------------------------------------------
def test_smp_mmu_off_window(shim, blob):
    events, _ = run(shim, blob, "smp_mmu_off_window")
    _, _, inside, on, outside = in_order(
        events, ("psci-cpu-on", {"vcpu": 0, "target": 1}), ("vcpu-start", {"vcpu": 1}),
        ("s2-map", {"vcpu": 1, "ipa": BUF2}), ("sysreg-write", {"vcpu": 0, **sctlr_on()}),
        ("s2-map", {"vcpu": 0, "ipa": BUF3}))
    # BUF2 entered stage 2 while no vCPU had its MMU on; BUF3 after vCPU 0 turned it on
    assert not [e for e in events if e.seq < inside.seq and matches(e, "sysreg-write", sctlr_on(M))]


def test_smp_mmu_off_window_clean(shim, blob):
    events, _ = run(shim, blob, "smp_mmu_off_window_clean")
    in_order(events, ("sysreg-write", {"vcpu": 0, **sctlr_on()}),
             ("psci-cpu-on", {"vcpu": 0, "target": 1}), ("vcpu-start", {"vcpu": 1}),
             ("s2-map", {"vcpu": 1, "ipa": BUF2}))
