"""Tests for gdbplugin.arch.sysinsn.

The oracle is GNU as: instruction texts are assembled with
``aarch64-linux-gnu-as`` (see MARCH), the words are read back from the object
(``objcopy -O binary``), decoded, and the decoder's text must equal the source
text (normalised). Field positions used to build ESR ISS values here are the
architectural ones (Arm ARM, ISS encoding for EC=0x18), written independently
of the decoder.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdbplugin.arch import sysinsn as si

AS = shutil.which("aarch64-linux-gnu-as")
OBJCOPY = shutil.which("aarch64-linux-gnu-objcopy")
# Not "-march=all": binutils 2.40 folds Armv8-R into it, which drops the EL3 registers.
MARCH = "-march=armv9.3-a+memtag+sve2+sme+predres+profile"

needs_binutils = pytest.mark.skipif(
    AS is None or OBJCOPY is None, reason="aarch64-linux-gnu binutils not installed")

# ---------------------------------------------------------------------------
# assembler helpers
# ---------------------------------------------------------------------------

_ERROR_RE = re.compile(r":(\d+): Error: (.*)")


def assemble(lines: list[str], workdir: Path, name: str = "t") -> list[int]:
    """Assemble one instruction per line; return one little-endian word per line."""
    src = workdir / f"{name}.s"
    obj = workdir / f"{name}.o"
    binf = workdir / f"{name}.bin"
    src.write_text(".text\n" + "\n".join(lines) + "\n")
    res = subprocess.run([AS, MARCH, "-o", str(obj), str(src)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        errors = []
        for m in _ERROR_RE.finditer(res.stderr):
            lineno = int(m.group(1)) - 2  # ".text" is line 1
            errors.append(f"{lines[lineno]!r}: {m.group(2)}")
        pytest.fail(f"assembler rejected {len(errors)} lines:\n"
                    + "\n".join(errors[:50] or [res.stderr[:4000]]))
    subprocess.run([OBJCOPY, "-O", "binary", "-j", ".text", str(obj), str(binf)], check=True)
    data = binf.read_bytes()
    assert len(data) == 4 * len(lines), "one instruction per line expected"
    return [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)]


def norm(text: str) -> str:
    """Normalise assembler text: case, spacing, immediates to decimal."""
    t = text.strip().lower()
    t = re.sub(r"\s*,\s*", ", ", t)
    t = re.sub(r"\s+", " ", t)
    t = re.sub(r"#(0x[0-9a-f]+|\d+)", lambda m: "#" + str(int(m.group(1), 0)), t)
    return t


# ---------------------------------------------------------------------------
# source texts (written by hand from the Arm ARM names, not from the decoder)
# ---------------------------------------------------------------------------

REQUIRED_SYSREGS = """
sctlr_el1 sctlr_el2 sctlr_el12 actlr_el1 actlr_el2 cpacr_el1
ttbr0_el1 ttbr0_el2 ttbr0_el12 ttbr1_el1 ttbr1_el2 ttbr1_el12
tcr_el1 tcr_el2 tcr_el12 mair_el1 mair_el2 mair_el12 amair_el1 amair_el2 amair_el12
vbar_el1 vbar_el2 contextidr_el1 contextidr_el12 esr_el1 esr_el2 far_el1 far_el2
afsr0_el1 afsr1_el1 afsr0_el2 afsr1_el2 par_el1
hcr_el2 vtcr_el2 vttbr_el2 hpfar_el2 cptr_el2 mdcr_el2 hstr_el2 vpidr_el2 vmpidr_el2
cnthctl_el2 cntvoff_el2 elr_el1 elr_el2 spsr_el1 spsr_el2 sp_el0 sp_el1
midr_el1 mpidr_el1 ctr_el0 clidr_el1 ccsidr_el1 csselr_el1 dczid_el0
id_aa64mmfr0_el1 id_aa64mmfr1_el1 id_aa64mmfr2_el1 id_aa64pfr0_el1
id_aa64isar0_el1 id_aa64isar1_el1 tpidr_el0 tpidr_el1 tpidr_el2
currentel daif nzcv cntv_ctl_el0 cntv_cval_el0 cntfrq_el0 cntvct_el0 icc_sre_el2 zcr_el2
""".split()

# Implementation-defined encodings: must come out as the generic S-form.
GENERIC_SYSREGS = ["s3_0_c15_c0_0", "s3_1_c15_c2_1", "s3_4_c15_c1_4", "s3_7_c11_c3_5",
                   "s3_3_c15_c15_7", "s2_7_c11_c0_3"]

REQUIRED_SYS_OPS = """
dc ivac, x0
dc isw, x1
dc csw, x2
dc cisw, x3
dc zva, x4
dc cvac, x5
dc cvau, x6
dc cvap, x7
dc cvadp, x8
dc civac, x9
dc igvac, x10
dc cigdvac, x11
dc gzva, xzr
ic iallu
ic ialluis
ic ivau, x12
tlbi vmalle1
tlbi vmalle1is
tlbi vae1, x13
tlbi vae1is, x14
tlbi aside1, x15
tlbi aside1is, x16
tlbi vaae1, x17
tlbi vaae1is, x18
tlbi vale1, x19
tlbi vale1is, x20
tlbi vaale1, x21
tlbi vaale1is, x22
tlbi ipas2e1, x23
tlbi ipas2e1is, x24
tlbi ipas2le1, x25
tlbi ipas2le1is, x26
tlbi vmalls12e1
tlbi vmalls12e1is
tlbi alle1
tlbi alle1is
tlbi alle2
tlbi alle2is
tlbi vae2, x27
tlbi vae2is, x28
tlbi vale2, x29
tlbi vale2is, x30
tlbi vmalle1os
tlbi vae1os, x1
tlbi rvae1is, x2
tlbi rvaale1, x3
tlbi ripas2e1is, x4
tlbi ripas2le1os, x5
tlbi vmalls12e1os
tlbi alle2os
tlbi rvae2, x6
at s1e1r, x0
at s1e1w, x1
at s1e0r, x2
at s1e0w, x3
at s1e2r, x4
at s1e2w, x5
at s12e1r, x6
at s12e1w, x7
at s12e0r, x8
at s12e0w, x9
at s1e1rp, x10
at s1e1wp, x11
cfp rctx, x0
sys #0, c8, c7, #0, x3
sys #3, c7, c15, #7, x9
sys #7, c15, c15, #7
sys #0, c7, c5, #0, x1
sysl x2, #1, c2, c3, #4
sysl xzr, #0, c7, c14, #2
""".strip().splitlines()

OTHER_INSNS = """
eret
eretaa
eretab
drps
hvc #0
hvc #0x1234
smc #0
smc #0xffff
svc #0
svc #0x80
brk #0x3e8
hlt #0xf000
dcps1
dcps2 #0x7
wfi
wfe
nop
yield
sev
sevl
esb
csdb
psb csync
bti c
paciasp
hint #0x7f
isb
isb #0x3
dsb sy
dsb ish
dsb ishst
dsb ishld
dsb nsh
dsb osh
dsb oshst
dsb #0x8
dmb sy
dmb ish
dmb ishld
dmb oshst
dmb #0x0
ssbb
pssbb
sb
clrex
clrex #0x5
dsb oshnxs
dsb synxs
msr daifset, #0xf
msr daifclr, #0x2
msr spsel, #1
msr pan, #1
.inst 0x00000000
.inst 0x8b020020
""".strip().splitlines()


def sysreg_lines() -> list[str]:
    out = []
    names = REQUIRED_SYSREGS + GENERIC_SYSREGS
    for i, name in enumerate(names):
        out.append(f"mrs x{i % 31}, {name}")
        out.append(f"msr {name}, x{(i + 7) % 31}")
    out.append("mrs xzr, sctlr_el1")
    out.append("msr hcr_el2, xzr")
    out.append("mrs x0, dbgdtrrx_el0")
    out.append("msr dbgdtrtx_el0, x1")
    return out


def table_lines() -> list[str]:
    """Every name in the decoder's tables, so the assembler checks each encoding."""
    out = []
    for i, name in enumerate(si.SYSREGS.values()):
        out.append(f"mrs x{i % 31}, {name}")
        out.append(f"msr {name}, x{(i + 3) % 31}")
    for i, spec in enumerate(si.SYS_OP_SPECS):
        out.append(f"{spec.kind} {spec.op}, x{i % 31}" if spec.takes_register
                   else f"{spec.kind} {spec.op}")
    return out


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sysinsn")


@pytest.fixture(scope="module")
def assembled(workdir) -> list[tuple[str, int]]:
    lines = sysreg_lines() + REQUIRED_SYS_OPS + OTHER_INSNS + table_lines()
    return list(zip(lines, assemble(lines, workdir, "main")))


def iss_of(word: int) -> int:
    """ISS (EC=0x18) for a system-class instruction word: Op0[21:20] Op2[19:17]
    Op1[16:14] CRn[13:10] Rt[9:5] CRm[4:1] Direction[0] (1 = read)."""
    op0 = (word >> 19) & 3
    op1 = (word >> 16) & 7
    crn = (word >> 12) & 15
    crm = (word >> 8) & 15
    op2 = (word >> 5) & 7
    rt = word & 31
    read = (word >> 21) & 1
    return (op0 << 20) | (op2 << 17) | (op1 << 14) | (crn << 10) | (rt << 5) | (crm << 1) | read


def is_sys_class(word: int) -> bool:
    return (word >> 22) == 0b1101010100 and ((word >> 19) & 3) != 0


# ---------------------------------------------------------------------------
# oracle tests
# ---------------------------------------------------------------------------


@needs_binutils
def test_decoded_text_matches_source(assembled):
    bad = [(src, hex(w), str(si.decode(w))) for src, w in assembled
           if norm(str(si.decode(w))) != norm(src)]
    assert not bad, f"{len(bad)} mismatches, first: {bad[:20]}"


@needs_binutils
def test_required_registers_have_names(assembled):
    for src, w in assembled:
        d = si.decode(w)
        if isinstance(d, si.SysRegAccess) and any(src.endswith(" " + n) or f" {n}," in src
                                                  for n in REQUIRED_SYSREGS):
            assert d.known, src


@needs_binutils
def test_generic_names(assembled):
    for src, w in assembled:
        d = si.decode(w)
        if isinstance(d, si.SysRegAccess) and any(g in src for g in GENERIC_SYSREGS):
            assert not d.known
            assert re.fullmatch(r"S\d_\d_C\d+_C\d+_\d", d.name), d.name


@needs_binutils
def test_fields_and_direction(assembled):
    for src, w in assembled:
        d = si.decode(w)
        if not isinstance(d, si.SysRegAccess):
            continue
        assert d.is_read == src.startswith("mrs")
        reg = src.split()[1].rstrip(",") if src.startswith("mrs") else src.split()[2]
        assert d.rt == (31 if reg == "xzr" else int(reg[1:]))
        name = (src.split()[2] if src.startswith("mrs") else src.split()[1].rstrip(","))
        assert si.sysreg_encoding(name) == d.encoding


@needs_binutils
def test_iss_path_matches_source(assembled):
    checked = 0
    for src, w in assembled:
        if not is_sys_class(w):
            continue
        iss = iss_of(w)
        esr = (0x18 << 26) | (1 << 25) | iss
        assert norm(str(si.decode_iss_sys64(iss))) == norm(src), src
        d = si.decode_esr(esr)
        assert d is not None and norm(str(d)) == norm(src), src
        assert d == si.decode(w)
        # upper ESR bits (ISS2) do not matter
        assert si.decode_esr(esr | (0xABCD << 32)) == d
        checked += 1
    assert checked > 500


@needs_binutils
def test_esr_other_classes(assembled):
    by_src = dict(assembled)
    for src in ("svc #0x80", "hvc #0x1234", "smc #0xffff", "hvc #0", "smc #0"):
        mnem, imm = src.split()
        ec = {"svc": 0x15, "hvc": 0x16, "smc": 0x17}[mnem]
        esr = (ec << 26) | (1 << 25) | int(imm[1:], 0)
        d = si.decode_esr(esr)
        assert norm(str(d)) == norm(src)
        assert d.word == by_src[src]
    # WFx: ISS.TI 0 = WFI, 1 = WFE; ERET: ISS[1] = ERET(A*), ISS[0] = key B
    for ti, src in ((0, "wfi"), (1, "wfe")):
        d = si.decode_esr((0x01 << 26) | (1 << 25) | ti)
        assert str(d) == src and d.word == by_src[src]
    for iss, src in ((0, "eret"), (2, "eretaa"), (3, "eretab")):
        d = si.decode_esr((0x1A << 26) | (1 << 25) | iss)
        assert str(d) == src and d.word == by_src[src]
    assert si.decode_esr((0x24 << 26) | 0x45) is None   # data abort
    assert si.decode_esr(0) is None


@needs_binutils
def test_sys_op_attributes(assembled):
    ops = {norm(src): si.decode(w) for src, w in assembled}

    def get(text):
        d = ops[norm(text)]
        assert isinstance(d, si.SysOp)
        return d

    civac = get("dc civac, x9")
    assert (civac.kind, civac.op) == ("dc", "civac")
    assert civac.cleans and civac.invalidates and civac.point == "poc"
    assert civac.is_by_va and civac.takes_address and not civac.is_set_way
    cisw = get("dc cisw, x3")
    assert cisw.is_set_way and not cisw.is_by_va and not cisw.takes_address
    assert cisw.cleans and cisw.invalidates and cisw.point is None
    isw = get("dc isw, x1")
    assert isw.invalidates and not isw.cleans and isw.is_set_way
    csw = get("dc csw, x2")
    assert csw.cleans and not csw.invalidates and csw.is_set_way
    ivac = get("dc ivac, x0")
    assert ivac.invalidates and not ivac.cleans and ivac.point == "poc" and ivac.is_by_va
    assert get("dc cvau, x6").point == "pou"
    assert get("dc cvap, x7").point == "pop"
    assert get("dc cvadp, x8").point == "podp"
    zva = get("dc zva, x4")
    assert zva.zeroes and not zva.cleans and not zva.invalidates and zva.takes_address
    assert get("ic ivau, x12").takes_address and get("ic ivau, x12").point == "pou"
    iallu = get("ic iallu")
    assert iallu.kind == "ic" and not iallu.takes_register and not iallu.takes_address
    assert get("ic ialluis").spec.domain == "is"
    s12 = get("tlbi vmalls12e1is")
    assert s12.kind == "tlbi" and not s12.takes_address and s12.spec.stage2
    assert s12.spec.domain == "is"
    ipa = get("tlbi ipas2le1is, x26")
    assert ipa.takes_address and ipa.spec.operand == "ipa" and ipa.spec.last_level
    asid = get("tlbi aside1is, x16")
    assert asid.takes_register and not asid.takes_address
    assert get("tlbi vae2is, x28").takes_address and get("tlbi vae2is, x28").spec.el == 2
    assert get("tlbi rvae1is, x2").spec.is_range
    at = get("at s12e1r, x6")
    assert at.kind == "at" and at.takes_address and at.spec.stage2
    # operand-less alias with Rt != 31 renders as SYS but is still recognised
    odd = get("sys #0, c8, c7, #0, x3")
    assert odd.kind == "tlbi" and odd.op == "vmalle1" and not odd.alias_form
    assert si.find_sys_op("DC", "CIVAC") is civac.spec


@needs_binutils
def test_other_classes(assembled):
    ops = {norm(src): si.decode(w) for src, w in assembled}
    assert isinstance(ops["eret"], si.ExceptionReturn)
    hvc = ops[norm("hvc #0x1234")]
    assert isinstance(hvc, si.ExceptionGen) and hvc.mnemonic == "hvc" and hvc.imm == 0x1234
    assert isinstance(ops["wfi"], si.Hint) and ops["wfi"].mnemonic == "wfi"
    dsb = ops["dsb ish"]
    assert isinstance(dsb, si.Barrier) and dsb.option_name == "ish"
    assert isinstance(ops[norm(".inst 0x8b020020")], si.Unknown)


# ---------------------------------------------------------------------------
# exhaustive round trip: decoder text re-assembles to the same word
# ---------------------------------------------------------------------------


def _system_space() -> list[int]:
    words = []
    i = 0
    for L in (0, 1):
        for op0 in (1, 2, 3):
            for fields in range(1 << 14):           # op1:CRn:CRm:op2
                rt = (i * 7) % 32
                i += 1
                words.append((0b1101010100 << 22) | (L << 21) | (op0 << 19) | (fields << 5) | rt)
    for fields in range(1 << 14):                   # op0=0: hints, barriers, MSR imm
        words.append((0b1101010100 << 22) | (fields << 5) | 31)
    return words


def _other_space() -> list[int]:
    words = []
    for opc in range(8):
        for op2 in range(8):
            for ll in range(4):
                for imm in (0, 1, 0x1234, 0xFFFF):
                    words.append(0xD4000000 | (opc << 21) | (imm << 5) | (op2 << 2) | ll)
    for op3 in range(64):
        for rn in (0, 31):
            for op4 in (0, 31):
                for opc in (4, 5):
                    words.append(0xD61F0000 | (opc << 21) | (op3 << 10) | (rn << 5) | op4)
    return words


@needs_binutils
def test_round_trip_system_space(workdir):
    words = _system_space() + _other_space()
    texts = [str(si.decode(w)) for w in words]
    back = assemble(texts, workdir, "roundtrip")
    bad = [(hex(w), t, hex(b)) for w, t, b in zip(words, texts, back) if w != b]
    assert not bad, f"{len(bad)} mismatches, first: {bad[:20]}"


# ---------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------

_words = st.integers(min_value=0, max_value=0xFFFFFFFF)
_system_words = st.integers(min_value=0, max_value=(1 << 22) - 1).map(lambda x: 0xD5000000 | x)
_exc_words = st.integers(min_value=0, max_value=(1 << 24) - 1).map(lambda x: 0xD4000000 | x)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(_words, _system_words, _exc_words))
def test_decode_never_raises(word):
    d = si.decode(word)
    assert isinstance(d, si.Insn) and d.word == word
    assert isinstance(str(d), str) and isinstance(d.mnemonic, str)
    hash(d)


@settings(max_examples=1000, deadline=None)
@given(_system_words)
def test_iss_equivalent_to_word(word):
    if not is_sys_class(word):
        return
    assert si.decode_iss_sys64(iss_of(word)) == si.decode(word)


@settings(max_examples=1000, deadline=None)
@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_decode_esr_never_raises(esr):
    d = si.decode_esr(esr)
    assert d is None or isinstance(d, si.Insn)


def test_bad_input():
    with pytest.raises(ValueError):
        si.decode(1 << 32)
    with pytest.raises(ValueError):
        si.decode(-1)
    with pytest.raises(TypeError):
        si.decode("0xd503201f")
    assert si.decode_bytes(bytes.fromhex("1f2003d5")) == si.decode(0xD503201F)


def test_tables_consistent():
    names = [n.lower() for n in si.SYSREGS.values()]
    assert len(names) == len(set(names))
    for key, name in si.SYSREGS.items():
        assert si.sysreg_encoding(name) == key
    keys = [s.key for s in si.SYS_OP_SPECS]
    assert len(keys) == len(set(keys))
    assert si.sysreg_encoding("S3_0_C1_C0_0") == si.sysreg_encoding("sctlr_el1")
    with pytest.raises(KeyError):
        si.sysreg_encoding("no_such_reg")
