"""QEMU integration tests run everywhere, CI included; S2CACHE_SKIP_QEMU=1 is the only way to
skip them, and then the run says so loudly."""
from __future__ import annotations

import os

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
