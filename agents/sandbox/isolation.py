"""Which isolation this machine allows, found once by trying it, and reported by `duet exec --info`.

Levels, strongest first:
  namespaces+uid  root: new network, PID, mount, IPC and UTS namespaces; a root of the worker's own that holds only
                  the interpreter's folders (read-only) and empty private scratch folders (the job folders live in its
                  /tmp), so every other path (training data, run folders, the checkout) is absent; a /proc of its own;
                  each worker's programs run under an unprivileged uid leased to that worker alone (so the process
                  limit binds, and no program can signal another duet process's programs)
  namespaces      not root, user namespaces allowed: the same inside a user namespace, programs without capabilities
  uid             root without namespaces: a leased unprivileged uid and rlimits, but the whole filesystem is visible
                  (whatever any user may read) and the host network, /tmp and processes are shared
  rlimits         neither: a separate process with rlimits, a scrubbed environment and a temporary folder only; the
                  program runs as the user and sees the whole filesystem
The sandbox needs Linux; elsewhere detect_isolation raises a DuetError.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel

from agents.errors import DuetError

WORKER = Path(__file__).with_name("worker.py")
NAMESPACE_FLAGS = ["--net", "--pid", "--mount", "--ipc", "--uts", "--fork", "--kill-child"]


class PrivateFilesystem(BaseModel):
    """What a worker's programs see, as the worker found it after moving into its own root: what / lists, and what
    its mount table shows there (folders bound read-only, devices, writable scratch tmpfs)."""

    root: list[str]
    read_only: list[str]
    devices: list[str]
    writable: list[str]


class Isolation(BaseModel):
    level: str
    namespaces: bool
    unprivileged_uid: bool
    filesystem: PrivateFilesystem | None
    network: str
    launcher: list[str]

    @property
    def private_filesystem(self) -> bool:
        return self.filesystem is not None

    @property
    def warning(self) -> str | None:
        """One line for the start of ask, chat, eval and train when the level is weaker than `namespaces`."""
        if self.level == "uid":
            return ("sandbox isolation is only 'uid': namespaces could not be set up here (`unshare` missing or refused, "
                    "or Linux older than 5.12), so model-written programs see the whole filesystem (training data, run "
                    "folders and this checkout wherever any user may read them), share the host network, processes "
                    "and /tmp, and may write wherever any user may; run duet where namespaces work for full isolation")
        if self.level == "rlimits":
            return ("sandbox isolation is only 'rlimits': no user namespaces here (not allowed, or Linux older than "
                    "5.12), so model-written programs run as you, with your network, see the whole filesystem, and can "
                    "read and change your files (training data, run folders, this checkout); allow unprivileged user "
                    "namespaces (`unshare --user --map-root-user true` must work) for full isolation")
        return None

    def describe(self) -> list[tuple[str, str]]:
        rows = [
            ("isolation level", self.level),
            ("network", self.network),
            ("processes", "own PID namespace and /proc" if self.namespaces else "host PID space and /proc"),
            ("filesystem", self._filesystem_text()),
            ("user", "unprivileged uid leased per worker" if self.unprivileged_uid
             else "yours, without capabilities" if self.namespaces else "yours"),
            ("limits", "wall clock, CPU time, address space, file size, open files, processes, output size"),
        ]
        return rows + [("warning", self.warning)] if self.warning else rows

    def _filesystem_text(self) -> str:
        if self.filesystem is None:
            return ("the host's, all visible, as the leased uid: readable wherever any user may read, writable wherever "
                    "any user may write, /tmp shared" if self.unprivileged_uid
                    else "the host's, all visible, as you: readable and writable wherever you can read and write")
        shown = self.filesystem
        return (f"a root of its own: only what the interpreter needs, read-only ({', '.join(shown.read_only)}), "
                f"the devices {', '.join(d.removeprefix('/dev/') for d in shown.devices)}, its own /proc, and empty "
                f"private {', '.join(shown.writable)} (the job folder is in /tmp); everything else absent "
                f"(/ holds only {', '.join(shown.root)})")


def worker_settings(uid: int | None, scratch: str, private_mounts: bool, probe: bool) -> dict:
    """What a worker is started with. It finds the interpreter's folders itself (worker.interpreter_folders): its
    sys.path, under -I, is the one its programs get, while this process's may hold the checkout (pytest's rootdir, an
    editable install's source folder). It builds its private root only in a mount namespace other than ours."""
    return {"uid": uid, "scratch": scratch, "private_mounts": private_mounts, "probe": probe,
            "outer_mount_namespace": os.readlink("/proc/self/ns/mnt")}


@functools.cache
def detect_isolation() -> Isolation:
    if sys.platform != "linux":
        raise DuetError(f"the sandbox needs Linux (this is {sys.platform}); run duet in a Linux container or VM (on Windows, WSL 2)")
    root = os.geteuid() == 0
    unshare = shutil.which("unshare")
    if unshare is not None:
        launcher = [unshare, *(NAMESPACE_FLAGS if root else ["--user", "--map-root-user", *NAMESPACE_FLAGS]), "--"]
        filesystem = _probe(launcher)
        if filesystem is not None:
            return Isolation(
                level="namespaces+uid" if root else "namespaces",
                namespaces=True,
                unprivileged_uid=root,
                filesystem=filesystem,
                network="none (empty network namespace)",
                launcher=launcher,
            )
    return host_isolation(root)


def host_isolation(root: bool) -> Isolation:
    """The levels without namespaces. Tests pass one to `Sandbox(isolation=...)` to check a weaker level than the
    machine's."""
    return Isolation(
        level="uid" if root else "rlimits",
        namespaces=False,
        unprivileged_uid=root,
        filesystem=None,
        network="host (no network namespace available)",
        launcher=[],
    )


def _probe(launcher: list[str]) -> PrivateFilesystem | None:
    """Start a worker in new namespaces, let it set up its private filesystem exactly as a real worker does, and read
    back what its mount table shows; None when any of it fails."""
    settings = worker_settings(uid=None, scratch="/tmp", private_mounts=True, probe=True)
    try:
        done = subprocess.run([*launcher, sys.executable, "-I", str(WORKER), json.dumps(settings)], capture_output=True, timeout=30, cwd="/")
        return PrivateFilesystem(**json.loads(done.stdout)["filesystem"]) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
        return None
