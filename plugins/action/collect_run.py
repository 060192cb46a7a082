"""collect_run: fetch one host's raw results into the run on the controller, normalize them, and merge the host's
summary into results/<run-id>/summary.json — one task at the end of every experiment playbook.

Documentation (ansible-doc collect_run): plugins/modules/collect_run.py, as Ansible does for its own action plugins.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shlex
import shutil
import tarfile

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

# What a capture leaves on a host (docs/interfaces.md); anything else under src is not fetched.
RAW_FILES = re.compile(
    r"^(trace\.txt|trace\.dat|trace\.meta\.json|facts_before\.json|facts_after\.json|vmstat_delta\.json|"
    r"scores\.jsonl|workload\.json|console\.log|formats/[\w.-]+/[\w.-]+(/format)?|gdb/[\w.-]+\.json)$"
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = True
    _VALID_ARGS = frozenset(("run_dir", "host", "src", "source"))

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(
            argument_spec={
                "run_dir": {"type": "path", "required": True},
                "host": {"type": "str"},
                "src": {"type": "path"},
                "source": {"type": "str", "choices": ["auto", "txt", "dat"], "default": "auto"},
            }
        )
        try:
            from collect import layout
            from collect.normalize import NormalizeError
            from collect.summary import host_summary, write_summary_json
        except ImportError as e:
            raise AnsibleActionFail(
                "collect_run needs the collect package on the controller (%s): run `make setup` and use the "
                "project's .venv/bin/ansible-playbook" % e
            ) from e
        host = layout.sanitize(args["host"] or task_vars.get("inventory_hostname", "localhost"))
        run_dir = os.path.abspath(args["run_dir"])
        host_dir = os.path.join(run_dir, host)
        result.update(host_dir=host_dir, changed=False)
        if self._task.check_mode:
            fetch = ("fetch %s and " % args["src"]) if args["src"] else ""
            result["msg"] = "check mode: would %snormalize %s" % (fetch, host_dir)
            return result
        if args["src"]:
            result["fetched"] = self._fetch_all(args["src"], host_dir)
            result["changed"] = bool(result["fetched"])
        if not os.path.isdir(host_dir):
            raise AnsibleActionFail("%s does not exist: give src (the host's results folder) or fetch first" % host_dir)
        run = os.path.basename(run_dir)
        h = layout.Host(run, host, host_dir, os.path.join(host_dir, layout.OUT_DIR))
        try:
            info = layout.ensure_normalized(h, prefer=args["source"])
            summary = host_summary(info, h.out_dir, h.raw_dir)
        except NormalizeError as e:
            raise AnsibleActionFail("normalizing %s failed: %s" % (host_dir, e)) from e
        result["summary_json"] = write_summary_json(run_dir, run, {host: summary})
        result["summary"] = summary
        result["changed"] = True
        for why in summary["integrity"].get("why", []):
            self._display.warning("%s: trace incomplete: %s" % (host, why))
        return result

    def _fetch_all(self, src, host_dir):
        """The host's results as one tar stream over the connection: no module (a Python start-up, seconds on a
        TCG guest) and no round trip per file (formats/ alone is ~40 files). base64 keeps the stream text, as the
        connection returns it; become applies as to any command."""
        cmd = "cd %s && tar -czf - . | base64" % shlex.quote(src)
        res = self._low_level_execute_command(cmd, sudoable=True)
        if res["rc"] != 0:
            raise AnsibleActionFail(
                "archiving %s on the host failed (rc %s): %s" % (src, res["rc"], res.get("stderr", "").strip())
            )
        fetched = []
        try:
            with tarfile.open(fileobj=io.BytesIO(base64.b64decode(res["stdout"])), mode="r:gz") as tar:
                for member in tar:
                    rel = os.path.normpath(member.name)
                    # A host's archive is untrusted input: contract files only, never outside host_dir.
                    if not member.isfile() or ".." in rel.split(os.sep) or not RAW_FILES.match(rel):
                        continue
                    dest = os.path.join(host_dir, rel)
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    with tar.extractfile(member) as fin, open(dest, "wb") as fout:
                        shutil.copyfileobj(fin, fout)
                    fetched.append(rel)
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:
            raise AnsibleActionFail("unpacking %s from the host failed: %s" % (src, e)) from e
        return sorted(fetched)
