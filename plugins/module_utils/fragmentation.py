"""Kernel-exact compaction arithmetic from /proc text (stdlib only: this file runs on managed hosts).

The one home of the fragmentation score: the compaction_facts module, the score sampler and the
controller-side ``collect`` package all import it (collect as ``compaction_module_utils.fragmentation``).
Every function mirrors the kernel's unsigned integer arithmetic (mm/compaction.c, mm/vmstat.c, 6.1-6.18):
floor division, never floats.
"""

from __future__ import annotations

import re

# Kernels from this release on compute wmark_high as low + min(10, low // 2) and drop the floor of 5
# ("mm: compaction: ..." 2025 series). Keyed on the version; the choice is reported with the figures.
NEW_WMARK_SINCE = (6, 16)

_BUDDY_RE = re.compile(r"^Node\s+(\d+),\s+zone\s+(\S+)\s+(.*)$")
_ZONE_HDR_RE = re.compile(r"^Node\s+(\d+),\s+zone\s+(\S+)")


def parse_buddyinfo(text):
    """Parse /proc/buddyinfo into [{node, zone, free_by_order: [c_0, c_1, ...]}].

    The number of order columns is read from the text itself (MAX_ORDER differs by kernel and config).
    """
    zones = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _BUDDY_RE.match(line.strip())
        if not m:
            raise ValueError("buddyinfo line %d is not 'Node N, zone NAME counts...': %r" % (lineno, line))
        counts = [int(c) for c in m.group(3).split()]
        zones.append({"node": int(m.group(1)), "zone": m.group(2), "free_by_order": counts})
    return zones


def parse_zoneinfo(text):
    """Parse /proc/zoneinfo into {(node, zone): {present, managed, spanned, free_pages, min, low, high}}."""
    zones = {}
    cur = None
    keys = {"present", "managed", "spanned", "min", "low", "high"}
    for line in text.splitlines():
        m = _ZONE_HDR_RE.match(line)
        if m:
            cur = zones.setdefault((int(m.group(1)), m.group(2)), {})
            continue
        if cur is None:
            continue
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "pages" and parts[1] == "free" and len(parts) == 3:
            cur["free_pages"] = int(parts[2])
        elif len(parts) == 2 and parts[0] in keys and parts[0] not in cur:
            # Only the first occurrence: later "protection"/per-cpu sections reuse no key we read,
            # but keeping the zone-level value first is what the kernel prints in that order.
            cur[parts[0]] = int(parts[1])
    return zones


def free_pages(free_by_order):
    """Σ c_o·2^o: free base pages held in the buddy lists."""
    return sum(count << order for order, count in enumerate(free_by_order))


def extfrag_for_order(free_by_order, order):
    """mm/vmstat.c extfrag_for_order(): % of free memory in blocks smaller than ``order`` (0..100).

    floor((free - suitable_blocks<<order) * 100 / free); 0 when nothing is free.
    """
    free = free_pages(free_by_order)
    if free == 0:
        return 0
    big = sum(count << o for o, count in enumerate(free_by_order) if o >= order)
    return (free - big) * 100 // free


def unusable_permille(free_by_order, order):
    """debugfs extfrag/unusable_index at ``order`` in ‰ (mm/vmstat.c unusable_free_index()).

    Returned as an int in 0..1000 the way the kernel computes it before printing it as d.ddd.
    """
    free = free_pages(free_by_order)
    if free == 0:
        return 1000
    big = sum(count << o for o, count in enumerate(free_by_order) if o >= order)
    return (free - big) * 1000 // free


def hpage_order(hpage_pmd_size, page_size):
    """COMPACTION_HPAGE_ORDER = log2(hpage_pmd_size / page_size); both read from the host."""
    if page_size <= 0 or hpage_pmd_size <= 0 or hpage_pmd_size % page_size:
        raise ValueError("hpage_pmd_size %r is not a multiple of page size %r" % (hpage_pmd_size, page_size))
    ratio = hpage_pmd_size // page_size
    if ratio & (ratio - 1):
        raise ValueError("hpage_pmd_size/page_size = %d is not a power of two" % ratio)
    return ratio.bit_length() - 1


def kernel_version(release):
    """'6.1.0-56-amd64' -> (6, 1); unknown formats -> (0, 0)."""
    m = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def watermarks(proactiveness, release):
    """(wmark_low, wmark_high, formula) of fragmentation_score_wmark() for this kernel release."""
    p = int(proactiveness)
    if kernel_version(release) >= NEW_WMARK_SINCE:
        low = max(100 - p, 0)
        return low, min(low + min(10, low // 2), 100), "v6.16+: low=100-p; high=min(low+min(10,low/2),100)"
    low = max(100 - p, 5)
    return low, min(low + 10, 100), "pre-6.16: low=max(100-p,5); high=min(low+10,100)"


def node_scores(buddy_zones, zoneinfo, order):
    """Per node: {node: {score, present, zones: [{name, present, managed, free_pages, free_by_order, extfrag}]}}.

    fragmentation_score_node(): Σ over populated zones of floor(present·extfrag / (node_present + 1)),
    node_present being Σ present over *all* the node's zones (zoneinfo lists the empty ones too).
    """
    nodes = {}
    for (node, _name), info in zoneinfo.items():
        nodes.setdefault(node, {"node_present": 0, "zones": []})
        nodes[node]["node_present"] += info.get("present", 0)
    for z in buddy_zones:
        info = zoneinfo.get((z["node"], z["zone"]))
        if info is None:
            raise ValueError("zone %s of node %d is in buddyinfo but not in zoneinfo" % (z["zone"], z["node"]))
        nodes[z["node"]]["zones"].append(
            {
                "name": z["zone"],
                "present": info.get("present", 0),
                "managed": info.get("managed", 0),
                "free_pages": free_pages(z["free_by_order"]),
                "free_by_order": list(z["free_by_order"]),
                "extfrag": extfrag_for_order(z["free_by_order"], order),
            }
        )
    out = {}
    for node, n in sorted(nodes.items()):
        denom = n["node_present"] + 1
        score = sum(z["present"] * z["extfrag"] // denom for z in n["zones"] if z["present"])
        out[node] = {"score": score, "node_present": n["node_present"], "zones": n["zones"]}
    return out


def would_trigger(score, wmark_high, proactiveness, kswapd_running):
    """should_proactive_compact_node(): (bool, reason in words)."""
    if int(proactiveness) == 0:
        return False, "compaction_proactiveness is 0: proactive compaction is disabled"
    if kswapd_running:
        return False, "kswapd is running on this node: kcompactd defers proactive work to reclaim"
    if score > wmark_high:
        return True, "score %d > wmark_high %d: kcompactd compacts on its next 500 ms check" % (score, wmark_high)
    return False, "score %d <= wmark_high %d: free memory is not fragmented enough" % (score, wmark_high)


def parse_unusable_index(text):
    """debugfs extfrag/unusable_index -> {(node, zone): [permille per order]} ('0.823' -> 823)."""
    out = {}
    for line in text.splitlines():
        m = _BUDDY_RE.match(line.strip())
        if m:
            out[(int(m.group(1)), m.group(2))] = [round(float(v) * 1000) for v in m.group(3).split()]
    return out


def parse_vmstat(text, prefixes=("compact_", "pgmigrate_", "thp_")):
    """/proc/vmstat -> {name: int} for the counters whose names start with ``prefixes`` (all if empty)."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and (not prefixes or parts[0].startswith(prefixes)):
            out[parts[0]] = int(parts[1])
    return out


def vmstat_delta(before, after):
    """after - before for every counter present in both (counters only ever grow; resets show as negative)."""
    return {k: after[k] - before[k] for k in sorted(after) if k in before}
