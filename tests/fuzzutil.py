"""Run one fuzz example in a forked child under a time and a memory limit.

The contract every parser and reader must keep on hostile input: return a result or raise
:class:`~xenstructs.errors.XenscopeError` (argparse's ArgumentTypeError for the argument types),
within ``seconds`` and ``megabytes`` — never another exception, a signal, a hang or unbounded
memory. :func:`contract` runs ``fn()`` in a child (``os.fork``: nothing is pickled) with
``RLIMIT_AS`` set, and returns what happened: ``"ok"``, ``"refused: <message>"``; or raises an
AssertionError describing the breach (the exception and its traceback, the signal, the timeout).
"""
import argparse
import os
import resource
import signal
import time
import traceback

from xenstructs.errors import XenscopeError

SECONDS = 20
MEGABYTES = 1536          # address space of the child: the interpreter, numpy and the example


def _child(fn, megabytes, write):
    limit = megabytes << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        fn()
        write(b"ok")
    except (XenscopeError, argparse.ArgumentTypeError) as e:
        write(b"refused: " + str(e).encode(errors="replace")[:500])
    except MemoryError:
        write(b"BREACH MemoryError (memory grew with the input's claims)")
    except BaseException as e:          # noqa: BLE001 - anything else is the breach we look for
        write(f"BREACH {type(e).__name__}: {e}\n{traceback.format_exc()}".encode(errors="replace")[:8000])


def contract(fn, seconds=SECONDS, megabytes=MEGABYTES):
    """Run ``fn()`` in a forked child; return "ok" or "refused: ..."; AssertionError on a breach."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # the child never returns into pytest
        os.close(read_end)
        try:
            _child(fn, megabytes, lambda data: os.write(write_end, data))
        finally:
            os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + seconds
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.005)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_end)
        raise AssertionError(f"BREACH: hang (more than {seconds} s)")
    with os.fdopen(read_end, "rb") as f:
        said = f.read().decode(errors="replace")
    if os.WIFSIGNALED(status):
        raise AssertionError(f"BREACH: killed by signal {os.WTERMSIG(status)} ({said[:200]!r})")
    if not said or said.startswith("BREACH"):
        raise AssertionError(said or "BREACH: the child said nothing (exit status "
                                     f"{os.WEXITSTATUS(status)})")
    return said
