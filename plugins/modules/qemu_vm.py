#!/usr/bin/python
"""Start and stop one QEMU lab guest from a throwaway overlay, with a pidfile the module alone trusts."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: qemu_vm
short_description: Run a QEMU guest (x86_64 or aarch64) on a throwaway qcow2 overlay
description:
  - C(state=started) creates an overlay on the golden image, starts C(qemu-system-<arch>) daemonized with a pidfile,
    SSH forwarded on 127.0.0.1 only, an optional gdbstub and second serial on 127.0.0.1, the console in
    C(<run_dir>/console.log) and a QMP socket; then waits for the guest's SSH banner. A guest that dies or does not
    answer in time is stopped and the failure carries the console tail.
  - Already running with the same command line is C(changed=false); a different command line restarts the guest.
  - C(boot=disk) boots the image's own boot loader (SeaBIOS, then e.g. GRUB) instead of C(kernel), and lets the guest
    reboot (no C(-no-reboot)), as a bare-metal host does.
  - C(accel=auto) uses KVM only when it really runs a kernel (a probe boot with a timeout, cached per host boot),
    else TCG. Nested KVM on some clouds opens C(/dev/kvm) fine and then hangs or aborts.
  - With O(snapshot_dir), a C(boot=kernel) guest without a KGDB serial resumes from a snapshot of an earlier boot
    whose guest-visible inputs (QEMU binary, machine, CPUs, memory, kernel, initrd, command line, image) were the
    same - the RAM state of that boot once its SSH answered, and its disk at that instant as the new overlay's
    backing file. A cold boot with no such snapshot takes one (a live migration to a file, under a second of pause),
    replacing the guest's older one. A snapshot that does not resume is deleted and the guest boots cold. A resumed
    guest's clock is the snapshot's, to be set (the qemu_guest role does). Its console log starts with the snapshotted
    boot's.
  - C(state=stopped) asks the guest to power off (ACPI over QMP), then sends SIGTERM and SIGKILL to the pid from
    the pidfile, only if that process is this guest's QEMU. It removes the overlay, pidfile and sockets; the console
    log stays for post-mortems.
version_added: "0.1.0"
author: compaction-lab
options:
  name:
    description: Guest name (QEMU C(-name)).
    type: str
    required: true
  state:
    description: Whether the guest should run.
    type: str
    choices: [started, stopped]
    default: started
  run_dir:
    description: Directory of the guest's run state (overlay, pidfile, QMP socket, console log).
    type: path
    required: true
  arch:
    description: Guest architecture.
    type: str
    choices: [x86_64, aarch64]
    default: x86_64
  image:
    description: Golden qcow2 image; the guest writes to an overlay on top of it. Required when started.
    type: path
  boot:
    description:
      - C(kernel) boots O(kernel) with O(initrd) and O(cmdline) (QEMU C(-kernel)); the guest's reboot ends QEMU.
      - C(disk) boots the image's boot loader; O(initrd) and O(cmdline) do not apply (the disk's boot loader owns the
        command line), O(kernel) only serves the KVM probe, and the guest may reboot.
    type: str
    choices: [kernel, disk]
    default: kernel
  kernel:
    description: Kernel boot image (bzImage, arm64 Image). Required when started with O(boot=kernel).
    type: path
  initrd:
    description: Initrd, or empty for none.
    type: path
    default: ""
  cmdline:
    description: Kernel command line.
    type: str
    default: ""
  memory_mb:
    description: Guest RAM in MiB.
    type: int
    default: 2048
  cpus:
    description: Guest CPUs.
    type: int
    default: 2
  ssh_port:
    description: Host port on 127.0.0.1 forwarded to the guest's port 22. Required when started.
    type: int
  gdb_port:
    description: QEMU gdbstub port on 127.0.0.1; 0 disables it.
    type: int
    default: 0
  kgdb_port:
    description: Second serial port (guest ttyS1) as a TCP server on 127.0.0.1, for KGDB; 0 disables it. x86_64 only.
    type: int
    default: 0
  accel:
    description: C(auto) probes KVM and falls back to TCG.
    type: str
    choices: [auto, kvm, tcg]
    default: auto
  kvm_probe_timeout:
    description: Seconds a KVM probe boot may take before KVM counts as broken.
    type: int
    default: 20
  kvm_probe_cache:
    description: File caching the probe result for this host boot; empty disables caching.
    type: path
    default: ""
  wait_timeout:
    description: Seconds to wait for the SSH banner after starting; 0 returns right after QEMU started.
    type: int
    default: 300
  stop_timeout:
    description: Seconds the guest gets to power off before SIGTERM.
    type: int
    default: 60
  extra_args:
    description: Extra QEMU arguments, appended.
    type: list
    elements: str
    default: []
  snapshot_dir:
    description: Directory of booted snapshots, one per guest name (C(<snapshot_dir>/<name>/)); empty always boots cold.
    type: path
    default: ""
attributes:
  check_mode:
    support: full
notes:
  - Only processes whose command line names this guest's pidfile are ever signalled.
"""

EXAMPLES = r"""
- name: Boot the x86 guest and wait for SSH
  qemu_vm:
    name: lab-x86
    run_dir: /root/.cache/compaction-lab/run/lab-x86
    arch: x86_64
    image: /root/.cache/compaction-lab/images/amd64-6.1.0-56-amd64-0123456789abcdef.qcow2
    kernel: /root/.cache/compaction-lab/kernels/linux-image-6.1.0-56-amd64_6.1.192-2_amd64/boot/vmlinuz-6.1.0-56-amd64
    initrd: /root/.cache/compaction-lab/kernels/initrd-0123.img
    cmdline: root=/dev/vda rw console=ttyS0 net.ifnames=0 nokaslr
    ssh_port: 10022
    gdb_port: 1234

- name: Stop it
  qemu_vm:
    name: lab-x86
    run_dir: /root/.cache/compaction-lab/run/lab-x86
    state: stopped
"""

RETURN = r"""
pid:
  description: QEMU's pid (null when stopped).
  returned: always
  type: int
accel:
  description: Accelerator in use (kvm or tcg).
  returned: when started
  type: str
kvm_probe:
  description: Why KVM was or was not used.
  returned: when started
  type: str
argv:
  description: QEMU command line.
  returned: when started
  type: list
  elements: str
boot_seconds:
  description:
    - Seconds from QEMU start to the SSH banner (null when the guest was already running or not waited for); when
      RV(resumed), from QEMU start to the banner of the resumed guest.
  returned: when started
  type: float
resumed:
  description: The guest resumed from a booted snapshot instead of booting.
  returned: when started
  type: bool
snapshot:
  description:
    - What happened with the booted snapshot - C(resumed), C(taken in N s) (a cold boot snapshotted), C(off), or why
      none was used or taken.
  returned: when started
  type: str
console_log:
  description: Path of the guest's serial console log.
  returned: always
  type: str
console_tail:
  description: Last lines of the console when the guest failed to come up.
  returned: on failure
  type: str
"""

import hashlib
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

CONSOLE_TAIL_LINES = 40
QEMU_BINARY = {"x86_64": "qemu-system-x86_64", "aarch64": "qemu-system-aarch64"}
CONSOLE_TTY = {"x86_64": "ttyS0", "aarch64": "ttyAMA0"}
# Part of every snapshot key: bump it when what a snapshot holds changes.
SNAPSHOT_FORMAT = 1
# A resume that has not answered SSH by then boots cold instead (a resume takes seconds, a cold boot tens).
RESUME_TIMEOUT = 180
MIGRATE_TIMEOUT = 300


class Paths:
    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.overlay = os.path.join(run_dir, "overlay.qcow2")
        self.pidfile = os.path.join(run_dir, "qemu.pid")
        self.qmp = os.path.join(run_dir, "qmp.sock")
        self.console = os.path.join(run_dir, "console.log")
        self.state = os.path.join(run_dir, "qemu.json")

    def leftovers(self):
        return [p for p in (self.overlay, self.pidfile, self.qmp, self.state) if os.path.lexists(p)]


def console_tail(paths, lines=CONSOLE_TAIL_LINES):
    try:
        with open(paths.console, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no console log)"
    return "\n".join(text.replace("\r", "").splitlines()[-lines:])


def guest_pid(paths):
    """The pid from the pidfile, only if that process is this guest's QEMU (its argv names our pidfile)."""
    try:
        with open(paths.pidfile) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if paths.pidfile.encode() in argv else None


def port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As QEMU's own listeners do: a connection of the guest that just stopped, left in TIME_WAIT on the port,
        # must not count as a conflict (lab_down then lab_up within a minute); a live listener still does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class QmpError(Exception):
    pass


class Qmp:
    """A QMP session on the guest's socket: each call sends one command and returns its reply, skipping events."""

    def __init__(self, path, timeout=5):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
            self.file = self.sock.makefile("rw")
            self.file.readline()  # greeting
            self("qmp_capabilities")
        except BaseException:
            self.sock.close()
            raise

    def __call__(self, command, **arguments):
        self.file.write(json.dumps({"execute": command, "arguments": arguments}) + "\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())  # "" when QEMU closed the socket: ValueError
            if "error" in reply:
                raise QmpError(f"{command}: {reply['error'].get('desc', reply['error'])}")
            if "return" in reply:
                return reply["return"]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()


def qmp_powerdown(paths):
    """Ask for an ACPI power-off over QMP; any failure just means we go on to signals."""
    try:
        with Qmp(paths.qmp) as qmp:
            qmp("system_powerdown")
        return True
    except (OSError, ValueError, QmpError):
        return False


def alive(pid):
    """Running, not a zombie: a daemonized QEMU's parent is whatever init this host has, which may never reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_exit(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.5)
    return False


def stop(paths, timeout):
    """Power off gracefully, then SIGTERM, then SIGKILL; remove run state. Returns how it ended."""
    pid = guest_pid(paths)
    how = "not running"
    if pid is not None:
        how = "powered off"
        if not (timeout > 0 and qmp_powerdown(paths) and wait_exit(pid, timeout)):
            how = "terminated"
            os.kill(pid, signal.SIGTERM)
            if not wait_exit(pid, 10):
                how = "killed"
                os.kill(pid, signal.SIGKILL)
                wait_exit(pid, 10)
    for path in paths.leftovers():
        os.unlink(path)
    return how


def host_arch():
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(platform.machine(), platform.machine())


def boot_id():
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def probe_kvm(module, p):
    """Boot the guest's own kernel under KVM without a root disk: a working KVM panics and exits in seconds."""
    if not p["kernel"]:
        return False, "no kernel to probe KVM with (boot=disk without kernel): accel=kvm forces it"
    if host_arch() != p["arch"]:
        return False, f"host is {host_arch()}, guest {p['arch']}: KVM cannot run it"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    key = {"boot_id": boot_id(), "arch": p["arch"], "kernel": p["kernel"]}
    cache = p["kvm_probe_cache"]
    if cache:
        try:
            with open(cache) as f:
                cached = json.load(f)
            if cached["key"] == key:
                return cached["ok"], cached["why"] + " (cached for this host boot)"
        except (OSError, ValueError, KeyError):
            pass
    with tempfile.NamedTemporaryFile(suffix=".console") as log:
        argv = [
            QEMU_BINARY[p["arch"]],
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "256",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            f"file:{log.name}",
            "-kernel",
            p["kernel"],
            "-append",
            f"console={CONSOLE_TTY[p['arch']]} panic=-1 root=/dev/nonexistent",
        ]
        if p["arch"] == "aarch64":
            argv[1:1] = ["-machine", "virt"]
        started = time.monotonic()
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=p["kvm_probe_timeout"])
            booted = b"Linux version" in log.read()
            ok = proc.returncode == 0 and booted
            why = (
                f"KVM probe boot finished in {time.monotonic() - started:.1f}s"
                if ok
                else f"KVM probe failed (rc {proc.returncode}): {(proc.stderr.strip().splitlines() or [''])[-1]}"
            )
        except subprocess.TimeoutExpired:
            ok, why = False, f"KVM probe boot hung for {p['kvm_probe_timeout']}s (nested KVM?)"
    if cache and not module.check_mode:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        with open(cache, "w") as f:
            json.dump({"key": key, "ok": ok, "why": why}, f)
    return ok, why


def qemu_argv(p, paths, accel):
    net = f"user,id=net0,hostfwd=tcp:127.0.0.1:{p['ssh_port']}-:22"
    argv = [QEMU_BINARY[p["arch"]], "-name", p["name"]]
    if p["arch"] == "aarch64":
        # pauth-impdef: the architected QARMA pointer-auth emulation makes TCG 2.5-3x slower.
        cpu = "host" if accel == "kvm" else "max,pauth-impdef=on"
        argv += ["-machine", "virt", "-cpu", cpu]
    else:
        argv += ["-cpu", "host" if accel == "kvm" else "max"]
    argv += [
        "-accel",
        accel,
        "-m",
        str(p["memory_mb"]),
        "-smp",
        str(p["cpus"]),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
    ]
    if p["boot"] == "kernel":
        argv += ["-no-reboot", "-kernel", p["kernel"], "-append", p["cmdline"]]
    argv += [
        "-drive",
        f"file={paths.overlay},if=none,id=disk0,format=qcow2,discard=unmap",
        "-device",
        "virtio-blk-pci,drive=disk0",
        "-netdev",
        net,
        "-device",
        "virtio-net-pci,netdev=net0",
        "-device",
        "virtio-rng-pci",
        # Appended to, not truncated: a resumed guest's log goes on from its snapshotted boot's (start() empties it
        # for a cold boot).
        "-chardev",
        f"file,id=console,path={paths.console},append=on",
        "-serial",
        "chardev:console",
    ]
    # Same argv order as before boot=disk existed: a running guest's stored argv still matches (no restart).
    if p["boot"] == "kernel" and p["initrd"]:
        argv += ["-initrd", p["initrd"]]
    if p["kgdb_port"]:
        argv += ["-serial", f"tcp:127.0.0.1:{p['kgdb_port']},server=on,wait=off"]
    if p["gdb_port"]:
        argv += ["-gdb", f"tcp:127.0.0.1:{p['gdb_port']}"]
    argv += ["-qmp", f"unix:{paths.qmp},server=on,wait=off", "-pidfile", paths.pidfile, "-daemonize"]
    return argv + p["extra_args"]


def ssh_banner(paths, port, deadline):
    """One connection, kept until the guest's sshd sends its banner or the connection closes (QEMU alive meanwhile).

    slirp accepts at once and connects to the guest in the background, also before the guest has its address: a
    probe given up after a few seconds still reaches the guest later, as an sshd the booting guest forks for nothing
    (several at once when networkd comes up), and sees the banner only at the next probe.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.settimeout(1)
            while time.monotonic() < deadline and guest_pid(paths) is not None:
                try:
                    return s.recv(64).startswith(b"SSH-")
                except TimeoutError:  # socket.timeout since Python 3.10
                    continue
    except OSError:
        pass
    return False


def wait_ssh(paths, port, timeout):
    """Until the guest's sshd answers. slirp accepts connections before the guest listens, hence the banner."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if guest_pid(paths) is None:
            return "QEMU exited"
        if ssh_banner(paths, port, deadline):
            return None
        time.sleep(0.5)
    return f"no SSH banner on 127.0.0.1:{port} within {timeout}s"


class Snapshot:
    """A guest's booted snapshot, <snapshot_dir>/<name>/: ram.state (QEMU's migration stream of the running guest),
    disk.qcow2 (its overlay at that instant, backed by the golden image), console.log (that boot's) and key.json."""

    def __init__(self, p, accel):
        self.dir = os.path.join(p["snapshot_dir"], p["name"])
        self.ram = os.path.join(self.dir, "ram.state")
        self.disk = os.path.join(self.dir, "disk.qcow2")
        self.console = os.path.join(self.dir, "console.log")
        self.meta = os.path.join(self.dir, "key.json")
        self.key = snapshot_key(p, accel)

    def matches(self):
        try:
            with open(self.meta) as f:
                key = json.load(f)["key"]
        except (OSError, ValueError, KeyError):
            return False
        return key == self.key and all(os.path.isfile(f) for f in (self.ram, self.disk, self.console))

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def snapshot_key(p, accel):
    """Hash of what the guest sees: the QEMU command line with host-side names, paths and ports masked, the files it
    boots from and the QEMU binary (its migration format), each by path, size and mtime."""
    argv = qemu_argv(dict(p, name="guest", ssh_port=0, gdb_port=0), Paths("/run"), accel)
    files = [p["image"], p["kernel"], p["initrd"], shutil.which(QEMU_BINARY[p["arch"]]) or ""]
    stats = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files if f]
    return hashlib.sha256(json.dumps([SNAPSHOT_FORMAT, argv, stats]).encode()).hexdigest()[:16]


def snapshot_off(p):
    """Why this guest neither resumes nor is snapshotted, or None."""
    if not p["snapshot_dir"]:
        return "off"
    if p["boot"] != "kernel":
        return "off: boot=disk (the boot loader and the guest's reboots are what such a guest is for)"
    if p["kgdb_port"]:
        return "off: a KGDB serial (a debugger's session on it cannot be resumed)"
    if not p["wait_timeout"]:
        return "off: wait_timeout=0 (a snapshot is taken once SSH answers)"
    return None


def take_snapshot(paths, snap, boot_seconds):
    """Live-migrate the running guest into a file, copy its overlay while the finished migration holds it paused
    (disk flushed: the overlay is exactly the RAM state's disk), resume it, then publish the snapshot in place of the
    guest's older one. Returns the seconds it took; on failure the guest runs on and the error is raised."""
    tmp = snap.dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp, mode=0o700)
    started = time.monotonic()
    try:
        with Qmp(paths.qmp, timeout=30) as qmp:
            try:
                # QEMU 7.2 caps migration at 32 MiB/s by default; this one only writes a local file.
                qmp("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
                qmp("migrate", uri="exec:cat > " + shlex.quote(os.path.join(tmp, "ram.state")))
                deadline = time.monotonic() + MIGRATE_TIMEOUT
                while (info := qmp("query-migrate")).get("status") not in ("completed", "failed", "cancelled"):
                    if time.monotonic() > deadline:
                        qmp("migrate_cancel")
                        raise QmpError(f"migration not done in {MIGRATE_TIMEOUT}s")
                    time.sleep(0.05)
                if info["status"] != "completed":
                    raise QmpError(f"migration {info['status']}: {info.get('error-desc', '')}")
                shutil.copyfile(paths.overlay, os.path.join(tmp, "disk.qcow2"))
            finally:
                if qmp("query-status")["status"] != "running":
                    qmp("cont")
        shutil.copyfile(paths.console, os.path.join(tmp, "console.log"))
        with open(os.path.join(tmp, "key.json"), "w") as f:
            json.dump({"key": snap.key, "taken": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "boot_seconds": boot_seconds}, f)  # fmt: skip
        snap.remove()
        os.rename(tmp, snap.dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return round(time.monotonic() - started, 1)


def launch(module, p, paths, argv, result, snap=None):
    """Create the overlay (on the golden image, or on snap's disk to resume snap) and start QEMU daemonized.
    Returns the monotonic start time."""
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", snap.disk if snap else p["image"],
         paths.overlay],
        check=True,
        capture_output=True,
    )  # fmt: skip
    if snap:
        shutil.copyfile(snap.console, paths.console)
        with open(paths.console, "a") as f:
            f.write(f"\n[qemu_vm] {p['name']} resumed here from its booted snapshot {snap.dir}\n")
    else:
        open(paths.console, "w").close()
    started = time.monotonic()
    proc = subprocess.run(argv + (["-incoming", "exec:cat " + shlex.quote(snap.ram)] if snap else []),
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        stop(paths, 0)
        module.fail_json(msg=f"{p['name']}: QEMU did not start: {proc.stderr.strip()}", **result)
    # The command line without -incoming: the guest it describes is the same, resumed or booted.
    with open(paths.state, "w") as f:
        json.dump({"argv": argv, "accel": result["accel"]}, f)
    result["pid"] = guest_pid(paths)
    return started


def start(module, p, paths):
    result = {"changed": False, "console_log": paths.console}
    accel, why = p["accel"], f"accel={p['accel']} requested"
    if accel == "auto":
        ok, why = probe_kvm(module, p)
        accel = "kvm" if ok else "tcg"
    argv = qemu_argv(p, paths, accel)
    result.update(accel=accel, kvm_probe=why, argv=argv, boot_seconds=None, resumed=False, snapshot="")

    pid = guest_pid(paths)
    if pid is not None:
        try:
            with open(paths.state) as f:
                same = json.load(f)["argv"] == argv
        except (OSError, ValueError, KeyError):
            same = False
        if same:
            result["pid"] = pid
            problem = wait_ssh(paths, p["ssh_port"], p["wait_timeout"]) if p["wait_timeout"] else None
            if problem:
                module.fail_json(
                    msg=f"{p['name']}: running but {problem}. Console ({paths.console}), last lines:\n"
                    f"{console_tail(paths)}",
                    **result,
                )
            return result
    result["changed"] = True
    if module.check_mode:
        result["pid"] = pid
        return result
    if pid is not None or paths.leftovers():
        stop(paths, p["stop_timeout"])

    busy = [
        f"{what} {port}"
        for what, port in (("ssh", p["ssh_port"]), ("gdb", p["gdb_port"]), ("kgdb", p["kgdb_port"]))
        if port and not port_free(port)
    ]
    if busy:
        module.fail_json(
            msg=f"{p['name']}: 127.0.0.1 port(s) already in use: {', '.join(busy)}. Another guest or "
            "service holds them (ss -ltnp); stop it or give this guest other ports.",
            **result,
        )

    os.makedirs(paths.run_dir, mode=0o700, exist_ok=True)
    note = snapshot_off(p)
    snap = None if note else Snapshot(p, accel)
    if snap and snap.matches():
        started = launch(module, p, paths, argv, result, snap)
        problem = wait_ssh(paths, p["ssh_port"], min(p["wait_timeout"], RESUME_TIMEOUT))
        if problem is None:
            result.update(boot_seconds=round(time.monotonic() - started, 1), resumed=True, snapshot="resumed")
            return result
        stop(paths, 0)
        snap.remove()
        note = f"{snap.dir} did not resume ({problem}): deleted, booted cold"

    started = launch(module, p, paths, argv, result)
    if p["wait_timeout"]:
        problem = wait_ssh(paths, p["ssh_port"], p["wait_timeout"])
        if problem:
            tail = console_tail(paths)
            stop(paths, 0)
            module.fail_json(
                msg=f"{p['name']}: {problem}; guest stopped. Console ({paths.console}), last lines:\n{tail}",
                console_tail=tail,
                **result,
            )
        result["boot_seconds"] = round(time.monotonic() - started, 1)
    if snap:
        try:
            taken = f"taken in {take_snapshot(paths, snap, result['boot_seconds'])} s"
        except (OSError, ValueError, QmpError) as e:
            taken = f"not taken: {e}"
        note = f"{note}; {taken}" if note else taken
    result["snapshot"] = note
    return result


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["started", "stopped"], "default": "started"},
            "run_dir": {"type": "path", "required": True},
            "arch": {"type": "str", "choices": ["x86_64", "aarch64"], "default": "x86_64"},
            "image": {"type": "path"},
            "boot": {"type": "str", "choices": ["kernel", "disk"], "default": "kernel"},
            "kernel": {"type": "path"},
            "initrd": {"type": "path", "default": ""},
            "cmdline": {"type": "str", "default": ""},
            "memory_mb": {"type": "int", "default": 2048},
            "cpus": {"type": "int", "default": 2},
            "ssh_port": {"type": "int"},
            "gdb_port": {"type": "int", "default": 0},
            "kgdb_port": {"type": "int", "default": 0},
            "accel": {"type": "str", "choices": ["auto", "kvm", "tcg"], "default": "auto"},
            "kvm_probe_timeout": {"type": "int", "default": 20},
            "kvm_probe_cache": {"type": "path", "default": ""},
            "wait_timeout": {"type": "int", "default": 300},
            "stop_timeout": {"type": "int", "default": 60},
            "extra_args": {"type": "list", "elements": "str", "default": []},
            "snapshot_dir": {"type": "path", "default": ""},
        },
        required_if=[("state", "started", ("image", "ssh_port"))],
        supports_check_mode=True,
    )
    p = module.params
    paths = Paths(p["run_dir"])
    if p["state"] == "stopped":
        pid = guest_pid(paths)
        changed = pid is not None or bool(paths.leftovers())
        how = "would stop" if module.check_mode and changed else None
        if not module.check_mode:
            how = stop(paths, p["stop_timeout"])
        module.exit_json(changed=changed, pid=None, stopped=how, console_log=paths.console)

    if p["boot"] == "kernel" and not p["kernel"]:
        module.fail_json(msg=f"{p['name']}: boot=kernel needs kernel (or boot=disk for an image with a boot loader)")
    if p["kgdb_port"] and p["arch"] != "x86_64":
        module.fail_json(msg="kgdb_port needs a second UART: x86_64 guests only (arm64 virt has one PL011)")
    for what in ("image", "kernel", "initrd"):
        if p[what] and not os.path.isfile(p[what]):
            module.fail_json(msg=f"{p['name']}: {what} {p[what]} does not exist (run the guest_image role first)")
    module.exit_json(**start(module, p, paths))


if __name__ == "__main__":
    main()
