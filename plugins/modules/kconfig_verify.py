#!/usr/bin/python
"""Check that a kernel .config really carries every option the config fragments asked for."""

from __future__ import annotations

DOCUMENTATION = r"""
module: kconfig_verify
short_description: Verify a final kernel .config against the fragments that requested its options
description:
  - Reads the fragments in order (a later fragment overrides an earlier one, as in C(merge_config.sh)) and compares
    every requested C(CONFIG_X=value) and C(# CONFIG_X is not set) with the final C(.config) written by
    C(make olddefconfig).
  - For each option the kernel dropped it names the reason found in the source tree's Kconfig files (an unmet
    C(depends on) shown with the current values, as in C(MODULES [=n]), a hidden prompt, a choice, a selector
    forcing it on, a type mismatch or a symbol this kernel does not have).
  - Also returns the SHA-256 of the final C(.config), the build cache key's config half.
  - Read-only; supports check mode.
options:
  config:
    description: Path of the final C(.config) on the host.
    type: path
    required: true
  fragments:
    description: Config fragment paths on the host, in merge order.
    type: list
    elements: path
    required: true
  srctree:
    description: Kernel source tree, used to explain dropped options.
    type: path
    required: true
  srcarch:
    description: The kernel's C(SRCARCH) (C(x86), C(arm64)), to read C(arch/<srcarch>/Kconfig).
    type: str
    required: true
  report:
    description: Symbols (without C(CONFIG_)) whose final values to return in C(values), e.g. C(KGDB).
    type: list
    elements: str
    default: []
  fail_on_dropped:
    description: Fail when a requested option is missing from the final config. With C(false) only report.
    type: bool
    default: true
author: compaction-lab
"""

EXAMPLES = r"""
- name: Verify the merged config
  kconfig_verify:
    config: /var/tmp/kb/config/linux-6.1-x86_64/.config
    fragments: [/var/tmp/kb/fragments/tracing.config, /var/tmp/kb/fragments/kgdb.config]
    srctree: /var/tmp/kb/src/linux-source-6.1
    srcarch: x86
"""

RETURN = r"""
config_sha256:
  description: SHA-256 of the final .config file.
  returned: always
  type: str
requested:
  description: Number of distinct options the fragments requested.
  returned: always
  type: int
dropped:
  description: Requested options the final config does not carry, with the reasons.
  returned: always
  type: list
  elements: dict
  sample: [{symbol: CONFIG_KPROBES, requested: "y", actual: "n", fragment: tracing.config,
            reasons: ["unmet dependency: depends on (MODULES [=n])"]}]
values:
  description: Final value of each symbol in O(report) (C(n) when not set).
  returned: always
  type: dict
  sample: {KGDB: "y", FUNCTION_GRAPH_TRACER: "y", MODULES: "n"}
overridden:
  description: Options a later fragment set differently from an earlier one (the later one wins).
  returned: always
  type: list
  elements: dict
"""

import hashlib
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kconfig import KconfigTree, explain, parse_config


def compare(requested, final):
    """Requested options whose final value differs: ``[(symbol, wanted, actual)]``."""
    out = []
    for sym, wanted in requested.items():
        actual = final.get(sym, "n")
        if wanted.strip('"') != actual.strip('"'):
            out.append((sym, wanted, actual))
    return out


def main():
    module = AnsibleModule(
        argument_spec={
            "config": {"type": "path", "required": True},
            "fragments": {"type": "list", "elements": "path", "required": True},
            "srctree": {"type": "path", "required": True},
            "srcarch": {"type": "str", "required": True},
            "report": {"type": "list", "elements": "str", "default": []},
            "fail_on_dropped": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        with open(p["config"], "rb") as f:
            raw = f.read()
        final = parse_config(raw.decode("utf-8", "replace"))
        requested, origin, overridden = {}, {}, []
        for path in p["fragments"]:
            with open(path, encoding="utf-8") as f:
                for sym, value in parse_config(f.read()).items():
                    if sym in requested and requested[sym] != value:
                        overridden.append(
                            {"symbol": sym, "was": requested[sym], "now": value, "by": os.path.basename(path)}
                        )
                    requested[sym], origin[sym] = value, os.path.basename(path)
    except OSError as e:
        module.fail_json(msg=f"cannot read {e.filename}: {e.strerror}")

    mismatches = compare(requested, final)
    dropped = []
    if mismatches:
        tree = KconfigTree(p["srctree"], p["srcarch"])
        for sym, wanted, actual in mismatches:
            reasons = explain(tree, sym[len("CONFIG_") :], wanted, final)
            dropped.append(
                {"symbol": sym, "requested": wanted, "actual": actual, "fragment": origin[sym], "reasons": reasons}
            )
    result = {
        "changed": False,
        "config_sha256": hashlib.sha256(raw).hexdigest(),
        "requested": len(requested),
        "dropped": dropped,
        "overridden": overridden,
        "values": {s: final.get("CONFIG_" + s, "n") for s in p["report"]},
    }
    if dropped and p["fail_on_dropped"]:
        lines = [
            f"{d['symbol']}={d['requested']} (final: {d['actual']}, from {d['fragment']}): {'; '.join(d['reasons'])}"
            for d in dropped
        ]
        module.fail_json(
            msg=f"{len(dropped)} of {len(requested)} requested options did not survive olddefconfig — fix the "
            "fragments (enable the dependency too, or drop the option):\n  " + "\n  ".join(lines),
            **result,
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
