"""Run the project's own Ansible tool chain from tests, exactly as a user would from the repo root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _env(extra=None):
    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env.update(extra or {})
    return env


def run(cmd, check=True, timeout=1800, env=None, **kw):
    """Run ``cmd`` from the repo root; on failure the assertion shows stdout and stderr."""
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=ROOT, env=_env(env), capture_output=True, text=True, timeout=timeout, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


def ansible_playbook(playbook, *args, **kw):
    return run([BIN / "ansible-playbook", ROOT / "playbooks" / playbook, *args], **kw)


def ansible_adhoc(pattern, module, module_args="", *args, **kw):
    """Ad-hoc module run; returns {host: result} parsed from the one-line output ``host | STATUS => {json}``."""
    proc = run([BIN / "ansible", pattern, "-m", module, "-a", module_args, "--one-line", *args], **kw)
    results = {}
    for line in proc.stdout.splitlines():
        head, sep, body = line.partition(" => ")
        if sep and " | " in head:
            results[head.split(" | ")[0]] = json.loads(body)
    return results
