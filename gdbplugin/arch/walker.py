"""One generic VMSAv8-64 table walker: stage 1 or 2, 4K/16K/64K granules, any start level.

Shaped like the kernel's arm64 KVM pgtable.c (``kvm_pgtable_walk`` with visitor callbacks), but
level-synchronous and vectorized: every table of a level is read in one ``read_tables`` call and
decoded with numpy, so a million leaves cost milliseconds.  The visitor gets batches (numpy
arrays) of leaves and tables per level.  Malformed input never raises: each problem becomes a
named ``WalkError`` and the walk goes on with what is still well-formed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from . import descriptors as D
from .memory import PhysMemError, PhysMemory, read_tables_via_read
from .memtype import from_mair, s2_memattr_name
from .sysregs import MAIR_EL1, TCR_EL1, TTBR, VTCR_EL2, VTTBR_EL2

U64 = np.uint64
PS_BITS = {0: 32, 1: 36, 2: 40, 3: 42, 4: 44, 5: 48, 6: 52}
TG0_SHIFT = {0: 12, 1: 16, 2: 14}
TG1_SHIFT = {1: 14, 2: 12, 3: 16}
# Stage-2 start level by granule and VTCR_EL2.SL0 (Arm ARM D8.2.x; SL2 extends 4K to -1).
S2_START = {12: {0: 2, 1: 1, 2: 0, 3: 3}, 14: {0: 3, 1: 2, 2: 1, 3: 0}, 16: {0: 3, 1: 2, 2: 1}}
MAX_ERRORS = 1000                 # errors kept one by one; further ones are only counted
MAX_ENTRIES_PER_LEVEL = 1 << 23   # bounds memory when tables alias each other (fuzz, cycles)


@dataclass(frozen=True)
class WalkError:
    """A named problem found while walking; ``kind`` is stable for tools to match on."""

    kind: str
    message: str
    level: int | None = None
    ia: int | None = None
    table: int | None = None
    descriptor: int | None = None

    def as_dict(self) -> dict:
        return {"kind": self.kind, "level": self.level, "ia": self.ia, "table": self.table,
                "descriptor": self.descriptor, "message": self.message}


@dataclass(frozen=True)
class Regime:
    """Everything a walk needs, decoded once from TCR/TTBR or VTCR/VTTBR."""

    stage: int
    granule_shift: int
    ia_bits: int
    oa_bits: int
    start_level: int
    root: int
    start_entries: int
    fmt: D.AddressFormat
    upper: bool = False
    hpd: bool = False
    ha: bool = False
    fwb: bool = False
    mair: int | None = None
    sh_from_tcr: int = 0            # LPA2: shareability comes from TCR/VTCR.SH0/SH1
    privileged_el: int = 1          # stage 1: the EL its privileged permissions are for
    config_errors: tuple[WalkError, ...] = ()
    fatal: bool = False             # the registers describe no walkable table

    @property
    def stride(self) -> int:
        return self.granule_shift - 3

    def level_shift(self, level: int) -> int:
        return self.granule_shift + self.stride * (3 - level)

    @cached_property
    def block_levels(self) -> frozenset[int]:
        """Levels where a block descriptor is allowed (else it is a translation fault)."""
        if self.granule_shift == 12:
            return frozenset({0, 1, 2} if self.fmt.kind == "lpa2" else {1, 2})
        return frozenset({1, 2} if self.fmt.kind != "48" else {2})

    @property
    def granule(self) -> int:
        return 1 << self.granule_shift

    @property
    def ia_mask(self) -> int:
        return (1 << self.ia_bits) - 1

    @property
    def ia_fill(self) -> int:
        """Bits set above the input range in every address of this range (TTBR1: all ones)."""
        return ((1 << 64) - 1) & ~self.ia_mask if self.upper else 0

    def describe(self) -> str:
        return (f"stage {self.stage}, {self.granule >> 10}K granule, {self.ia_bits}-bit input,"
                f" {self.oa_bits}-bit output, start level {self.start_level}"
                f" ({self.start_entries} entries), root {self.root:#x}"
                + (", upper range" if self.upper else ""))

    @classmethod
    def from_vtcr(cls, vtcr: int, vttbr: int, hcr: int = 0) -> "Regime":
        """Stage 2 from raw VTCR_EL2/VTTBR_EL2 (VMID and CnP bits are ignored)."""
        f = VTCR_EL2.decode(vtcr)
        errors: list[WalkError] = []
        shift = TG0_SHIFT.get(f["TG0"])
        if shift is None:
            return cls._fatal(2, "invalid-granule", f"VTCR_EL2.TG0={f['TG0']} is reserved")
        oa_bits, fmt = _output_format(shift, PS_BITS.get(f["PS"], 48), f["DS"])
        ia_bits = cls._ia_bits(f["T0SZ"], shift, fmt, errors, "VTCR_EL2.T0SZ")
        sl0 = f["SL0"]
        if shift == 12 and f["DS"] and f["SL2"]:
            start = -1 if sl0 == 0 else None
        else:
            start = S2_START[shift].get(sl0)
            if shift == 14 and sl0 == 3 and fmt.kind != "lpa2":
                start = None
        if start is None:
            return cls._fatal(2, "invalid-start-level",
                              f"VTCR_EL2.SL0={sl0} is reserved for this granule")
        stride = shift - 3
        resolved = ia_bits - (shift + stride * (3 - start))
        if not 1 <= resolved <= stride + 4:
            return cls._fatal(
                2, "invalid-start-level",
                f"VTCR_EL2.SL0={sl0} (level {start}) cannot start a {ia_bits}-bit IPA walk "
                f"with a {1 << (shift - 10)}K granule: it would need 2^{resolved} entries")
        hcr_fwb = bool(hcr >> 46 & 1)
        return cls._finish(
            stage=2, granule_shift=shift, ia_bits=ia_bits, oa_bits=oa_bits, start_level=start,
            baddr=VTTBR_EL2.build(BADDR=VTTBR_EL2.get(vttbr, "BADDR")) | (vttbr & 0x3C),
            entries=1 << resolved, fmt=fmt, errors=errors, ha=bool(f["HA"]), fwb=hcr_fwb,
            sh_from_tcr=f["SH0"])

    @classmethod
    def from_tcr(cls, tcr: int, ttbr: int, upper: bool = False, mair: int | None = None,
                 el: int = 1) -> "Regime":
        """Stage 1 of the EL1&0 regime (``el`` 2: EL2&0 with E2H, or EL2 with its TCR_EL2
        re-expressed in this layout) from raw TCR/TTBRn values."""
        f = TCR_EL1.decode(tcr)
        n = "1" if upper else "0"
        errors: list[WalkError] = []
        shift = (TG1_SHIFT if upper else TG0_SHIFT).get(f[f"TG{n}"])
        if shift is None:
            return cls._fatal(1, "invalid-granule", f"TCR.TG{n}={f[f'TG{n}']} is reserved")
        if f[f"EPD{n}"]:
            return cls._fatal(1, "walk-disabled", f"TCR.EPD{n}=1: no walks from TTBR{n}")
        oa_bits, fmt = _output_format(shift, PS_BITS.get(f["IPS"], 48), f["DS"])
        ia_bits = cls._ia_bits(f[f"T{n}SZ"], shift, fmt, errors, f"TCR.T{n}SZ")
        stride = shift - 3
        start = 3 - (ia_bits - shift - 1) // stride
        return cls._finish(
            stage=1, granule_shift=shift, ia_bits=ia_bits, oa_bits=oa_bits, start_level=start,
            baddr=TTBR.build(BADDR=TTBR.get(ttbr, "BADDR")) | (ttbr & 0x3C),
            entries=1 << (ia_bits - (shift + stride * (3 - start))), fmt=fmt, errors=errors,
            upper=upper, hpd=bool(f[f"HPD{n}"]), ha=bool(f["HA"]), mair=mair,
            sh_from_tcr=f[f"SH{n}"], privileged_el=el)

    @staticmethod
    def _ia_bits(tsz: int, shift: int, fmt: D.AddressFormat, errors: list, name: str) -> int:
        """Input size from TnSZ, clamped like QEMU does when out of range."""
        min_tsz = 12 if fmt.kind != "48" else 16
        max_tsz = 48 if shift != 16 else 47
        if not min_tsz <= tsz <= max_tsz:
            errors.append(WalkError("invalid-tsz", f"{name}={tsz} outside {min_tsz}..{max_tsz};"
                                    f" clamped as QEMU does"))
            tsz = min(max(tsz, min_tsz), max_tsz)
        return 64 - tsz

    @classmethod
    def _finish(cls, *, baddr: int, entries: int, fmt: D.AddressFormat, errors: list,
                **kw) -> "Regime":
        root = fmt.table_base(baddr)
        align = max(entries * 8, 64 if fmt.kind != "48" else 8)
        if root % align:
            errors.append(WalkError("misaligned-table-base",
                                    f"root table {root:#x} is not aligned to {align:#x}; "
                                    f"using {root & ~(align - 1):#x}", kw["start_level"]))
            root &= ~(align - 1)
        return cls(root=root, start_entries=entries, fmt=fmt, config_errors=tuple(errors), **kw)

    @classmethod
    def _fatal(cls, stage: int, kind: str, message: str) -> "Regime":
        return cls(stage=stage, granule_shift=12, ia_bits=0, oa_bits=0, start_level=0, root=0,
                   start_entries=0, fmt=D.AddressFormat("48", 12),
                   config_errors=(WalkError(kind, message),), fatal=True)


def _output_format(shift: int, ps_bits: int, ds: int) -> tuple[int, D.AddressFormat]:
    if ds and shift in (12, 14):
        return ps_bits, D.AddressFormat("lpa2", shift)
    if shift == 16 and ps_bits == 52:
        return 52, D.AddressFormat("lpa", shift)
    return min(ps_bits, 48), D.AddressFormat("48", shift)


@dataclass
class LeafBatch:
    """Leaves (blocks/pages) of one level; ``inherited`` holds stage-1 table attributes
    (APTable/UXNTable/PXNTable bits, positioned as in a table descriptor) or None."""

    level: int
    ia: np.ndarray
    oa: np.ndarray
    desc: np.ndarray
    inherited: np.ndarray | None


class Visitor:
    """Callbacks for ``Walker.walk``; override what you need (arrays, one call per level)."""

    def leaves(self, batch: LeafBatch) -> None:
        pass

    def tables(self, level: int, ia: np.ndarray, desc: np.ndarray, next_table: np.ndarray
               ) -> None:
        pass


@dataclass(frozen=True)
class Mapping:
    ia: int
    oa: int
    size: int
    level: int
    attrs: dict

    def as_dict(self) -> dict:
        return {"ia": self.ia, "oa": self.oa, "size": self.size, "level": self.level,
                "attrs": self.attrs}


@dataclass(frozen=True)
class Translation:
    ia: int
    oa: int
    level: int
    size: int
    descriptor: int
    attrs: dict


@dataclass(frozen=True)
class Fault:
    ia: int
    level: int
    kind: str
    message: str = ""


# Which walk errors become which architectural fault for one translation.
FAULT_OF_ERROR = {"table-outside-memory": "external-walk", "address-size": "address-size",
                  "block-not-allowed": "translation", "reserved-descriptor": "translation",
                  "table-cycle": "table-cycle", "walk-too-large": "translation"}


@dataclass
class Walker:
    regime: Regime
    mem: object
    errors: list[WalkError] = field(default_factory=list)
    error_counts: dict[str, int] = field(default_factory=dict)
    max_entries: int = MAX_ENTRIES_PER_LEVEL

    def __post_init__(self):
        self._read_tables = getattr(self.mem, "read_tables", None) or (
            lambda pas, n: read_tables_via_read(self.mem, pas, n))
        self._attr_cache: dict[tuple[int, int], dict] = {}

    # -- errors -------------------------------------------------------------------------
    def _error(self, kind: str, message: str, level=None, ia=None, table=None, desc=None):
        self.error_counts[kind] = self.error_counts.get(kind, 0) + 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(WalkError(kind, message, level, ia, table, desc))

    def _errors_at(self, kind: str, level: int, mask: np.ndarray, ia: np.ndarray,
                   desc: np.ndarray, tables_of, what: str) -> None:
        """Record one error per True in ``mask``; ``tables_of(idx)`` gives the PA of the table
        holding each entry (only evaluated when there is something to report)."""
        idx = np.flatnonzero(mask)
        if not idx.size:
            return
        keep = idx[:max(0, MAX_ERRORS - len(self.errors))]
        fill = self.regime.ia_fill
        for i, table in zip(keep.tolist(), tables_of(keep).tolist()):
            d = int(desc[i])
            self.errors.append(WalkError(kind, f"level {level}: {what} (descriptor {d:#x})",
                                         level, int(ia[i]) | fill, int(table), d))
        self.error_counts[kind] = self.error_counts.get(kind, 0) + int(idx.size)

    def error_dicts(self) -> list[dict]:
        out = [e.as_dict() for e in self.errors]
        dropped = sum(self.error_counts.values()) - len(self.errors)
        if dropped > 0:
            out.append(WalkError("truncated", f"{dropped} more errors not listed: "
                                 f"{self.error_counts}").as_dict())
        return out

    # -- the walk -----------------------------------------------------------------------
    def walk(self, visitor: Visitor, start: int = 0, end: int | None = None) -> None:
        """Visit every leaf and table overlapping input addresses [start, end) of the range
        (offsets within the TTBR range: the upper range's fill bits are ignored)."""
        r = self.regime
        for e in r.config_errors:
            self._error(e.kind, e.message, e.level)
        if r.fatal:
            return
        lo = start & r.ia_mask
        hi = (1 << r.ia_bits) if end is None else min(end - (start - lo), 1 << r.ia_bits)
        full = lo == 0 and hi == 1 << r.ia_bits
        stage1 = r.stage == 1
        table_bits = U64(D.field_mask(D.S1_TABLE, ("PXNTable", "UXNTable", "APTable"))
                         if stage1 and not r.hpd else 0)
        oa_limit = U64(1 << r.oa_bits) if r.oa_bits < 64 else None
        if oa_limit is not None and r.root >= oa_limit:
            # AArch64.S1Walk/S2Walk: OAOutOfRange(baseaddress) -> Fault_AddressSize, level 0
            # whatever the start level (Arm ARM R_BFHQH); nothing below it is walked
            self._error("address-size", f"root table {r.root:#x} is beyond the "
                        f"{r.oa_bits}-bit output size", 0, lo | r.ia_fill, r.root)
            return

        tpa = np.array([r.root], dtype=U64)
        tia = np.zeros(1, dtype=U64)
        ancestors = np.empty((1, 0), dtype=U64)
        inherited = np.zeros(1, dtype=U64) if table_bits else None
        entries = r.start_entries
        for level in range(r.start_level, 4):
            if not tpa.size:
                break
            shift = r.level_shift(level)
            budget = max(1, self.max_entries // entries)
            if tpa.size > budget:
                self._error("walk-too-large", f"level {level}: {tpa.size} tables to read; only"
                            f" the first {budget} are walked (aliased or cyclic tables?)", level)
                tpa, tia, ancestors = tpa[:budget], tia[:budget], ancestors[:budget]
                inherited = None if inherited is None else inherited[:budget]
            rows, ok = self._read_tables(tpa, entries)
            if not ok.all():
                for pa, base in zip(tpa[~ok].tolist(), tia[~ok].tolist()):
                    self._error("table-outside-memory", f"level {level}: table at {pa:#x} "
                                f"is not in the memory given", level, base | r.ia_fill, pa)
            ia = (tia[:, None] + (np.arange(entries, dtype=U64) << U64(shift))).ravel()
            desc = rows.ravel()
            row = None                  # entry -> table row, built only when needed
            if not ok.all():
                keep = np.repeat(ok, entries)
                row = np.repeat(np.arange(tpa.size), entries)[keep]
                ia, desc = ia[keep], desc[keep]
            if not full:
                sel = (ia + U64(1 << shift) > U64(lo)) & (ia < U64(hi))
                row = (np.repeat(np.arange(tpa.size), entries) if row is None else row)[sel]
                ia, desc = ia[sel], desc[sel]
            tables_of = ((lambda idx, n=entries, t=tpa: t[idx // n]) if row is None
                         else (lambda idx, rw=row, t=tpa: t[rw[idx]]))
            row_of = (lambda idx, n=entries: idx // n) if row is None else row.__getitem__

            kind = desc & U64(3)      # bits[1:0]: 0b01 block, 0b11 table/page, else invalid
            if level == 3:
                leaf = kind == U64(3)
                self._errors_at("reserved-descriptor", level, kind == U64(1), ia, desc,
                                tables_of, "bits[1:0]=0b01 is reserved at level 3")
                nxt = None
            else:
                block = kind == U64(1)
                if level in r.block_levels:
                    leaf = block
                else:
                    leaf = np.zeros_like(block)
                    self._errors_at("block-not-allowed", level, block, ia, desc, tables_of,
                                    f"no block descriptors at this level with a "
                                    f"{r.granule >> 10}K granule")
                nxt = kind == U64(3)
            self._visit_leaves(visitor, level, shift, ia, desc, leaf, inherited, row_of,
                               tables_of, oa_limit)
            if nxt is None or not nxt.any():
                break
            t_idx = np.flatnonzero(nxt)
            t_desc, t_ia = desc[t_idx], ia[t_idx]
            t_row = np.asarray(row_of(t_idx))
            own = tpa[t_row]
            t_tables = lambda i, o=own: o[i]  # noqa: E731
            na = r.fmt.output_address(t_desc, r.granule_shift)
            bad = np.zeros(t_idx.size, dtype=bool)
            if oa_limit is not None:
                bad |= na >= oa_limit
                self._errors_at("address-size", level, bad, t_ia, t_desc, t_tables,
                                f"next-level table beyond the {r.oa_bits}-bit output size")
            cyc = ((na == own) | (ancestors[t_row] == na[:, None]).any(axis=1)) & ~bad
            self._errors_at("table-cycle", level, cyc, t_ia, t_desc, t_tables,
                            "table descriptor points back to a table on its own path")
            good = ~(bad | cyc)
            visitor.tables(level, t_ia[good], t_desc[good], na[good])
            ancestors = np.concatenate([ancestors[t_row[good]], own[good, None]], axis=1)
            if inherited is not None:
                inherited = inherited[t_row[good]] | (t_desc[good] & table_bits)
            tpa, tia = na[good], t_ia[good]
            entries = 1 << r.stride

    def _visit_leaves(self, visitor, level, shift, ia, desc, leaf, inherited, row_of,
                      tables_of, oa_limit):
        r = self.regime
        if leaf.all():
            l_idx, l_ia, l_desc = None, ia, desc
        else:
            l_idx = np.flatnonzero(leaf)
            if not l_idx.size:
                return
            l_ia, l_desc = ia[l_idx], desc[l_idx]
        sub = (lambda i: i) if l_idx is None else l_idx.__getitem__
        oa = r.fmt.output_address(l_desc, shift)
        if oa_limit is not None:
            too_big = oa >= oa_limit
            if too_big.any():
                self._errors_at("address-size", level, too_big, l_ia, l_desc,
                                lambda i: tables_of(sub(i)),
                                f"output address beyond the {r.oa_bits}-bit output size")
                keep = np.flatnonzero(~too_big)
                l_idx = sub(keep)
                sub = l_idx.__getitem__
                l_ia, l_desc, oa = l_ia[keep], l_desc[keep], oa[keep]
        self._check_reserved_attrs(level, l_ia, l_desc, lambda i: tables_of(sub(i)))
        inh = None
        if inherited is not None:
            inh = inherited[row_of(sub(np.arange(l_desc.size)))]
        visitor.leaves(LeafBatch(level, l_ia, oa, l_desc, inh))

    def _check_reserved_attrs(self, level, ia, desc, tables_of):
        """Reserved SH and stage-2 MemAttr encodings; masks and compares only (hot path)."""
        r = self.regime
        if r.fmt.shareability_in_descriptor():
            sh = D.S2_LEAF.fields["SH"]
            self._errors_at("reserved-shareability", level,
                            (desc & U64(sh.mask)) == U64(1 << sh.lo), ia, desc, tables_of,
                            "SH=0b01 is reserved")
        if r.stage == 2:
            lo = D.S2_LEAF.fields["MemAttr"].lo
            if r.fwb:     # MemAttr[2:0] = 0b100
                bad = (desc & U64(0b111 << lo)) == U64(0b100 << lo)
            else:         # Normal (MemAttr[3:2] != 0) with inner MemAttr[1:0] = 0b00
                bad = ((desc & U64(0b1100 << lo)) != U64(0)) & ((desc & U64(0b11 << lo)) == U64(0))
            self._errors_at("reserved-memattr", level, bad, ia, desc, tables_of,
                            "reserved stage-2 MemAttr encoding")

    # -- queries ------------------------------------------------------------------------
    def mappings(self) -> list[Mapping]:
        """Every mapping, as runs of contiguous leaves with equal attributes and level."""
        collector = _RunCollector(self.regime)
        self.walk(collector)
        return [Mapping(ia, oa, size, level, self.attrs(key, level))
                for ia, oa, size, level, key in collector.runs()]

    def translate(self, ia: int) -> Translation | Fault:
        """The architectural answer for one input address (no permission check)."""
        r = self.regime
        if r.fatal:
            return Fault(ia, 0, "translation", r.config_errors[0].message)
        if (ia & ~r.ia_mask) != r.ia_fill:     # a level-0 fault (VA/IPAIsOutOfRange)
            return Fault(ia, 0, "translation",
                         f"{ia:#x} is outside the {r.ia_bits}-bit "
                         f"{'upper' if r.upper else 'lower'} range")
        probe = Walker(r, self.mem, max_entries=self.max_entries)
        probe._read_tables = self._read_tables
        found = _FirstLeaf(r)
        probe.walk(found, ia, ia + 1)
        structural = [e for e in probe.errors if e.kind in FAULT_OF_ERROR]
        if found.leaf is None:
            if structural:
                e = structural[0]
                return Fault(ia, e.level, FAULT_OF_ERROR[e.kind], e.message)
            return Fault(ia, found.deepest_table + 1 if found.deepest_table is not None
                         else r.start_level, "translation", "invalid descriptor")
        level, leaf_ia, oa, desc, inh = found.leaf
        size = 1 << r.level_shift(level)
        attrs = self.attrs(_attr_key(r, np.array([desc], U64),
                                     None if inh is None else np.array([inh], U64))[0].item(),
                           level)
        if not attrs["af"] and not r.ha:
            return Fault(ia, level, "access-flag", "AF=0 and hardware AF update is off")
        return Translation(ia, oa + ((ia & r.ia_mask) - leaf_ia), level, size, desc, attrs)

    def attrs(self, key: int, level: int) -> dict:
        """Decoded attributes of a leaf attribute key (memoized: keys repeat heavily)."""
        cached = self._attr_cache.get((key, level))
        if cached is None:
            cached = self._attr_cache[(key, level)] = _decode_attrs(self.regime, key)
        return cached


def _attr_key(r: Regime, desc: np.ndarray, inherited: np.ndarray | None) -> np.ndarray:
    """The architectural attribute bits of each leaf, with stage-1 table restrictions
    (APTable/UXNTable/PXNTable) folded into AP/UXN/PXN."""
    not_oa = ~r.fmt.address_bits() & ((1 << 64) - 1)
    if r.stage == 2:
        return desc & U64(D.field_mask(D.S2_LEAF, D.S2_ATTR_FIELDS) & not_oa)
    key = desc & U64(D.field_mask(D.S1_LEAF, D.S1_ATTR_FIELDS) & not_oa)
    if inherited is not None and inherited.any():
        t = D.S1_TABLE.fields
        ap_table = t["APTable"].get(inherited)
        ap_pos = D.S1_LEAF.fields["AP"].lo
        # APTable[1] forbids writes (sets AP[2]); APTable[0] forbids EL0 (clears AP[1]).
        key = key | ((ap_table & U64(2)) << U64(ap_pos))
        key = key & ~((ap_table & U64(1)) << U64(ap_pos))
        key = key | (t["PXNTable"].get(inherited) << U64(D.S1_LEAF.fields["PXN"].lo))
        key = key | (t["UXNTable"].get(inherited) << U64(D.S1_LEAF.fields["UXN"].lo))
    return key


def _decode_attrs(r: Regime, key: int) -> dict:
    sh = D.SHAREABILITY[D.S1_LEAF.get(key, "SH") if r.fmt.shareability_in_descriptor()
                        else r.sh_from_tcr]
    if r.stage == 2:
        f = D.S2_LEAF.decode(key)
        xn = f["XN"]
        return {"memattr": f["MemAttr"], "memtype": s2_memattr_name(f["MemAttr"], r.fwb),
                "s2ap": D.S2_AP[f["S2AP"]], "sh": sh, "af": bool(f["AF"]), "xn": xn,
                "exec_el1": xn in (0, 3), "exec_el0": xn in (0, 1),
                "contiguous": bool(f["Contiguous"]), "dbm": bool(f["DBM"])}
    f = D.S1_LEAF.decode(key)
    memtype = None
    if r.mair is not None:
        attr = MAIR_EL1.get(r.mair, f"Attr{f['AttrIndx']}")
        memtype = str(from_mair(attr, sh))
    ap = D.S1_AP[f["AP"]].replace("EL1", f"EL{r.privileged_el}")
    return {"attr_index": f["AttrIndx"], "memtype": memtype, "ap": ap, "sh": sh,
            "af": bool(f["AF"]), "ng": bool(f["nG"]), "ns": bool(f["NS"]),
            "pxn": bool(f["PXN"]), "uxn": bool(f["UXN"]), "contiguous": bool(f["Contiguous"]),
            "dbm": bool(f["DBM"])}


class _RunCollector(Visitor):
    """Collects leaves per level, then coalesces them into runs (vectorized)."""

    def __init__(self, regime: Regime):
        self.regime = regime
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def leaves(self, batch: LeafBatch) -> None:
        key = _attr_key(self.regime, batch.desc, batch.inherited)
        self.parts.append((batch.ia, batch.oa, key,
                           np.full(batch.ia.size, batch.level, dtype=np.int8)))

    def runs(self):
        if not self.parts:
            return []
        ia, oa, key, level = (np.concatenate(p) if len(p) > 1 else p[0]
                              for p in zip(*self.parts))
        if not ia.size:
            return []
        if len(self.parts) > 1:
            order = np.argsort(ia, kind="stable")
            ia, oa, key, level = ia[order], oa[order], key[order], level[order]
        levels = {int(p[3][0]) for p in self.parts if p[3].size}
        if len(levels) == 1:    # one level: a scalar size, no per-leaf size array
            size = U64(1 << self.regime.level_shift(levels.pop()))
            step = np.diff(ia) != size
        else:
            shifts = np.array([self.regime.level_shift(lv) for lv in range(-1, 4)], dtype=U64)
            size = U64(1) << shifts[level.astype(np.int64) + 1]
            step = (ia[1:] - ia[:-1] != size[:-1]) | (level[1:] != level[:-1])
        delta = oa - ia         # equal deltas + contiguous IA = contiguous OA (mod 2^64)
        brk = np.ones(ia.size, dtype=bool)
        brk[1:] = step | (delta[1:] != delta[:-1]) | (key[1:] != key[:-1])
        starts = np.flatnonzero(brk)
        lasts = np.append(starts[1:] - 1, ia.size - 1)
        ends = ia[lasts] + (size if size.ndim == 0 else size[lasts])
        fill = self.regime.ia_fill
        return zip((ia[starts] | U64(fill)).tolist(), oa[starts].tolist(),
                   (ends - ia[starts]).tolist(), level[starts].tolist(), key[starts].tolist())


class _FirstLeaf(Visitor):
    def __init__(self, regime: Regime):
        self.leaf = None
        self.deepest_table: int | None = None

    def leaves(self, batch: LeafBatch) -> None:
        if batch.ia.size and self.leaf is None:
            inh = None if batch.inherited is None else int(batch.inherited[0])
            self.leaf = (batch.level, int(batch.ia[0]), int(batch.oa[0]), int(batch.desc[0]),
                         inh)

    def tables(self, level, ia, desc, next_table) -> None:
        if ia.size:
            self.deepest_table = level


class TranslatedMemory(PhysMemory):
    """Memory addressed through a translation: a guest's stage-1 tables sit at IPAs, so a
    stage-1 walk under stage 2 reads through this, with the stage-2 walker doing IPA -> PA
    (one translation per granule page, cached)."""

    def __init__(self, walker: Walker, mem):
        self.walker = walker
        self.mem = mem
        self._pages: dict[int, int | str] = {}

    def _page(self, ia: int) -> int:
        page = ia >> self.walker.regime.granule_shift
        hit = self._pages.get(page)
        if hit is None:
            t = self.walker.translate(page << self.walker.regime.granule_shift)
            hit = self._pages[page] = t.oa if isinstance(t, Translation) else \
                f"{t.kind} fault at level {t.level}"
        if isinstance(hit, str):
            raise PhysMemError(f"IPA {ia:#x} is not mapped at stage 2: {hit}")
        return hit

    def read(self, pa: int, n: int) -> bytes:
        shift = self.walker.regime.granule_shift
        out = bytearray()
        pos, end = pa, pa + n
        while pos < end:
            chunk = min(end, ((pos >> shift) + 1) << shift) - pos
            base = self._page(pos)
            out += self.mem.read(base + (pos & ((1 << shift) - 1)), chunk)
            pos += chunk
        return bytes(out)
