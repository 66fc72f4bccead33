"""The sandbox's filesystem is an allowlist: a program sees the interpreter and its libraries (read-only) and its own
job folder (writable), and every other path is absent, not merely read-only. The answer key of code-executing RL
lives where clusters keep it, outside home and /tmp (/data, /scratch, /work, /srv): training data with its gold
answers, a run's rollouts (each with its `gold`) and pass rates, and the checkout. Here a fake one is put outside
home and /tmp, and a program tries every way to it a program has."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from agents.sandbox import Sandbox, SandboxLimits
from agents.sandbox.isolation import WORKER, detect_isolation, host_isolation, worker_settings
from agents.sandbox.worker import SYSTEM, descendants
from tests.test_cli import duet

REPO = Path(__file__).resolve().parents[1]
ISOLATION = detect_isolation()
GOLD = f"GOLD-{uuid.uuid4().hex}"
needs_private_filesystem = pytest.mark.skipif(not ISOLATION.private_filesystem, reason=f"isolation here is {ISOLATION.level}")


def outside_home_and_tmp() -> Path:
    """A folder like /srv or /var/lib, where neither home nor /tmp is: the old sandbox showed those read-only."""
    homes = [Path.home().resolve(), Path("/home"), Path("/root"), Path("/tmp"), Path(tempfile.gettempdir()).resolve()]
    for candidate in (Path("/srv"), Path("/var/lib"), Path("/opt"), Path("/mnt"), REPO.parent):
        if candidate.is_dir() and os.access(candidate, os.W_OK) and not any(candidate.resolve().is_relative_to(h) for h in homes):
            return candidate
    pytest.skip("no writable folder outside home and /tmp to put the answer key in")


@pytest.fixture(scope="module")
def answer_key():
    """Training data with a gold answer, a run folder with rollouts and pass rates, and a checkout, all readable by
    every user (as on a shared cluster), outside home and /tmp."""
    folder = Path(tempfile.mkdtemp(prefix="duet-answer-key-", dir=outside_home_and_tmp()))
    record = json.dumps({"question": "What is 6 * 7?", "gold": GOLD}) + "\n"
    files = {
        "data/train.jsonl": record,
        "runs/grpo/rollouts/rank-0.jsonl": record,
        "runs/grpo/pass_rates.json": json.dumps({"What is 6 * 7?": 0.5, "gold": GOLD}),
        "checkout/README.md": GOLD,
        "checkout/agents/sandbox/worker.py": f"# {GOLD}\n",
    }
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(SandboxLimits(timeout_s=20, cpu_s=20, output_chars=200_000, concurrency=1))
    yield box
    box.close()


def targets(answer_key: Path) -> list[str]:
    return [str(answer_key), str(answer_key / "data" / "train.jsonl"), str(answer_key / "runs"),
            str(answer_key / "runs" / "grpo" / "rollouts" / "rank-0.jsonl"), str(answer_key / "runs" / "grpo" / "pass_rates.json"),
            str(answer_key / "checkout"), str(answer_key / "checkout" / "README.md"), str(REPO / "README.md"),
            str(REPO / "agents"), str(REPO / "pyproject.toml"), str(REPO / ".git")]


# Every way to a path a program has: the path itself, through its own and the worker's /proc root and working
# folder, `..` from the job folder, a symlink of its own; then every descriptor and working folder /proc shows.
ATTACK = r"""
import errno, json, os, sys
targets, gold = json.loads(sys.argv[1]), sys.argv[2]
outcome, leaks = {}, []
def attempt(route, path):
    try:
        if os.path.isdir(path):
            found = " ".join(os.listdir(path))
        else:
            with open(path, errors="replace") as handle:
                found = handle.read()
        outcome[route] = "GOLD" if gold in found else "visible"
    except OSError as error:
        outcome[route] = errno.errorcode.get(error.errno, str(error.errno))
for n, target in enumerate(targets):
    relative = target.lstrip("/")
    attempt(f"{target}", target)
    attempt(f"{target} by /proc/self/root", "/proc/self/root/" + relative)
    attempt(f"{target} by /proc/1/root", "/proc/1/root/" + relative)
    attempt(f"{target} by /proc/self/cwd", "/proc/self/cwd/" + "../" * 12 + relative)
    attempt(f"{target} by ..", "../" * 12 + relative)
    os.symlink(target, f"link-{n}")
    attempt(f"{target} by a symlink", f"link-{n}")
    outcome[f"{target} by stat"] = "visible" if os.path.lexists(target) else "ENOENT"
for pid in ["self", *filter(str.isdigit, os.listdir("/proc"))]:
    for kind in ("cwd", "root", "exe"):
        try:
            leaks.append(os.readlink(f"/proc/{pid}/{kind}"))
        except OSError:
            pass
    for folder in (f"/proc/{pid}/fd", f"/proc/{pid}/map_files"):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            try:
                leaks.append(os.readlink(f"{folder}/{name}"))
            except OSError:
                pass
for name in os.listdir("/dev/fd"):
    try:
        leaks.append(os.readlink(f"/dev/fd/{name}"))
    except OSError:
        pass
print(json.dumps({"outcome": outcome, "leaks": leaks}))
"""


async def attack(sandbox, answer_key):
    code = f"import sys\nsys.argv[1:] = [{json.dumps(targets(answer_key))!r}, {GOLD!r}]\n" + ATTACK
    result = await sandbox.arun(code)
    assert result.ok, result.error
    return json.loads(result.stdout)


@needs_private_filesystem
async def test_the_answer_key_and_the_checkout_are_absent_by_every_route(sandbox, answer_key):
    report = await attack(sandbox, answer_key)
    assert GOLD not in json.dumps(report)
    outcome = report["outcome"]
    through_the_worker = {route: found for route, found in outcome.items() if "/proc/1/" in route}
    assert set(through_the_worker.values()) <= {"ENOENT", "EACCES"}, through_the_worker
    rest = {route: found for route, found in outcome.items() if route not in through_the_worker}
    assert set(rest.values()) == {"ENOENT"}, {route: found for route, found in rest.items() if found != "ENOENT"}


@needs_private_filesystem
async def test_no_descriptor_or_working_folder_in_the_sandbox_leads_outside(sandbox, answer_key):
    """The descriptors and working folders of every process a program can see (its own, its worker's where /proc
    lets it): pipes, /dev/null, the job folder and the interpreter's files, never the checkout or the old root."""
    leaks = (await attack(sandbox, answer_key))["leaks"]
    assert leaks and "/" in leaks  # /proc/self/root: the sandbox's own root
    allowed = ("pipe:", "socket:", "anon_inode:", "/dev/", "/tmp/job-", *ISOLATION.filesystem.read_only)
    assert [leak for leak in leaks if leak != "/" and not leak.startswith(allowed)] == []
    assert not any(leak.startswith((str(answer_key), str(REPO) + "/")) and ".venv" not in leak for leak in leaks)


@needs_private_filesystem
async def test_the_root_lists_only_the_allowlist(sandbox):
    """/ holds the system folders (or their merged-/usr links), /etc with the linker's cache and the time zone, the
    devices, /proc, the scratch folders, and the first folder of each of the interpreter's own folders (a pyenv
    under /root, a venv in the checkout), each folder on the way to one showing nothing but the next."""
    prefixes = {p for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix} for p in (prefix, os.path.realpath(prefix))}
    prefixes = {p for p in prefixes if not p.startswith(tuple(s + "/" for s in SYSTEM))}
    on_the_way = {}  # folder -> the names it may show: the next folder towards each prefix
    for prefix in prefixes:
        parts = prefix.strip("/").split("/")
        for depth in range(len(parts)):
            on_the_way.setdefault("/" + "/".join(parts[:depth]), set()).add(parts[depth])
    # the program's own job folder lies in /tmp too, beside an interpreter that lives there (a checkout under /tmp)
    listed = "sorted(n for n in os.listdir(f) if os.path.join(f, n) != os.getcwd())"
    code = f"import json, os\nprint(json.dumps({{f: {listed} for f in {sorted({*on_the_way, '/etc', '/dev', '/var'})!r}}}))"
    result = await sandbox.arun(code)
    assert result.ok, result.stderr
    seen = json.loads(result.stdout)
    expected = {"dev", "etc", "proc", "tmp", "var"} | {p.split("/")[1] for p in SYSTEM if os.path.lexists(p)} | on_the_way["/"]
    assert set(seen.pop("/")) == expected and ISOLATION.filesystem.root == sorted(expected)
    assert seen.pop("/etc") == ["ld.so.cache", "localtime"] and seen.pop("/var") == ["tmp"]
    assert set(seen.pop("/dev")) == {"fd", "full", "null", "random", "shm", "stderr", "stdin", "stdout", "urandom", "zero"}
    assert {folder: set(names) for folder, names in seen.items()} == {f: on_the_way[f] for f in seen}


@needs_private_filesystem
async def test_programs_still_have_numpy_sympy_a_job_folder_and_tools(sandbox):
    code = (
        "import numpy, sympy, os, subprocess, tempfile\n"
        "open('out.txt', 'w').write('x' * 10)\nos.mkdir('sub')\n"
        "with tempfile.NamedTemporaryFile(dir='/tmp') as handle: handle.write(b'y')\n"
        "print(numpy.arange(4).sum(), sympy.factorint(60), os.path.getsize('out.txt'), os.getcwd().startswith('/tmp/job-'))\n"
        "print(subprocess.run(['sh', '-c', 'echo shell; date +%Y >/dev/null'], capture_output=True, text=True).stdout.strip())\n"
        "print(subprocess.run([__import__('sys').executable, '-c', 'import numpy; print(1)'], capture_output=True, text=True).stdout.strip())"
    )
    result = await sandbox.arun(code)
    assert result.ok, result.stderr
    assert result.stdout == "6 {2: 2, 3: 1, 5: 1} 10 True\nshell\n1\n"


@needs_private_filesystem
async def test_the_interpreter_and_the_root_are_read_only_and_nothing_can_be_mounted_back(sandbox, answer_key):
    """No capabilities, so no mount; a nested user namespace gets capabilities over a copy of the sandbox's mounts
    only, and the old root is in none of them."""
    prefix = os.path.realpath(sys.prefix)
    code = f"""
import errno, os, subprocess
def attempt(action):
    try:
        action()
        return "done"
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error.errno))
print(attempt(lambda: open({os.path.join(prefix, 'sitecustomize.py')!r}, 'w')), attempt(lambda: os.mkdir('/data')),
      attempt(lambda: open('/etc/passwd', 'w')))
print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])
mounted = subprocess.run(['mount', '--bind', '/', '/tmp'], capture_output=True)
nested = subprocess.run(['unshare', '--user', '--map-root-user', '--mount', '--pid', '--fork', '--mount-proc', 'sh', '-c',
                         'mount -t tmpfs x /mnt 2>&1; ls / /proc/1/root; cat {answer_key}/data/train.jsonl; ls {answer_key}'],
                        capture_output=True, text=True)
print(mounted.returncode != 0, {GOLD!r} in nested.stdout + nested.stderr, 'duet-answer-key' in nested.stdout)
"""
    result = await sandbox.arun(code)
    assert result.ok, result.stderr
    assert result.stdout == "EROFS EROFS EROFS\n0000000000000000\nTrue False False\n"


@needs_private_filesystem
@pytest.mark.skipif(os.geteuid() != 0, reason="reading another user namespace's /proc/PID/fd needs root")
async def test_the_worker_keeps_no_way_to_the_old_root():
    """Seen from here: the worker and its waiting child work in their own root, and hold no descriptor on a folder
    (the checkout, the old root) that a program could inherit or reach."""
    box = Sandbox(SandboxLimits(concurrency=1))
    try:
        assert (await box.arun("print(1)")).stdout == "1\n"
        checked = 0
        for pid in (pid for worker in box._workers if worker.process for pid in descendants(worker.process.pid)):
            try:  # as the sandbox sees them: its own root; the worker in it, a child that just ran in its job folder
                assert os.readlink(f"/proc/{pid}/root") == "/" and re.fullmatch(r"/|/tmp/job-\d+", os.readlink(f"/proc/{pid}/cwd"))
                assert not os.path.samefile(f"/proc/{pid}/cwd", REPO) and not os.path.samefile(f"/proc/{pid}/root", "/")
                for name in os.listdir(f"/proc/{pid}/fd"):
                    assert not os.path.isdir(f"/proc/{pid}/fd/{name}"), os.readlink(f"/proc/{pid}/fd/{name}")
                checked += 1
            except FileNotFoundError:  # a child that was just done and is gone
                continue
        assert checked
    finally:
        box.close()


@needs_private_filesystem
def test_the_worker_refuses_to_build_its_root_outside_new_pid_and_mount_namespaces():
    """pivot_root moves every process of the mount namespace it runs in: a worker started without new namespaces
    would take the machine's files from everything running beside it. Tried here where that is harmless: in a new
    mount namespace without a PID namespace, and in new ones given as duet's own."""
    launcher = [arg for arg in ISOLATION.launcher if arg not in ("--pid", "--kill-child")]
    settings = json.dumps(worker_settings(uid=None, scratch="/tmp", private_mounts=True, probe=True))
    without_pid = subprocess.run([*launcher, sys.executable, "-I", str(WORKER), settings], capture_output=True, timeout=30)
    own = ("import json, os, subprocess, sys\nsettings = json.loads(sys.argv[1])\n"
           "settings['outer_mount_namespace'] = os.readlink('/proc/self/ns/mnt')\n"
           "os.execv(sys.executable, [sys.executable, '-I', sys.argv[2], json.dumps(settings)])")
    same_namespace = subprocess.run([*ISOLATION.launcher, sys.executable, "-I", "-c", own, settings, str(WORKER)],
                                    capture_output=True, timeout=30)
    for refused in (without_pid, same_namespace):
        assert refused.returncode != 0 and b"ready" not in refused.stdout
        assert b"only in new PID and mount namespaces" in refused.stderr
    assert (REPO / "README.md").exists()


def test_levels_without_a_mount_namespace_say_the_filesystem_is_visible():
    for root in (True, False):
        isolation = host_isolation(root)
        assert "see the whole filesystem" in isolation.warning and "training data" in isolation.warning
        assert "all visible" in dict(isolation.describe())["filesystem"]


@needs_private_filesystem
def test_exec_info_describes_the_allowlist():
    result = duet("exec", "--info")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("filesystem:"))
    assert "only what the interpreter needs" in line and "everything else absent" in line
    assert f"/ holds only {', '.join(ISOLATION.filesystem.root)}" in line and "/tmp" in line


def test_the_interpreters_folders_are_its_prefixes_and_library_folders_never_the_checkout(monkeypatch, tmp_path):
    """What a worker shows of its sys.path: folders inside its prefixes, and site-packages or dist-packages folders
    elsewhere; not a folder a .pth file added (an editable install's source folder), and never duet's checkout, even
    where a prefix holds it (its library folders are shown instead)."""
    from agents.sandbox import worker

    added, elsewhere = tmp_path / "editable-source", tmp_path / "elsewhere" / "site-packages"
    for folder in (added, elsewhere):
        folder.mkdir(parents=True)
    monkeypatch.setattr(sys, "path", [*sys.path, str(REPO), str(added), str(elsewhere)])
    shown = worker.interpreter_folders()
    assert os.path.realpath(sys.base_prefix) in shown and str(elsewhere) in shown
    assert str(REPO) not in shown and str(added) not in shown
    library = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_relative_to(sys.prefix))
    monkeypatch.setattr(sys, "prefix", str(REPO.parent))
    monkeypatch.setattr(sys, "exec_prefix", str(REPO.parent))
    shown = worker.interpreter_folders()
    assert str(REPO.parent) not in shown and not any(REPO.is_relative_to(p) for p in shown) and library in shown


@needs_private_filesystem
async def test_an_application_kept_under_usr_src_is_absent():
    """Containers often keep their application and its data in /usr/src (Docker's WORKDIR /usr/src/app): /usr is
    shown folder by folder, and that one is not among them."""
    folder = Path(tempfile.mkdtemp(prefix="duet-app-", dir="/usr/src"))
    (folder / "train.jsonl").write_text(json.dumps({"gold": GOLD}) + "\n")
    folder.chmod(0o755)
    (folder / "train.jsonl").chmod(0o644)
    box = Sandbox(SandboxLimits(timeout_s=20, cpu_s=20, concurrency=1))
    try:
        code = (f"import os\nprint(os.path.exists({str(folder)!r}), os.path.exists('/usr/src'), "
                f"sorted(os.listdir('/usr')), os.path.exists('/usr/lib'))")
        result = await box.arun(code)
    finally:
        box.close()
        shutil.rmtree(folder)
    assert result.ok, result.stderr
    assert result.stdout.startswith("False False ") and "'src'" not in result.stdout and result.stdout.strip().endswith("True")
