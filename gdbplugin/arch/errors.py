"""The architecture layer's one exception, apart from the modules that need numpy: the target
layer derives its own from it at import, before QEMU starts (gdbplugin/target/errors.py)."""
from __future__ import annotations


class PhysMemError(Exception):
    """A physical address is not backed by this memory."""
