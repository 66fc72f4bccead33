"""Which isolation this machine allows, found once by trying it, and reported by `duet exec --info`.

Levels, strongest first:
  namespaces+uid  root: new network, PID, mount, IPC and UTS namespaces; the whole filesystem read-only except private
                  scratch folders; home folders hidden; a /proc of its own; each worker's programs run under an
                  unprivileged uid leased to that worker alone (so the process limit binds, and no program can signal
                  another duet process's programs)
  namespaces      not root, user namespaces allowed: the same inside a user namespace, programs without capabilities
  uid             root without namespaces: a leased unprivileged uid and rlimits, but the host network, /tmp and
                  processes are shared
  rlimits         neither: a separate process with rlimits, a scrubbed environment and a temporary folder only; the
                  program runs as the user
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
    """What a worker set up: the mounts its own mount table shows writable afterwards, the folders it hid under an
    empty tmpfs, and the interpreter's folders inside those that it showed again, read-only."""

    writable: list[str]
    hidden: list[str]
    kept: list[str]


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
                    "or Linux older than 5.12), so model-written programs share the host network, processes and /tmp, "
                    "and may write wherever any user may; run duet where namespaces work for full isolation")
        if self.level == "rlimits":
            return ("sandbox isolation is only 'rlimits': no user namespaces here (not allowed, or Linux older than "
                    "5.12), so model-written programs run as you, with your network, and can read and change your "
                    "files; allow unprivileged user namespaces (`unshare --user --map-root-user true` must work) for "
                    "full isolation")
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
            return ("the host's, as the leased uid: writable wherever any user may write, /tmp shared" if self.unprivileged_uid
                    else "the host's, as you: readable and writable wherever you can read and write")
        text = f"read-only except empty private {', '.join(self.filesystem.writable)} (job folders live in /tmp)"
        if self.filesystem.hidden:
            text += f"; {', '.join(self.filesystem.hidden)} hidden"
        if self.filesystem.kept:
            text += f", but for the interpreter's own {', '.join(self.filesystem.kept)}"
        return text


def interpreter_folders() -> list[str]:
    """Folders a worker's interpreter needs; shown read-only even where they live in a hidden or scratch folder."""
    return sorted({sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path} - {""})


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
    settings = {"uid": None, "scratch": "/tmp", "private_mounts": True, "keep_paths": interpreter_folders(), "probe": True}
    try:
        done = subprocess.run([*launcher, sys.executable, "-I", str(WORKER), json.dumps(settings)], capture_output=True, timeout=30)
        return PrivateFilesystem(**json.loads(done.stdout)["filesystem"]) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
        return None
