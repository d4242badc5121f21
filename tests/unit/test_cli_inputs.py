"""What a newcomer types wrong, and what they read: one clear line and exit 2 for bad input,
register names as the architecture gives them under VHE."""
from __future__ import annotations

from io import StringIO

from rich.console import Console

from gdbplugin.arch.sysregs import HCR_EL2, TCR_EL1
from gdbplugin.capture.snapshot import VcpuState
from gdbplugin.cli import main
from gdbplugin.ui.console import print_vcpu


def test_a_misaligned_mem_base_is_refused(tmp_path, capsys):
    mem = tmp_path / "ram.bin"
    mem.write_bytes(bytes(8192))
    rc = main(["walk", "--mem", str(mem), "--mem-base", "0x40000001", "--vttbr", "0x40000000",
               "--vtcr", "0x80023559"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "not 4 KiB-aligned" in err


def test_a_missing_trace_names_its_path_once(tmp_path, capsys):
    path = tmp_path / "nope.jsonl"
    assert main(["replay", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count(str(path)) == 1 and "No such file or directory" in err


def test_an_unknown_policy_in_a_trace_header_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    path.write_text('{"schema":"s2cache.trace/1","ram":[[1073741824,16777216]],"vcpus":1,'
                    '"policy":"bogus"}\n')
    assert main(["replay", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: line 1 (header) policy: unknown policy 'bogus'" in err


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.startswith("s2cache ")


def test_tcr_el2_under_vhe_is_rendered_in_the_tcr_el1_format():
    """With HCR_EL2.E2H=1 TCR_EL2 has TCR_EL1's fields (two VA ranges: T1SZ, TG1, IPS...)."""
    tcr = TCR_EL1.build(T0SZ=16, T1SZ=16, TG1=2, IPS=5)
    out = StringIO()
    state = VcpuState(0, {"CPSR": 0x9, "HCR_EL2": HCR_EL2.build(E2H=1, TGE=1), "TCR_EL2": tcr})
    print_vcpu(Console(file=out, width=200), state)
    text = out.getvalue()
    assert "TCR_EL2 (E2H=1, TCR_EL1 format)" in text and "T1SZ" in text and "IPS" in text
    out = StringIO()
    print_vcpu(Console(file=out, width=200), VcpuState(0, {"CPSR": 0x9, "TCR_EL2": tcr}))
    assert "T1SZ" not in out.getvalue() and "RES1_31" in out.getvalue()   # E2H=0 layout
