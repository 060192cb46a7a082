"""The lab image's AnsiballZ bytecode cache (roles/guest_image/files/ansiballz_pycache.py) on a real payload: the one
Ansible builds for ansible.builtin.ping, run on this host's Python (the guests' bookworm Python is the same 3.11)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import BIN, ROOT, run

HOOK_DIR = ROOT / "roles" / "guest_image" / "files"
# As the guest's .pth does at start-up, with the cache in the test's folder; then the payload runs as Ansible runs it.
RUN = """
import runpy, sys
sys.path.insert(0, sys.argv[1])
import ansiballz_pycache
ansiballz_pycache.CACHE = sys.argv[2]
payload = sys.argv[3]
sys.argv = [payload]
runpy.run_path(payload, run_name="__main__")
"""
# The payload's module_utils imported through the hook: where each module and one of its functions say they are.
WHERE = """
import sys
sys.path.insert(0, sys.argv[1])
import ansiballz_pycache
ansiballz_pycache.CACHE = sys.argv[2]
sys.path.insert(0, sys.argv[3])
from ansible.module_utils import basic
print(basic.__file__, basic.AnsibleModule.__init__.__code__.co_filename, type(basic.__loader__).__name__)
"""


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    """AnsiballZ_ping.py as Ansible ships it to a host, kept (ANSIBLE_KEEP_REMOTE_FILES) and unpacked."""
    tmp = tmp_path_factory.mktemp("ansiballz")
    env = {"ANSIBLE_KEEP_REMOTE_FILES": "1", "ANSIBLE_PIPELINING": "0", "ANSIBLE_REMOTE_TMP": str(tmp / "remote")}
    run([BIN / "ansible", "localhost", "-m", "ansible.builtin.ping", "-e",
         f"ansible_python_interpreter={sys.executable}"], env=env)  # fmt: skip
    (wrapper,) = (tmp / "remote").glob("*/AnsiballZ_ping.py")
    return wrapper


def ping(payload, cache):
    proc = subprocess.run([sys.executable, "-c", RUN, HOOK_DIR, cache, payload], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_modules_are_compiled_once_then_served_from_the_cache(payload, tmp_path):
    assert ping(payload, tmp_path)["ping"] == "pong"
    cached = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    # ansible.module_utils.basic and the modules it imports (dozens), keyed by the running Python's tag.
    assert len(cached) > 20 and all(p.parent.name == sys.implementation.cache_tag for p in cached)
    assert ping(payload, tmp_path)["ping"] == "pong"
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == cached, "a module was recompiled"


def test_a_broken_cache_entry_is_compiled_again(payload, tmp_path):
    ping(payload, tmp_path)
    entries = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    for entry in entries:
        entry.write_bytes(b"\0garbage")
    assert ping(payload, tmp_path)["ping"] == "pong"
    assert all(entry.read_bytes() != b"\0garbage" for entry in entries)


def test_cached_code_names_the_payload_it_runs_from(payload, tmp_path):
    """Each payload unpacks to a new temporary folder: code cached from one names the next one in tracebacks."""
    zips = []
    for n in (1, 2):
        folder = tmp_path / f"ansible_ping_payload_{n}"
        folder.mkdir()
        wrapper = folder / payload.name
        wrapper.write_bytes(payload.read_bytes())
        # The payload's own debug command unpacks it next to itself, into debug_dir/.
        subprocess.run([sys.executable, wrapper, "explode"], cwd=folder, check=True, capture_output=True)
        zips.append(folder / "ansible_ping_payload.zip")
        subprocess.run(["python3", "-m", "zipfile", "-c", zips[-1], "ansible"], cwd=folder / "debug_dir", check=True)
    cache = tmp_path / "cache"
    for archive in zips:
        proc = subprocess.run([sys.executable, "-c", WHERE, HOOK_DIR, cache, archive], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        module_file, code_file, loader = proc.stdout.split()
        assert module_file == code_file == f"{archive}/ansible/module_utils/basic.py"
        assert loader == "CachedZipImporter"
