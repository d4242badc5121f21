"""s2cache: find the cache-coherency bugs QEMU's TCG hides (README.md, docs/architecture.md)."""


def __getattr__(name: str):
    """``__version__``, looked up when asked for: importlib.metadata costs ~35 ms, and every
    `s2cache` command imports this package before it can start QEMU."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("s2cache")
    except PackageNotFoundError:          # run from a checkout that was never installed
        return "unknown"
