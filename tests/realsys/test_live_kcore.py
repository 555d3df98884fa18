"""xenscope on a running kernel, ``/proc/kcore``, inside a real Debian guest (QEMU TCG, KASLR on).

The guest runs this machine's own Python and checkout: the host's root is shared read-only over
virtio-9p (Debian's 9p modules, insmod'ed by the initramfs) and the guest chroots into it (``-cpu
max,-la57``: the host's numpy needs more than qemu64's instructions), a second share takes the
results. One boot, one Python process in the guest (:mod:`kcoreguest`), about two minutes.

Truth, none of it from xenscope: the bytes ``/proc/kcore`` itself gives at each ``/proc/kallsyms``
symbol's address (parsed with :mod:`struct` in :mod:`kcorecheck`), QEMU's ``gva2gpa`` for the walks
and for ``init_top_pgt`` (the CR3 xenscope takes), the guest's ``/proc/iomem`` System RAM, its
``/proc`` process list, busybox ``dmesg`` (the kernel's syslog interface), Debian's kernel release,
and the errno the kernel gives an unprivileged open of /proc/kcore.
"""
import errno
import json
import os
import re

import pytest

from gdbutil import TOP, venv_python
from realsys.linux import boot_linux, kernel_files

MODULES = ["kernel/drivers/virtio/virtio_ring.ko", "kernel/drivers/virtio/virtio.ko",
           "kernel/drivers/virtio/virtio_pci_modern_dev.ko", "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
           "kernel/drivers/virtio/virtio_pci.ko", "kernel/fs/netfs/netfs.ko", "kernel/fs/fscache/fscache.ko",
           "kernel/net/9p/9pnet.ko", "kernel/net/9p/9pnet_virtio.ko", "kernel/fs/9p/9p.ko"]
SHARE = "trans=virtio,version=9p2000.L,msize=512000"
INIT = " && ".join([
    "mkdir -p /host", f"mount -t 9p -o {SHARE},ro hostroot /host", "mount -t proc proc /host/proc",
    "mount -t sysfs sys /host/sys", "mount -t devtmpfs dev /host/dev", f"mount -t 9p -o {SHARE} out /host/mnt",
    "dmesg > /host/mnt/busybox-dmesg.txt", "cat /proc/iomem > /host/mnt/iomem.txt",
    "cat /proc/kallsyms > /host/mnt/kallsyms.txt", "echo SHARES-MOUNTED"])


def boot_with_shares(out, append, init=INIT):
    # no_timer_check: on a loaded 2-core machine TCG can miss the IO-APIC timer check at boot (a panic)
    return boot_linux("x86_64", mem=1024, cpu="max,-la57", kaslr=True, modules=MODULES, extra_init=init,
                      extra_append=" ".join(["no_timer_check"] + append),
                      qemu_args=["-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                                            "multidevs=remap",
                                 "-virtfs", f"local,path={out},mount_tag=out,security_model=none"])


def run_driver(vm, *args):
    """Run :mod:`kcoreguest` in the guest (chrooted into the host's root) and wait for it."""
    assert "SHARES-MOUNTED" in vm.console.decode(errors="replace"), vm.console[-3000:]
    driver = os.path.join(TOP, "tests", "realsys", "kcoreguest.py")
    vm.send(f"chroot /host /usr/bin/env -i PATH=/usr/bin:/bin PYTHONPATH={TOP} {venv_python()} {driver} "
            f"{' '.join(['/mnt', *args])}; echo KCORE-\\DONE\n")
    vm.wait_for("KCORE-DONE", timeout=1200)


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    """``(vm, results dir)`` after :mod:`kcoreguest` ran in the guest; the VM stays up for QEMU's truth."""
    out = str(tmp_path_factory.mktemp("kcore"))
    vm = boot_with_shares(out, [])
    try:
        run_driver(vm)
        assert os.path.exists(os.path.join(out, "status.json")), vm.console[-4000:].decode(errors="replace")
        yield vm, out
    finally:
        vm.close()


def load(out, name):
    with open(os.path.join(out, name)) as f:
        return json.load(f) if name.endswith(".json") else f.read()


def gva2gpa(vm, va):
    m = re.search(r"gpa: (0x[0-9a-f]+)", vm.hmp(f"gva2gpa {va:#x}"))
    return int(m.group(1), 16) if m else None


def kallsyms(out):
    return {p[2]: int(p[0], 16) for p in (ln.split() for ln in load(out, "kallsyms.txt").splitlines())
            if len(p) == 3}


def test_every_command_ran(guest):
    status = load(guest[1], "status.json")
    assert {k: v[0] for k, v in status.items()} == {
        "info": 0, "info_json": 0, "tasks": 0, "dmesg": 0, "modules": 0, "modcheck": 0, "vtop": 0, "maps": 0,
        "check": 0}, status


def test_info_on_the_running_kernel(guest):
    vm, out = guest
    info = load(out, "info.json")
    assert info["kind"] == "live kernel (/proc/kcore, read-only)" and info["file"] == "/proc/kcore"
    assert info["osrelease"] == kernel_files("x86_64")[3]
    # kcore lists the whole pages of each System RAM range (walk_system_ram_range)
    ram = [[(int(a, 16) + 0xfff) & ~0xfff, (int(b, 16) + 1) & ~0xfff]
           for a, b in re.findall(r"^([0-9a-f]+)-([0-9a-f]+) : System RAM$", load(out, "iomem.txt"), re.M)]
    assert info["memory"] == ram, (info["memory"], ram)
    assert info["mode"] == "4level" and "init_top_pgt" in info["sources"]["cr3"]
    assert info["cr3"] == gva2gpa(vm, kallsyms(out)["init_top_pgt"]), info
    text = load(out, "info.txt")
    assert "note: read-only: /proc/kcore opened O_RDONLY" in text
    assert "note: symbols: /proc/kallsyms (" in text and "note: types: /sys/kernel/btf/vmlinux" in text


def test_walks_of_kallsyms_symbols_read_what_kcore_gives(guest):
    vm, out = guest
    check = load(out, "check.json")
    rows = check["symbols"]
    assert len(rows) >= 200, len(rows)
    assert all(r["kcore"] is not None and r["walk_pa"] is not None for r in rows), \
        [r for r in rows if r["walk_pa"] is None][:3]
    differ = [r for r in rows if r["via_walk"] != r["kcore"]]
    assert not differ, differ[:3]
    for r in rows[::max(1, len(rows) // 25)]:
        assert r["walk_pa"] == gva2gpa(vm, r["va"]), r


def test_tasks_of_the_running_kernel(guest):
    out = guest[1]
    tasks = load(out, "tasks.json")
    before, after = load(out, "pids_before.json"), load(out, "pids_after.json")
    # task->comm is 15 characters; procfs adds a kworker's current workqueue ("kworker/0:0-rcu_gp")
    alive = {int(p): (c.split("-")[0] if c.startswith("kworker/") else c[:15])
             for p, c in before.items() if after.get(p) == c}
    seen = {t["pid"]: t["comm"] for t in tasks["tasks"]}
    assert len(alive) > 10 and alive.get(1) == "sh" and "python" in alive.values(), alive   # init, the driver
    assert all(seen.get(p) == c for p, c in alive.items()), \
        {p: (c, seen.get(p)) for p, c in alive.items() if seen.get(p) != c}
    said = json.dumps(tasks["kernel"])
    assert "from the running kernel (/proc/kallsyms" in said, said
    assert "offsets from the running kernel's BTF (/sys/kernel/btf/vmlinux" in tasks["kernel"]["profile"], said


def test_dmesg_of_the_running_kernel(guest):
    out = guest[1]
    truth = [ln for ln in load(out, "busybox-dmesg.txt").splitlines() if ln.strip()]
    mine = set(load(out, "dmesg.txt").splitlines())
    assert truth and not [ln for ln in truth if ln not in mine], [ln for ln in truth if ln not in mine][:5]


def test_an_unprivileged_user_is_told_why(guest):
    denied = load(guest[1], "denied.json")
    assert denied.get("errno") == errno.EACCES, denied          # what the kernel itself said
    assert denied["status"] == 2 and denied["stderr"].count("\n") == 1, denied
    assert denied["stderr"].strip() == ("xenscope info: /proc/kcore: permission denied: reading the running "
                                        "kernel needs root (CAP_SYS_RAWIO)"), denied


def test_root_on_a_locked_down_kernel_is_told_why(tmp_path):
    """Booted with lockdown=confidentiality (securityfs mounted, so the guest can tell): the kernel
    refuses root with EPERM, and xenscope says it is the lockdown."""
    out = str(tmp_path)
    init = INIT.replace("mount -t devtmpfs dev /host/dev",
                        "mount -t devtmpfs dev /host/dev && mount -t securityfs none /host/sys/kernel/security")
    vm = boot_with_shares(out, ["lockdown=confidentiality"], init)
    try:
        run_driver(vm, "--locked")
    finally:
        vm.close()
    report = load(out, "locked.json")
    assert "[confidentiality]" in report["lockdown"] and report["errno"] == errno.EPERM, report
    assert report["status"] == 2 and report["stderr"] == (
        "xenscope info: /proc/kcore: permission denied: the kernel is locked down ([confidentiality] in "
        "/sys/kernel/security/lockdown, e.g. Secure Boot): it refuses /proc/kcore even to root\n"), report


def test_modules_vtop_maps_check_of_the_running_kernel(guest):
    """The modules the guest's /proc/modules lists; vtop and the kernel image's maps as QEMU translates
    them; modcheck and check find nothing on a healthy kernel."""
    vm, out = guest
    modules = load(out, "modules.json")
    assert sorted(m["name"] for m in modules["modules"]) == sorted(load(out, "proc_modules.json"))
    assert load(out, "modcheck.json")["ok"] is True
    vtop = load(out, "vtop.json")["translations"]
    assert len(vtop) == 8 and all(t["pa"] == gva2gpa(vm, t["va"]) for t in vtop), vtop
    ranges = load(out, "maps.json")["ranges"]
    stext = kallsyms(out)["_stext"]
    assert any(r["va_start"] <= stext < r["va_end"] for r in ranges), ranges[:5]
    for r in ranges[:20]:
        assert r["pa_start"] == gva2gpa(vm, r["va_start"]), r
    batch = load(out, "batch.json")
    assert len(batch) == 1 and batch[0]["kind"] != "unreadable", batch
    assert all(c["status"] in ("ok", "n.a.") for c in batch[0]["checks"]), batch[0]["checks"]
