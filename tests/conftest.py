"""Shared pytest configuration. Lab and kernel-build fixtures live in their own plugin modules."""

from __future__ import annotations

import os

import pytest

# The QEMU lab session fixture `lab` (tests/lab_fixtures.py), the kernel build `kernel_artifact`
# (tests/kbuild_fixtures.py).
pytest_plugins = ["lab_fixtures", "kbuild_fixtures"]


@pytest.fixture(scope="session")
def is_root():
    if os.geteuid() != 0:
        pytest.fail("compaction-lab tests drive real tracefs/procfs and QEMU: run them as root (make test)")
    return True
