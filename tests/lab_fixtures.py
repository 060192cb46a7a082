"""pytest plugin: the QEMU lab (docs/lab.md) as one session fixture. Registered in tests/conftest.py.

    def test_something(lab):          # lab == ["lab-x86", "lab-arm"], both up and reachable over SSH
        ansible_playbook("trace_manual.yml", "-l", "lab-arm")

The lab boots once per session (playbooks/lab_up.yml; images come from the cache, built on first use) and goes down
at the end (playbooks/lab_down.yml), also when a test or lab_up itself failed. Set COMPACTION_LAB_HOSTS (comma list)
to boot other guests of inventory/lab.yml.
"""

from __future__ import annotations

import os

import pytest
from helpers import ansible_playbook

DEFAULT_LAB_HOSTS = ("lab-x86", "lab-arm")
# Fresh machine: mmdebstrap of both arches + kernel downloads + boots, on 2 shared cores.
LAB_UP_TIMEOUT = 1800


def lab_hosts() -> list[str]:
    wanted = os.environ.get("COMPACTION_LAB_HOSTS", "")
    return [h for h in wanted.split(",") if h] or list(DEFAULT_LAB_HOSTS)


@pytest.fixture(scope="session")
def lab(is_root):
    """Bring the lab up once, yield its inventory hostnames, bring it down after the last test."""
    hosts = lab_hosts()
    limit = ",".join(hosts)
    try:
        ansible_playbook("lab_up.yml", "-l", limit, timeout=LAB_UP_TIMEOUT)
        yield hosts
    finally:
        ansible_playbook("lab_down.yml", "-l", limit, timeout=600)
