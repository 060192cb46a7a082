"""qemu_vm's pure parts: the QEMU command line it builds and the pidfile trust rule (no guest is booted here)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("qemu_vm", ROOT / "plugins" / "modules" / "qemu_vm.py")
qemu_vm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(qemu_vm)


def params(**kw):
    p = {
        "name": "g",
        "arch": "x86_64",
        "boot": "kernel",
        "kernel": "/k",
        "initrd": "/i",
        "cmdline": "root=/dev/vda nokaslr",
        "memory_mb": 2048,
        "cpus": 2,
        "ssh_port": 10022,
        "gdb_port": 1234,
        "kgdb_port": 4444,
        "extra_args": [],
    }
    p.update(kw)
    return p


def option_values(argv, flag):
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_every_listener_binds_loopback_only(tmp_path):
    argv = qemu_vm.qemu_argv(params(), qemu_vm.Paths(str(tmp_path)), "tcg")
    assert option_values(argv, "-netdev") == ["user,id=net0,hostfwd=tcp:127.0.0.1:10022-:22"]
    assert option_values(argv, "-gdb") == ["tcp:127.0.0.1:1234"]
    assert option_values(argv, "-chardev") == [f"file,id=console,path={tmp_path}/console.log,append=on"]
    assert option_values(argv, "-serial") == ["chardev:console", "tcp:127.0.0.1:4444,server=on,wait=off"]
    assert option_values(argv, "-qmp") == [f"unix:{tmp_path}/qmp.sock,server=on,wait=off"]


def test_optional_listeners_are_absent_when_off(tmp_path):
    argv = qemu_vm.qemu_argv(params(gdb_port=0, kgdb_port=0, initrd=""), qemu_vm.Paths(str(tmp_path)), "tcg")
    assert "-gdb" not in argv and "-initrd" not in argv
    assert option_values(argv, "-serial") == ["chardev:console"]


def test_kernel_boot_passes_kernel_initrd_cmdline_and_ends_qemu_on_reboot(tmp_path):
    argv = qemu_vm.qemu_argv(params(), qemu_vm.Paths(str(tmp_path)), "tcg")
    assert option_values(argv, "-kernel") == ["/k"] and option_values(argv, "-initrd") == ["/i"]
    assert option_values(argv, "-append") == ["root=/dev/vda nokaslr"] and "-no-reboot" in argv


def test_disk_boot_leaves_kernel_and_cmdline_to_the_boot_loader_and_lets_the_guest_reboot(tmp_path):
    argv = qemu_vm.qemu_argv(params(boot="disk"), qemu_vm.Paths(str(tmp_path)), "tcg")
    assert not {"-kernel", "-initrd", "-append", "-no-reboot"} & set(argv)
    assert option_values(argv, "-device")[0] == "virtio-blk-pci,drive=disk0"


def test_arm64_uses_virt_and_cheap_pointer_auth_under_tcg(tmp_path):
    argv = qemu_vm.qemu_argv(params(arch="aarch64", kgdb_port=0), qemu_vm.Paths(str(tmp_path)), "tcg")
    assert argv[0] == "qemu-system-aarch64"
    assert option_values(argv, "-machine") == ["virt"]
    assert option_values(argv, "-cpu") == ["max,pauth-impdef=on"]
    assert option_values(argv, "-accel") == ["tcg"]


def test_kvm_uses_the_host_cpu(tmp_path):
    argv = qemu_vm.qemu_argv(params(), qemu_vm.Paths(str(tmp_path)), "kvm")
    assert option_values(argv, "-cpu") == ["host"] and option_values(argv, "-accel") == ["kvm"]


def test_pidfile_of_a_foreign_process_is_not_trusted(tmp_path):
    paths = qemu_vm.Paths(str(tmp_path))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        Path(paths.pidfile).write_text(f"{sleeper.pid}\n")
        assert qemu_vm.guest_pid(paths) is None  # alive, but its argv does not name our pidfile
        Path(paths.pidfile).write_text("999999999\n")
        assert qemu_vm.guest_pid(paths) is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_pidfile_of_our_process_is_trusted(tmp_path):
    paths = qemu_vm.Paths(str(tmp_path))
    # Any process whose argv carries the pidfile path counts, exactly as QEMU's `-pidfile <path>` does.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "-pidfile", paths.pidfile])
    try:
        Path(paths.pidfile).write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + 10  # until the child has exec'd (before that, /proc shows pytest's argv)
        while qemu_vm.guest_pid(paths) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert qemu_vm.guest_pid(paths) == proc.pid
        assert qemu_vm.stop(paths, 0) == "terminated"  # no QMP socket: straight to SIGTERM
        assert proc.wait(timeout=10) != 0
        assert not os.path.exists(paths.pidfile)
    finally:
        proc.kill()


@pytest.mark.parametrize("busy", [True, False])
def test_port_free_sees_a_listener(busy):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        if busy:
            s.listen()
            assert not qemu_vm.port_free(port)
    if not busy:
        assert qemu_vm.port_free(port)


def test_snapshot_key_ignores_host_side_names_and_ports_but_not_what_the_guest_sees(tmp_path):
    files = {}
    for name in ("image", "kernel", "initrd"):
        files[name] = tmp_path / name
        files[name].write_text(name)
    base = params(**{k: str(v) for k, v in files.items()}, kgdb_port=0)
    key = qemu_vm.snapshot_key(base, "tcg")
    assert qemu_vm.snapshot_key(dict(base, name="other", ssh_port=10060, gdb_port=0), "tcg") == key
    for change in ({"memory_mb": 1024}, {"cpus": 1}, {"cmdline": "root=/dev/vda"}, {"extra_args": ["-s"]}):
        assert qemu_vm.snapshot_key(dict(base, **change), "tcg") != key, change
    assert qemu_vm.snapshot_key(base, "kvm") != key
    files["kernel"].write_text("a rebuilt kernel")
    assert qemu_vm.snapshot_key(base, "tcg") != key


@pytest.mark.parametrize(
    ("change", "why"),
    [({"snapshot_dir": ""}, "off"), ({"boot": "disk"}, "boot=disk"), ({"kgdb_port": 4444}, "KGDB"),
     ({"wait_timeout": 0}, "wait_timeout=0")],
)  # fmt: skip
def test_snapshots_are_off_where_a_resume_cannot_stand_for_a_boot(change, why):
    p = params(snapshot_dir="/s", kgdb_port=0, wait_timeout=300)
    assert qemu_vm.snapshot_off(p) is None
    assert why in qemu_vm.snapshot_off(dict(p, **change))
