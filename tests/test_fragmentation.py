"""Kernel-exact score arithmetic on real snapshots, cross-checked against debugfs captured at the same moment."""

from __future__ import annotations

from pathlib import Path

import pytest
from compaction_module_utils import fragmentation as frag

SNAPSHOTS = Path(__file__).parent / "fixtures" / "compaction-snapshots"
SNAPSHOT_DIRS = sorted(p for p in SNAPSHOTS.iterdir() if (p / "proc" / "buddyinfo").exists())


def read(snap, rel):
    return (snap / rel).read_text()


def snapshot_zones(snap):
    return frag.parse_buddyinfo(read(snap, "proc/buddyinfo")), frag.parse_zoneinfo(read(snap, "proc/zoneinfo"))


def order_of(snap):
    return frag.hpage_order(int(read(snap, "sys/kernel/mm/transparent_hugepage/hpage_pmd_size")), 4096)


@pytest.mark.parametrize("snap", SNAPSHOT_DIRS, ids=lambda p: p.name)
def test_extfrag_matches_debugfs_unusable_index(snap):
    """extfrag = floor(unusable‰ at order H / 10), except free = 0 (unusable 1.000, extfrag 0)."""
    buddy, _ = snapshot_zones(snap)
    unusable = frag.parse_unusable_index(read(snap, "sys/kernel/debug/extfrag/unusable_index"))
    order = order_of(snap)
    assert buddy, "snapshot has no zones"
    for z in buddy:
        permille = unusable[(z["node"], z["zone"])]
        assert len(permille) == len(z["free_by_order"]), "order columns differ between buddyinfo and debugfs"
        for o in range(len(permille)):
            assert frag.unusable_permille(z["free_by_order"], o) == permille[o], (z["zone"], o)
        free = frag.free_pages(z["free_by_order"])
        expected = 0 if free == 0 else permille[order] // 10
        assert frag.extfrag_for_order(z["free_by_order"], order) == expected, z["zone"]


@pytest.mark.parametrize("snap", SNAPSHOT_DIRS, ids=lambda p: p.name)
def test_node_score_is_weighted_floor_sum(snap):
    """score = Σ floor(present·extfrag / (node_present + 1)), node_present over all the node's zones."""
    buddy, zoneinfo = snapshot_zones(snap)
    order = order_of(snap)
    nodes = frag.node_scores(buddy, zoneinfo, order)
    unusable = frag.parse_unusable_index(read(snap, "sys/kernel/debug/extfrag/unusable_index"))
    for node, n in nodes.items():
        node_present = sum(v["present"] for (nd, _), v in zoneinfo.items() if nd == node)
        expected = 0
        for z in buddy:
            if z["node"] != node or not zoneinfo[(node, z["zone"])]["present"]:
                continue
            ef = 0 if frag.free_pages(z["free_by_order"]) == 0 else unusable[(node, z["zone"])][order] // 10
            expected += zoneinfo[(node, z["zone"])]["present"] * ef // (node_present + 1)
        assert n["score"] == expected
        assert 0 <= n["score"] <= 100


@pytest.mark.parametrize(("idle", "big_zone"), [("host-6.18-x86_64", "Normal"), ("lab-x86-6.1.0-56-amd64", "DMA32")])
def test_fragmented_snapshot_scores_higher_than_idle(idle, big_zone):
    """Every other page freed: the zone holding the mapping reaches a high extfrag and lifts the node score."""
    idle_dir, frag_dir = SNAPSHOTS / idle, SNAPSHOTS / (idle + "-fragmented")
    s_idle = frag.node_scores(*snapshot_zones(idle_dir), order_of(idle_dir))[0]
    s_frag = frag.node_scores(*snapshot_zones(frag_dir), order_of(frag_dir))[0]
    assert s_frag["score"] > s_idle["score"] + 50
    zone = next(z for z in s_frag["zones"] if z["name"] == big_zone)
    assert zone["extfrag"] >= 70


def test_zoneinfo_keeps_present_and_managed_apart_on_virtio_mem_host():
    _, zoneinfo = snapshot_zones(SNAPSHOTS / "host-6.18-x86_64")
    normal = zoneinfo[(0, "Normal")]
    assert normal["present"] != normal["managed"]


@pytest.mark.parametrize(
    ("p", "release", "low", "high"),
    [
        (20, "6.1.0-56-amd64", 80, 90),
        (0, "6.1.0-56-amd64", 100, 100),
        (100, "6.12.107+deb12-amd64", 5, 15),  # floor of 5 before 6.16
        (95, "6.6.0", 5, 15),
        (20, "6.18.44-fc", 80, 90),
        (100, "6.18.44-fc", 0, 0),  # no floor from 6.16: low 0, high 0 + min(10, 0)
        (90, "6.18.44-fc", 10, 15),  # high = low + min(10, low // 2)
    ],
)
def test_watermarks_follow_the_kernel_version(p, release, low, high):
    got_low, got_high, formula = frag.watermarks(p, release)
    assert (got_low, got_high) == (low, high)
    assert ("6.16+" in formula) == (frag.kernel_version(release) >= (6, 16))


@pytest.mark.parametrize(("pmd", "page", "order"), [(2 << 20, 4096, 9), (32 << 20, 16384, 11), (512 << 20, 65536, 13)])
def test_hpage_order_from_sizes(pmd, page, order):
    assert frag.hpage_order(pmd, page) == order


def test_would_trigger_is_strictly_greater_and_respects_kswapd():
    assert frag.would_trigger(91, 90, 20, False)[0]
    assert not frag.would_trigger(90, 90, 20, False)[0]
    assert not frag.would_trigger(99, 90, 20, True)[0]
    assert "disabled" in frag.would_trigger(99, 90, 0, False)[1]


def test_bad_buddyinfo_names_the_line():
    with pytest.raises(ValueError, match="line 2"):
        frag.parse_buddyinfo("Node 0, zone DMA 1 2 3\ngarbage\n")
