"""Figures of merit (mmtests style, each with its formula) and the plain-words kcompactd verdict, per host.

Formulas (docs/collect.md):
  compaction_efficiency = compact_success / compact_stall            (direct compaction that succeeded)
  scan_efficiency       = compact_migrate_scanned / compact_free_scanned
  pages_migrated        = pgmigrate_success (vmstat), else Σ nr_succeeded of mm_migrate_pages events
A ratio whose denominator is 0 is None (not 0, not infinity): nothing happened to measure.
"""

from __future__ import annotations

import json
import os


def _ratio(a, b):
    return round(a / b, 4) if a is not None and b else None


def merit(vmstat, con, host):
    v = vmstat or {}
    migrated = v.get("pgmigrate_success")
    source = "vmstat pgmigrate_success"
    if migrated is None:
        migrated = con.execute(
            "SELECT sum(fields_int['nr_succeeded']) FROM events WHERE host = ? AND event = 'mm_migrate_pages'", [host]
        ).fetchone()[0]
        source = "mm_migrate_pages nr_succeeded"
    return {
        "compaction_efficiency": _ratio(v.get("compact_success"), v.get("compact_stall")),
        "scan_efficiency": _ratio(v.get("compact_migrate_scanned"), v.get("compact_free_scanned")),
        "pages_migrated": migrated,
        "pages_migrated_source": source if migrated is not None else None,
        "compact_stall": v.get("compact_stall"),
        "compact_success": v.get("compact_success"),
        "compact_fail": v.get("compact_fail"),
        "compact_migrate_scanned": v.get("compact_migrate_scanned"),
        "compact_free_scanned": v.get("compact_free_scanned"),
        "compact_daemon_wake": v.get("compact_daemon_wake"),
    }


def kcompactd_verdict(summary, raw_dir):
    """Why kcompactd did or did not act on this host, in words, from what was measured."""
    comps = summary.get("compactions") or []
    by = {}
    for c in comps:
        by[c["trigger"]] = by.get(c["trigger"], 0) + 1
    ev = summary.get("events") or {}
    score = summary.get("score") or {}
    facts = None
    for name in ("facts_after.json", "facts_before.json"):
        try:
            with open(os.path.join(raw_dir, name)) as f:
                facts = json.load(f)
            break
        except (OSError, ValueError):
            continue
    p = (facts or {}).get("proactiveness")
    kswapd = any(n.get("kswapd_running") for n in (facts or {}).get("nodes", []))
    acted = by.get("kcompactd", 0) + by.get("proactive", 0)
    wakes = ev.get("mm_compaction_kcompactd_wake", 0) + ev.get("mm_compaction_wakeup_kcompactd", 0)
    peak, high = score.get("peak"), score.get("wmark_high")
    if acted:
        return (
            "kcompactd compacted %d zone(s): %d proactive, %d after a wakeup (%d wake events); score peak %s vs "
            "wmark_high %s" % (acted, by.get("proactive", 0), by.get("kcompactd", 0), wakes, peak, high)
        )
    if p == 0:
        return (
            "kcompactd did not act: compaction_proactiveness is 0 (proactive compaction disabled), %d wake "
            "events" % wakes
        )
    if kswapd:
        return "kcompactd did not act proactively: kswapd was running on the node (kcompactd defers to reclaim)"
    if peak is not None and high is not None and peak <= high:
        return (
            "kcompactd did not act: the score peaked at %s <= wmark_high %s (proactiveness %s), so free memory "
            "was not fragmented enough, and %d wake events asked it to" % (peak, high, p, wakes)
        )
    if peak is not None and high is not None:
        return (
            "score %s > wmark_high %s but no kcompactd compaction was traced: a pass that does not lower the "
            "score defers the next by 32 s, or compaction events were not enabled" % (peak, high)
        )
    if "mm_compaction_begin" not in ev and not summary.get("functions"):
        return "unknown: no compaction events or calls were captured and no fragmentation score was sampled"
    return "kcompactd did not compact during the capture (%d wake events); no score samples to say why" % wakes
