"""pytest plugin: the session's real kernel builds (roles/kernel_build), shared by every test that needs a kernel.

    def test_something(kernel_artifact):     # Path of artifacts/kernels/<version>-<hash>/ (x86_64,
        ...                                  # tinyconfig-lab + tracing, debug, kgdb, mm, qemu fragments)
    def test_arm(kernel_artifact_arm64):     # the same config cross-built for arm64 (Image)

The first use runs playbooks/kernel_build.yml (~4-5 min on 2 cores from scratch); the artifact is cached by the hash
of source + config, so later sessions on the same machine only verify the config and fetch (a cache hit).
Registered in tests/conftest.py; mark tests using it `kbuild`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import ansible_playbook

KBUILD_TIMEOUT = 3600  # a loaded 2-core machine; the playbook's own async timeout is 7200 s


def run_kernel_build(*args, arch="x86_64", check=True, timeout=KBUILD_TIMEOUT):
    """Run playbooks/kernel_build.yml for `arch` (arm64 is cross-compiled here); returns the finished process."""
    return ansible_playbook("kernel_build.yml", "-e", f"kernel_build_arch={arch}", *args, check=check, timeout=timeout)


def run_summary(stdout, host="local"):
    """What a run reported: {'dir': Path, 'cached': bool, 'ok'/'changed'/'failed': int from the play recap}."""
    report = re.search(r"(cache hit|built in \d+ s) — .*? → (/[^\s']+)", stdout, re.S)
    recap = re.search(rf"^{host}\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)", stdout, re.M)
    assert report and recap, f"no artifact report or recap in the kernel_build output:\n{stdout[-3000:]}"
    return {
        "dir": Path(report.group(2)),
        "cached": report.group(1) == "cache hit",
        **dict(zip(("ok", "changed", "failed"), map(int, recap.groups()), strict=True)),
    }


@pytest.fixture(scope="session")
def kernel_build_first_run(is_root):
    """The session's build, as run_summary() reports it."""
    return run_summary(run_kernel_build().stdout)


@pytest.fixture(scope="session")
def kernel_artifact(kernel_build_first_run) -> Path:
    return kernel_build_first_run["dir"]


@pytest.fixture(scope="session")
def kernel_artifact_arm64(is_root) -> Path:
    """The arm64 artifact dir: tinyconfig-lab + all fragments, cross-built with gcc-aarch64-linux-gnu."""
    return run_summary(run_kernel_build(arch="arm64").stdout)["dir"]
