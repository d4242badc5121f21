"""VMSAv8-64 translation-table descriptor layouts (Arm ARM D8.3) and the address formats.

Layouts only: the walker applies them (vectorized, through the same field positions) and the
builders in tests use ``Layout.build``.  Output-address bits depend on the granule and on the
52-bit format in force, so they are described by ``AddressFormat`` rather than a fixed field.
"""
from __future__ import annotations

from dataclasses import dataclass

from .bits import Layout

# Bits [1:0]: 0bx0 invalid, 0b01 block (levels < 3) / reserved (level 3), 0b11 table / page.
DESC_TYPE = Layout("descriptor", valid=0, table_or_page=1)

S1_TABLE = Layout("stage-1 table descriptor", valid=0, table_or_page=1,
                  PXNTable=59, UXNTable=60, APTable=(62, 61), NSTable=63)
S2_TABLE = Layout("stage-2 table descriptor", valid=0, table_or_page=1)

S1_LEAF = Layout("stage-1 block/page descriptor", valid=0, table_or_page=1,
                 AttrIndx=(4, 2), NS=5, AP=(7, 6), SH=(9, 8), AF=10, nG=11, nT=16, GP=50,
                 DBM=51, Contiguous=52, PXN=53, UXN=54, SW=(58, 55), PBHA=(62, 59))
S2_LEAF = Layout("stage-2 block/page descriptor", valid=0, table_or_page=1,
                 MemAttr=(5, 2), S2AP=(7, 6), SH=(9, 8), AF=10, nT=16, DBM=51, Contiguous=52,
                 XN=(54, 53), SW=(58, 55), PBHA=(62, 59))

# High output-address bits of the 52-bit formats (they reuse bits of the 48-bit format).
OA_LPA = Layout("64K FEAT_LPA output address [51:48]", OA_51_48=(15, 12))
OA_LPA2 = Layout("FEAT_LPA2 output address [51:50]", OA_51_50=(9, 8))

# Attribute bits that make two leaves "the same mapping kind" (for coalescing runs): every
# architectural attribute, not the software bits, not the output address.
# (nT is left out: it exists only in blocks, where bit 16 is not an address bit.)
S1_ATTR_FIELDS = ("AttrIndx", "NS", "AP", "SH", "AF", "nG", "GP", "DBM", "Contiguous", "PXN",
                  "UXN")
S2_ATTR_FIELDS = ("MemAttr", "S2AP", "SH", "AF", "DBM", "Contiguous", "XN")

SHAREABILITY = {0: "NSH", 1: "reserved", 2: "OSH", 3: "ISH"}
S1_AP = {0: "RW-EL1", 1: "RW", 2: "RO-EL1", 3: "RO"}
S2_AP = {0: "none", 1: "RO", 2: "WO", 3: "RW"}


def field_mask(layout: Layout, names) -> int:
    mask = 0
    for name in names:
        mask |= layout.fields[name].mask
    return mask


@dataclass(frozen=True)
class AddressFormat:
    """How output addresses sit in descriptors and base registers for one granule/format.

    ``kind`` is "48" (bits [47:shift]), "lpa" (64K granule with 52-bit PA: OA[51:48] in bits
    [15:12]) or "lpa2" (TCR/VTCR.DS=1: OA[49:shift] in place, OA[51:50] in bits [9:8], and
    shareability comes from the TCR instead of the descriptor).
    """

    kind: str
    page_shift: int

    def low_mask(self, shift: int) -> int:
        top = 50 if self.kind == "lpa2" else 48
        return ((1 << top) - 1) & ~((1 << shift) - 1)

    def output_address(self, desc, shift: int):
        """OA of a descriptor whose mapping/table is aligned to ``1 << shift`` (int or numpy)."""
        oa = desc & self.low_mask(shift)
        if self.kind == "lpa":
            oa = oa | (OA_LPA.fields["OA_51_48"].get(desc) << 48)
        elif self.kind == "lpa2":
            oa = oa | (OA_LPA2.fields["OA_51_50"].get(desc) << 50)
        return oa

    def encode(self, oa):
        """Inverse of ``output_address``, for an int or a numpy uint64 array."""
        desc = oa & self.low_mask(self.page_shift)
        if self.kind == "lpa":
            desc = desc | ((oa >> 48) & 0xF) << OA_LPA.fields["OA_51_48"].lo
        elif self.kind == "lpa2":
            desc = desc | ((oa >> 50) & 0x3) << OA_LPA2.fields["OA_51_50"].lo
        return desc

    def address_bits(self) -> int:
        """Every descriptor bit that carries output address in this format."""
        mask = self.low_mask(self.page_shift)
        if self.kind == "lpa":
            mask |= OA_LPA.fields["OA_51_48"].mask
        elif self.kind == "lpa2":
            mask |= OA_LPA2.fields["OA_51_50"].mask
        return mask

    def table_base(self, baddr_reg: int) -> int:
        """Root table address from TTBRn/VTTBR, unaligned (BADDR[51:48] in bits [5:2] when
        52-bit); the regime checks and applies the alignment."""
        base = baddr_reg & ((1 << 48) - 1) & ~1
        if self.kind != "48":
            base = (base & ~0x3C) | ((baddr_reg >> 2 & 0xF) << 48)
        return base

    def shareability_in_descriptor(self) -> bool:
        return self.kind != "lpa2"
