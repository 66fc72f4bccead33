"""Hostile programs against the sandbox. For each: the parent survives, the result comes back within the timeout plus
a small margin, nothing outside the sandbox changed, and the pool still serves an ordinary program afterwards."""

import asyncio
import hashlib
import itertools
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from agents.sandbox import Sandbox, SandboxLimits
from agents.sandbox.isolation import detect_isolation, host_isolation

TIMEOUT = 2.0
MARGIN = 2.0
LIMITS = SandboxLimits(timeout_s=TIMEOUT, cpu_s=5, memory_mb=1024, output_chars=2000, concurrency=2)
SECRET = "TOPSECRET-d41d8cd98f00"
ISOLATION = detect_isolation()
needs_namespaces = pytest.mark.skipif(not ISOLATION.namespaces, reason=f"isolation here is {ISOLATION.level}")
needs_uid = pytest.mark.skipif(not ISOLATION.unprivileged_uid, reason=f"isolation here is {ISOLATION.level}")
needs_isolation = pytest.mark.skipif(ISOLATION.level == "rlimits", reason="at the rlimits level programs run as you")
pytestmark = pytest.mark.asyncio(loop_scope="module")  # one pool for the module, not one per test
MARKERS = (f"4{os.getpid()}.{n}" for n in itertools.count(1))  # `sleep MARKER`: a daemon the host finds in /proc


@pytest.fixture(scope="module")
def outside():
    """Files the sandbox must neither change nor read, outside /tmp (which the sandbox replaces with its own)."""
    folder = Path(__file__).resolve().parents[1] / ".duet-cache" / f"outside-{os.getpid()}"
    folder.mkdir(parents=True)
    folder.chmod(0o755)
    (folder / "keep.txt").write_text("keep me")
    (folder / "keep.txt").chmod(0o644)
    (folder / "secret.txt").write_text(SECRET)
    (folder / "secret.txt").chmod(0o600)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(LIMITS)
    yield box
    box.close()


@pytest.fixture(scope="module")
def host_sandbox():
    """The level a machine without namespaces gets: `uid` when the tests run as root, `rlimits` otherwise."""
    box = Sandbox(LIMITS, isolation=host_isolation(root=os.geteuid() == 0))
    yield box
    box.close()


@pytest.fixture(params=["detected", "host"])
def each_sandbox(request, sandbox, host_sandbox):
    return sandbox if request.param == "detected" else host_sandbox


@pytest.fixture(scope="module")
def listener():
    """A loopback server the sandbox must not reach."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


def unreachable(result) -> bool:
    """Denied, read-only, or not even visible (when the checkout lives under /tmp, which the sandbox replaces)."""
    return any(name in (result.error or "") for name in ("PermissionError", "FileNotFoundError", "Read-only file system"))


def snapshot(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


async def hostile(sandbox, outside, code):
    before = snapshot(outside)
    started = time.monotonic()
    result = await sandbox.arun(code)
    elapsed = time.monotonic() - started
    assert elapsed < TIMEOUT + MARGIN, f"took {elapsed:.1f} s"
    assert snapshot(outside) == before
    healthy = await sandbox.arun("print(6 * 7)")
    assert healthy.stdout == "42\n" and healthy.ok
    return result


async def test_infinite_loop(sandbox, outside):
    result = await hostile(sandbox, outside, "while True:\n    pass")
    assert result.timed_out and result.error == f"timed out after {TIMEOUT:g} s"


async def test_sleep(sandbox, outside):
    assert (await hostile(sandbox, outside, "import time\ntime.sleep(100)")).timed_out


async def test_busy_threads(sandbox, outside):
    code = "import threading\ndef spin():\n    while True: pass\nfor _ in range(4): threading.Thread(target=spin).start()"
    result = await hostile(sandbox, outside, code)
    assert result.timed_out or "CPU" in (result.error or "")


@needs_uid
async def test_fork_bomb(sandbox, outside):
    result = await hostile(sandbox, outside, "import os\nwhile True:\n    os.fork()")
    assert not result.ok


async def test_thread_bomb(sandbox, outside):
    code = "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(100,)).start()"
    assert not (await hostile(sandbox, outside, code)).ok


async def test_memory_bomb(sandbox, outside):
    result = await hostile(sandbox, outside, "x = bytearray(10 ** 10)")
    assert "MemoryError" in result.error


async def test_growing_memory(sandbox, outside):
    result = await hostile(sandbox, outside, "x = []\nwhile True:\n    x.append(' ' * 10 ** 6)")
    assert "MemoryError" in result.error or result.timed_out


async def test_giant_print(sandbox, outside):
    result = await hostile(sandbox, outside, "print('x' * 10 ** 8)")
    assert result.truncated and result.stdout.endswith("[output truncated]") and len(result.stdout) < 2100


async def test_endless_print(sandbox, outside):
    result = await hostile(sandbox, outside, "while True:\n    print('spam')")
    assert result.truncated and result.timed_out


async def test_binary_garbage_on_stdout(sandbox, outside):
    result = await hostile(sandbox, outside, "import os, sys\nsys.stdout.buffer.write(os.urandom(10 ** 6))")
    assert result.truncated and isinstance(result.stdout, str)


async def test_giant_stderr(sandbox, outside):
    result = await hostile(sandbox, outside, "import sys\nsys.stderr.write('e' * 10 ** 7)\nraise SystemExit(2)")
    assert result.exit_code == 2 and len(result.stderr) <= 2000


async def test_deep_recursion(sandbox, outside):
    result = await hostile(sandbox, outside, "import sys\nsys.setrecursionlimit(10 ** 7)\ndef f(n): return f(n + 1)\nf(0)")
    assert not result.ok


async def test_segfault_through_ctypes(sandbox, outside):
    result = await hostile(sandbox, outside, "import ctypes\nctypes.string_at(0)")
    assert result.error == "killed by signal SIGSEGV"


async def test_os_exit(sandbox, outside):
    result = await hostile(sandbox, outside, "import os\nprint('bye', flush=True)\nos._exit(7)")
    assert result.exit_code == 7 and result.stdout == "bye\n"


async def test_sys_exit(sandbox, outside):
    assert (await hostile(sandbox, outside, "import sys\nsys.exit(3)")).exit_code == 3


async def test_sigterm_ignored(sandbox, outside):
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(100)"
    assert (await hostile(sandbox, outside, code)).timed_out


async def test_killing_the_parent(sandbox, outside):
    await hostile(sandbox, outside, "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")


async def test_killing_every_process_it_can(sandbox, outside):
    await hostile(sandbox, outside, "import os, signal\nos.kill(-1, signal.SIGKILL)")


@needs_isolation
async def test_writing_a_file_outside(sandbox, outside):
    result = await hostile(sandbox, outside, f"open({str(outside / 'new.txt')!r}, 'w').write('x')")
    assert unreachable(result) and not (outside / "new.txt").exists()


@needs_isolation
async def test_overwriting_and_deleting_files_outside(sandbox, outside):
    code = f"import os\ntry:\n    open({str(outside / 'keep.txt')!r}, 'w').write('gone')\nexcept OSError as e: print(e)\nos.remove({str(outside / 'keep.txt')!r})"
    result = await hostile(sandbox, outside, code)
    assert unreachable(result) and (outside / "keep.txt").read_text() == "keep me"


@needs_namespaces
async def test_writing_to_shared_tmp_stays_private(sandbox, outside):
    marker = f"/tmp/duet-escape-{os.getpid()}"
    result = await hostile(sandbox, outside, f"open({marker!r}, 'w').write('x')\nprint('written')")
    assert result.stdout == "written\n" and not Path(marker).exists()


@needs_uid
async def test_reading_a_secret_file(sandbox, outside):
    result = await hostile(sandbox, outside, f"print(open({str(outside / 'secret.txt')!r}).read())")
    assert SECRET not in result.stdout and unreachable(result)


@needs_namespaces
async def test_home_folders_are_hidden(sandbox, outside):
    home = Path.home()
    result = await hostile(sandbox, outside, f"import os\nprint(sorted(os.listdir({str(home)!r})))")
    visible = {entry for entry in os.listdir(home)} if os.access(home, os.R_OK) else set()
    assert not any(name in result.stdout for name in visible - {".pyenv"} if len(name) > 3)


async def test_environment_is_scrubbed(sandbox, outside, monkeypatch):
    monkeypatch.setenv("DUET_TEST_SECRET", SECRET)
    result = await hostile(sandbox, outside, "import os\nprint(dict(os.environ))")
    assert SECRET not in result.stdout and "DUET_TEST_SECRET" not in result.stdout


async def environment_once_exec_finished(pid: int) -> str:
    """Popen returns when exec has released the parent, which is before the kernel fills in the new program's
    environment, so /proc/PID/environ can read empty for a moment."""
    for _ in range(200):
        environ = Path(f"/proc/{pid}/environ").read_text(errors="replace")
        if environ:
            return environ
        await asyncio.sleep(0.01)
    return ""


@needs_isolation
async def test_parent_environment_through_proc(sandbox, outside):
    """/proc shows a process's initial environment only, so the secret goes into a new process's: reading it must
    work from here (else this test could not fail) and not from the sandbox."""
    holder = subprocess.Popen(["sleep", "60"], env={**os.environ, "DUET_TEST_SECRET": SECRET})
    try:
        assert SECRET in await environment_once_exec_finished(holder.pid)
        code = (
            "import os\nfound = []\nfor pid in filter(str.isdigit, os.listdir('/proc')):\n    try:\n"
            f"        found += [pid] if {SECRET!r}.encode() in open(f'/proc/{{pid}}/environ', 'rb').read() else []\n"
            f"    except OSError: pass\ntry: open('/proc/{holder.pid}/environ', 'rb').read()\nexcept OSError as e: print(type(e).__name__)\nprint(found)"
        )
        result = await hostile(sandbox, outside, code)
        assert result.stdout.endswith("[]\n") and SECRET not in result.stdout
    finally:
        holder.kill()
        holder.wait()


@needs_namespaces
async def test_loopback_socket(sandbox, outside, listener):
    code = f"import socket\ns = socket.socket()\ns.settimeout(1)\ns.connect(('127.0.0.1', {listener}))\nprint('connected')"
    result = await hostile(sandbox, outside, code)
    assert "connected" not in result.stdout and "OSError" in result.error or "refused" in (result.error or "")


@needs_namespaces
async def test_outside_socket(sandbox, outside):
    code = "import socket\ns = socket.create_connection(('1.1.1.1', 53), timeout=1)\nprint('connected')"
    result = await hostile(sandbox, outside, code)
    assert "connected" not in result.stdout and not result.ok


@needs_isolation
async def test_spawning_a_shell(sandbox, outside):
    code = f"import subprocess\nprint(subprocess.run('echo from-shell; touch {outside}/shell.txt', shell=True, capture_output=True, text=True))"
    await hostile(sandbox, outside, code)
    assert not (outside / "shell.txt").exists()


@needs_uid
async def test_daemon_does_not_outlive_its_program(sandbox, outside):
    daemon = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(100)\n    os._exit(0)\nprint('parent done')"
    assert (await hostile(sandbox, outside, daemon)).stdout == "parent done\n"
    count = (
        "import os\nmine = []\nfor p in filter(str.isdigit, os.listdir('/proc')):\n    try:\n"
        "        if os.stat(f'/proc/{p}').st_uid == os.getuid() and open(f'/proc/{p}/stat').read().split(') ')[1][0] != 'Z':\n"
        "            mine.append(p)\n    except OSError: pass\nprint(len(mine))"
    )
    survivors = await sandbox.arun(count)
    assert survivors.stdout.strip() == "1"


async def test_file_size_limit(sandbox, outside):
    result = await hostile(sandbox, outside, "open('big.bin', 'wb').write(b'0' * 100 * 2 ** 20)")
    assert not result.ok


async def test_too_many_open_files(sandbox, outside):
    result = await hostile(sandbox, outside, "files = [open('f%d' % i, 'w') for i in range(10000)]")
    assert "Too many open files" in result.error


async def test_raising_its_own_limits(sandbox, outside):
    result = await hostile(sandbox, outside, "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))")
    assert "ValueError" in result.error or "PermissionError" in result.error


@needs_uid
async def test_becoming_root(sandbox, outside):
    assert "PermissionError" in (await hostile(sandbox, outside, "import os\nos.setuid(0)")).error


@needs_uid
async def test_mounting(sandbox, outside):
    result = await hostile(sandbox, outside, "import subprocess\nr = subprocess.run(['mount', '-t', 'tmpfs', 'x', '/mnt'], capture_output=True)\nprint(r.returncode)")
    assert result.stdout.strip() != "0"


async def test_concurrent_hostile_programs_do_not_disturb_each_other(sandbox, outside):
    results = await asyncio.gather(
        sandbox.arun("while True: pass"), sandbox.arun("print(sum(range(10)))"), sandbox.arun("import time; time.sleep(0.2); print('ok')")
    )
    assert results[0].timed_out and results[1].stdout == "45\n" and results[2].stdout == "ok\n"


def daemon(marker: str) -> str:
    """A program that starts `sleep MARKER` in a session of its own, with none of the program's descriptors, and
    ends as soon as it runs."""
    return f"""
import os, time
child = os.fork()
if child == 0:
    os.setsid()
    quiet = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2, 3):
        os.dup2(quiet, fd)
    os.execvp("sleep", ["sleep", "{marker}"])
while open(f"/proc/{{child}}/cmdline", "rb").read() != b"sleep\\x00{marker}\\x00":
    time.sleep(0.01)
print("daemon running")
"""


def running(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes() == f"sleep\x00{marker}\x00".encode():
                found.append(int(pid))
        except OSError:
            pass
    return found


async def test_a_daemon_in_a_session_of_its_own_dies_with_its_program(each_sandbox, outside):
    marker = next(MARKERS)
    assert (await hostile(each_sandbox, outside, daemon(marker))).stdout == "daemon running\n"
    deadline = time.monotonic() + 2
    while running(marker) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not running(marker)


async def test_closing_its_outputs_and_sleeping_is_answered_at_the_timeout(each_sandbox):
    for _ in range(2 * LIMITS.concurrency):  # every worker started, so the time below is the program's alone
        await each_sandbox.arun("print()")
    started = time.monotonic()
    result = await each_sandbox.arun("import os, time\nfor fd in (1, 2, 3):\n    os.close(fd)\ntime.sleep(100)")
    assert time.monotonic() - started < TIMEOUT + 1
    assert result.timed_out and result.error == f"timed out after {TIMEOUT:g} s"
    assert (await each_sandbox.arun("print(6 * 7)")).stdout == "42\n"
