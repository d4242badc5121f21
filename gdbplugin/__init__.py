"""s2cache: find the cache-coherency bugs QEMU's TCG hides (README.md, docs/architecture.md)."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("s2cache")
except PackageNotFoundError:          # run from a checkout that was never installed
    __version__ = "unknown"
