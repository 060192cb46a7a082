"""The fleet view of one run: every targeted host with its outcome, then the figures grouped per arch and per
kernel — the part of a comparison that still reads when the fleet has a hundred hosts (`compare` puts hosts
side by side as columns). Figures are history.host_metrics, so the view, the history and the baseline check agree.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from collect.history import host_metrics, load_run

FIGURES = ("compactions", "success_rate", "latency_p50_us", "latency_p95_us", "pages_migrated", "lost_events")


def kernel_series(release: str | None) -> str:
    """6.12.57+deb13-amd64 -> 6.12 (the grouping key; the full release stays in the host table)."""
    if not release:
        return "?"
    return ".".join(release.split(".")[:2])


def fleet_rows(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(host rows, group rows). Hosts that run.json lists without a summary appear with their status."""
    run_meta, summary = load_run(run_dir)
    statuses = run_meta.get("hosts") or {}
    hosts = []
    for host in sorted(set(statuses) | set(summary.get("hosts", {}))):
        state = statuses.get(host, {"status": "ok"})
        per_host = summary.get("hosts", {}).get(host)
        metrics = host_metrics(per_host) if per_host else dict.fromkeys(["kernel", "arch", *FIGURES])
        hosts.append({"host": host, "status": state.get("status"), "msg": state.get("msg") or "", **metrics})
    groups = []
    for label, key in (("arch", lambda h: h["arch"]), ("kernel", lambda h: kernel_series(h["kernel"]))):
        collected = [h for h in hosts if h["kernel"]]
        for value in sorted({key(h) for h in collected}):
            members = [h for h in collected if key(h) == value]
            row = {"group": f"{label} {value}", "hosts": len(members)}
            for fig in FIGURES:
                known = [h[fig] for h in members if h[fig] is not None]
                row[fig] = statistics.median(known) if known else None
            groups.append(row)
    return hosts, groups


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _table(rows: list[dict], cols: list[str]) -> list[str]:
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(cols)]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out += ["| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |" for row in cells]
    return out


def markdown(run_dir: Path) -> str:
    hosts, groups = fleet_rows(run_dir)
    missing = [h for h in hosts if h["status"] != "ok"]
    out = [f"# Fleet: {Path(run_dir).name} — {len(hosts) - len(missing)} of {len(hosts)} hosts completed", ""]
    out += _table(hosts, ["host", "status", "arch", "kernel", *FIGURES])
    if missing:
        out += ["", "Missing from the comparison:"]
        out += [f"- {h['host']}: {h['status']} — {h['msg'] or 'no detail'}" for h in missing]
    out += ["", "## Per arch and per kernel (median over the group's hosts)", ""]
    out += _table(groups, ["group", "hosts", *FIGURES])
    out += ["", "success_rate = compactions ending success|complete; latency over compaction begin->end (us)."]
    return "\n".join(out) + "\n"
