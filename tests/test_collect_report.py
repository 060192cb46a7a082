"""compare / report / export --perfetto on a run built from the real fixtures, and the collect_run action plugin
driven by a real ansible-playbook run."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import sys
import textwrap
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from helpers import run

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests/fixtures"
RUN_ID = "20261125T223000Z-trace_manual"


def make_run(base):
    """results/<run>/ with the seed's x86 trace and this host's tracepoint capture as two hosts."""
    run_dir = base / RUN_ID
    (run_dir / "seed-x86").mkdir(parents=True)
    shutil.copy(FIXTURES / "seed/trace.txt", run_dir / "seed-x86/trace.txt")
    shutil.copytree(FIXTURES / "host-6.18", run_dir / "host-6.18", ignore=shutil.ignore_patterns("*.sh", "*.md"))
    (run_dir / "run.json").write_text(json.dumps({"run": RUN_ID, "experiment": "trace_manual", "hosts": {}}))
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("results"))


def collect(*args):
    return run([sys.executable, "-m", "collect", *args], timeout=900)


def test_summary_of_a_run_writes_summary_json(run_dir):
    out = json.loads(collect("summary", run_dir, "--format", "json").stdout)
    written = json.loads((run_dir / "summary.json").read_text())
    assert written == out
    assert written["run"] == RUN_ID and set(written["hosts"]) == {"seed-x86", "host-6.18"}


def test_compare_side_by_side(run_dir):
    res = json.loads(collect("compare", run_dir, "--format", "json").stdout)
    seed, host = res["hosts"]["seed-x86"], res["hosts"]["host-6.18"]
    assert seed["integrity"]["orphan_exits"] == 12 and host["integrity"]["complete"] is True
    assert res["functions"]["compact_zone"]["seed-x86"]["total_us"] == pytest.approx(292096.5)
    # Only the seed traced functions: its call edges are on one side only.
    assert "compact_zone -> migrate_pages" in res["edges_only_on"]["seed-x86"]
    assert res["edges_only_on"]["host-6.18"] == []
    assert [r["trigger"] for r in host["latency"]] == ["manual"] and host["latency"][0]["count"] == 3
    fig = host["figures"]
    vm = json.loads((run_dir / "host-6.18/vmstat_delta.json").read_text())
    if vm["compact_free_scanned"]:
        assert fig["scan_efficiency"] == pytest.approx(vm["compact_migrate_scanned"] / vm["compact_free_scanned"], 1e-3)
    assert "wmark_high" in host["kcompactd"] or "kcompactd" in host["kcompactd"]
    md = collect("compare", run_dir).stdout
    assert "| orphan exits | 0 | 12 |" in md or "| orphan exits | 12 | 0 |" in md


def test_report_files(run_dir):
    collect("report", run_dir)
    html = (run_dir / "report.html").read_text()
    assert "<script" not in html and "http" not in html.split("</style>", 1)[1].replace("http-equiv", "")
    pngs = re.findall(r"src='data:image/png;base64,([^']+)'", html)
    assert len(pngs) == 1 + 3 * 2  # latency + (timeline, score, top functions) per host
    for b64 in pngs:
        img = mpimg.imread(io.BytesIO(base64.b64decode(b64)), format="png")
        assert img.shape[0] > 100 and img.shape[1] > 300 and img.std() > 0.01  # not blank
    assert "12 closings" in html
    assert (run_dir / "report.md").read_text().startswith("# Compare:")


def test_export_perfetto(run_dir, tmp_path):
    out = tmp_path / "t.json"
    text = collect("export", "--perfetto", run_dir, "-o", out).stdout
    assert "40242 calls have no timestamp" in text  # the seed's text has no funcgraph-abstime: said, not invented
    data = json.loads(out.read_text())
    evs = data["traceEvents"]
    names = {e["args"]["name"] for e in evs if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {"host-6.18 (%s)" % RUN_ID, "seed-x86 (%s)" % RUN_ID}
    comps = [e for e in evs if e.get("cat") == "compaction"]
    assert len(comps) == 3 and all(e["ph"] == "X" and e["dur"] > 0 for e in comps)
    instants = [e for e in evs if e.get("cat") == "event"]
    assert instants and all(isinstance(e["ts"], float) for e in instants)


def test_collect_run_action_plugin(tmp_path):
    """One task fetches a host's raw results (here: from this machine) into the run and normalizes them."""
    remote = tmp_path / "remote"
    shutil.copytree(FIXTURES / "host-6.18", remote)
    (remote / "unrelated.bin").write_bytes(b"not part of the contract")
    run_dir = tmp_path / "results" / RUN_ID
    run_dir.mkdir(parents=True)
    play = tmp_path / "play.yml"
    play.write_text(
        textwrap.dedent(
            f"""\
            - name: Collect one host
              hosts: local
              gather_facts: false
              tasks:
                - name: Fetch and normalize
                  collect_run:
                    run_dir: {run_dir}
                    src: {remote}
                  register: collected
                - name: Keep the result for the test
                  ansible.builtin.copy:
                    content: "{{{{ collected | to_json }}}}"
                    dest: {tmp_path}/result.json
                    mode: "0644"
            """
        )
    )
    run([Path(sys.executable).parent / "ansible-playbook", "-i", ROOT / "inventory/local.yml", play], timeout=900)
    res = json.loads((tmp_path / "result.json").read_text())
    assert "trace.txt" in res["fetched"] and "formats/compaction/mm_compaction_begin" in res["fetched"]
    assert "unrelated.bin" not in res["fetched"] and "record.sh" not in res["fetched"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run"] == RUN_ID and summary["hosts"]["local"] == res["summary"]
    assert len(res["summary"]["compactions"]) == res["summary"]["events"]["mm_compaction_begin"]
