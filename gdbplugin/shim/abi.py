"""The shim's binary interface, declared once: parameter block, ring header, record, and the
numbers that go in them (kinds, policies, rules, diagnostics, statistics, flags).

The C side is gdbplugin/shim/shim.h; tests/unit/test_shim_abi.py compiles static assertions
generated from this module against it, so the two cannot drift.  Every code table is a
``Codes``: value -> our name, with the C identifier each value has in shim.h.
ring.py decodes and launch.py encodes with what is here; the record's hot path uses a
``struct.Struct`` derived from ``RECORD`` (construct parses ~50x slower per record).
"""
from __future__ import annotations

import struct

from construct import Array, Bytes, Int8ul, Int16ul, Int32ul, Int64ul, Padding, Struct


class Codes(dict):
    """value -> name, plus ``c`` (C identifier -> value) and ``ids`` (name -> value)."""

    def __init__(self, prefix: str, table: dict[int, tuple[str, str]]):
        super().__init__({v: name for v, (name, _) in table.items()})
        self.c = {prefix + c_name: v for v, (_, c_name) in table.items()}
        self.ids = {name: v for v, name in self.items()}


PARAMS_MAGIC = 0x31504D4948533253          # "S2SHIMP1"
PARAMS_VERSION = 1
RING_MAGIC = 0x31474E4952433253            # "S2CRING1"
RING_VERSION = 1
MAX_VCPUS = 16
# PF_TRACK_WRITES: the page copies taken from the end of the stage-2 table pool (s2.c)
SNAP_SLOTS = 256
SNAP_BYTES = SNAP_SLOTS * 2 * 4096

# struct params: at symbol shim_params (_start - 4 KiB), written by the launcher
PARAMS = Struct(
    "magic" / Int64ul, "version" / Int64ul, "policy" / Int64ul, "entry" / Int64ul,
    "flags" / Int64ul, "ring_records" / Int64ul, "ring_full" / Int64ul, "observe" / Int64ul,
    "hook_mask" / Int64ul, "dtb" / Int64ul, "pool_size" / Int64ul, "entry_x0" / Int64ul,
)

# struct record: 64 bytes; complete once seq == index + 1
RECORD = Struct(
    "seq" / Int64ul, "kind" / Int16ul, "vcpu" / Int8ul, "el" / Int8ul, "access" / Int8ul,
    "op" / Int8ul, "flags" / Int16ul, "pc" / Int64ul, "esr" / Int64ul, "ipa" / Int64ul,
    "pa" / Int64ul, "size" / Int64ul, "va" / Int64ul,
)
RECORD_SIZE = RECORD.sizeof()
RECORD_FORMAT = struct.Struct("<" + "".join(s.subcon.fmtstr[1:] for s in RECORD.subcons))

# struct ring_header: at symbol shim_ring (page-aligned), 4 KiB
RING_HEADER = Struct(
    "magic" / Int64ul, "version" / Int32ul, "record_size" / Int32ul, "capacity" / Int64ul,
    "records" / Int64ul, "write_index" / Int64ul, "read_index" / Int64ul, "overflow" / Int64ul,
    "full_mode" / Int32ul, "halted" / Int32ul, "shim_base" / Int64ul, "link_base" / Int64ul,
    "carve_base" / Int64ul, "carve_size" / Int64ul, "ram_base" / Int64ul, "ram_end" / Int64ul,
    "pool_base" / Int64ul, "pool_size" / Int64ul, "pool_used" / Int64ul, "vttbr" / Int64ul,
    "vtcr" / Int64ul, "hcr" / Int64ul, "policy" / Int32ul, "policy_effective" / Int32ul,
    "flags" / Int64ul, "dtb" / Int64ul, "entry" / Int64ul, "hook_mask" / Int64ul,
    "stalls" / Int64ul, "observe" / Int64ul, "mmio_count" / Int64ul,
    "fw_cfg" / Array(2, Int64ul), "pad0" / Padding(16),
    "stat" / Array(32, Int64ul),
    "diag" / Bytes(RECORD_SIZE),
    "mpidr" / Array(MAX_VCPUS, Int64ul),
    "mmio" / Array(64, Array(2, Int64ul)),
    "ctr_el0" / Int64ul, "clidr_el1" / Int64ul, "midr_el1" / Int64ul,
    "rom_count" / Int64ul, "rom" / Array(8, Array(2, Int64ul)),
    "pad1" / Padding(4096 - 0x760),
)
HEADER_SIZE = RING_HEADER.sizeof()


def offset_of(layout: Struct, field: str) -> int:
    """Byte offset of ``field`` in a fixed-size construct Struct."""
    off = 0
    for sub in layout.subcons:
        if sub.name == field:
            return off
        off += sub.sizeof()
    raise KeyError(field)


POLICIES = Codes("POL_", {0: ("none", "NONE"), 1: ("rfc2013", "RFC2013"), 2: ("kvm", "KVM"),
                          3: ("xen", "XEN"), 4: ("fwb", "FWB")})
RING_FULL = Codes("FULL_", {0: ("halt", "HALT"), 1: ("wait", "WAIT"), 2: ("drop", "DROP")})
# params.flags (PF_*)
PARAM_FLAGS = Codes("PF_", {1: ("blocks", "BLOCKS"), 2: ("poweroff", "POWEROFF"),
                            4: ("quiet", "QUIET"), 8: ("trap_cmo", "TRAP_CMO"),
                            16: ("track_writes", "TRACK_WRITES"),
                            32: ("track_access", "TRACK_ACCESS")})
KINDS = Codes("K_", {
    1: ("shim-start", "SHIM_START"), 2: ("vcpu-start", "VCPU_START"),
    3: ("s2-fault", "S2_FAULT"), 4: ("s2-map", "S2_MAP"), 5: ("s2-perm", "S2_PERM"),
    6: ("s2-unmap", "S2_UNMAP"), 7: ("dc", "DC"), 8: ("ic", "IC"), 9: ("flush-vm", "FLUSH_VM"),
    10: ("tlbi", "TLBI"), 11: ("sysreg-write", "SYSREG"), 12: ("set-way", "SET_WAY"),
    13: ("smc", "SMC"), 14: ("hvc", "HVC"), 15: ("tvm", "TVM"), 16: ("diag", "DIAG"),
    17: ("psci-cpu-on", "PSCI_ON"), 18: ("guest-cmo", "GUEST_CMO"),
    19: ("host-dma", "HOST_DMA"), 20: ("s2-wrprotect", "S2_WRPROTECT"),
    21: ("s2-written", "S2_WRITTEN"), 22: ("s2-access", "S2_ACCESS"),
    23: ("s2-hide", "S2_HIDE")})
ACCESS = Codes("A_", {0: (None, "NONE"), 1: ("read", "READ"), 2: ("write", "WRITE"),
                      3: ("exec", "EXEC")})
# the policy rule a maintenance operation (or TVM change) carried out.  Maintenance rules use
# the ids of gdbplugin/model/policies.py (FWB's exec-fault invalidation is KVM's rule; id 10
# only tells the two apart in the ring).
RULES = Codes("R_", {
    0: (None, "NONE"),
    1: ("kvm.clean-on-translation-fault", "KVM_CLEAN_ON_FAULT"),  # stage2_map_walker_try_leaf
    2: ("kvm.icache-inval-on-exec-fault", "KVM_ICACHE_ON_EXEC"),  # .. / stage2_attr_walker
    3: ("kvm.flush-on-cache-toggle", "KVM_TOGGLE"),          # kvm_toggle_cache -> stage2_flush_vm
    4: ("kvm.trap-set-way", "KVM_SET_WAY"),                  # kvm_set_way_flush
    5: ("xen.flush-on-alloc", "XEN_ALLOC"),                  # alloc_heap_pages -> flush_page_to_ram
    6: ("xen.trap-set-way", "XEN_SET_WAY"),                  # p2m_set_way_flush -> p2m_flush_vm
    7: ("xen.flush-on-toggle", "XEN_TOGGLE"),                # p2m_toggle_cache -> p2m_flush_vm
    8: ("rfc2013.clean-first-map-uncached", "RFC_CLEAN_UNCACHED"),   # seed point 1 (+ 4)
    9: ("rfc2013.flush-on-stage1-enable", "RFC_STAGE1_ENABLE"),      # seed point 2
    10: ("kvm.icache-inval-on-exec-fault", "FWB_ICACHE_ON_EXEC"),
    11: ("kvm.tvm-at-reset", "KVM_TVM_RESET"), 12: ("kvm.tvm-off-caches-on", "KVM_TVM_CACHES_ON"),
    13: ("rfc2013.tvm-at-reset", "RFC_TVM_RESET"), 14: ("rfc2013.tvm-off-mmu-on", "RFC_TVM_MMU_ON"),
    15: ("xen.tvm-off-caches-on", "XEN_TVM_CACHES_ON"), 16: ("observe", "OBSERVE")})
DIAGS = Codes("D_", {
    1: ("unknown-trap", "UNKNOWN_TRAP"), 2: ("outside-ram-and-mmio", "OUTSIDE"),
    3: ("ring-full", "RING_FULL"), 4: ("el2-exception", "EL2_EXCEPTION"),
    5: ("bad-params", "PARAMS"), 6: ("no-dtb", "NO_DTB"), 7: ("table-pool-exhausted", "POOL"),
    8: ("unexpected-fault-status", "FAULT_STATUS"), 9: ("unexpected-sysreg", "SYSREG"),
    10: ("vcpu-range", "VCPUS"), 11: ("memory-layout", "MEMORY"),
    12: ("shim-memory", "SHIM_MEMORY"), 13: ("el2-interrupt", "EL2_INTERRUPT"),
    14: ("fwb-missing", "FWB_MISSING"), 15: ("not-el2", "NOT_EL2"), 16: ("cpu", "CPU"),
    17: ("mmio-no-syndrome", "MMIO")})
# ring_header.stat[]
STATS = Codes("ST_", dict(enumerate([
    ("traps", "TRAPS"), ("dabt", "DABT"), ("iabt", "IABT"), ("map_normal", "MAP_NORMAL"),
    ("map_device", "MAP_DEVICE"), ("exec_grant", "EXEC_GRANT"), ("dc_bytes", "DC_BYTES"),
    ("ic_ops", "IC_OPS"), ("flush_vm", "FLUSH_VM"), ("sysreg", "SYSREG"),
    ("set_way", "SET_WAY"), ("smc", "SMC"), ("hvc", "HVC"), ("spurious", "SPURIOUS"),
    ("tables", "TABLES"), ("vcpus", "VCPUS"), ("guest_cmo", "GUEST_CMO"),
    ("map_rom", "MAP_ROM"), ("rom_writes", "ROM_WRITES"), ("fw_cfg", "FWCFG"),
    ("host_dma", "HOST_DMA"), ("host_dma_bytes", "HOST_DMA_BYTES"),
    ("write_grant", "WRITE_GRANT"), ("wrprotect", "WRPROTECT"), ("snapshots", "SNAPSHOTS"),
    ("snapshot_full", "SNAPSHOT_FULL"), ("accesses", "ACCESS"), ("refetch", "REFETCH")])))
# sysreg-write op: the EL1 registers HCR_EL2.TVM traps (tvm_write in gdbplugin/shim/trap.c)
SYSREGS = {1: "SCTLR_EL1", 2: "TTBR0_EL1", 3: "TTBR1_EL1", 4: "TCR_EL1", 5: "ESR_EL1",
           6: "FAR_EL1", 7: "AFSR0_EL1", 8: "AFSR1_EL1", 9: "MAIR_EL1", 10: "AMAIR_EL1",
           11: "CONTEXTIDR_EL1"}
SET_WAY_OPS = Codes("SW_", {1: ("isw", "ISW"), 2: ("csw", "CSW"), 3: ("cisw", "CISW")})
# s2-map/s2-perm op; "rom": a cfi-flash window, Normal and read-only at stage 2 (KVM's
# read-only memslot), writes emulated by the shim
MEMTYPES = Codes("MT_", {0: ("normal", "NORMAL"), 1: ("device", "DEVICE"), 2: ("rom", "ROM")})
IC_OPS = Codes("", {1: ("ivau", "IC_IVAU"), 2: ("ialluis", "IC_IALLUIS")})
GUEST_CMO_OPS = Codes("G_", {
    1: ("dc-ivac", "DC_IVAC"), 2: ("dc-cvac", "DC_CVAC"), 3: ("dc-civac", "DC_CIVAC"),
    4: ("dc-cvau", "DC_CVAU"), 5: ("dc-cvap", "DC_CVAP"), 6: ("ic-ivau", "IC_IVAU"),
    7: ("ic-iallu", "IC_IALLU"), 8: ("ic-ialluis", "IC_IALLUIS")})
# host-dma op: the fw_cfg DMA request's control bits; bit 0 is ERROR as QEMU left it
FW_CFG_CONTROL = Codes("FWCFG_", {0x01: ("error", "ERROR"), 0x02: ("read", "READ"),
                                  0x04: ("skip", "SKIP"), 0x08: ("select", "SELECT"),
                                  0x10: ("write", "WRITE")})
# flags of s2-map/s2-perm (permissions now in the descriptor)
PERMS = Codes("PERM_", {1: ("r", "R"), 2: ("w", "W"), 4: ("x", "X"), 8: ("observer", "OBSERVER")})
# flags of s2-fault
FAULT_FLAGS = Codes("FAULT_", {1: ("s1ptw", "S1PTW"), 2: ("fnv", "FNV"),
                               4: ("spurious", "SPURIOUS"), 8: ("write", "WRITE"),
                               16: ("deferred", "DEFERRED"), 32: ("fetch-ok", "FETCH_OK"),
                               64: ("fetch", "FETCH")})
# flags of guest-cmo
CMO_FLAGS = Codes("CMO_", {1: ("no-ipa", "NO_IPA")})

ALL_CODES = (POLICIES, RING_FULL, PARAM_FLAGS, KINDS, ACCESS, RULES, DIAGS, STATS,
             SET_WAY_OPS, MEMTYPES, IC_OPS, GUEST_CMO_OPS, FW_CFG_CONTROL, PERMS, FAULT_FLAGS,
             CMO_FLAGS)
# C struct name -> layout, for the static assertions against shim.h
LAYOUTS = {"params": PARAMS, "record": RECORD, "ring_header": RING_HEADER}
