/* System-register and barrier accessors shared by the shim and the AArch64 test guests
 * (freestanding: no libc, no kernel headers). */
#ifndef S2CACHE_AARCH64_H
#define S2CACHE_AARCH64_H

#define write_sysreg(reg, val) \
    __asm__ volatile("msr " #reg ", %0" : : "r"((u64)(val)) : "memory")
#define read_sysreg(reg) ({ \
    u64 __v; __asm__ volatile("mrs %0, " #reg : "=r"(__v) : : "memory"); __v; })
#define isb() __asm__ volatile("isb" : : : "memory")
#define dsb(opt) __asm__ volatile("dsb " #opt : : : "memory")

#endif
