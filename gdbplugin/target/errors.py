"""Exceptions of the target layer: one class per failing party, one-line messages.

Everything raised while talking to QEMU or gdb derives from ``TargetError``, so a caller that
only wants to report "the target failed" (exit code 3) catches that one class.
"""
from __future__ import annotations

from ..arch import errors as arch_errors


class TargetError(Exception):
    """QEMU, gdb or guest memory did not do what was asked; the message is one line."""


class QemuError(TargetError):
    """QEMU could not be started, died, or its monitor did not answer."""


class GdbError(TargetError):
    """gdb reported an error, exited, or did not answer in time."""


class GdbTimeout(GdbError):
    """gdb did not finish a command within its timeout."""


class GdbCommandError(GdbError):
    """gdb answered a command with ``^error``."""


class MemoryAccessError(GdbCommandError):
    """The target refused to read memory at ``address`` (unmapped VA, faulting walk, ...)."""

    def __init__(self, address: int, length: int, reason: str):
        super().__init__(f"cannot read {length} bytes at {address:#x}: {reason}")
        self.address = address
        self.length = length


class RegisterError(TargetError):
    """The target exposes no register under any spelling of the architectural name."""


class PhysMemError(TargetError, arch_errors.PhysMemError):
    """A physical address is outside the memory a backend can read.

    Also a ``gdbplugin.arch.memory.PhysMemError``, so the walker treats it as an unbacked
    table exactly as it does for a raw image.
    """
