"""roles/kernel_build end to end: one real build (tinyconfig-lab + all fragments, x86_64) per session, then
what users rely on — the artifact layout, a vmlinux gdb can use with the lx-* helpers, the cache hit, the config
verification naming a dropped option, the kernel booting in the lab, and the install path into a lab guest.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time

import pytest
from compaction_module_utils.kconfig import KconfigTree, evaluate, explain, parse_config
from helpers import BIN, ansible_playbook, run
from kbuild_fixtures import run_kernel_build, run_summary

LAB_INVENTORY = ("-i", "inventory/local.yml", "-i", "inventory/lab.yml", "-i", "tests/inventory/kbuild_lab.yml")


def config_of(path):
    return dict(
        line.split("=", 1) for line in path.read_text().splitlines() if line.startswith("CONFIG_") and "=" in line
    )


@pytest.mark.kbuild
def test_artifact_dir_has_boot_image_debug_vmlinux_gdb_scripts_and_manifest(kernel_artifact):
    manifest = json.loads((kernel_artifact / "manifest.json").read_text())
    config_text = (kernel_artifact / ".config").read_bytes()
    config = config_of(kernel_artifact / ".config")
    print(f"build: {manifest['build_seconds']} s with -j{manifest['jobs']}, {manifest['release']}, {manifest['id']}")

    assert kernel_artifact.name == manifest["id"] == f"{manifest['version']}-{manifest['hash'][:12]}"
    assert manifest["config_sha256"] == hashlib.sha256(config_text).hexdigest()
    assert manifest["arch"] == "x86_64" and manifest["image"] == "bzImage" and manifest["base"] == "tinyconfig-lab"
    assert manifest["source"]["kind"] == "debian" and manifest["version"].startswith("6.1.")
    for name in manifest["files"] + ["scripts/gdb/linux/utils.py", "scripts/gdb/linux/constants.py"]:
        assert (kernel_artifact / name).is_file(), name
    # What the lab, tracing and kgdb need really is in the final config (the role verified it; check the file).
    for sym in ("KGDB", "KGDB_SERIAL_CONSOLE", "KGDB_KDB", "FUNCTION_GRAPH_TRACER", "DYNAMIC_FTRACE", "GDB_SCRIPTS",
                "DEBUG_INFO_DWARF5", "KALLSYMS_ALL", "COMPACTION", "MIGRATION", "TRANSPARENT_HUGEPAGE", "ACPI",
                "VIRTIO_BLK", "EXT4_FS", "IKCONFIG_PROC"):  # fmt: skip
        assert config.get(f"CONFIG_{sym}") == "y", sym
    assert "CONFIG_RANDOMIZE_BASE" not in config
    assert manifest["config"]["KGDB"] == "y" and manifest["config"]["MODULES"] == "n"
    assert b"compact_zone" in (kernel_artifact / "System.map").read_bytes()
    sections = subprocess.run(
        ["readelf", "-S", "-W", kernel_artifact / "vmlinux"], capture_output=True, text=True, check=True
    ).stdout
    assert ".debug_info" in sections and ".debug_line" in sections


@pytest.mark.kbuild
def test_gdb_loads_vmlinux_symbols_and_lx_helpers_from_the_artifact(kernel_artifact):
    out = subprocess.run(
        ["gdb", "-batch", "-nx", "-iex", f"add-auto-load-safe-path {kernel_artifact}",
         "-ex", "info line compact_zone", "-ex", "help lx-ps", "-ex", "p sizeof(struct compact_control)",
         kernel_artifact / "vmlinux"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    assert "Line" in out.stdout and "mm/compaction.c" in out.stdout, out.stdout + out.stderr
    assert "Dump Linux tasks" in out.stdout, out.stdout + out.stderr  # lx-ps help: the helpers were auto-loaded
    assert "$1 = " in out.stdout


@pytest.mark.kbuild
def test_second_run_is_a_cache_hit_with_nothing_changed(kernel_artifact, kernel_build_first_run):
    started = time.monotonic()
    second = run_summary(run_kernel_build().stdout)
    seconds = time.monotonic() - started
    manifest = json.loads((kernel_artifact / "manifest.json").read_text())
    print(f"cache-hit run: {seconds:.1f} s wall; the build itself took {manifest['build_seconds']} s")
    assert second["cached"] and second["dir"] == kernel_artifact
    assert second["changed"] == 0 and second["failed"] == 0, second


@pytest.mark.kbuild
def test_a_dropped_option_fails_before_building_naming_it_and_the_unmet_dependency(kernel_artifact, tmp_path):
    fragment = tmp_path / "kprobes.config"
    # Kprobes need loadable modules in 6.1, and tinyconfig-lab has none.
    fragment.write_text("CONFIG_KPROBES=y\nCONFIG_NO_SUCH_OPTION=y\n")
    proc = run_kernel_build("-e", json.dumps({"kernel_build_extra_fragments": [str(fragment)]}), check=False)
    assert proc.returncode != 0
    assert "CONFIG_KPROBES=y" in proc.stdout and "MODULES [=n]" in proc.stdout, proc.stdout[-3000:]
    assert "no symbol NO_SUCH_OPTION" in proc.stdout
    assert "TASK [kernel_build : Build the kernel" not in proc.stdout


@pytest.fixture
def lab_guest():
    """Boot one of this suite's guests (tests/inventory/kbuild_lab.yml); always bring it down."""
    booted = []

    def up(host, *extra):
        booted.append(host)
        ansible_playbook("lab_up.yml", *LAB_INVENTORY, "-l", host, *extra, timeout=1800)

    yield up
    for host in booted:
        ansible_playbook("lab_down.yml", *LAB_INVENTORY, "-l", host, timeout=600)


def guest_shell(host, command):
    """stdout of a shell command on a lab guest (the minimal callback prints it verbatim after `>>`)."""
    proc = run(
        [BIN / "ansible", host, "-m", "ansible.builtin.shell", "-a", command, *LAB_INVENTORY],
        env={"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.minimal"},
        timeout=300,
    )
    head, sep, out = proc.stdout.partition(" >>\n")
    assert sep and "| CHANGED | rc=0" in head, proc.stdout
    return out.rstrip("\n")


@pytest.mark.kbuild
def test_arm64_cross_build_has_an_arm64_image_and_an_aarch64_vmlinux(kernel_artifact_arm64):
    manifest = json.loads((kernel_artifact_arm64 / "manifest.json").read_text())
    print(f"arm64 cross build: {manifest['build_seconds']} s with -j{manifest['jobs']}, {manifest['id']}")
    assert manifest["arch"] == "arm64" and manifest["image"] == "Image"
    assert manifest["cross_compile"] == "aarch64-linux-gnu-"
    assert manifest["config"]["KGDB"] == "y" and manifest["config"]["FUNCTION_GRAPH_TRACER"] == "y"
    # arm64 Image header: "ARM\x64" magic at offset 56 (Documentation/arm64/booting.rst).
    assert (kernel_artifact_arm64 / "Image").read_bytes()[56:60] == b"ARM\x64"
    header = subprocess.run(
        ["readelf", "-h", "-S", "-W", kernel_artifact_arm64 / "vmlinux"], capture_output=True, text=True, check=True
    ).stdout
    assert "AArch64" in header and ".debug_info" in header


@pytest.mark.kbuild
@pytest.mark.lab
@pytest.mark.parametrize(
    ("host", "artifact", "machine"),
    [("kbuild-x86", "kernel_artifact", "x86_64"), ("kbuild-arm", "kernel_artifact_arm64", "aarch64")],
)
def test_built_kernel_boots_in_the_lab_with_function_graph_kgdb_and_both_cpus(
    host, artifact, machine, request, lab_guest
):
    kernel = request.getfixturevalue(artifact)
    manifest = json.loads((kernel / "manifest.json").read_text())
    lab_guest(host, "-e", f"lab_kernel={kernel}")
    out = guest_shell(
        host,
        "uname -r; uname -m; nproc; cat /sys/kernel/tracing/available_tracers; zcat /proc/config.gz"
        " | grep -x CONFIG_KGDB=y; ls /sys/kernel/tracing/events/compaction | grep -c mm_compaction",
    ).splitlines()
    assert out[:2] == [manifest["release"], machine]
    assert out[2] == "2", "the kernel saw one CPU (x86: ACPI missing? arm64: PSCI missing?)"
    assert "function_graph" in out[3].split()
    assert out[4] == "CONFIG_KGDB=y"
    assert int(out[5]) >= 10


@pytest.mark.kbuild
@pytest.mark.lab
def test_install_into_a_lab_guest_boots_the_new_kernel_once(kernel_artifact, lab_guest):
    manifest = json.loads((kernel_artifact / "manifest.json").read_text())
    lab_guest("kbuild-install")
    before = guest_shell("kbuild-install", "uname -r")
    assert before != manifest["release"]
    cmdline = guest_shell("kbuild-install", "cat /proc/cmdline")
    # Generous: under TCG on a loaded host the guest's apt, kexec and systemd boot take tens of minutes.
    play = ansible_playbook(
        "kernel_build.yml", *LAB_INVENTORY, "-e", "kernel_build_arch=x86_64",
        "-e", "kernel_build_install_hosts=kbuild-install", timeout=3600,
    ).stdout  # fmt: skip
    # QEMU -kernel booted this guest, not GRUB: no boot entry is written, kexec boots the new kernel once and the
    # guest's default boot (QEMU's -kernel) is untouched. (The callback wraps long messages: compare words.)
    said = " ".join(play.split())
    assert "boots once via kexec" in said and "not booted by GRUB" in said, play[-3000:]
    after = guest_shell(
        "kbuild-install", f"uname -r; cat /proc/cmdline; ls /boot/vmlinuz-{manifest['release']} /lib/modules"
    )
    release, new_cmdline = after.splitlines()[:2]
    assert release == manifest["release"]
    assert new_cmdline.strip() == cmdline.strip()  # kexec reused the running command line
    # The Debian kernel's modules are still there: the install added a kernel, it replaced nothing.
    assert before in after


@pytest.mark.kbuild
@pytest.mark.lab
def test_install_into_a_grub_booted_guest_boots_the_new_kernel_once_and_the_old_one_stays_default(
    kernel_artifact, lab_guest
):
    """The bare-metal path: SeaBIOS -> GRUB -> Debian's kernel on a partitioned disk (lab_boot: disk)."""
    host = "kbuild-grub"
    manifest = json.loads((kernel_artifact / "manifest.json").read_text())
    lab_guest(host)
    previous, cmdline = guest_shell(host, "uname -r; cat /proc/cmdline").splitlines()
    assert previous != manifest["release"] and cmdline.startswith(f"BOOT_IMAGE=/boot/vmlinuz-{previous} ")
    started = time.monotonic()
    # Generous: under TCG on a loaded host the hooks (initramfs, update-grub) and each boot take many minutes.
    play = ansible_playbook(
        "kernel_install.yml", *LAB_INVENTORY, "-l", host, "-e", f"kernel_artifact={kernel_artifact}",
        "-e", "kernel_build_install_reboot_timeout=1800", timeout=3600,
    ).stdout  # fmt: skip
    print(f"install + grub one-shot reboot: {time.monotonic() - started:.0f} s")
    said = " ".join(play.split())  # the callback wraps long messages: compare words
    assert f"boots once via grub; grub entry added, the saved default stays {previous}" in said, play[-3000:]
    release, new_cmdline, tracers, kgdb, *grubenv = guest_shell(
        host,
        "uname -r; cat /proc/cmdline; cat /sys/kernel/tracing/available_tracers;"
        " zcat /proc/config.gz | grep -x CONFIG_KGDB=y; grub-editenv list",
    ).splitlines()
    assert release == manifest["release"] and new_cmdline.startswith(f"BOOT_IMAGE=/boot/vmlinuz-{release} ")
    assert "function_graph" in tracers.split() and kgdb == "CONFIG_KGDB=y"
    # GRUB consumed the one-shot entry; the saved default is the previous kernel's entry in the submenu.
    env = dict(line.split("=", 1) for line in grubenv)
    assert env.get("next_entry", "") == "", grubenv
    assert re.fullmatch(rf"gnulinux-advanced-\S+>gnulinux-{re.escape(previous)}-advanced-\S+", env["saved_entry"])
    # The fallback for real: a plain reboot (a power cycle of a hung host alike) comes back on the previous kernel.
    # connect_timeout: a fresh SSH connection for each boot-id check (see the install's reboot task).
    reboot = "reboot_timeout=1800 connect_timeout=60"
    run([BIN / "ansible", host, "-m", "ansible.builtin.reboot", "-a", reboot, *LAB_INVENTORY], timeout=2400)
    assert guest_shell(host, "uname -r") == previous


@pytest.mark.kbuild
def test_kconfig_reasons_read_from_the_real_6_1_tree(kernel_artifact):
    manifest = json.loads((kernel_artifact / "manifest.json").read_text())
    tree = KconfigTree(manifest["srctree"], "x86")
    final = parse_config((kernel_artifact / ".config").read_text())
    assert explain(tree, "KPROBES", "y", final) == ["unmet dependency: depends on (MODULES [=n])"]
    # Why the kgdb fragment carries VT: without it KGDB_SERIAL_CONSOLE's HW_CONSOLE dependency is unmet.
    no_vt = {k: v for k, v in final.items() if k not in ("CONFIG_VT", "CONFIG_HW_CONSOLE")}
    assert explain(tree, "KGDB_SERIAL_CONSOLE", "y", no_vt) == [
        "unmet dependency: depends on (TTY [=y] && HW_CONSOLE [=n])"
    ]
    assert explain(tree, "DEBUG_INFO", "n", final) == ["selected by DEBUG_INFO_DWARF5 [=y]"]
    assert explain(tree, "NO_SUCH_OPTION", "y", final)[0].startswith("no symbol NO_SUCH_OPTION")
    assert "is of type int" in explain(tree, "COMPACT_UNEVICTABLE_DEFAULT", "y", final)[0]
    # `if FTRACE ... endif` around the tracers is an inherited dependency.
    assert "FTRACE" in tree.symbols["FUNCTION_GRAPH_TRACER"].depends
    assert evaluate("FTRACE && (MODULES || !X86_32)", final) == 2
    assert evaluate("MODULES && HAVE_KPROBES", final) == 0


@pytest.fixture(scope="module")
def config_stage_tree(kernel_artifact, tmp_path_factory):
    """The session's real 6.1 source tree cut down to what the config stage reads — Kconfig files, Makefiles, Kbuild
    files, scripts/ and the configs/ dirs: 40 MB and 5000 files instead of 1.3 GB, so the tarball and git sources
    are exercised for real (unpack, clone, checkout, tinyconfig, merge, olddefconfig, verification) in seconds.
    """
    srctree = json.loads((kernel_artifact / "manifest.json").read_text())["srctree"]
    tree = tmp_path_factory.mktemp("ksrc") / "linux-6.1"
    tree.mkdir()
    run(["bash", "-c", "set -euo pipefail; cd \"$0\"; { find . -path ./scripts -prune -o \\( -name 'Kconfig*'"
         " -o -name Makefile -o -name Kbuild \\) -print; find scripts arch/*/configs kernel/configs -type f; }"
         " | tar -cf - -T - | tar -C \"$1\" -xf -", srctree, tree])  # fmt: skip
    return tree


def config_stage(workdir, *extra):
    """Run the role in check mode (source + config + verification, no build): (artifact id, final .config text)."""
    proc = run_kernel_build("--check", "-e", f"kernel_build_workdir={workdir}", *extra)
    key = re.search(r"check mode: (\S+) is not built yet", proc.stdout)
    configs = list(workdir.glob("config/*/.config"))
    assert key and len(configs) == 1, proc.stdout[-3000:]
    return key.group(1), configs[0].read_text()


def tarball_source(tree, tarball):
    """Tar ``tree`` (without its .git) into ``tarball``: the role arguments that build from it."""
    run(["tar", "-C", tree.parent, "--exclude=.git", "-czf", tarball, tree.name])
    return ["-e", "kernel_build_source=tarball", "-e", f"kernel_build_tarball={tarball}"]


@pytest.mark.kbuild
def test_git_and_tarball_sources_key_the_build_by_their_own_commit_and_version(
    kernel_artifact, config_stage_tree, tmp_path
):
    git = ["git", "-C", config_stage_tree, "-c", "user.name=lab", "-c", "user.email=lab@localhost"]
    run([*git, "init", "-q"])
    run([*git, "add", "-A"])
    run([*git, "commit", "-qm", "6.1.192"])
    first = run([*git, "rev-parse", "HEAD"]).stdout.strip()
    makefile = config_stage_tree / "Makefile"
    makefile.write_text(makefile.read_text().replace("\nSUBLEVEL = 192\n", "\nSUBLEVEL = 193\n", 1))
    run([*git, "commit", "-qam", "6.1.193"])
    newer = tarball_source(config_stage_tree, tmp_path / "linux-6.1.193.tar.gz")

    # git at an older commit than HEAD: that commit is checked out, and only the source id differs from the session's
    # Debian build — the same final .config byte for byte, yet another cache key.
    git_key, git_config = config_stage(
        tmp_path / "git", "-e", "kernel_build_source=git",
        "-e", f"kernel_build_git_repo={config_stage_tree}", "-e", f"kernel_build_git_version={first}",
    )  # fmt: skip
    assert git_config == (kernel_artifact / ".config").read_text()
    assert git_key.startswith("6.1.192-") and git_key != kernel_artifact.name

    # The tarball of the newer version: its version names the artifact and changes the key.
    tar_key, tar_config = config_stage(tmp_path / "tarball", *newer)
    assert tar_key.startswith("6.1.193-") and "# Linux/x86_64 6.1.193 Kernel Configuration" in tar_config
    print(f"debian {kernel_artifact.name}, git@{first[:12]} {git_key}, tarball {tar_key}")


@pytest.mark.kbuild
def test_local_patch_and_a_given_base_config_reach_the_final_config(kernel_artifact, config_stage_tree, tmp_path):
    """A local patch adds a Kconfig symbol and a user fragment asks for it, over base `file` (the session's own
    .config standing in for the seed's): the option is only there if the patch really reached the configured tree."""
    kconfig = config_stage_tree / "mm" / "Kconfig"
    patched = tmp_path / "Kconfig"
    patched.write_text(kconfig.read_text() + '\nconfig LAB_PATCHED\n\tbool "compaction-lab local patch"\n')
    patch = tmp_path / "0001-lab-patched.patch"
    diff = subprocess.run(
        ["diff", "-u", "--label", "a/mm/Kconfig", "--label", "b/mm/Kconfig", kconfig, patched],
        capture_output=True, text=True,
    )  # fmt: skip
    assert diff.returncode == 1, diff.stderr  # 1 = the files differ: the patch holds the hunk
    patch.write_text(diff.stdout)
    fragment = tmp_path / "lab-patched.config"
    fragment.write_text("CONFIG_LAB_PATCHED=y\n")
    common = [
        *tarball_source(config_stage_tree, tmp_path / "linux.tar.gz"),
        *("-e", "kernel_build_base=file", "-e", f"kernel_build_base_file={kernel_artifact / '.config'}"),
    ]

    key, config = config_stage(
        tmp_path / "patched", *common,
        "-e", json.dumps({"kernel_build_patches": [str(patch)], "kernel_build_extra_fragments": [str(fragment)]}),
    )  # fmt: skip
    plain_key, plain = config_stage(tmp_path / "plain", *common)
    final, base = parse_config(config), parse_config(plain)
    assert final.pop("CONFIG_LAB_PATCHED") == "y" and "CONFIG_LAB_PATCHED" not in base
    assert final == base  # the given base config came through unchanged otherwise
    assert key != plain_key  # the patch is part of the cache key
    print(f"patched {key}, unpatched {plain_key}")


@pytest.mark.kbuild
def test_running_base_starts_from_the_build_hosts_own_kernel_config(config_stage_tree, tmp_path):
    """Base `running`: /proc/config.gz of kernel_build_for (here this machine's 6.18) is the base the fragments go
    over — its own choices (LOCALVERSION, virtio-mmio, NUMA) survive in the final 6.1 .config."""
    running = parse_config(subprocess.run(["zcat", "/proc/config.gz"], capture_output=True, text=True).stdout)
    source = tarball_source(config_stage_tree, tmp_path / "linux.tar.gz")
    _, config = config_stage(tmp_path / "running", *source, "-e", "kernel_build_base=running")
    final = parse_config(config)
    for option in ("CONFIG_LOCALVERSION", "CONFIG_VIRTIO_MMIO", "CONFIG_NUMA"):
        assert final.get(option) == running.get(option), option
    assert final["CONFIG_FUNCTION_GRAPH_TRACER"] == final["CONFIG_KGDB"] == "y"  # the fragments on top
