"""Two duet processes side by side (two evaluations, or `accelerate launch --num_processes 2`) as root: each worker
leases an unprivileged uid of its own, so no program, and no worker's cleanup, can signal the other process's
programs, and the process limit is not shared."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from agents.sandbox import Sandbox, SandboxLimits
from agents.sandbox.isolation import host_isolation
from agents.sandbox.runner import LEASE_DIR, lease_uid

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="uids are leased only when duet runs as root")

# The other duet process: at the `uid` level (no namespaces), where a cleanup's kill(-1) reaches every process of
# its uid on the machine. Its programs mark that they started, sleep, then report their uid.
OTHER = """
import asyncio, json, sys
from agents.sandbox import Sandbox, SandboxLimits
from agents.sandbox.isolation import host_isolation

async def main(folder):
    box = Sandbox(SandboxLimits(timeout_s=20, concurrency=2), isolation=host_isolation(root=True))
    code = ("import os, time\\nopen(os.path.join(%r, str(os.getpid())), 'w').close()\\n"
            "time.sleep(2)\\nprint(os.getuid())") % folder
    results = await asyncio.gather(*(box.arun(code) for _ in range(2)))
    box.close()
    print(json.dumps([r.model_dump() for r in results]))

asyncio.run(main(sys.argv[1]))
"""


async def test_programs_of_another_duet_process_survive_this_ones_programs_and_cleanup():
    started = Path(tempfile.mkdtemp(prefix="duet-lease-test-"))  # where the other process's programs can write
    started.chmod(0o777)
    other = subprocess.Popen([sys.executable, "-c", OTHER, str(started)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(list(started.iterdir())) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(list(started.iterdir())) == 2, "the other process's programs did not start"
        box = Sandbox(SandboxLimits(timeout_s=5, concurrency=2), isolation=host_isolation(root=True))
        killers = [box.arun("import os, signal\nprint(os.getuid(), flush=True)\nos.kill(-1, signal.SIGKILL)") for _ in range(4)]
        ours = {int(r.stdout) for r in await asyncio.gather(*killers)}
        box.close()
        output, _ = other.communicate(timeout=60)
    finally:
        other.kill()
        other.wait()
        shutil.rmtree(started)
    theirs = json.loads(output)
    assert all(r["exit_code"] == 0 for r in theirs), theirs
    assert not ours & {int(r["stdout"]) for r in theirs}


def test_a_lease_is_freed_when_its_holder_dies_even_by_sigkill():
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom agents.sandbox.runner import lease_uid\nprint(lease_uid()[0], flush=True)\ntime.sleep(60)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        held = int(holder.stdout.readline())
        mine, lease = lease_uid()
        assert mine != held
        assert not try_lease(held)
    finally:
        holder.kill()
        holder.wait()
    os.close(lease)
    assert try_lease(held)


def try_lease(uid: int) -> bool:
    fd = os.open(os.path.join(LEASE_DIR, str(uid)), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
