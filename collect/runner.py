"""`python -m collect run EXPERIMENT`: one fleet comparison run driven through ansible-runner.

The same call works from the fleet_schedule timer, CI or a notebook (`run_experiment(...)` returns a RunOutcome).
ansible-runner keeps every run's artifacts (stdout, job_events/*.json, rc, status, command) under
`results/<run-id>/runner/`, next to the results the playbooks write, so a run is self-contained.

ansible-runner's own cancel/timeout path SIGKILLs the playbook's process group, which would skip the experiment's
restore on the hosts (tracing off, sysctls back). So timeouts are systemd's job (TimeoutStartSec sends SIGTERM) and
a SIGTERM/SIGINT reaching this process is passed on to ansible-playbook as SIGTERM, never upgraded to SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXIT_OK, EXIT_ERROR, EXIT_PARTIAL = 0, 1, 2


@dataclass
class RunOutcome:
    run_id: str
    run_dir: Path
    rc: int  # ansible-playbook's exit status
    status: str  # ansible-runner's: successful | failed | canceled | timeout
    hosts: dict = field(default_factory=dict)  # host -> {status, msg} (run.json, else the play recap)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        states = {h["status"] for h in self.hosts.values()}
        if not states or "ok" not in states:
            return EXIT_ERROR
        return EXIT_OK if states == {"ok"} and self.rc == 0 else EXIT_PARTIAL


def experiments(project_dir: Path = ROOT) -> list[str]:
    """Experiment playbooks: those keeping a run with the experiment_run bookkeeping role (issue 3)."""
    books = (project_dir / "playbooks").glob("*.yml")
    return sorted(p.stem for p in books if p.stem != "compare" and "name: experiment_run" in p.read_text())


def new_run_id(experiment: str, now: datetime | None = None) -> str:
    """The interfaces.md run id: `<UTC yyyymmddTHHMMSSZ>-<experiment>`."""
    return f"{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}-{experiment}"


class Progress:
    """ansible-runner event handler: one line per play, task and non-ok host result, with elapsed time."""

    def __init__(self, stream=sys.stderr):
        self.stream, self.start, self.stats = stream, time.monotonic(), {}

    def _say(self, text):
        print(f"[{time.monotonic() - self.start:7.1f}s] {text}", file=self.stream, flush=True)

    def __call__(self, event: dict) -> bool:
        kind, data = event.get("event", ""), event.get("event_data", {})
        host = data.get("host", "")
        if kind == "playbook_on_play_start":
            self._say(f"PLAY {data.get('play', '')}")
        elif kind == "playbook_on_task_start":
            self._say(f"  task {data.get('task', '')}")
        elif kind == "runner_on_unreachable":
            self._say(f"    {host}: UNREACHABLE {_msg(data)}")
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            self._say(f"    {host}: FAILED {_msg(data)}")
        elif kind == "runner_on_ok" and data.get("res", {}).get("changed"):
            self._say(f"    {host}: changed")
        elif kind == "playbook_on_stats":
            self.stats = {k: data.get(k) or {} for k in ("ok", "changed", "failures", "dark", "skipped", "rescued")}
        return True  # keep the event in artifacts/job_events


def _msg(data: dict) -> str:
    res = data.get("res", {})
    # A loop's own msg is "All items completed"; the reason is in the first item that went wrong.
    bad = [r for r in res.get("results") or () if isinstance(r, dict) and (r.get("failed") or r.get("unreachable"))]
    res = bad[0] if bad else res
    return " ".join(str(res.get("msg") or res.get("stderr") or "").split())[:240]


def hosts_from_recap(stats: dict) -> dict:
    """Per-host status from the play recap, used when the playbook died before writing run.json."""
    hosts = {}
    for name in set().union(*(set(v) for v in stats.values())) if stats else ():
        if stats.get("dark", {}).get(name):
            hosts[name] = {"status": "unreachable", "msg": "unreachable (play recap)"}
        elif stats.get("failures", {}).get(name):
            hosts[name] = {"status": "failed", "msg": "failed (play recap)"}
        else:
            hosts[name] = {"status": "ok", "msg": ""}
    return hosts


class _ForwardSigterm:
    """While ansible-runner waits, pass SIGTERM/SIGINT to our children (ansible-playbook) as SIGTERM."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._forward) for s in self.SIGNALS}
        self.received = None
        return self

    def _forward(self, signum, _frame):
        self.received = signum
        me = str(os.getpid())
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me:  # ppid
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(stat.parent.name), signal.SIGTERM)

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        return False


def run_experiment(
    experiment: str,
    inventory: list[str] | None = None,
    limit: str | None = None,
    *,
    forks: int | None = None,
    serial: str | None = None,
    extravars: dict | None = None,
    results_dir: Path | None = None,
    project_dir: Path = ROOT,
    progress=None,
) -> RunOutcome:
    """Run playbooks/compare.yml with EXPERIMENT on the targeted hosts; returns once collect has finished."""
    import ansible_runner

    available = experiments(project_dir)
    if experiment not in available:
        raise SystemExit(f"no experiment playbook playbooks/{experiment}.yml; choose one of: {', '.join(available)}")
    results_dir = Path(results_dir or project_dir / "results").resolve()
    run_id = new_run_id(experiment)
    run_dir = results_dir / run_id
    runner_dir = run_dir / "runner"
    runner_dir.mkdir(parents=True, exist_ok=False)
    evars = {"compare_experiment": experiment, "experiment_run_id": run_id, "experiment_results_dir": str(results_dir)}
    if serial:
        evars["compare_serial"] = serial
    evars.update(extravars or {})
    bindir = Path(sys.executable).parent
    envvars = {
        "ANSIBLE_CONFIG": str(project_dir / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}",  # ansible-playbook = the venv's
    }
    progress = progress or Progress()
    started = time.monotonic()
    with _ForwardSigterm() as sig:
        r = ansible_runner.run(
            private_data_dir=str(runner_dir),
            project_dir=str(project_dir),
            playbook="playbooks/compare.yml",  # relative to project_dir, as ansible-runner expects
            inventory=[str(Path(i).resolve()) for i in inventory] if inventory else None,
            limit=limit,
            forks=forks,
            extravars=evars,
            envvars=envvars,
            ident="ansible",
            quiet=True,
            event_handler=progress,
        )
    seconds = time.monotonic() - started
    run_json = run_dir / "run.json"
    hosts = json.loads(run_json.read_text())["hosts"] if run_json.exists() else hosts_from_recap(progress.stats)
    status = "canceled" if sig.received else r.status
    outcome = {"run": run_id, "rc": r.rc, "status": status, "seconds": round(seconds, 1), "hosts": hosts}
    (runner_dir / "outcome.json").write_text(json.dumps(outcome, indent=2))
    return RunOutcome(run_id=run_id, run_dir=run_dir, rc=r.rc, status=status, hosts=hosts, seconds=seconds)
