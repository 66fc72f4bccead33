"""Which isolation this machine allows, found once by trying it, and reported by `duet exec --info`.

Levels, strongest first:
  namespaces+uid  root: new network, PID, mount, IPC and UTS namespaces; private /tmp; home folders hidden; each
                  worker's programs run under an unprivileged uid of their own (so the process limit binds)
  namespaces      not root, user namespaces allowed: the same namespaces inside a user namespace
  uid             root without namespaces: unprivileged uid and rlimits, but the host network and /tmp are shared
  rlimits         neither: a separate process with rlimits, a scrubbed environment and a temporary folder only
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

from pydantic import BaseModel

NAMESPACE_FLAGS = ["--net", "--pid", "--mount", "--ipc", "--uts", "--fork", "--kill-child"]
UNPRIVILEGED_UID_BASE = 61000


class Isolation(BaseModel):
    level: str
    namespaces: bool
    unprivileged_uid: bool
    private_filesystem: bool
    network: str
    launcher: list[str]

    def describe(self) -> list[tuple[str, str]]:
        return [
            ("isolation level", self.level),
            ("network", self.network),
            ("processes", "own PID namespace" if self.namespaces else "host PID space"),
            ("filesystem", "private /tmp, home folders hidden, no writes outside the job folder" if self.private_filesystem else "shared /tmp"),
            ("user", "unprivileged uid per worker" if self.unprivileged_uid else "the caller's uid"),
            ("limits", "wall clock, CPU time, address space, file size, open files, processes, output size"),
        ]


@functools.cache
def detect_isolation() -> Isolation:
    root = os.geteuid() == 0
    unshare = shutil.which("unshare")
    flags = NAMESPACE_FLAGS if root else ["--user", "--map-root-user", *NAMESPACE_FLAGS]
    namespaces = unshare is not None and _works([unshare, *flags, "true"])
    if namespaces:
        return Isolation(
            level="namespaces+uid" if root else "namespaces",
            namespaces=True,
            unprivileged_uid=root,
            private_filesystem=True,
            network="none (empty network namespace)",
            launcher=[unshare, *flags, "--"],
        )
    return Isolation(
        level="uid" if root else "rlimits",
        namespaces=False,
        unprivileged_uid=root,
        private_filesystem=False,
        network="host (no network namespace available)",
        launcher=[],
    )


def _works(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
