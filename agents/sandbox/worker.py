"""A pre-started sandbox worker: it preloads common libraries once, then forks one child per program.

Run as a script (`python -I worker.py SETTINGS_JSON`), usually inside fresh network, PID, mount, IPC and UTS
namespaces made by `unshare`. It reads one job per line on stdin and writes one reply per line on the file descriptor
it was given, which no child can reach. Each child:
  - gets a fresh working folder on a private tmpfs, and a scrubbed environment;
  - starts its own session, takes the limits (CPU, address space, file size, open files, processes);
  - drops to the worker's own unprivileged uid when the worker runs as root, so the process limit binds and the
    parent's files are out of reach;
  - runs the program as __main__, with stdout and stderr on pipes the worker reads with a cap.
After each job every process of the worker's uid is killed, so daemons, fork bombs and escaped sessions die with it.
This file imports nothing from duet: it must start fast and run with the interpreter's isolated flags.
"""

import atexit
import gc
import json
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback

PRELOAD = ("math", "cmath", "fractions", "decimal", "itertools", "functools", "collections", "re", "string",
           "statistics", "random", "heapq", "bisect", "operator", "datetime", "json", "numpy", "sympy")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


def main() -> None:
    settings = json.loads(sys.argv[1])
    replies = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    if settings["private_mounts"]:
        make_private_filesystem(settings["keep_paths"])
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    gc.freeze()  # preloaded objects stay out of the children's collections, so their pages stay shared
    os.write(replies, b'{"ready": true}\n')
    child = WaitingChild(settings["uid"])
    for line in sys.stdin:
        job = json.loads(line)
        reply, workdir = run_job(child, job["code"], job["limits"], settings)
        os.write(replies, (json.dumps(reply) + "\n").encode())
        clean_up(settings["uid"], child.pid, workdir)
        child = WaitingChild(settings["uid"])


HIDDEN = {"/tmp": "size=512m,mode=1777", "/var/tmp": "size=512m,mode=1777", "/dev/shm": "size=64m,mode=1777",
          "/root": "size=1m,mode=755", "/home": "size=1m,mode=755"}


def make_private_filesystem(keep_paths: list) -> None:
    """Inside our own mount namespace: an empty tmpfs over the shared scratch folders and the home folders, then the
    interpreter's own folders (which may live under /root, or in a checkout under /tmp) put back read-only. They are
    bound back from directory descriptors opened before the tmpfs hid them."""
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    hidden = [root for root in HIDDEN if os.path.isdir(root)]
    kept = sorted({os.path.realpath(p) for p in keep_paths if os.path.isdir(p)})
    kept = [p for p in kept if any(p.startswith(root + "/") for root in hidden)]
    kept = [p for p in kept if not any(p.startswith(other + "/") for other in kept)]
    handles = {path: os.open(path, os.O_RDONLY | os.O_DIRECTORY) for path in kept}
    for root in hidden:
        subprocess.run(["mount", "-t", "tmpfs", "-o", HIDDEN[root], "tmpfs", root], check=True)
    for path, fd in handles.items():
        os.makedirs(path, exist_ok=True)
        subprocess.run(["mount", "--no-canonicalize", "--bind", f"/proc/self/fd/{fd}", path], check=True, pass_fds=[fd])
        subprocess.run(["mount", "-o", "remount,bind,ro", path], check=True)
        os.close(fd)


class WaitingChild:
    """A child forked ahead of its job, so the fork is paid while the worker is otherwise idle."""

    def __init__(self, uid):
        job_read, self.job_write = os.pipe()
        pipes = [os.pipe() for _ in range(3)]  # stdout, stderr, and the status the child reports before it exits
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self.job_write)
            with os.fdopen(job_read, "rb") as job:
                orders = json.loads(job.read())
            run_child(orders["workdir"], [write for _, write in pipes], orders["limits"], uid)
        os.close(job_read)
        for _, write in pipes:
            os.close(write)
        self.readers = [read for read, _ in pipes]

    def start(self, workdir: str, limits: dict) -> None:
        with os.fdopen(self.job_write, "wb") as job:
            job.write(json.dumps({"workdir": workdir, "limits": limits}).encode())


def run_job(child: WaitingChild, code: str, limits: dict, settings: dict) -> tuple:
    uid = settings["uid"]
    workdir = os.path.join(settings["scratch"], f"job-{time.monotonic_ns()}")
    os.makedirs(workdir, mode=0o700)
    with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8") as handle:
        handle.write(code)
    if uid is not None:
        os.chown(workdir, uid, uid)
        os.chown(os.path.join(workdir, "program.py"), uid, uid)
    started = time.monotonic()
    child.start(workdir, limits)
    (stdout, out_cut), (stderr, _), (status, _) = collect(*child.readers, limits=limits, started=started)
    timed_out = time.monotonic() - started >= limits["timeout_s"] and not status
    exit_code = None if timed_out else int(status) if status.strip().lstrip(b"-").isdigit() else wait_status(child.pid)
    reply = {
        "stdout": stdout.decode("utf-8", "replace"),
        "stderr": stderr.decode("utf-8", "replace"),
        "exit_code": exit_code,
        "timed_out": timed_out,
        "truncated": out_cut,
        "duration_s": round(time.monotonic() - started, 4),
    }
    return reply, workdir


def run_child(workdir: str, writers: list, limits: dict, uid) -> None:
    """In the forked child: never returns. Reports its exit status on fd 3 and closes its outputs before the slow
    part of exiting (tearing down an address space that holds numpy and sympy), so the reply need not wait for it."""
    try:
        os.setsid()
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        for target, writer in enumerate(writers, start=1):
            os.dup2(writer, target if target < 3 else 3)
        os.closerange(4, 65536)
        os.chdir(workdir)
        for name, value in limits["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (value, value))
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        os.environ.clear()
        os.environ.update({"PATH": SAFE_PATH, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
                           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
        sys.stdin = open(0, encoding="utf-8", closefd=False)
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)
        sys.argv = ["program.py"]
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with open("program.py", encoding="utf-8", errors="replace") as handle:
            source = handle.read()
        namespace = {"__name__": "__main__", "__file__": "program.py", "__builtins__": __builtins__}
        try:
            exec(compile(source, "program.py", "exec"), namespace)
            threading._shutdown()  # as at a normal interpreter exit: wait for the program's non-daemon threads
            atexit._run_exitfuncs()
            status = 0
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            if not isinstance(stop.code, (int, type(None))):
                print(stop.code, file=sys.stderr)
        except BaseException as error:  # noqa: BLE001 - report the program's own failure
            traceback.print_exception(type(error), error, error.__traceback__.tb_next)
            status = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(3, str(status).encode())
        for fd in (1, 2, 3):
            os.close(fd)
        os._exit(status)
    except BaseException:  # noqa: BLE001 - the flush or the limits failed: still never return into the worker
        os._exit(1)


def collect(*fds: int, limits: dict, started: float) -> list:
    """Read the pipes, keeping at most the output cap of each, until all are closed or the time is up."""
    cap = limits["output_bytes"]
    kept = {fd: bytearray() for fd in fds}
    cut = {fd: False for fd in fds}
    selector = selectors.DefaultSelector()
    for fd in fds:
        selector.register(fd, selectors.EVENT_READ)
    deadline = started + limits["timeout_s"]
    while selector.get_map():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        for key, _ in selector.select(remaining):
            data = os.read(key.fd, 65536)
            if not data:
                selector.unregister(key.fd)
                continue
            room = cap - len(kept[key.fd])
            kept[key.fd] += data[: max(room, 0)]
            cut[key.fd] = cut[key.fd] or len(data) > room
    selector.close()
    for fd in fds:
        os.close(fd)
    return [(bytes(kept[fd]), cut[fd]) for fd in fds]


def wait_status(pid: int) -> int:
    """The child died without reporting (a signal, or its own os._exit): ask the kernel."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def clean_up(uid, pid: int, workdir: str) -> None:
    """After the reply: kill whatever the program left behind, wait until it is gone (a dying process still counts
    against the next program's process limit), remove its folder. The pool keeps spare workers, so this waiting
    does not delay the next program."""
    kill_everything(uid, pid)
    reap()
    shutil.rmtree(workdir, ignore_errors=True)


def kill_everything(uid, pid: int) -> None:
    """Kill everything the program started, escaped sessions too: as PID 1 of our own namespace, one kill(-1);
    otherwise the child's session, and with a uid of our own, every process of that uid."""
    if os.getpid() == 1:
        os.kill(-1, signal.SIGKILL)
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if uid is None:
        return
    killer = os.fork()
    if killer == 0:
        try:
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(killer, 0)


def reap() -> None:
    """Wait for every child (and, as PID 1 of a namespace, every orphan); all of them were just sent SIGKILL."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


if __name__ == "__main__":
    main()
