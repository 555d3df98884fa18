"""Run inside a guest of the real-system tier (the host's Python and checkout, through a read-only
share): xenscope on the guest's own running kernel, ``/proc/kcore``, in one Python process.

    python tests/realsys/kcoreguest.py OUTDIR            # a guest booted as usual
    python tests/realsys/kcoreguest.py OUTDIR --locked   # a guest booted with lockdown=confidentiality
    python tests/realsys/kcoreguest.py OUTDIR --pv       # a Xen PV dom0: info.txt/json, check.json, p2m_check.json

Writes to OUTDIR: ``info.txt``/``info.json`` (``xenscope info /proc/kcore``), ``check.json``
(:mod:`kcorecheck`: walks of /proc/kallsyms symbols against kcore's bytes), ``tasks.json``,
``dmesg.txt`` (``xenscope dmesg /proc/kcore``), ``modules.json``, ``modcheck.json``,
``vtop.json``, ``maps.json`` (the kernel image's range), ``batch.json`` (``check``), ``proc_modules.json``,
``pids_before.json``/``pids_after.json`` (the
guest's /proc around ``tasks``), ``denied.json`` (what an unprivileged user gets: the kernel's own
errno opening /proc/kcore, and xenscope's exit status and error line), ``status.json``. With
``--locked``, only ``locked.json``: the same for root under lockdown, with the kernel's lockdown file.
"""
import contextlib
import io
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))                    # tests/: kcorecheck
NOBODY = 65534


def cli(args, path):
    """``xenscope ARGS`` in this process, stdout to ``path``; ``(status, stderr)``."""
    from xenstructs.cli import run
    err = io.StringIO()
    with open(path, "w") as out, contextlib.redirect_stderr(err):
        status = run(args, out=out)
    return status, err.getvalue()


def pids():
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/comm") as f:
                    out[int(name)] = f.read().strip()
            except OSError:
                pass
    return out


def _try_kcore():
    """What the kernel says to open("/proc/kcore") (``errno``, 0 when it opens) and xenscope's answer
    to ``info /proc/kcore`` (``status``, ``stderr``), as the calling process."""
    from xenstructs.cli import run
    report = {}
    try:
        os.close(os.open("/proc/kcore", os.O_RDONLY))
        report["errno"] = 0
    except OSError as e:
        report["errno"] = e.errno
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        report["status"] = run(["info", "/proc/kcore"], out=io.StringIO())
    report["stderr"] = err.getvalue()
    return report


def unprivileged():
    """Fork, drop to nobody, try /proc/kcore directly and through xenscope; the child's report."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        report = {}
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            report.update(_try_kcore())
        except BaseException as e:                       # the report says what went wrong
            report["error"] = f"{type(e).__name__}: {e}"
        os.write(write_end, json.dumps(report).encode())
        os._exit(0)
    os.close(write_end)
    data = b""
    while True:
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        data += chunk
    os.waitpid(child, 0)
    return json.loads(data)


def locked(out):
    """Root on a locked-down kernel: the kernel's errno, its lockdown state, xenscope's answer."""
    report = {"lockdown": open("/sys/kernel/security/lockdown").read()}
    report.update(_try_kcore())
    with open(os.path.join(out, "locked.json"), "w") as f:
        json.dump(report, f)


def pv(out):
    """A Xen PV dom0: info, the symbol walks (judged by QEMU's view of machine memory), p2m-check."""
    import kcorecheck
    status = {"info": cli(["info", "/proc/kcore"], os.path.join(out, "info.txt")),
              "info_json": cli(["info", "/proc/kcore", "--json"], os.path.join(out, "info.json"))}
    with open(os.path.join(out, "check.json"), "w") as f, contextlib.redirect_stdout(f):
        kcorecheck.main(["--every", "300"])
    status["p2m_check"] = cli(["p2m-check", "/proc/kcore", "--json"], os.path.join(out, "p2m_check.json"))
    with open(os.path.join(out, "status.json"), "w") as f:
        json.dump(status, f)


def main(out):
    import kcorecheck
    status = {}

    def save(name, value):
        with open(os.path.join(out, name), "w") as f:
            json.dump(value, f)
    status["info"] = cli(["info", "/proc/kcore"], os.path.join(out, "info.txt"))
    status["info_json"] = cli(["info", "/proc/kcore", "--json"], os.path.join(out, "info.json"))
    with open(os.path.join(out, "check.json"), "w") as f, contextlib.redirect_stdout(f):
        kcorecheck.main(["--every", "300"])
    save("pids_before.json", pids())
    status["tasks"] = cli(["tasks", "/proc/kcore", "--json"], os.path.join(out, "tasks.json"))
    save("pids_after.json", pids())
    status["dmesg"] = cli(["dmesg", "/proc/kcore"], os.path.join(out, "dmesg.txt"))
    with open("/proc/modules") as f:
        save("proc_modules.json", [line.split()[0] for line in f])
    status["modules"] = cli(["modules", "/proc/kcore", "--json"], os.path.join(out, "modules.json"))
    status["modcheck"] = cli(["modcheck", "/proc/kcore", "--json"], os.path.join(out, "modcheck.json"))
    rows = json.load(open(os.path.join(out, "check.json")))["symbols"][:8]
    status["vtop"] = cli(["vtop", "/proc/kcore", *(f"{r['va']:x}" for r in rows), "--json"],
                         os.path.join(out, "vtop.json"))
    status["maps"] = cli(["maps", "/proc/kcore", "--range", "ffffffff80000000-ffffffffc0000000", "--json"],
                         os.path.join(out, "maps.json"))
    status["check"] = cli(["check", "/proc/kcore", "--json", "--jobs", "1"], os.path.join(out, "batch.json"))
    save("denied.json", unprivileged())
    save("status.json", status)


if __name__ == "__main__":
    {"--locked": locked, "--pv": pv}.get((sys.argv[2:] or [""])[0], main)(sys.argv[1])
