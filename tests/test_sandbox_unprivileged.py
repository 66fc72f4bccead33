"""The sandbox as an ordinary user gets it: the `namespaces` level, the one most users have, and the `rlimits` level.

Run from root (as CI is): a throwaway user runs a copy of the sandbox package, with the few packages it needs, under
Debian's /usr/bin/python3, since the project's interpreter may live where other users cannot go (/root is 0700). One
driver process runs every program, so the whole module costs a few seconds."""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_sandbox_hostile import daemon

REPO = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"
TIMEOUT = 3
MARKER = f"4{os.getpid()}.25"  # `sleep MARKER`: a daemon the host can find in /proc
DEPENDENCIES = ("pydantic", "pydantic_core", "typing_extensions", "annotated_types", "typing_inspection")
DRIVER = """
import asyncio, json, sys, time
from agents.sandbox import Sandbox, SandboxLimits
from agents.sandbox.isolation import detect_isolation, host_isolation

async def main(jobs):
    report = {"level": detect_isolation().level}
    for level, programs in jobs.items():
        box = Sandbox(SandboxLimits(timeout_s=%d, concurrency=1), isolation=None if level == "detected" else host_isolation(root=False))
        report[level] = []
        for code in programs:
            started = time.monotonic()
            result = (await box.arun(code)).model_dump()
            report[level].append({**result, "wall_s": time.monotonic() - started})
        await box.aclose()
    print(json.dumps(report))

asyncio.run(main(json.loads(sys.argv[1])))
""" % TIMEOUT

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("setpriv") or not os.access(SYSTEM_PYTHON, os.X_OK),
    reason="needs root, useradd, setpriv and /usr/bin/python3 to run the sandbox as a throwaway unprivileged user; "
    "as an ordinary user, the other sandbox tests already run at that user's own level",
)


@pytest.fixture(scope="module")
def user():
    name = f"duet-sbx-{os.getpid()}"
    made = subprocess.run(["useradd", "--create-home", "--shell", "/usr/sbin/nologin", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create an unprivileged user: {made.stderr.strip()}")
    account = pwd.getpwnam(name)
    (Path(account.pw_dir) / "diary.txt").write_text("private")
    yield account
    subprocess.run(["userdel", "--force", "--remove", name], capture_output=True)


@pytest.fixture(scope="module")
def outside():
    """Where the user's own folders go: outside /home and /tmp, like a checkout under /srv or /data."""
    parent = next((Path(p) for p in ("/srv", "/opt", "/mnt") if os.path.isdir(p)), None)
    if parent is None:
        pytest.skip("no /srv, /opt or /mnt to make the user's folders in")
    return parent


@pytest.fixture(scope="module")
def packages(user, outside):
    """The sandbox package and what it imports, in a folder the user owns, like their checkout and virtualenv: on
    duet's sys.path (PYTHONPATH), not on the worker's (-I), so programs must not see it."""
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
    if version.stdout.strip() != str(sys.version_info[:2]):
        pytest.skip(f"{SYSTEM_PYTHON} is not Python {sys.version.split()[0][:4]}, so it cannot load this venv's pydantic_core")
    folder = outside / f"duet-sbx-packages-{os.getpid()}"
    (folder / "agents").mkdir(parents=True)
    for name in ("__init__.py", "errors.py"):
        shutil.copy(REPO / "agents" / name, folder / "agents" / name)
    shutil.copytree(REPO / "agents" / "sandbox", folder / "agents" / "sandbox", ignore=shutil.ignore_patterns("__pycache__"))
    for name in DEPENDENCIES:
        origin = Path(importlib.util.find_spec(name).origin)
        if origin.name == "__init__.py":
            shutil.copytree(origin.parent, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(origin, folder / origin.name)
    (folder / "driver.py").write_text(DRIVER)
    subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(folder)], check=True)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def data(user, outside):
    """A folder the user owns, like a data folder."""
    folder = outside / f"duet-sbx-data-{os.getpid()}"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep me")
    subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(folder)], check=True)
    yield folder
    shutil.rmtree(folder)


def as_user(user, packages: Path, *command: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": user.pw_dir, "PYTHONPATH": str(packages), "LANG": "C.UTF-8"}
    return subprocess.run(
        ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", *command],
        capture_output=True, text=True, env=env, cwd=packages, timeout=120,
    )


def attempts(data: Path, packages: Path) -> str:
    """Every way a program might change the user's files, each reported as 'done' or the error's name: outside home
    and /tmp, where the old sandbox showed them read-only, they are now absent."""
    return f"""
import ctypes, errno, json, os, subprocess
outcome = {{}}
def attempt(name, action):
    try:
        action()
        outcome[name] = "done"
    except OSError as error:
        outcome[name] = errno.errorcode.get(error.errno, str(error.errno))
def remount_by_syscall():
    attributes = (ctypes.c_uint64 * 4)(0, 1, 0, 0)  # clear MOUNT_ATTR_RDONLY, on / and everything below
    libc = ctypes.CDLL(None, use_errno=True)
    number, here, recursive, size = (ctypes.c_long(n) for n in (442, -100, 0x8000, 32))
    if libc.syscall(number, here, b"/", recursive, attributes, size) != 0:
        raise OSError(ctypes.get_errno(), "mount_setattr")
outcome["mount remount,rw"] = subprocess.run(["mount", "-o", "remount,rw,bind", "/"], capture_output=True).returncode
outcome["nested namespace remount"] = subprocess.run(
    ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", "mount -o remount,rw,bind / && touch {data}/nested.txt"],
    capture_output=True).returncode
attempt("mount_setattr", remount_by_syscall)
attempt("create", lambda: open({str(data / 'new.txt')!r}, "w").write("x"))
attempt("delete", lambda: os.remove({str(data / 'keep.txt')!r}))
attempt("rename", lambda: os.rename({str(data / 'keep.txt')!r}, {str(data / 'moved.txt')!r}))
attempt("mkdir", lambda: os.mkdir({str(data / 'folder')!r}))
attempt("chmod", lambda: os.chmod({str(data / 'keep.txt')!r}, 0o777))
attempt("rewrite the virtualenv", lambda: open({str(packages / 'agents' / 'errors.py')!r}, "a").write("oops"))
attempt("add to the virtualenv", lambda: open({str(packages / 'sitecustomize.py')!r}, "w").write("oops"))
print(json.dumps(outcome))
"""


SURVIVORS = f"""
import os, time
def survivors():
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if open(f"/proc/{{pid}}/cmdline", "rb").read() == b"sleep\\x00{MARKER}\\x00":
                found.append(pid)
        except OSError:
            pass
    return found
deadline = time.monotonic() + 2
while survivors() and time.monotonic() < deadline:
    time.sleep(0.05)
print(len(survivors()))
"""
SILENT_SLEEPER = "import os, time\nfor fd in (1, 2, 3):\n    os.close(fd)\ntime.sleep(100)"


@pytest.fixture(scope="module")
def report(user, packages, data):
    allowed = as_user(user, packages, "touch", str(data / "allowed.txt"))
    assert allowed.returncode == 0, "the user must be able to write the data folder outside the sandbox"
    (data / "allowed.txt").unlink()
    jobs = {
        "detected": [
            attempts(data, packages),
            f"import os\nprint(os.listdir('/home') if os.path.isdir('/home') else [], os.path.exists({str(Path(user.pw_dir) / 'diary.txt')!r}))",
            "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()), open('/proc/1/cmdline').read())",
            SILENT_SLEEPER,
            f"import json, os\nprint(json.dumps([sorted(os.listdir('/')), *(os.path.exists(p) for p in {[str(data / 'keep.txt'), str(packages / 'driver.py')]!r})]))",
        ],
        "rlimits": [daemon(MARKER), SURVIVORS, SILENT_SLEEPER],
    }
    done = as_user(user, packages, SYSTEM_PYTHON, "driver.py", json.dumps(jobs))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_an_ordinary_user_gets_the_namespaces_level(report):
    assert report["level"] == "namespaces"


def test_the_users_files_are_absent_to_programs(report, data, packages):
    outcome = json.loads(report["detected"][0]["stdout"])
    assert outcome.pop("mount remount,rw") != 0 and outcome.pop("nested namespace remount") != 0
    assert outcome.pop("mount_setattr") == "EPERM"
    assert set(outcome.values()) == {"ENOENT"}, outcome
    assert sorted(p.name for p in data.iterdir()) == ["keep.txt"] and (data / "keep.txt").read_text() == "keep me"
    assert not (packages / "sitecustomize.py").exists() and "oops" not in (packages / "agents" / "errors.py").read_text()


def test_home_folders_are_hidden(report, user):
    assert report["detected"][1]["stdout"] == "[] False\n"


def test_the_root_shows_only_the_system_folders_under_the_system_python(report):
    """/usr/bin/python3's folders are all in /usr: nothing else is shown, not the user's checkout, virtualenv or data."""
    root, data_visible, checkout_visible = json.loads(report["detected"][-1]["stdout"])
    system = {name for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr") if os.path.lexists(f"/{name}")}
    assert set(root) == system | {"dev", "etc", "proc", "tmp", "var"} and not data_visible and not checkout_visible


def test_proc_shows_only_the_sandboxs_own_processes(report):
    pids, cmdline = report["detected"][2]["stdout"].split("] ")
    assert "worker.py" in cmdline and len(pids.strip("[").split(",")) <= 4  # the worker, its spare child, the program


@pytest.mark.parametrize("level", ["detected", "rlimits"])
def test_a_program_that_closes_its_outputs_and_sleeps_is_answered_at_its_timeout(report, level):
    result = report[level][3 if level == "detected" else -1]
    assert result["timed_out"] and result["wall_s"] < TIMEOUT + 1


def test_setsid_daemons_die_with_their_program_at_the_rlimits_level(report):
    daemon, survivors = report["rlimits"][:2]
    assert daemon["stdout"] == "daemon running\n" and survivors["stdout"] == "0\n"
