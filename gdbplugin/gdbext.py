"""s2cache inside gdb-multiarch: ``source gdbplugin/gdbext.py``, then ``s2cache start``.

gdb embeds the system's Python 3.11, not the project's venv: this file puts the repository
and its venv's site-packages (made by scripts/setup from the same interpreter) on sys.path,
then registers the ``s2cache`` commands (gdbplugin/ext/).  Sourcing it twice is harmless.
"""
import os
import sys

import gdb


def _paths():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    site = os.path.join(root, ".venv", "lib",
                        f"python{sys.version_info.major}.{sys.version_info.minor}",
                        "site-packages")
    return root, site


def _load():
    root, site = _paths()
    if not os.path.isdir(site):
        raise gdb.GdbError(f"s2cache: no venv for Python {sys.version_info.major}."
                           f"{sys.version_info.minor} at {site}: run scripts/setup")
    for path in (site, root):
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        from gdbplugin import ext
    except ImportError as exc:
        raise gdb.GdbError(f"s2cache: cannot load the extension: {exc} "
                           f"(run scripts/setup)") from None
    if not getattr(gdb, "_s2cache_loaded", False):
        ext.register()
        gdb._s2cache_loaded = True


_load()
