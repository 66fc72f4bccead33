"""A pre-started sandbox worker: it preloads common libraries once, then forks one child per program.

Run as a script (`python -I worker.py SETTINGS_JSON`), usually inside fresh network, PID, mount, IPC and UTS
namespaces made by `unshare`. It reads one job per line on stdin and writes one reply per line on the file descriptor
it was given, which no child can reach. Once, at start, it makes the whole filesystem read-only to its programs, except
private scratch folders (see make_private_filesystem). Each child:
  - takes no privileges: no setuid binaries, no capabilities, and the worker's own unprivileged uid when the worker
    runs as root, so the process limit binds and the parent's files are out of reach;
  - gets a fresh working folder on a private tmpfs, and a scrubbed environment;
  - starts its own session, takes the limits (CPU, address space, file size, open files, processes);
  - runs the program as __main__, with stdout and stderr on pipes the worker reads with a cap.
The reply comes by the program's deadline whatever the program does. After each job everything the program started is
killed (the worker is their subreaper, or the first process of their PID namespace), daemons and escaped sessions too.
This file imports nothing from duet: it must start fast and run with the interpreter's isolated flags. It runs on
Linux only (detect_isolation refuses other systems).
"""

import atexit
import ctypes
import gc
import json
import os
import resource
import selectors
import shutil
import signal
import sys
import threading
import time
import traceback

PRELOAD = ("math", "cmath", "fractions", "decimal", "itertools", "functools", "collections", "re", "string",
           "statistics", "random", "heapq", "bisect", "operator", "datetime", "json", "numpy", "sympy")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
SCRATCH = {"/tmp": "size=512m,mode=1777", "/var/tmp": "size=512m,mode=1777", "/dev/shm": "size=64m,mode=1777"}
HIDDEN = {"/root": "size=1m,mode=755", "/home": "size=1m,mode=755"}

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 4, 24, 36, 38
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_PRIVATE = 2, 4, 8, 4096, 1 << 18
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 1
CAPABILITY_VERSION_3 = 0x20080522


def main() -> None:
    settings = json.loads(sys.argv[1])
    replies = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of programs come back to us, not to init, so cleanup finds them
    prctl(PR_SET_DUMPABLE, 0)  # programs sharing our uid can neither ptrace us nor open our descriptors via /proc
    filesystem = make_private_filesystem(settings["keep_paths"]) if settings["private_mounts"] else None
    if settings["probe"]:
        os.write(replies, (json.dumps({"ready": True, "filesystem": filesystem}) + "\n").encode())
        return
    uid = settings["uid"]
    if uid is not None:
        kill_every_process_of(uid)
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    gc.freeze()  # preloaded objects stay out of the children's collections, so their pages stay shared
    os.write(replies, b'{"ready": true}\n')
    child = WaitingChild(uid)
    for line in sys.stdin:
        job = json.loads(line)
        workdir = os.path.join(settings["scratch"], f"job-{time.monotonic_ns()}")
        try:
            reply = run_job(child, job["code"], job["limits"], workdir, uid)
            os.write(replies, (json.dumps(reply) + "\n").encode())
        finally:  # also when the reply cannot be written because duet went away
            kill_everything()
            shutil.rmtree(workdir, ignore_errors=True)
        child = WaitingChild(uid)
    kill_everything()


def call(result: int) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def prctl(option: int, value: int) -> None:
    call(libc.prctl(ctypes.c_int(option), *(ctypes.c_ulong(v) for v in (value, 0, 0, 0))))


def mount(source: str, target: str, kind: str | None, flags: int, options: str | None = None) -> None:
    call(libc.mount(source.encode(), target.encode(), kind and kind.encode(), ctypes.c_ulong(flags), options and options.encode()))


class MountAttributes(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("attr_set", "attr_clr", "propagation", "userns_fd")]


def make_read_only(path: str, propagation: int = 0) -> None:
    """The mount at `path` and every mount below it, read-only (and with a propagation type, if given), in one
    mount_setattr call. Setting read-only is allowed inside a user namespace; only clearing a locked flag is not."""
    attributes = MountAttributes(attr_set=MOUNT_ATTR_RDONLY, propagation=propagation)
    call(libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_long(AT_FDCWD), path.encode(),
                      ctypes.c_long(AT_RECURSIVE), ctypes.byref(attributes), ctypes.c_long(ctypes.sizeof(attributes))))


def make_private_filesystem(keep_paths: list) -> dict:
    """Once per worker, inside our own mount and PID namespaces, in this order:
      1. a fresh /proc, so programs see only this namespace's processes and nothing of the host's;
      2. every mount read-only and private, recursively, so no program can change the user's files anywhere;
      3. empty writable tmpfs over the scratch folders (/tmp holds the job folders), empty tmpfs over the homes;
      4. the interpreter's own folders under those (pyenv under /root, a checkout under /tmp) bound back read-only,
         from directory descriptors opened before the tmpfs hid them; then the home tmpfs read-only too.
    Returns what the mount table then says, which `duet exec --info` reports."""
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    make_read_only("/", propagation=MS_PRIVATE)
    covered = {root: options for root, options in {**SCRATCH, **HIDDEN}.items() if os.path.isdir(root)}
    kept = sorted({os.path.realpath(p) for p in keep_paths if os.path.isdir(p)})
    kept = [p for p in kept if any(p.startswith(root + "/") for root in covered)]
    kept = [p for p in kept if not any(p.startswith(other + "/") for other in kept)]
    handles = {path: os.open(path, os.O_RDONLY | os.O_DIRECTORY) for path in kept}
    for root, options in covered.items():
        mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, options)
    for path, fd in handles.items():
        os.makedirs(path, exist_ok=True)
        mount(f"/proc/self/fd/{fd}", path, None, MS_BIND)
        make_read_only(path)
        os.close(fd)
    hidden = [root for root in HIDDEN if root in covered]
    for root in hidden:
        make_read_only(root)
    with open("/proc/self/mountinfo", encoding="utf-8") as table:
        writable = sorted({fields[4] for fields in map(str.split, table) if "rw" in fields[5].split(",")})
    return {"writable": writable, "hidden": hidden, "kept": kept}


def drop_privileges(uid) -> None:
    """No program may gain privileges: setuid binaries stop working (no_new_privs), and where the worker is root,
    for real or inside its user namespace, the child empties its capability bounding set, then takes the worker's
    unprivileged uid, or, without one, drops every capability. A root without capabilities cannot mount, so it
    cannot make the read-only filesystem writable again."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    if os.geteuid() != 0:
        return
    with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as last:
        for capability in range(int(last.read()) + 1):
            prctl(PR_CAPBSET_DROP, capability)
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        return
    header = (ctypes.c_uint32 * 2)(CAPABILITY_VERSION_3, 0)
    none = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: twice, for capabilities 0-31 and 32-63
    call(libc.capset(header, none))


class WaitingChild:
    """A child forked ahead of its job, so the fork is paid while the worker is otherwise idle."""

    def __init__(self, uid):
        job_read, self.job_write = os.pipe()
        pipes = [os.pipe() for _ in range(3)]  # stdout, stderr, and the status the child reports before it exits
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.close(self.job_write)
                drop_privileges(uid)
                with os.fdopen(job_read, "rb") as job:
                    orders = json.loads(job.read())
                run_child(orders["workdir"], [write for _, write in pipes], orders["limits"])
            finally:  # no job (the worker went away) or no privileges to drop: never return into the worker's code
                os._exit(1)
        os.close(job_read)
        for _, write in pipes:
            os.close(write)
        self.readers = [read for read, _ in pipes]

    def start(self, workdir: str, limits: dict) -> None:
        with os.fdopen(self.job_write, "wb") as job:
            job.write(json.dumps({"workdir": workdir, "limits": limits}).encode())


def run_job(child: WaitingChild, code: str, limits: dict, workdir: str, uid) -> dict:
    os.makedirs(workdir, mode=0o700)
    with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8") as handle:
        handle.write(code)
    if uid is not None:
        os.chown(workdir, uid, uid)
        os.chown(os.path.join(workdir, "program.py"), uid, uid)
    started = time.monotonic()
    deadline = started + limits["timeout_s"]
    child.start(workdir, limits)
    (stdout, out_cut), (stderr, _), (status, _) = collect(*child.readers, cap=limits["output_bytes"], deadline=deadline)
    if status.strip().lstrip(b"-").isdigit():
        exit_code, timed_out = int(status), False
    else:
        exit_code = exit_code_by(child.pid, deadline)
        timed_out = exit_code is None
    return {
        "stdout": stdout.decode("utf-8", "replace"),
        "stderr": stderr.decode("utf-8", "replace"),
        "exit_code": exit_code,
        "timed_out": timed_out,
        "truncated": out_cut,
        "duration_s": round(time.monotonic() - started, 4),
    }


def run_child(workdir: str, writers: list, limits: dict) -> None:
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


def collect(*fds: int, cap: int, deadline: float) -> list:
    """Read the pipes, keeping at most `cap` bytes of each, until all are closed or the deadline passes."""
    kept = {fd: bytearray() for fd in fds}
    cut = {fd: False for fd in fds}
    selector = selectors.DefaultSelector()
    for fd in fds:
        selector.register(fd, selectors.EVENT_READ)
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


def exit_code_by(pid: int, deadline: float):
    """The child did not report a status (a signal, its own os._exit, or it closed the report pipe): its exit code,
    or None if it still runs at the deadline. Polled, because a plain waitpid could wait past the deadline forever."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.001)


def kill_everything() -> None:
    """Kill everything the programs started and reap it (a dying process still counts against the next program's
    process limit). As PID 1 of our own namespace, one kill(-1) reaches every process in it; otherwise the worker is
    the subreaper of everything its programs started, escaped sessions included. The pool keeps spare workers, so
    this does not delay the next program."""
    if os.getpid() == 1:
        os.kill(-1, signal.SIGKILL)
    else:
        kill_descendants(os.getpid())
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def kill_descendants(root: int, patience_s: float = 5.0) -> None:
    """SIGKILL every process below `root`, pass after pass, until only zombies are left. A process orphaned by a
    kill moves up to the nearest subreaper, `root` itself, so the next pass still finds it, and a process with
    SIGKILL pending can fork no more. Zombies are signalled too: a zombie thread-group leader may still have live
    threads. The runner calls this from outside to discard a worker; `patience_s` bounds a process stuck in the
    kernel."""
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        below = descendants(root)
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if all(state == b"Z" for state in below.values()):
            return
        time.sleep(0.001)


def descendants(root: int) -> dict:
    """Every process below `root`, with its state letter, from /proc."""
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as stat:
                    state, parent = stat.read().rsplit(b")", 1)[1].split()[:2]
            except (OSError, ValueError):
                continue  # gone meanwhile
            children.setdefault(int(parent), []).append((int(name), state))
    found, queue = {}, [root]
    while queue:
        for pid, state in children.get(queue.pop(), []):
            found[pid] = state
            queue.append(pid)
    return found


def kill_every_process_of(uid: int) -> None:
    """At start, with a uid leased to this worker: whatever still runs under it (left by a worker that was killed)
    dies, so no program can signal ours or count against their process limit."""
    killer = os.fork()
    if killer == 0:
        try:
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(killer, 0)


if __name__ == "__main__":
    main()
