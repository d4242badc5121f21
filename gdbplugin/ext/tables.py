"""``s2cache s2 [IPA]`` and ``s2cache s1 [VA]``: the translation tables as they are now, read
through the session's way to guest RAM (gdbplugin/arch/walker.py over
gdbplugin/target/physmem.py)."""
from __future__ import annotations

import gdb

from ..arch.walker import Fault, Regime, TranslatedMemory, Walker
from ..capture.snapshot import read_vcpus, stage1_regimes, stage2_regime
from ..target.registers import Registers
from ..ui.console import attr_summary, print_walk
from . import state
from .state import command_errors


def _stage2(L) -> Walker:
    if L.watch is not None:
        raise gdb.GdbError("s2cache: no shim: this guest's stage 2 (if any) is not watched; "
                           "stage-2 hazards need the guest under the shim")
    ring = L.session.ring
    if ring is None:
        raise gdb.GdbError("s2cache: the shim's ring is not up yet: no stage 2 to show")
    h = ring.header()
    return Walker(Regime.from_vtcr(h.vtcr, h.vttbr, h.hcr), L.attached.ram.mem)


def _describe(out, name: str, t) -> None:
    if isinstance(t, Fault):
        out.print(f"{name} {t.ia:#x}: {t.kind} fault at level {t.level}"
                  + (f" ({t.message})" if t.message else ""))
    else:
        out.print(f"{name} {t.ia:#x} -> {t.oa:#x} (level {t.level} "
                  f"{t.size:#x} leaf, descriptor {t.descriptor:#x}) {attr_summary(t.attrs)}")


def _address(arg: str) -> int:
    return int(gdb.parse_and_eval(arg)) & ((1 << 64) - 1)


class Stage2(gdb.Command):
    """s2cache s2 [IPA]: the guest's stage 2 (the shim's VTTBR_EL2/VTCR_EL2) as runs of
    mappings, or one IPA translated."""

    def __init__(self):
        super().__init__("s2cache s2", gdb.COMMAND_USER)

    @command_errors
    def invoke(self, arg, from_tty):
        L = state.live()
        walker = _stage2(L)
        out = state.console()
        if arg.strip():
            _describe(out, "IPA", walker.translate(_address(arg)))
            return
        print_walk(out, "stage 2 (VTTBR_EL2)", walker.regime, walker.mappings(),
                   walker.error_dicts(), limit=64)


class Stage1(gdb.Command):
    """s2cache s1 [VA]: the selected vCPU's stage 1 (stopped guest), or one VA translated
    through both stages: VA -> IPA -> PA."""

    def __init__(self):
        super().__init__("s2cache s1", gdb.COMMAND_USER)

    @command_errors
    def invoke(self, arg, from_tty):
        L = state.live()
        debugger = L.attached.gdb
        thread = gdb.selected_thread()
        if thread is None or thread.is_running():
            raise gdb.GdbError("s2cache: stop the guest first (stage 1 is in its registers)")
        current = thread.num
        states = read_vcpus(debugger, Registers(debugger))
        debugger.select_thread(current)
        index = debugger.threads().index(current)
        vcpu = states[index]
        mem = L.attached.ram.mem
        s2 = stage2_regime(vcpu)
        s1_mem = TranslatedMemory(Walker(s2, mem), mem) if s2 is not None and vcpu.el < 2 \
            else mem
        regimes = stage1_regimes(vcpu)
        out = state.console()
        if not regimes:
            out.print(f"vCPU {index} (EL{vcpu.el}): stage 1 is off (SCTLR.M = 0): VA = IPA")
        if not arg.strip():
            for name, _, regime in regimes:
                w = Walker(regime, s1_mem)
                print_walk(out, f"{name} (vCPU {index})", regime, w.mappings(),
                           w.error_dicts(), limit=64)
            return
        va = _address(arg)
        ipa = va
        for name, _, regime in regimes:
            if regime.fatal or (va & ~regime.ia_mask) != regime.ia_fill:
                continue
            t = Walker(regime, s1_mem).translate(va)
            _describe(out, f"VA ({name})", t)
            if isinstance(t, Fault):
                return
            ipa = t.oa
            break
        if s2 is not None and vcpu.el < 2:
            _describe(out, "IPA", Walker(s2, mem).translate(ipa))
        else:
            out.print(f"IPA {ipa:#x} = PA (no stage 2 in this regime)")


COMMANDS = (Stage2, Stage1)
