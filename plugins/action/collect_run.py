"""collect_run: fetch one host's raw results into the run on the controller, normalize them, and merge the host's
summary into results/<run-id>/summary.json — one task at the end of every experiment playbook.

Documentation (ansible-doc collect_run): plugins/modules/collect_run.py, as Ansible does for its own action plugins.
"""

from __future__ import annotations

import os
import re

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

# What a capture leaves on a host (docs/interfaces.md); anything else under src is not fetched.
RAW_FILES = re.compile(
    r"^(trace\.txt|trace\.dat|trace\.meta\.json|facts_before\.json|facts_after\.json|vmstat_delta\.json|"
    r"scores\.jsonl|console\.log|formats/[\w.-]+/[\w.-]+(/format)?|gdb/[\w.-]+\.json)$"
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
        if args["src"]:
            result["fetched"] = self._fetch_all(args["src"], host_dir, task_vars)
            result["changed"] = bool(result["fetched"])
        if self._task.check_mode:
            result["msg"] = "check mode: would normalize %s" % host_dir
            return result
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

    def _fetch_all(self, src, host_dir, task_vars):
        found = self._execute_module(
            module_name="ansible.builtin.find",
            module_args={"paths": [src], "recurse": True, "file_type": "file"},
            task_vars=task_vars,
        )
        if found.get("failed"):
            raise AnsibleActionFail("listing %s on the host failed: %s" % (src, found.get("msg")))
        fetched = []
        for f in found.get("files", []):
            rel = os.path.relpath(f["path"], src)
            if not RAW_FILES.match(rel):
                continue
            task = self._task.copy()
            task.args = {"src": f["path"], "dest": os.path.join(host_dir, rel), "flat": True}
            fetch = self._shared_loader_obj.action_loader.get(
                "ansible.legacy.fetch",
                task=task,
                connection=self._connection,
                play_context=self._play_context,
                loader=self._loader,
                templar=self._templar,
                shared_loader_obj=self._shared_loader_obj,
            )
            res = fetch.run(task_vars=task_vars)
            if res.get("failed"):
                raise AnsibleActionFail("fetching %s failed: %s" % (f["path"], res.get("msg")))
            fetched.append(rel)
        return sorted(fetched)
