"""A real Dask ``LocalCluster`` of worker processes on this machine, for the ``check --dask`` tests.

    python tests/dask_cluster.py WORKERS [--crash-on NAME]

prints the scheduler's address on its first line, then serves until its standard input closes.
``--crash-on NAME``: in every worker, reading a kdump file named NAME raises SIGSEGV in the process
reading it (as a libkdumpfile crash would), so the test can see one dump kill its checker.
"""

import argparse
import contextlib
import os
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def cluster(workers, crash_on=None):
    """``with cluster(2) as address:`` a LocalCluster of ``workers`` processes, in a process of its
    own (never threads in the test process, which forks), importing this checkout's xenstructs."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TOP, os.path.join(TOP, "tests")]))
    argv = [sys.executable, os.path.abspath(__file__), str(workers)] + (["--crash-on", crash_on] if crash_on else [])
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env, cwd=TOP)
    try:
        address = proc.stdout.readline().strip()
        assert address.startswith("tcp://127.0.0.1:"), "the LocalCluster did not start"
        yield address
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def crash_on(name):
    """Run in each worker: make the kdump reader of ``name`` die of SIGSEGV."""
    import os
    import signal
    import xenstructs.targets.kdump as kdump
    real = kdump.validate_kdump

    def validate(fd, path):
        if os.path.basename(path) == name:
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(fd, path)
    kdump.validate_kdump = validate
    return name


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("workers", type=int)
    parser.add_argument("--crash-on")
    args = parser.parse_args()
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        if args.crash_on:
            client.run(crash_on, args.crash_on)
        print(cluster.scheduler_address, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
