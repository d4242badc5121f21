/*
 * s2cache reference stage-2 shim: shared declarations.
 *
 * The shim runs at EL2 (non-VHE) under QEMU's `-M virt,virtualization=on`, gives the guest an
 * on-demand identity stage 2, traps what KVM traps and appends one 64-byte record per trap and
 * per maintenance operation to a ring that s2cache drains from the shared RAM file.  Layouts
 * here are mirrored by gdbplugin/shim/ring.py and gdbplugin/shim/launch.py: change both.
 */
#ifndef SHIM_H
#define SHIM_H

#pragma GCC visibility push(hidden)

typedef unsigned long u64;
typedef long s64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void *)0)

#define PAGE_SIZE       4096UL
#define BLOCK_SIZE      (2UL << 20)
#define MAX_VCPUS       16
#define STACK_SIZE      16384
#define ALIGN_UP(x, a)  (((x) + (a) - 1) & ~((u64)(a) - 1))
#define ALIGN_DOWN(x, a) ((x) & ~((u64)(a) - 1))

/* ---- parameter block (struct params; at symbol shim_params = _start - 4 KiB) ---------- */
#define PARAMS_MAGIC    0x31504d4948533253UL    /* "S2SHIMP1" */
#define PARAMS_VERSION  1

enum policy { POL_NONE = 0, POL_RFC2013 = 1, POL_KVM = 2, POL_XEN = 3, POL_FWB = 4, POL_COUNT };

/* params.flags */
#define PF_BLOCKS       (1UL << 0)  /* map RAM with 2 MiB blocks instead of 4 KiB pages */
#define PF_POWEROFF     (1UL << 1)  /* a fatal diagnostic powers off (PSCI SYSTEM_OFF) after
                                       recording, instead of spinning at shim_halted */
#define PF_QUIET        (1UL << 2)  /* no banner on the UART (diagnostics are still printed) */
#define PF_TRAP_CMO     (1UL << 3)  /* observation: trap the guest's own cache maintenance by VA
                                       (HCR_EL2.TPCP|TPU), perform it, record K_GUEST_CMO */
#define PF_TRACK_ACCESS (1UL << 5)  /* observation: when a vCPU turns its caches off, every RAM
                                       leaf is hidden (invalid, S2_SW_HIDDEN) so the first access
                                       to each page faults, is recorded (K_S2_ACCESS) and the leaf
                                       restored; all are restored when caches go on again.
                                       Invisible to the policy. */
#define PF_TRACK_WRITES (1UL << 4)  /* observation: map RAM read-only until the first write of
                                       an epoch, and a page the guest can fetch from either
                                       writable or executable (write-xor-execute, while the
                                       writer's I-cache is on: a write to code and the next
                                       fetch from it are both seen; up to 3 cycles a page, then
                                       it is left both).  A write fault grants W (K_S2_PERM);
                                       every SCTLR_EL1
                                       M/C change and VM flush starts a new epoch (all RAM leaves
                                       write-protected: K_S2_WRPROTECT), a guest clean by VA
                                       ends its page's epoch.  Invisible to the policy. */

/* params.ring_full: what happens when the ring has no free record */
enum { FULL_HALT = 0, FULL_WAIT = 1, FULL_DROP = 2 };

struct params {
    u64 magic;          /* 0x00 PARAMS_MAGIC */
    u64 version;        /* 0x08 PARAMS_VERSION */
    u64 policy;         /* 0x10 enum policy */
    u64 entry;          /* 0x18 PA where the payload is entered at EL1 */
    u64 flags;          /* 0x20 PF_* */
    u64 ring_records;   /* 0x28 ring capacity in records, power of two (0: default) */
    u64 ring_full;      /* 0x30 FULL_* */
    u64 observe;        /* 0x38 TVM for observation: 0 policy only, 1 until caches on, 2 always */
    u64 hook_mask;      /* 0x40 record kinds (bit = kind) that call shim_hook() */
    u64 dtb;            /* 0x48 DTB PA; 0: x0 at entry, else the base of RAM */
    u64 pool_size;      /* 0x50 stage-2 table pool bytes (0: derived from the RAM size) */
    u64 entry_x0;       /* 0x58 x0 for the payload (0: the DTB) */
};

#define DEFAULT_RING_RECORDS  (1UL << 17)      /* 8 MiB of records */
/* PF_TRACK_WRITES: page copies for line-precise write evidence (s2.c), two per slot, taken
 * from the end of the stage-2 table pool */
#define SNAP_SLOTS      256
#define SNAP_BYTES      (SNAP_SLOTS * 2 * PAGE_SIZE)

/* ---- ring ---------------------------------------------------------------------------- */
#define RING_MAGIC      0x31474e4952433253UL    /* "S2CRING1" */
#define RING_VERSION    1

struct record {         /* 64 bytes; complete once seq == index + 1 (stored last, release) */
    u64 seq;            /* 0x00 */
    u16 kind;           /* 0x08 enum kind */
    u8 vcpu;            /* 0x0a */
    u8 el;              /* 0x0b guest EL the trap came from (0/1); 2: the shim on its own */
    u8 access;          /* 0x0c enum access */
    u8 op;              /* 0x0d kind-specific sub-code */
    u16 flags;          /* 0x0e kind-specific (maintenance kinds: the rule id) */
    u64 pc;             /* 0x10 guest PC (ELR_EL2) */
    u64 esr;            /* 0x18 ESR_EL2 */
    u64 ipa;            /* 0x20 IPA; sysreg-write: old value */
    u64 pa;             /* 0x28 PA;  sysreg-write: new value */
    u64 size;           /* 0x30 bytes (or a count) */
    u64 va;             /* 0x38 FAR_EL2 / extra */
};

enum kind {
    K_SHIM_START = 1, K_VCPU_START = 2, K_S2_FAULT = 3, K_S2_MAP = 4, K_S2_PERM = 5,
    K_S2_UNMAP = 6, K_DC = 7, K_IC = 8, K_FLUSH_VM = 9, K_TLBI = 10, K_SYSREG = 11,
    K_SET_WAY = 12, K_SMC = 13, K_HVC = 14, K_TVM = 15, K_DIAG = 16, K_PSCI_ON = 17,
    K_GUEST_CMO = 18, K_HOST_DMA = 19, K_S2_WRPROTECT = 20, K_S2_WRITTEN = 21,
    K_S2_ACCESS = 22, K_S2_HIDE = 23,
};
/* K_S2_ACCESS: a vCPU's first access to a hidden page (ipa, access, pc).  K_S2_HIDE: op 1 the
 * RAM leaves were hidden (a vCPU turned its caches off), 0 restored; size = leaves. */
/* K_S2_WRITTEN: pa = the page, va = bit mask of its 64-byte lines whose content changed since
 * the deferred write fault that opened the epoch, vcpu = that fault's vCPU */

enum access { A_NONE = 0, A_READ = 1, A_WRITE = 2, A_EXEC = 3 };

/* K_DC / K_IC ops */
enum { DC_CIVAC = 1, IC_IVAU = 1, IC_IALLUIS = 2 };
/* K_GUEST_CMO ops */
enum { G_DC_IVAC = 1, G_DC_CVAC = 2, G_DC_CIVAC = 3, G_DC_CVAU = 4, G_DC_CVAP = 5,
       G_IC_IVAU = 6, G_IC_IALLU = 7, G_IC_IALLUIS = 8 };
/* K_GUEST_CMO flags */
#define CMO_NO_IPA      1       /* the VA did not translate at stage 1: not performed */
/* K_SET_WAY ops */
enum { SW_ISW = 1, SW_CSW = 2, SW_CISW = 3 };
/* K_S2_MAP / K_S2_PERM op: memory type (MT_ROM: a cfi-flash window, Normal and read-only at
 * stage 2 like KVM's read-only memslot; writes are emulated, mmio.c) */
enum { MT_NORMAL = 0, MT_DEVICE = 1, MT_ROM = 2 };
/* K_HOST_DMA: QEMU's fw_cfg DMA wrote guest RAM.  op: the request's control bits (FWCFG_*)
 * with bit 0 = ERROR as QEMU left it; flags: the selected fw_cfg item */
#define FWCFG_ERROR     0x01
#define FWCFG_READ      0x02
#define FWCFG_SKIP      0x04
#define FWCFG_SELECT    0x08
#define FWCFG_WRITE     0x10
/* K_S2_MAP / K_S2_PERM flags: permissions now in the descriptor */
#define PERM_R 1
#define PERM_W 2
#define PERM_X 4                /* executable for the policy (the observer may hold XN) */
#define PERM_OBSERVER 8         /* K_S2_PERM: an observer-only change (write-xor-execute gives
                                   X back at a fetch after a write); the policy's view is as
                                   before and the policy did nothing */
/* K_S2_FAULT flags */
#define FAULT_S1PTW     1
#define FAULT_FNV       2       /* FAR_EL2 not valid */
#define FAULT_SPURIOUS  4       /* already mapped when we looked (another vCPU won) */
#define FAULT_WRITE     8       /* ESR WnR */
#define FAULT_DEFERRED  16      /* a write under PF_TRACK_WRITES with the vCPU's caches off, or
                                   to a page it can fetch from (write-xor-execute): the page
                                   was copied and the lines changed come in K_S2_WRITTEN
                                   records (at the next I-cache maintenance covering them, the
                                   next fetch, or when the epoch ends) */
#define FAULT_FETCH_OK  32      /* with FAULT_FETCH: every instruction of the fetched line is
                                   as a fetch could still see it, or old and new are both ones
                                   the architecture lets a PE execute while they are modified
                                   (B, BL, BRK, SVC, HVC, SMC, ISB, NOP) */
#define FAULT_FETCH     64      /* an instruction fetch from a page written since it could last
                                   be fetched (write-xor-execute, observation only); size: an
                                   instruction word of the line as a fetch could still see it
                                   << 32 | the word now (the first that makes the fetch unsafe,
                                   else the fetched one; 0: no copy) */
/* K_DIAG flags */
#define DIAG_FATAL      1

/* Rule ids (flags of K_DC / K_IC / K_FLUSH_VM / K_TVM records), see ring.py RULES. */
enum rule {
    R_NONE = 0,
    R_KVM_CLEAN_ON_FAULT = 1, R_KVM_ICACHE_ON_EXEC = 2, R_KVM_TOGGLE = 3, R_KVM_SET_WAY = 4,
    R_XEN_ALLOC = 5, R_XEN_SET_WAY = 6, R_XEN_TOGGLE = 7,
    R_RFC_CLEAN_UNCACHED = 8, R_RFC_STAGE1_ENABLE = 9,
    R_FWB_ICACHE_ON_EXEC = 10,
    R_KVM_TVM_RESET = 11, R_KVM_TVM_CACHES_ON = 12, R_RFC_TVM_RESET = 13,
    R_RFC_TVM_MMU_ON = 14, R_XEN_TVM_CACHES_ON = 15, R_OBSERVE = 16,
};

/* Diagnostic reasons (op of K_DIAG; ring_header.halted) */
enum diag {
    D_UNKNOWN_TRAP = 1, D_OUTSIDE = 2, D_RING_FULL = 3, D_EL2_EXCEPTION = 4, D_PARAMS = 5,
    D_NO_DTB = 6, D_POOL = 7, D_FAULT_STATUS = 8, D_SYSREG = 9, D_VCPUS = 10, D_MEMORY = 11,
    D_SHIM_MEMORY = 12, D_EL2_INTERRUPT = 13, D_FWB_MISSING = 14, D_NOT_EL2 = 15,
    D_CPU = 16, D_MMIO = 17,
};

/* Statistics: ring_header.stat[] */
enum stat {
    ST_TRAPS, ST_DABT, ST_IABT, ST_MAP_NORMAL, ST_MAP_DEVICE, ST_EXEC_GRANT, ST_DC_BYTES,
    ST_IC_OPS, ST_FLUSH_VM, ST_SYSREG, ST_SET_WAY, ST_SMC, ST_HVC, ST_SPURIOUS, ST_TABLES,
    ST_VCPUS, ST_GUEST_CMO, ST_MAP_ROM, ST_ROM_WRITES, ST_FWCFG, ST_HOST_DMA, ST_HOST_DMA_BYTES,
    ST_WRITE_GRANT, ST_WRPROTECT, ST_SNAPSHOTS, ST_SNAPSHOT_FULL, ST_ACCESS, ST_REFETCH,
    ST_COUNT,
};

struct ring_header {            /* at symbol shim_ring (page-aligned), 4 KiB */
    u64 magic;                  /* 0x000 RING_MAGIC */
    u32 version;                /* 0x008 */
    u32 record_size;            /* 0x00c 64 */
    u64 capacity;               /* 0x010 records (power of two) */
    u64 records;                /* 0x018 PA of record 0 */
    u64 write_index;            /* 0x020 records reserved so far */
    u64 read_index;             /* 0x028 consumer's position (written by the tool) */
    u64 overflow;               /* 0x030 records dropped (FULL_DROP) or refused */
    u32 full_mode;              /* 0x038 FULL_* */
    u32 halted;                 /* 0x03c 0, or the enum diag that stopped the shim */
    u64 shim_base;              /* 0x040 PA of the running _start */
    u64 link_base;              /* 0x048 link address of _start (symbol delta = base - link) */
    u64 carve_base;             /* 0x050 first byte hidden from the guest */
    u64 carve_size;             /* 0x058 */
    u64 ram_base;               /* 0x060 guest-visible RAM */
    u64 ram_end;                /* 0x068 == carve_base */
    u64 pool_base;              /* 0x070 stage-2 table pool */
    u64 pool_size;              /* 0x078 */
    u64 pool_used;              /* 0x080 */
    u64 vttbr;                  /* 0x088 */
    u64 vtcr;                   /* 0x090 */
    u64 hcr;                    /* 0x098 HCR_EL2 the primary vCPU entered the guest with */
    u32 policy;                 /* 0x0a0 requested */
    u32 policy_effective;       /* 0x0a4 (fwb without FEAT_S2FWB runs kvm) */
    u64 flags;                  /* 0x0a8 params.flags */
    u64 dtb;                    /* 0x0b0 */
    u64 entry;                  /* 0x0b8 payload entry */
    u64 hook_mask;              /* 0x0c0 live: kinds that call shim_hook */
    u64 stalls;                 /* 0x0c8 FULL_WAIT: times a writer waited for the consumer */
    u64 observe;                /* 0x0d0 */
    u64 mmio_count;             /* 0x0d8 entries in mmio[] */
    u64 fw_cfg[2];              /* 0x0e0 fw_cfg MMIO window (base, size; 0: none) */
    u64 pad0[2];                /* 0x0f0 */
    u64 stat[32];               /* 0x100 enum stat */
    struct record diag;         /* 0x200 the last diagnostic, kept even when the ring is full */
    u64 mpidr[MAX_VCPUS];       /* 0x240 MPIDR of each vCPU slot (0: never started) */
    u64 mmio[64][2];            /* 0x2c0 MMIO windows from the DTB: base, size */
    u64 ctr_el0;                /* 0x6c0 the CPU's cache geometry and identity */
    u64 clidr_el1;              /* 0x6c8 */
    u64 midr_el1;               /* 0x6d0 */
    u64 rom_count;              /* 0x6d8 entries in rom[] */
    u64 rom[8][2];              /* 0x6e0 cfi-flash windows (Normal, read-only at stage 2) */
    u8 pad1[4096 - 0x760];
};

/* ---- vCPU ----------------------------------------------------------------------------- */
struct frame {                  /* what start.S pushes on a trap: x0..x30 */
    u64 x[31];
    u64 pad;
};

struct vcpu {
    u64 slot;
    u64 mpidr;
    u64 stack_top;
    u64 hcr;                    /* HCR_EL2 while this vCPU runs its guest */
    u64 entry, context;         /* guest entry and x0 (CPU_ON) */
    volatile u64 pending;       /* CPU_ON accepted, not yet started */
    bool policy_tvm;            /* the policy wants TVM */
    bool policy_tvm_recorded;   /* policy_tvm as the last K_TVM record said */
    bool need_flush;            /* xen: flush the VM before returning to the guest */
    bool caches_seen_on;        /* observe == 1: SCTLR_EL1.M&C were on at some trap */
    bool started;               /* entered the guest before: a PSCI CPU_ON is not a reset */
    /* the set/way run being coalesced */
    u64 sw_op, sw_pc, sw_esr, sw_count, sw_first, sw_last;
    /* the guest cache-maintenance run being coalesced (PF_TRAP_CMO) */
    u64 cmo_op, cmo_pc, cmo_esr, cmo_va, cmo_ipa, cmo_next, cmo_bytes, cmo_flags, cmo_el;
};

/* ---- globals -------------------------------------------------------------------------- */
struct config {                 /* parameters after validation; lives in .data */
    u64 policy, effective, flags, ring_records, ring_full, observe, hook_mask;
    u64 entry, entry_x0, dtb, pool_size;
    u64 ram_base, ram_end;      /* guest-visible RAM after the carve-out */
    u64 ram_size_dtb;           /* size the DTB gave the region we carved from */
    u64 carve_base, carve_size;
    u64 uart;
    u64 mmio_count;
    u64 mmio[64][2];
    u64 rom_count;
    u64 rom[8][2];              /* cfi-flash windows: Normal read-only at stage 2 */
    u64 fwcfg_base, fwcfg_size; /* qemu,fw-cfg-mmio: never mapped, every access emulated */
    u64 initrd_start, initrd_end;
    u64 s2fwb;                  /* the CPU has FEAT_S2FWB */
    u64 dminline, iminline;     /* cache line bytes */
};

extern struct config cfg;
extern struct ring_header shim_ring;
extern struct vcpu vcpus[MAX_VCPUS];
extern struct params shim_params;
extern char _start[], _edata[], __bss_start[], __bss_end[], _end[];
extern u64 link_base_value;
extern volatile u64 any_mmu_on;   /* rfc2013 point 4: some vCPU has enabled M&C */

/* start.S */
void shim_halted(void) __attribute__((noreturn));
void secondary_entry(void);
u64 smc_call(u64 *x);           /* x[0..3] in and out */
void enter_guest(u64 entry, u64 x0, u64 sp_el2) __attribute__((noreturn));

/* main.c */
void vcpu_el2_init(struct vcpu *v);
u64 hcr_for(struct vcpu *v);
void update_tvm(struct vcpu *v, u64 pc);

/* fdt.c */
int fdt_scan(u64 dtb);          /* fills cfg from the DTB; 0 ok, else an enum diag */
int fdt_shrink_memory(u64 dtb, u64 new_end);
u64 fdt_totalsize(u64 dtb);

/* s2.c */
void s2_init(void);
void s2_handle_abort(struct vcpu *v, struct frame *f, u64 esr, bool iabt);
void flush_vm(struct vcpu *v, int reason, u64 pc);
void s2_wrprotect(struct vcpu *v, u64 ipa, u64 size, u64 pc, bool record);
void s2_hide(struct vcpu *v, bool hide, u64 pc);
void s2_icache_maintenance(u64 ipa, u64 size);
bool track_writes(void);
void dcache_clean_inval(u64 pa, u64 size);
void icache_inval(u64 pa, u64 size);
bool ipa_is_ram(u64 ipa);
bool ipa_is_rom(u64 ipa);
bool ipa_is_fwcfg_page(u64 ipa);
int mmio_find(u64 ipa);

/* mmio.c */
void mmio_emulate(struct vcpu *v, struct frame *f, u64 esr, u64 ipa, u64 pc);

/* policy.c */
void policy_vcpu_reset(struct vcpu *v);
void policy_boot(void);
void policy_on_map(struct vcpu *v, u64 ipa, u64 size, bool normal, bool exec, u64 pc);
void policy_on_exec(struct vcpu *v, u64 ipa, u64 size, u64 pc);
void policy_on_sysreg(struct vcpu *v, u64 old_sctlr, u64 new_sctlr, u64 pc);
void policy_on_set_way(struct vcpu *v, u64 pc);
void policy_before_return(struct vcpu *v);
bool policy_exec_on_demand(void);
bool policy_fwb(void);

/* ring.c */
void ring_init(u64 records_pa, u64 capacity);
void emit(u16 kind, struct vcpu *v, u8 el, u8 access, u8 op, u16 flags, u64 pc, u64 esr,
          u64 ipa, u64 pa, u64 size, u64 va);
void diag(struct vcpu *v, int reason, bool fatal, u64 pc, u64 esr, u64 ipa, u64 va, u64 extra)
    ;
void fatal(struct vcpu *v, int reason, u64 pc, u64 esr, u64 ipa, u64 va, u64 extra)
    __attribute__((noreturn));
void shim_hook(struct record *r);
void stat_add(int which, u64 n);
void sw_flush(struct vcpu *v);
void cmo_flush(struct vcpu *v);

/* trap.c */
void handle_sync(struct frame *f);
void handle_el2_exception(struct frame *f, u64 kind);

/* uart.c */
void puts_(const char *s);
void puthex(u64 v);
void putdec(u64 v);

/* lib */
void *memset(void *s, int c, unsigned long n);
void *memcpy(void *d, const void *s, unsigned long n);
int strcmp_(const char *a, const char *b);
int strncmp_(const char *a, const char *b, unsigned long n);
unsigned long strlen_(const char *s);

/* spinlock (LL/SC through __atomic with -mno-outline-atomics; EL2 runs with its MMU and
 * caches on).  A waiter notices a fatal halt and stops at shim_halted instead of spinning on
 * a lock the halted vCPU will never release. */
typedef struct { volatile u32 v; } spinlock_t;
static inline void spin_lock(spinlock_t *l)
{
    while (__atomic_exchange_n(&l->v, 1, __ATOMIC_ACQUIRE)) {
        while (__atomic_load_n(&l->v, __ATOMIC_RELAXED)) {
            if (shim_ring.halted)
                shim_halted();
            __asm__ volatile("yield");
        }
    }
}
static inline void spin_unlock(spinlock_t *l)
{
    __atomic_store_n(&l->v, 0, __ATOMIC_RELEASE);
}
extern spinlock_t s2_lock;

#include "aarch64.h"
#define barrier() __asm__ volatile("" : : : "memory")

static inline struct vcpu *this_vcpu(void)
{
    return (struct vcpu *)read_sysreg(tpidr_el2);
}

/* HCR_EL2 */
#define HCR_VM      (1UL << 0)
#define HCR_SWIO    (1UL << 1)
#define HCR_PTW     (1UL << 2)
#define HCR_FB      (1UL << 9)
#define HCR_BSU_IS  (1UL << 10)
#define HCR_TSC     (1UL << 19)
#define HCR_TSW     (1UL << 22)
#define HCR_TPCP    (1UL << 23)
#define HCR_TPU     (1UL << 24)
#define HCR_TVM     (1UL << 26)
#define HCR_RW      (1UL << 31)
#define HCR_APK     (1UL << 40)
#define HCR_API     (1UL << 41)
#define HCR_FWB     (1UL << 46)

#define SCTLR_M     (1UL << 0)
#define SCTLR_C     (1UL << 2)
#define SCTLR_I     (1UL << 12)
#define SCTLR_EL1_RESET 0x30d00980UL    /* Linux INIT_SCTLR_EL1_MMU_OFF: RES1 bits, MMU off */

#pragma GCC visibility pop
#endif
