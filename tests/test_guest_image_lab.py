"""The golden image guest_image builds (mmdebstrap, docs/lab.md "How a guest boots"), seen from inside the booted lab
guests: what the experiments need is there and works, and what only sped up the build (no fsync in dpkg) or what the
guest never reads (docs, man pages) is not."""

from __future__ import annotations

import json

import pytest
from helpers import BIN, run

pytestmark = pytest.mark.lab

# One shell round trip per guest. Each line is "name=value" so a failure names what is missing.
PROBE = r"""
echo "tools=$(for t in trace-cmd stress-ng sshd python3; do command -v $t; done | wc -l)"
echo "python_apt=$(python3 -c 'import apt_pkg; apt_pkg.init(); print(apt_pkg.VERSION)' 2>&1)"
echo "apt_candidate=$(apt-cache policy kexec-tools | sed -n 's/^ *Candidate: //p')"
echo "unconfigured=$(dpkg --audit | wc -l)"
echo "ca_certificates=$(dpkg-query -W -f='${db:Status-Status}' ca-certificates 2>/dev/null)"
echo "unsafe_io=$(cat /etc/dpkg/dpkg.cfg /etc/dpkg/dpkg.cfg.d/* | grep -c force-unsafe-io)"
echo "bash_docs=$(ls /usr/share/doc/bash)"
echo "man_pages=$(find /usr/share/man -type f | wc -l)"
echo "host_keys=$(ls /etc/ssh/ssh_host_*_key | wc -l)"
echo "usr_merged=$(readlink /bin)"
echo "ansiballz_cached=$(ls /var/cache/ansiballz-pyc/*/ | wc -l)"
"""


def test_guest_image_has_what_experiments_need_and_nothing_build_only(lab, tmp_path):
    # The tree callback writes each host's result as JSON (a shell module's ad-hoc --one-line output is not JSON).
    tree = {"ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_CALLBACKS_ENABLED": "ansible.builtin.tree",
            "ANSIBLE_CALLBACK_TREE_DIR": str(tmp_path)}  # fmt: skip
    run([BIN / "ansible", ",".join(lab), "-m", "ansible.builtin.shell", "-a", PROBE], env=tree)
    results = {host: json.loads((tmp_path / host).read_text()) for host in lab}
    for host, result in results.items():
        probe = dict(line.split("=", 1) for line in result["stdout"].splitlines())
        assert probe["tools"] == "4", (host, probe)
        assert probe["python_apt"].split(".")[0].isdigit(), (host, probe)  # Ansible's apt module needs python3-apt
        # Package lists are kept: kernel_build installs kexec-tools in a guest with apt, without an update.
        assert probe["apt_candidate"] not in ("", "(none)"), (host, probe)
        assert probe["unconfigured"] == "0", (host, probe)
        assert probe["ca_certificates"] in ("", "not-installed"), (host, probe)
        assert probe["unsafe_io"] == "0", (host, probe)
        assert probe["bash_docs"] == "copyright", (host, probe)
        assert probe["man_pages"] == "0", (host, probe)
        assert probe["host_keys"] == "3", (host, probe)
        assert probe["usr_merged"] == "usr/bin", (host, probe)
        # This very module run (ansible.builtin.shell) imported its module_utils through the image's bytecode cache.
        assert int(probe["ansiballz_cached"]) > 20, (host, probe)
