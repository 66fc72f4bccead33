"""A pre-started sandbox worker: it preloads common libraries once, then forks one child per program.

Run as a script (`python -I worker.py SETTINGS_JSON`), usually inside fresh network, PID, mount, IPC and UTS
namespaces made by `unshare`. It reads one job per line on stdin and writes one reply per line on the file descriptor
it was given, which no child can reach. Once, at start, it moves into a root of its own that holds only the interpreter's
folders, read-only, and private scratch folders; every other path is absent (see make_private_filesystem). Each child:
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
import errno
import gc
import json
import os
import resource
import selectors
import shutil
import signal
import stat
import sys
import threading
import time
import traceback

PRELOAD = ("math", "cmath", "fractions", "decimal", "itertools", "functools", "collections", "re", "string",
           "statistics", "random", "heapq", "bisect", "operator", "datetime", "json", "numpy", "sympy")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
NEW_ROOT = "/tmp"  # where the new root is put together before it becomes "/"; any folder would do
# the interpreter's libraries, and tools: /usr's program and library folders only, never /usr/src or /usr/local/src,
# where containers often keep an application, its data or a checkout
SYSTEM = ("/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libx32", "/usr/libexec", "/usr/share",
          "/usr/local/bin", "/usr/local/lib", "/usr/local/lib64", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime")  # where the dynamic linker finds libraries; the time zone
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
DEVICE_LINKS = {"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0", "/dev/stdout": "/proc/self/fd/1",
                "/dev/stderr": "/proc/self/fd/2"}
SCRATCH = {"/tmp": "size=512m,mode=1777", "/var/tmp": "size=512m,mode=1777", "/dev/shm": "size=64m,mode=1777"}
LIBRARY_FOLDERS = ("site-packages", "dist-packages")

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 4, 24, 36, 38
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE, MNT_DETACH = 2, 4, 8, 4096, 16384, 1 << 18, 2
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 1
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "ppc64": 203, "s390x": 217}
CAPABILITY_VERSION_3 = 0x20080522


def main() -> None:
    settings = json.loads(sys.argv[1])
    if settings["private_mounts"]:
        refuse_shared_namespaces(settings["outer_mount_namespace"])  # here, while the refusal still reaches stderr
    replies = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of programs come back to us, not to init, so cleanup finds them
    prctl(PR_SET_DUMPABLE, 0)  # programs sharing our uid can neither ptrace us nor open our descriptors via /proc
    filesystem = make_private_filesystem(settings["outer_mount_namespace"]) if settings["private_mounts"] else None
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


def make_read_only(path: str, recursive: bool = True) -> None:
    """The mount at `path`, and every mount below it unless told otherwise, read-only, in one mount_setattr call.
    Setting read-only is allowed inside a user namespace; only clearing a locked flag is not."""
    attributes = MountAttributes(attr_set=MOUNT_ATTR_RDONLY)
    call(libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_long(AT_FDCWD), path.encode(),
                      ctypes.c_long(AT_RECURSIVE if recursive else 0), ctypes.byref(attributes),
                      ctypes.c_long(ctypes.sizeof(attributes))))


def make_private_filesystem(outer_mount_namespace: str) -> dict:
    """Once per worker, inside our own mount and PID namespaces, a new root that holds only what programs need, then
    the old root detached, so that no path leads anywhere else (training data, run folders, the checkout, wherever they
    live), not even a read-only one. Refused anywhere else: pivot_root moves every process of the mount namespace it
    runs in, so in duet's own namespace it would take the machine's files away from everything running there.
      1. a fresh /proc on the old root (for the descriptor paths below), and every mount private, so nothing mounted
         here reaches the host's mount namespace;
      2. descriptors on everything to show, opened before anything is covered (the interpreter may live in /tmp);
      3. an empty tmpfs that becomes the root, holding: empty writable tmpfs for /tmp (the job folders), /var/tmp and
         /dev/shm; a fresh /proc of this PID namespace; the devices programs use; bound read-only at their own paths,
         the system folders (/usr's bin, lib, libexec and share, /usr/local's bin and lib, and the /bin, /lib... folders
         or the links merged-/usr systems have instead), the
         dynamic linker's cache and the time zone, and the interpreter's own folders (see interpreter_folders);
      4. pivot_root into it, the old root detached (nothing keeps it: our working folder moves to the new root), and
         the root tmpfs read-only, so programs can write in the scratch folders only.
    Returns what the new / and its mount table then show, which `duet exec --info` reports."""
    refuse_shared_namespaces(outer_mount_namespace)
    umask = os.umask(0o022)  # the folders made on the way must be traversable by the programs' uid
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    links = {path: os.readlink(path) for path in SYSTEM if os.path.islink(path)}
    shown = [path for path in SYSTEM if path not in links and os.path.isdir(path)]
    for path in interpreter_folders():  # sorted, so a folder comes before the folders inside it
        if not covered(path, shown, links):
            shown.append(path)
    shown += [path for path in (*SYSTEM_FILES, *DEVICES) if os.path.exists(path)]
    handles = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path in shown}
    mount("tmpfs", NEW_ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for path, options in SCRATCH.items():
        os.makedirs(NEW_ROOT + path)
        mount("tmpfs", NEW_ROOT + path, "tmpfs", MS_NOSUID | MS_NODEV, options)
    os.mkdir(NEW_ROOT + "/proc")
    mount("proc", NEW_ROOT + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for path, target in {**links, **DEVICE_LINKS}.items():
        os.symlink(target, NEW_ROOT + path)
    for path, fd in handles.items():
        inside = NEW_ROOT + path
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.makedirs(inside, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(inside), exist_ok=True)
            os.close(os.open(inside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        mount(f"/proc/self/fd/{fd}", inside, None, MS_BIND | MS_REC)
        make_read_only(inside)
        os.close(fd)
    os.chdir(NEW_ROOT)
    pivot_root(".", ".")  # the old root now lies on top of the new one, at "/": detach it
    call(libc.umount2(b".", ctypes.c_int(MNT_DETACH)))
    os.chdir("/")
    make_read_only("/", recursive=False)
    os.umask(umask)
    with open("/proc/self/mountinfo", encoding="utf-8") as table:
        mounts = [(fields[4], fields[5].split(","), fields[fields.index("-") + 1]) for fields in map(str.split, table)]
    return {
        "root": sorted(os.listdir("/")),
        "read_only": sorted(path for path, options, _ in mounts if "ro" in options and path != "/" and not path.startswith("/dev/")),
        "devices": sorted(path for path, _, _ in mounts if path in DEVICES),
        "writable": sorted(path for path, options, kind in mounts if "rw" in options and kind == "tmpfs"),
    }


def refuse_shared_namespaces(outer_mount_namespace: str) -> None:
    """The launcher (isolation.NAMESPACE_FLAGS) makes the worker the first process of new PID and mount namespaces;
    anything else, such as the worker run by hand, stops here."""
    if os.getpid() != 1 or os.readlink("/proc/self/ns/mnt") == outer_mount_namespace:
        raise RuntimeError("a private filesystem is made only in new PID and mount namespaces (see isolation.py)")


def interpreter_folders() -> list:
    """The folders this interpreter loads from, which its programs need too: its installation prefixes (a virtualenv,
    and the Python it was made from) and the library folders on its sys.path, each under the name it was given and
    under its real one. Not the rest of sys.path: the worker runs with -I, so neither the current folder nor
    PYTHONPATH is on it, but a .pth file can add any folder (an editable install adds its source folder), so only
    folders inside a prefix, or named site-packages or dist-packages, are library folders. duet's own checkout is
    never one, even where a prefix holds it: programs need the standard library, numpy and sympy, not duet's source."""
    prefixes = {os.path.abspath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    libraries = {os.path.abspath(p) for p in sys.path if p}
    libraries = {p for p in libraries if within(p, prefixes) or os.path.basename(p) in LIBRARY_FOLDERS}
    source = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))  # holds agents/sandbox/
    installed = os.path.basename(source) in LIBRARY_FOLDERS  # duet itself installed, not a checkout
    folders = {form for path in prefixes | libraries for form in (path, os.path.realpath(path))}
    return sorted(path for path in folders if path != "/" and os.path.isdir(path)
                  and (installed or not within(source, {path, os.path.realpath(path)})))


def within(path: str, folders) -> bool:
    return any(path == folder or path.startswith(folder.rstrip("/") + "/") for folder in folders)


def covered(path: str, shown: list, links: dict) -> bool:
    """Whether `path` is already visible in the new root, inside a folder shown there or behind one of the system
    links (/lib -> usr/lib) into one."""
    top, _, rest = path[1:].partition("/")
    if "/" + top in links:
        path = os.path.normpath(os.path.join("/", links["/" + top], rest))
    return within(path, shown)


def pivot_root(new_root: str, put_old: str) -> None:
    number = PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(errno.ENOSYS, f"pivot_root's system call number on {os.uname().machine} is not known here")
    call(libc.syscall(ctypes.c_long(number), new_root.encode(), put_old.encode()))


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
        """Hand the child its job; BrokenPipeError if it died before reading it."""
        pending = memoryview(json.dumps({"workdir": workdir, "limits": limits}).encode())
        try:
            while pending:
                pending = pending[os.write(self.job_write, pending):]
        finally:
            os.close(self.job_write)

    def discard(self) -> None:
        """Close what a child that died unstarted left, and reap it."""
        for fd in self.readers:
            os.close(fd)
        os.waitpid(self.pid, 0)


def run_job(child: WaitingChild, code: str, limits: dict, workdir: str, uid) -> dict:
    os.makedirs(workdir, mode=0o700)
    with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8") as handle:
        handle.write(code)
    if uid is not None:
        os.chown(workdir, uid, uid)
        os.chown(os.path.join(workdir, "program.py"), uid, uid)
    started = time.monotonic()
    deadline = started + limits["timeout_s"]
    try:
        child.start(workdir, limits)
    except BrokenPipeError:  # it died before its job (killed from outside): the program never ran, so a fresh one runs it
        child.discard()
        child = WaitingChild(uid)
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
                with open(f"/proc/{name}/stat", "rb") as record:
                    state, parent = record.read().rsplit(b")", 1)[1].split()[:2]
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
