"""Build time of the lab kernel (tinyconfig-lab + tracing, debug, kgdb, mm, qemu) against a plain `defconfig` build
of the same tree, both cold, through playbooks/kernel_build.yml on this machine, printed side by side with the ratio.

Each build gets a fresh build tree in a private work dir (the shared cache under /var/tmp/compaction-lab is not
touched), so the figures are full builds; the source is unpacked once. A defconfig build takes half an hour or more
on 2 shared cores — this is not part of `make test`. Run: .venv/bin/python benchmarks/bench_kernel_build.py
(not under nice: the role already builds at nice 10, and nice adds up).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

CONFIGS = {
    "tinyconfig-lab + fragments": {},
    "defconfig": {"kernel_build_base": "defconfig", "kernel_build_fragments": []},
}


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def build(workdir: Path, artifacts: Path, name: str, extra: dict) -> dict:
    shutil.rmtree(workdir / "build", ignore_errors=True)
    shutil.rmtree(workdir / "out", ignore_errors=True)
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}")
    variables = {
        "kernel_build_arch": "x86_64",
        "kernel_build_workdir": str(workdir),
        "kernel_build_artifacts_dir": str(artifacts),
        **extra,
    }
    # The play's output goes to a log next to the trees: a failed build names its make error there.
    log = workdir / f"{name.split()[0]}.play.log"
    load_before, start = loadavg(), time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(
            [BIN / "ansible-playbook", ROOT / "playbooks/kernel_build.yml", "-e", json.dumps(variables)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    wall = time.monotonic() - start
    if proc.returncode:
        sys.exit(f"{name}: kernel_build.yml failed (rc {proc.returncode}); see {log}")
    manifest = json.loads(next(artifacts.glob("*/manifest.json")).read_text())
    shutil.rmtree(artifacts)
    out = workdir / "out" / manifest["id"]
    return {
        "make_s": manifest["build_seconds"],
        "cpu_s": manifest["build_cpu_seconds"],
        "wall_s": wall,
        "image_mb": (out / manifest["image"]).stat().st_size / 2**20,
        "vmlinux_mb": (out / "vmlinux").stat().st_size / 2**20,
        "load": f"{load_before} -> {loadavg()}",
        "options": sum(1 for line in (out / ".config").read_text().splitlines() if line.startswith("CONFIG_")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/var/tmp/compaction-lab/bench_kernel_build")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, extra in CONFIGS.items():
        with tempfile.TemporaryDirectory() as artifacts:
            results[name] = build(workdir, Path(artifacts) / "kernels", name, extra)
        print(f"{name}: {results[name]}", flush=True)
    lab, ref = results["tinyconfig-lab + fragments"], results["defconfig"]
    header = ("make s", "CPU s", "play s", "image MB", "vmlinux MB", "options")
    print(f"\n{'':28} " + " ".join(f"{h:>{max(8, len(h))}}" for h in header) + "  loadavg")
    for name, r in results.items():
        print(
            f"{name:28} {r['make_s']:8.0f} {r['cpu_s']:8.0f} {r['wall_s']:8.0f} {r['image_mb']:8.1f} "
            f"{r['vmlinux_mb']:10.1f} {r['options']:8d}  {r['load']}"
        )
    # The CPU ratio is the one to trust on a shared host: wall time there mostly measures the other tenants.
    print(
        f"\nlab kernel / defconfig: make wall {lab['make_s'] / ref['make_s']:.2f}, "
        f"CPU {lab['cpu_s'] / ref['cpu_s']:.2f}  (cores: {os.cpu_count()})"
    )


if __name__ == "__main__":
    main()
