"""Function names for the PCs of a run: ``[guest] symbols`` (ELF files, System.map files) of
images that run where nobody says -- relocated, KASLR-shifted, or with the MMU off.

An image's symbols are link addresses; the PCs a run records are where the code really ran:
U-Boot first from flash at its link address, then relocated near the top of RAM; Linux at
its physical load address with the MMU off and at a KASLR-randomized VA after.  Each
placement (the runtime address of the image's first byte) is found from the run itself: a
trapped SCTLR_EL1 write's PC must be an ``MSR SCTLR_EL1`` of the image
(gdbplugin/capture/sites.py decodes them from the image's bytes), at an aligned placement.
A placement is accepted when one PC allows only it, or two PCs agree on it; a PC no accepted
placement covers, or that two images would name differently, gets no name -- never a wrong
one.  A System.map goes with the config's kernel Image (its bytes, and the header's branch to
``primary_entry`` that says where ``_text`` is linked).
"""
from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import construct as cs

# arm64 Linux Image header (Documentation/arch/arm64/booting.rst).
IMAGE_HEADER = cs.Struct(
    "code0" / cs.Int32ul, "code1" / cs.Int32ul, "text_offset" / cs.Int64ul,
    "image_size" / cs.Int64ul, "flags" / cs.Int64ul, "res2" / cs.Int64ul,
    "res3" / cs.Int64ul, "res4" / cs.Int64ul, "magic" / cs.Const(b"ARM\x64"),
    "res5" / cs.Int32ul)
B_MASK, B_OPCODE = 0xFC00_0000, 0x1400_0000          # B imm26
KERNEL_ALIGN = 64 << 10      # Linux: 2 MiB placed by the kernel, 64 KiB by an EFI loader
ELF_ALIGN = 4 << 10          # U-Boot relocates to a page (common/board_f.c reserve_uboot)


class SymbolError(Exception):
    """A symbols file that cannot be used: one line naming it."""


@dataclass
class Image:
    """A program image: its bytes as linked at ``link``, its text symbols (link addresses)."""

    path: Path
    link: int
    data: bytes
    symbols: list[tuple[int, str]]
    align: int
    _addrs: list[int] = field(default_factory=list, repr=False)
    _sites: list[int] | None = field(default=None, repr=False)

    def __post_init__(self):
        self.symbols.sort()
        self._addrs = [a for a, _ in self.symbols]

    def site_offsets(self) -> list[int]:
        """Offsets of the image's MSR SCTLR_EL1 instructions, found once (a scan of a Linux
        Image takes ~0.1 s: ``s2cache run`` asks while the guest boots).  The decoder, and
        numpy with it, is imported here: symbols are loaded before QEMU starts."""
        if self._sites is None:
            from ..arch.memory import ImageMemory
            from ..capture.sites import find_sites
            sites = find_sites(ImageMemory(self.data, 0), [(0, len(self.data))])
            self._sites = [s.pa for s in sites.writes]
        return self._sites

    def name_at(self, offset: int) -> str | None:
        """``symbol+0xoff`` of the byte at ``offset`` in the image."""
        if not 0 <= offset < len(self.data):
            return None
        addr = self.link + offset
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0:
            return None
        base, name = self.symbols[i]
        return name if addr == base else f"{name}+{addr - base:#x}"


def load_images(paths: list[Path], kernel: Path | None) -> list[Image]:
    """The images of ``[guest] symbols``: each ELF with its own bytes; each System.map with
    the kernel Image's."""
    out = []
    for path in paths:
        try:
            head = path.read_bytes()[:4]
        except OSError as exc:
            raise SymbolError(f"{path}: cannot read: {exc.strerror or exc}") from None
        if head == b"\x7fELF":
            out.append(_elf_image(path))
        else:
            if kernel is None:
                raise SymbolError(f"{path}: a System.map needs the config's [guest] kernel")
            out.append(_kernel_image(path, kernel))
    return out


def _elf_image(path: Path) -> Image:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection
    try:
        with path.open("rb") as f:
            elf = ELFFile(f)
            text = [s for s in elf.iter_segments()
                    if s["p_type"] == "PT_LOAD" and s["p_flags"] & 1]       # PF_X
            if not text:
                raise SymbolError(f"{path}: no executable segment")
            seg = min(text, key=lambda s: s["p_vaddr"])
            link, data = seg["p_vaddr"], seg.data()
            symbols = []
            for sec in map(elf.get_section_by_name, (".symtab", ".dynsym")):
                if isinstance(sec, SymbolTableSection):
                    symbols += [(s["st_value"], s.name) for s in sec.iter_symbols()
                                if s.name and s["st_info"]["type"] in ("STT_FUNC", "STT_NOTYPE")
                                and s["st_shndx"] != "SHN_UNDEF" and not s.name.startswith("$")
                                and link <= s["st_value"] < link + len(data)]
    except (ELFError, OSError, ValueError) as exc:
        raise SymbolError(f"{path}: not a usable ELF: {exc}") from None
    if not symbols:
        raise SymbolError(f"{path}: no symbols in its executable segment (stripped? Debian's "
                          f"uboot.elf is)")
    return Image(path, link, data, symbols, ELF_ALIGN)


def _kernel_image(path: Path, kernel: Path) -> Image:
    symbols = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise SymbolError(f"{path}: cannot read: {exc.strerror or exc}") from None
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and parts[1] in "tTwW":
            try:
                symbols.append((int(parts[0], 16), parts[2]))
            except ValueError:
                continue
    if not symbols:
        raise SymbolError(f"{path}: no text symbols (not a System.map?)")
    data = kernel.read_bytes()
    try:
        hdr = IMAGE_HEADER.parse(data)
    except cs.ConstructError:
        raise SymbolError(f"{kernel}: not an arm64 Linux Image (no ARM\\x64 header)") from None
    entry = [a for a, n in symbols if n == "primary_entry"]
    target = _branch_target(hdr.code0, 0)
    if target is None:
        target = _branch_target(hdr.code1, 4)          # EFI header: code0 is "MZ" magic
    if not entry or target is None:
        raise SymbolError(f"{path}: cannot place it on {kernel.name} (no primary_entry, or "
                          f"no branch to it in the Image header)")
    link = entry[0] - target
    if not any(n == "_text" for _, n in symbols):     # kallsyms leaves the head section out
        symbols.append((link, "_text"))
    return Image(path, link, data, symbols, KERNEL_ALIGN)


def _branch_target(word: int, at: int) -> int | None:
    if word & B_MASK != B_OPCODE:
        return None
    imm = word & 0x03FF_FFFF
    return at + 4 * (imm - (1 << 26) if imm >> 25 else imm)


class Symbolizer:
    """Names PCs of one run, from the placements its SCTLR_EL1 write PCs prove."""

    def __init__(self, images: list[Image], write_pcs: list[int]):
        self.images = images
        self.placements: list[tuple[Image, int]] = []       # (image, runtime base)
        for image in images:
            sites = image.site_offsets()
            votes, sure = Counter(), set()
            for pc in set(write_pcs):
                bases = {pc - s for s in sites if (pc - s) % image.align == 0 and pc >= s}
                votes.update(bases)
                if len(bases) == 1:
                    sure |= bases
            self.placements += [(image, b) for b in sorted(votes)
                                if b in sure or votes[b] >= 2]

    def locate(self, pc: int | None) -> tuple[str, Path] | None:
        """(name, image file) of ``pc``, or None when no placement, or two, would name it."""
        if pc is None:
            return None
        named = {n: img.path for img, base in self.placements
                 if (n := img.name_at(pc - base)) is not None}
        return next(iter(named.items())) if len(named) == 1 else None

    def annotate(self, result) -> dict[int, str]:
        """Name the PC of every finding (every world) and transition of a Result; returns
        {pc: image file} of the PCs named."""
        files: dict[int, str] = {}
        for pc in {f.pc for w in result.worlds.values() for f in w.findings} | \
                {t["pc"] for t in result.transitions}:
            hit = self.locate(pc)
            if hit is not None:
                files[pc] = hit
        for w in result.worlds.values():
            for f in w.findings:
                if f.pc in files:
                    f.symbol = files[f.pc][0]
        for t in result.transitions:
            t["symbol"] = files[t["pc"]][0] if t["pc"] in files else None
        return {pc: str(path) for pc, (_, path) in files.items()}

    def describe(self) -> list[dict]:
        return [{"file": str(img.path), "link": img.link, "runs_at": base,
                 "offset": base - img.link} for img, base in self.placements]
