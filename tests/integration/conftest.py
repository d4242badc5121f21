"""QEMU integration tests run everywhere, CI included; S2CACHE_SKIP_QEMU=1 is the only way to
skip them, and then the run says so loudly."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SKIPPED = os.environ.get("S2CACHE_SKIP_QEMU") == "1"
BANNER = "QEMU INTEGRATION TESTS SKIPPED (S2CACHE_SKIP_QEMU=1): nothing was checked against QEMU"


def pytest_collection_modifyitems(config, items):
    if not SKIPPED:
        return
    skip = pytest.mark.skip(reason=BANNER)
    for item in items:
        if "qemu" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if SKIPPED:
        terminalreporter.write_sep("!", BANNER, red=True, bold=True)


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def images() -> Path:
    """build/images/: Debian's arm64 kernel and the busybox initramfs (scripts/fetch-images)."""
    fetch = subprocess.run([str(ROOT / "scripts" / "fetch-images")], capture_output=True,
                           text=True)
    assert fetch.returncode == 0, f"scripts/fetch-images failed: {fetch.stderr}"
    return ROOT / "build" / "images"


@pytest.fixture(scope="session")
def shim():
    """The shim and the scenario guests, built by scripts/build-shim if needed."""
    from gdbplugin.shim.launch import ShimImage
    return ShimImage.load()
