"""`python -m collect fetch`: pull the runs scheduled runs left on control nodes into the local results store.

The job is a controller-side data pull that returns Python values to the caller (which runs exist remotely, which
are missing here, the downloaded archives), so it runs in-process through pyinfra's API: one SSH connection per
host (parallel), one `tar` per host over SFTP, no playbook, no module upload, no callback output to parse.
The inventory is the Ansible one, read through Ansible's own InventoryManager and templated with its own Templar,
so group_vars, lookups and `fleet_schedule_results_dir` mean exactly what they mean to the playbooks
(docs/decisions.md: why pyinfra here and nowhere else).
"""

from __future__ import annotations

import io
import json
import shlex
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path

from collect import history

DEFAULT_REMOTE_RESULTS = "/opt/compaction-lab/results"
# Ansible connection vars -> pyinfra SSH connector data.
SSH_DATA = {
    "ansible_host": "ssh_hostname",
    "ansible_port": "ssh_port",
    "ansible_user": "ssh_user",
    "ansible_ssh_private_key_file": "ssh_key",
}


def ansible_hosts(inventories: list[str] | None, limit: str | None) -> list[tuple[str, dict]]:
    """(inventory_hostname, rendered vars) for the targeted hosts, as ansible-playbook would see them."""
    from ansible import constants as C
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import init_plugin_loader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    init_plugin_loader()  # what the ansible CLIs do first: lookups such as env resolve only after it
    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=inventories or C.DEFAULT_HOST_LIST)
    variables = VariableManager(loader=loader, inventory=inventory)
    inventory.subset(limit)
    hosts = inventory.get_hosts()
    if not hosts:
        raise SystemExit(f"no inventory host matches {limit!r} in {inventories or C.DEFAULT_HOST_LIST}")
    wanted = [*SSH_DATA, "ansible_connection", "fleet_schedule_results_dir"]
    out = []
    for host in hosts:
        hostvars = variables.get_vars(host=host)
        templar = Templar(loader=loader, variables=hostvars)
        out.append((host.name, {k: templar.template(hostvars[k]) for k in wanted if k in hostvars}))
    return out


def pyinfra_inventory(hosts: list[tuple[str, dict]]):
    """pyinfra Inventory mirroring the Ansible hosts; `local` connections use pyinfra's @local connector."""
    from pyinfra.api import Inventory

    names = []
    for name, hv in hosts:
        if hv.get("ansible_connection") == "local":
            names.append(("@local", {"inventory_hostname": name, **_remote_dir(hv)}))
            continue
        data = {SSH_DATA[k]: v for k, v in hv.items() if k in SSH_DATA}
        data.setdefault("ssh_hostname", name)
        # Lab guests and cloud VMs are recreated with new host keys (ansible.cfg says the same).
        data.update(ssh_strict_host_key_checking="no", ssh_known_hosts_file="/dev/null")
        names.append((name, {**data, "inventory_hostname": name, **_remote_dir(hv)}))
    return Inventory((names, {}))


def _remote_dir(hv: dict) -> dict:
    return {"remote_results": hv.get("fleet_schedule_results_dir") or DEFAULT_REMOTE_RESULTS}


def _run(host, command: str) -> list[str]:
    ok, output = host.run_shell_command(command)
    if not ok:
        raise RuntimeError(f"{command}: {' '.join(output.stderr_lines) or 'failed'}")
    return output.stdout_lines


def _fetch_host(host, results_dir: Path, remote_dir: str | None) -> dict:
    """Download this host's collected runs that are not here yet; returns {host, fetched: [...], error}."""
    name = host.data.get("inventory_hostname")
    remote = remote_dir or host.data.get("remote_results")
    listed = _run(host, f"cd {shlex.quote(remote)} 2>/dev/null && ls -1d */summary.json || true")
    # Only collected runs (summary.json written): a run still in progress is left for the next fetch.
    runs = sorted({line.split("/", 1)[0] for line in listed if history.RUN_ID.match(line.split("/", 1)[0])})
    missing = [r for r in runs if not (results_dir / r).exists()]
    if not missing:
        return {"host": name, "remote": remote, "remote_runs": len(runs), "fetched": []}
    archive = f"/tmp/compaction-lab-fetch-{int(time.time() * 1000)}.tar.gz"
    try:
        _run(host, f"tar -czf {archive} -C {shlex.quote(remote)} " + " ".join(shlex.quote(r) for r in missing))
        buf = io.BytesIO()
        if not host.get_file(archive, buf):
            raise RuntimeError(f"download of {archive} failed")
    finally:
        host.run_shell_command(f"rm -f {archive}")
    buf.seek(0)
    with tarfile.open(fileobj=buf, mode="r:gz") as tar:
        tar.extractall(results_dir, members=_safe_members(tar, missing))
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    for run in missing:
        (results_dir / run / "fetched.json").write_text(json.dumps({"host": name, "remote": remote, "at": stamp}))
    return {"host": name, "remote": remote, "remote_runs": len(runs), "fetched": missing, "bytes": buf.tell()}


def _fetch_reported(host, results_dir: Path, remote_dir: str | None) -> dict:
    """One host's failure (SSH dropped, tar failed, bad archive) is reported; the others' runs are kept."""
    try:
        return _fetch_host(host, results_dir, remote_dir)
    except Exception as exc:
        return {"host": host.data.get("inventory_hostname"), "error": f"{type(exc).__name__}: {exc}"}


def _safe_members(tar: tarfile.TarFile, runs: list[str]):
    """Only plain files and folders inside the requested run folders: a remote archive is untrusted input
    (Debian 12's Python 3.11.2 predates tarfile's extraction filters)."""
    for member in tar.getmembers():
        parts = Path(member.name).parts
        if not (member.isfile() or member.isdir()) or member.name.startswith("/") or ".." in parts:
            raise RuntimeError(f"refusing archive member {member.name!r} (not a plain file inside a run folder)")
        if parts[0] not in runs:
            raise RuntimeError(f"refusing archive member {member.name!r} outside the requested runs")
        yield member


def fetch(inventories, limit, results_dir: Path, remote_dir: str | None = None) -> list[dict]:
    """Fetch from every targeted host in parallel; unreachable hosts are reported, never fatal for the rest."""
    from pyinfra.api import Config, State
    from pyinfra.api.connect import connect_all, disconnect_all

    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    state = State(pyinfra_inventory(ansible_hosts(inventories, limit)), Config(CONNECT_TIMEOUT=15, FAIL_PERCENT=100))
    connect_all(state)
    report = [
        {"host": h.data.get("inventory_hostname"), "error": "unreachable"}
        for h in state.inventory
        if h not in state.active_hosts
    ]
    jobs = [state.pool.spawn(_fetch_reported, h, results_dir, remote_dir) for h in state.active_hosts]
    report += [job.get() for job in jobs]
    disconnect_all(state)
    history.ingest_new(results_dir)
    return sorted(report, key=lambda r: r["host"])


def cmd_fetch(args) -> int:
    report = fetch(args.inventory, args.limit, args.results, args.remote_results)
    for r in report:
        if r.get("error"):
            print(f"{r['host']:24} ERROR {r['error']}")
        else:
            got = ", ".join(r["fetched"]) or "nothing new"
            print(f"{r['host']:24} {r['remote_runs']} run(s) in {r['remote']}; fetched: {got}")
    return 1 if any(r.get("error") for r in report) else 0


def register(sub, results_default: Path) -> None:
    p = sub.add_parser("fetch", help="pull runs left on control nodes by scheduled runs (pyinfra, same inventory)")
    p.add_argument("-i", "--inventory", action="append", help="inventory source (default: ansible.cfg's)")
    p.add_argument("-l", "--limit", default="fleet_control", help="host pattern (default: %(default)s)")
    p.add_argument("--remote-results", help="results folder on the hosts (default: their fleet_schedule_results_dir)")
    p.add_argument("--results", type=Path, default=results_default, help="local results (default: %(default)s)")
    p.set_defaults(func=cmd_fetch)
