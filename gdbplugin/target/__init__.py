"""I/O with QEMU and gdb: launcher and monitor, gdb/MI driver, register names, physical memory."""
