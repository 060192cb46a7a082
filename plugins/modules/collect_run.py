#!/usr/bin/python
"""Documentation of the collect_run action plugin (plugins/action/collect_run.py); it runs on the controller only."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: collect_run
short_description: Fetch a host's raw compaction results into the run and normalize them (controller side)
description:
  - Action plugin, runs on the controller. Optionally fetches the raw results a capture left on the managed host
    (O(src)) into O(run_dir)/<host>/ with one C(tar | base64) command over the connection (become applies; gzip's CRC
    checks the transfer), no module and no round trip per file. Only the files of the results contract are kept.
  - Normalizes them with the C(collect) package (Parquet tables under <host>/normalized/) and merges the host's
    summary into O(run_dir)/summary.json under a lock, so hosts running in parallel forks do not clobber each other.
  - The summary's keys are the contract of docs/collect.md; an incomplete trace (lost events, orphan exits) is
    returned as warnings, never silently.
version_added: "0.1.0"
options:
  run_dir:
    description: Controller path of the run, C(results/<run-id>).
    type: path
    required: true
  host:
    description: Name of the host's folder in the run (sanitised to C([A-Za-z0-9._-])).
    type: str
    default: inventory_hostname
  src:
    description:
      - Directory on the managed host holding the raw results (trace.txt, trace.meta.json, formats/, ...).
      - Omit when the files are already in O(run_dir)/<host>/ (for example written by the ftrace module's fetch).
    type: path
  source:
    description: Which trace to read when both exist; V(auto) prefers trace.dat (complete when trace-cmd streamed).
    type: str
    choices: [auto, txt, dat]
    default: auto
author:
  - compaction-lab
"""

EXAMPLES = r"""
- name: Normalize this host's capture into the run
  collect_run:
    run_dir: "{{ experiment_run_dir }}"
    src: "{{ ftrace_dest }}"
"""

RETURN = r"""
host_dir:
  description: Controller folder of the host's raw results.
  returned: always
  type: str
fetched:
  description: Files fetched from O(src), relative to it.
  returned: when src is set
  type: list
  elements: str
summary:
  description: >-
    The host's summary (kernel, arch, tracer, events, functions, compactions, integrity, vmstat_delta, score).
  returned: success
  type: dict
summary_json:
  description: Path of the run's summary.json.
  returned: success
  type: str
"""
