"""Running ``check``'s per-dump function over a batch: forked children here, or a Dask cluster.

One function checks one dump (:func:`xenstructs.check.check_dump`); it always runs in a child
process of its own, forked from a process that has already imported the checks (:func:`preload`),
so a C library crashing on a dump kills only that child (:func:`crashed_report`: the dump is
``unreadable``) and never the batch:

* :func:`run_local`: on this machine, ``jobs`` children at a time; reports come back pickled
  through pipes.
* :func:`run_dask`: on a Dask distributed cluster (``pip install 'xenscope[dask]'`` on the client
  and on every worker). Each task is :func:`check_on_worker`, which forks the same child on the
  worker, in the client's working directory when the worker has it (shared storage mounted at the
  same path), so the reports equal a local run's. Results stream back as they finish
  (``as_completed``); a task that fails (a lost worker) is one ``unreadable`` report.

Both call ``progress(done, total, report)`` as each dump finishes, in completion order, and
return the reports in input order.
"""

import os
import socket
import uuid

PRELOAD = ("xenstructs.targets.elfcore", "xenstructs.targets.xccore", "xenstructs.targets.kdump",
           "xenstructs.context", "xenstructs.paging", "xenstructs.xen.host", "xenstructs.xen.frames",
           "xenstructs.xen.ptaudit", "xenstructs.xen.p2m_sources", "xenstructs.linux.kernel",
           "xenstructs.linux.modcheck", "xenstructs.linux.fromdump", "xenstructs.linux.btf",
           "xenstructs.linux.kallsyms", "xenstructs.linux.printk", "xenstructs.xen.console",
           "xenstructs.xen.conring", "xenstructs.xen.shared_info", "xenstructs.xen.symbols",
           "xenstructs.xen.structs", "xenstructs.dumpconsole", "xenstructs.fault.case",
           "xenstructs.commands", "xenstructs.views", "xenstructs.report_html", "kdumpfile")


def preload():
    """Import what the checks import, once in the parent: each forked child inherits it instead of
    importing numpy, construct and libkdumpfile again (0.3 s a dump)."""
    import importlib
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _unreadable(path, text):
    from .check import CheckResult, DumpReport
    return DumpReport(path, "unreadable", [CheckResult("open", "error", text)])


def crashed_report(path, status, cwd=None):
    """The report of a dump whose child (checking from ``cwd``) ended with wait ``status`` without
    sending a report."""
    import signal
    if os.WIFSIGNALED(status):
        num = os.WTERMSIG(status)
        try:
            name = signal.Signals(num).name
        except ValueError:
            name = "unknown"
        from .targets import sniff
        try:
            kdump = sniff(os.path.join(cwd or "", path)).startswith((b"KDUMP   ", b"DISKDUMP", b"makedumpfile"))
        except Exception:                   # noqa: BLE001 - only the wording depends on it
            kdump = False
        who = "the kdump library" if kdump else "the process checking it"
        text = f"{who} crashed on it (signal {num}, {name})"
    else:
        text = f"the process checking it failed (exit status {os.WEXITSTATUS(status)}) without a report"
    return _unreadable(path, text)


def run_local(files, options, jobs, progress=None, cwd=None):
    """Check ``files`` in forked children, ``jobs`` at a time; reports in input order.

    :param cwd: the directory each child checks from (relative paths are relative to it)
    """
    return _Scheduler(files, options, jobs, progress, cwd).run()


class _Scheduler:
    """Fork one child per dump, at most ``jobs`` at a time; collect pickled reports from pipes."""

    def __init__(self, files, options, jobs, progress, cwd):
        self.files, self.options, self.jobs, self.progress, self.cwd = files, options, jobs, progress, cwd
        self.out = [None] * len(files)
        self.running = {}                   # read fd -> [index, pid, chunks]
        self.done = 0

    def run(self):
        queue = list(range(len(self.files)))[::-1]
        try:
            while queue or self.running:
                while queue and len(self.running) < self.jobs:
                    self._start(queue.pop())
                self._collect()
        finally:
            self._kill_all()
        return self.out

    def _start(self, index):
        started = getattr(self.progress, "started", None)
        if started:
            started(self.files[index])
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:                        # the child: never returns
            os.close(read_fd)
            _child(self.files[index], self.options, write_fd, self.cwd)
        os.close(write_fd)
        self.running[read_fd] = [index, pid, []]

    def _collect(self):
        import select
        ready, _, _ = select.select(list(self.running), [], [])
        for fd in ready:
            data = os.read(fd, 1 << 16)
            if data:
                self.running[fd][2].append(data)
                continue
            index, pid, chunks = self.running.pop(fd)
            os.close(fd)
            _, status = os.waitpid(pid, 0)
            self.out[index] = self._report(index, status, b"".join(chunks))
            self.done += 1
            if self.progress:
                self.progress(self.done, len(self.files), self.out[index])

    def _report(self, index, status, data):
        import pickle
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and data:
            try:
                return pickle.loads(data)
            except Exception:               # noqa: BLE001 - a torn report is the child's failure
                pass
        return crashed_report(self.files[index], status, self.cwd)

    def _kill_all(self):
        import signal
        for fd, (_, pid, _) in list(self.running.items()):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
            os.close(fd)
        self.running.clear()


def _child(path, options, write_fd, cwd):
    """Check ``path`` (from ``cwd``) and write its pickled report to ``write_fd``; exit without cleanup."""
    import pickle
    import signal
    code = 0
    try:
        import faulthandler
        faulthandler.disable()              # a crash is reported by the parent, in one line
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        data = pickle.dumps(_check_from(path, options, cwd))
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view):]
    except BaseException:                   # noqa: BLE001 - the parent reports a missing report
        code = 70
    finally:
        os._exit(code)


def _check_from(path, options, cwd):
    from .check import check_dump
    if cwd:
        try:
            os.chdir(cwd)
        except OSError as e:
            if not os.path.isabs(path):
                return _unreadable(path, f"a relative path, and the client's directory is not on "
                                         f"{socket.gethostname()} ({e.strerror}): give absolute paths "
                                         "on storage every worker mounts at the same place")
    return check_dump(path, options)


# ---------------------------------------------------------------------------------------------
# Dask
# ---------------------------------------------------------------------------------------------

def check_on_worker(path, options, cwd):
    """The Dask task: :func:`~xenstructs.check.check_dump` of ``path`` in a child forked on the worker
    (from ``cwd``, the client's directory), as :func:`run_local` does; never raises for a bad dump."""
    if not hasattr(os, "fork"):
        return _check_from(path, options, cwd)
    preload()
    return run_local([path], options, 1, None, cwd)[0]


def _client(address):
    from .errors import XenscopeError
    try:
        from distributed import Client
    except ImportError:
        raise XenscopeError("--dask needs Dask's distributed scheduler: pip install 'xenscope[dask]' "
                            "(here and on every worker)") from None
    try:
        return Client(address, set_as_default=False)   # timeout: Dask's distributed.comm.timeouts.connect
    except (OSError, TimeoutError, ValueError, TypeError) as e:
        raise XenscopeError(f"cannot reach the Dask scheduler at {address}: {e}") from None


def run_dask(files, options, address, progress=None):
    """Check ``files`` on the Dask cluster whose scheduler is at ``address``; reports in input order.

    Every dump is one task (:func:`check_on_worker`), submitted at once; reports are taken as
    they finish. A task that fails (its worker lost, ...) is that dump's ``unreadable`` report.
    """
    from distributed import as_completed
    client = _client(address)
    batch = uuid.uuid4().hex[:12]
    cwd = os.getcwd()
    futures = {}
    try:
        for index, path in enumerate(files):
            future = client.submit(check_on_worker, path, options, cwd, pure=False,
                                   key=f"xenscope-check-{batch}-{index}")
            futures[future] = index
        out = [None] * len(files)
        for done, future in enumerate(as_completed(list(futures), loop=client.loop), 1):
            index = futures[future]
            out[index] = _result(future, files[index])
            if progress:
                progress(done, len(files), out[index])
        return out
    finally:
        client.cancel(list(futures))
        client.close()


def _result(future, path):
    try:
        return future.result()
    except KeyboardInterrupt:
        raise
    except BaseException as e:              # noqa: BLE001 - one failing task never stops the others
        text = str(e).splitlines()[0] if str(e) else ""
        return _unreadable(path, f"the Dask task checking it failed: {type(e).__name__}" + (f": {text}" if text else ""))
