"""Filters turning compaction_facts into verdicts and human tables (controller side)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

FUNCTION_TRACERS = {"function", "function_graph"}


def tracefs_missing(require, ftrace):
    """Return one message per required capability the host lacks, each naming the fix."""
    if not ftrace.get("mount"):
        return ["tracefs is not mounted: run the tracefs role (it mounts it) or mount -t tracefs"]
    missing = []
    tracers = ftrace.get("available_tracers", [])
    for item in require or []:
        if item.startswith("events:"):
            system = item.split(":", 1)[1]
            if not ftrace.get("events", {}).get(system):
                missing.append(
                    "no %s events in %s/events: this kernel lacks the %s tracepoints; pick a kernel built with "
                    "them (kernel_build role) or drop the requirement" % (system, ftrace["mount"], system)
                )
        elif item == "instances":
            if not ftrace.get("instances"):
                missing.append("tracefs instances are not supported (kernel < 3.10?): use a newer kernel")
        elif item not in tracers:
            missing.append(
                "tracer %s is not in available_tracers (%s): use tracer=tracepoints or a lab guest"
                % (item, " ".join(tracers) or "none")
            )
        elif item in FUNCTION_TRACERS and not ftrace.get("function_filter_writable"):
            missing.append(
                "function tracer refused by this kernel (%s on set_ftrace_filter): use tracer=tracepoints or a "
                "lab guest" % (ftrace.get("function_filter_error") or "not writable")
            )
    return missing


def doctor_table(facts, host):
    """A short per-node table: score vs watermarks, would kcompactd compact now and why, what tracing works."""
    if not isinstance(facts, dict) or "nodes" not in facts:
        raise AnsibleFilterError("doctor_table expects ansible_facts.compaction")
    ft = facts.get("ftrace", {})
    usable = [t for t in ft.get("available_tracers", []) if t != "nop"]
    if not ft.get("function_filter_writable"):
        usable = [t for t in usable if t not in FUNCTION_TRACERS]
    lines = [
        "%s: kernel %s %s, page %s, hpage order %s, proactiveness %s, THP %s/%s"
        % (
            host,
            facts.get("kernel"),
            facts.get("arch"),
            facts.get("page_size"),
            facts.get("hpage_order"),
            facts.get("proactiveness"),
            facts.get("thp", {}).get("enabled"),
            facts.get("thp", {}).get("defrag"),
        ),
        "  watermarks: %s" % facts.get("wmark_formula"),
        "  %-4s %5s %4s %4s %-8s %s" % ("node", "score", "low", "high", "compact?", "why"),
    ]
    for n in facts["nodes"]:
        lines.append(
            "  %-4s %5s %4s %4s %-8s %s"
            % (n["node"], n["score"], n["wmark_low"], n["wmark_high"], "yes" if n["would_trigger"] else "no", n["why"])
        )
        for z in n["zones"]:
            lines.append(
                "       zone %-8s extfrag %3s%%  free %9s  present %9s  managed %9s"
                % (z["name"], z["extfrag"], z["free_pages"], z["present"], z["managed"])
            )
    if not facts["nodes"]:
        lines.append("  no score: " + "; ".join(m for m in facts.get("missing", []) if "score" in m or "buddy" in m))
    events = [s for s, ok in sorted(ft.get("events", {}).items()) if ok]
    lines.append(
        "  tracing: %s; tracers usable: %s; function filter: %s; events: %s; instances: %s"
        % (
            ft.get("mount") or "tracefs not mounted",
            " ".join(usable) or "none (tracepoints only)",
            "writable" if ft.get("function_filter_writable") else "refused (%s)" % ft.get("function_filter_error"),
            " ".join(events) or "none",
            "yes" if ft.get("instances") else "no",
        )
    )
    return "\n".join(lines)


class FilterModule:
    def filters(self):
        return {"tracefs_missing": tracefs_missing, "doctor_table": doctor_table}
