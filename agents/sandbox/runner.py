"""The sandbox: a pool of pre-started, isolated workers (see worker.py) behind a sync and an async API.

One execution costs a fork of a worker that already imported numpy and sympy, not a new interpreter. The error text
is written for the requester to read: exception type and message with the failing line, or "timed out after N s", or
"no output". Short, because it goes back into the model's context.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile

from pydantic import BaseModel, ConfigDict, Field

from agents.sandbox.isolation import WORKER, Isolation, detect_isolation, worker_settings

TRUNCATION_MARKER = "\n[output truncated]"
WORKER_MARGIN_S = 3.0  # the worker answers by the program's deadline; this covers its cleanup of the last one, and load
LEASE_DIR = "/run/duet-sandbox"
UNPRIVILEGED_UIDS = range(61000, 62000)
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b.*")


class SandboxLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(5.0, gt=0, description="wall clock per program")
    cpu_s: int = Field(10, ge=1)
    memory_mb: int = Field(1024, ge=256, description="address space per process")
    file_size_mb: int = Field(16, ge=1)
    open_files: int = Field(64, ge=16)
    processes: int = Field(32, ge=1, description="processes and threads of one worker's uid (binds only with a uid of its own)")
    output_chars: int = Field(4000, ge=64)
    concurrency: int = Field(os.cpu_count() or 2, ge=1, description="programs run at once")


class ExecutionResult(BaseModel):
    stdout: str
    stderr: str
    error: str | None = Field(None, description="short summary for the requester; None when the program succeeded")
    exit_code: int | None
    timed_out: bool = False
    truncated: bool = False
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.error is None


class _Worker:
    """One worker process, spoken to through its pipes with the running loop's reader and writer callbacks rather
    than asyncio's subprocess transports: those belong to the loop that made them, and a worker must be killable
    after that loop closed (see Sandbox._pool)."""

    def __init__(self, isolation: Isolation):
        self.isolation = isolation
        self.uid: int | None = None
        self.lease: int | None = None
        self.process: subprocess.Popen | None = None
        self.scratch: str | None = None
        self.unread = b""

    async def start(self) -> None:
        """The launch touches the disk and forks, so it runs in a thread: the event loop (LangGraph's server's among
        them) goes on serving other runs meanwhile."""
        await asyncio.to_thread(self._launch)
        self.unread = b""
        if not await self._receive(60):
            raise RuntimeError("the sandbox worker failed to start")

    def _launch(self) -> None:
        if self.isolation.unprivileged_uid and self.lease is None:
            self.uid, self.lease = lease_uid()
        if self.isolation.private_filesystem:
            scratch = "/tmp"
        else:
            scratch = tempfile.mkdtemp(prefix="duet-sandbox-")
            os.chmod(scratch, 0o711)
        self.scratch = scratch
        settings = worker_settings(uid=self.uid, scratch=scratch, private_mounts=self.isolation.private_filesystem, probe=False)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "LANG": "C.UTF-8"}
        self.process = subprocess.Popen(
            [*self.isolation.launcher, sys.executable, "-I", str(WORKER), json.dumps(settings)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd="/", start_new_session=True,
        )
        os.set_blocking(self.process.stdin.fileno(), False)
        os.set_blocking(self.process.stdout.fileno(), False)

    async def run(self, code: str, limits: SandboxLimits) -> dict:
        job = {"code": code, "limits": _worker_limits(limits)}
        try:
            if self.process is None or self.process.poll() is not None:
                self.discard()
                await self.start()
            await self._send((json.dumps(job) + "\n").encode())
            line = await self._receive(limits.timeout_s + WORKER_MARGIN_S)
        except (asyncio.TimeoutError, ConnectionError):
            line = b""
        except BaseException:  # cancelled: a reply still to come (even a ready line) must not reach the next program
            self.discard()
            raise
        if not line:
            self.discard()
            self.release()
            return {"stdout": "", "stderr": "", "exit_code": None, "timed_out": False, "truncated": False,
                    "duration_s": 0.0, "worker_failed": True}
        return json.loads(line)

    async def _send(self, data: bytes) -> None:
        pending = memoryview(data)
        while pending:
            try:
                pending = pending[os.write(self.process.stdin.fileno(), pending):]
            except BlockingIOError:
                await _ready(self.process.stdin.fileno(), writing=True)

    async def _receive(self, timeout_s: float) -> bytes:
        """The next line from the worker, or b"" if it closed its end."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while b"\n" not in self.unread:
            await _ready(self.process.stdout.fileno(), writing=False, deadline=deadline)
            chunk = os.read(self.process.stdout.fileno(), 2**20)
            if not chunk:
                return b""
            self.unread += chunk
        line, _, self.unread = self.unread.partition(b"\n")
        return line

    def discard(self) -> None:
        """Kill the worker and everything its programs started, at once and without the event loop (the run may be
        cancelled, or the loop closed). At the namespace levels the PID namespace dies with its first process; without
        one, the worker is the subreaper of everything its programs started, so that is killed below it first. The
        uid lease stays for the next start."""
        if self.process is not None:
            if self.process.poll() is None:
                if not self.isolation.namespaces:
                    # imported where used, like fcntl: importing the sandbox must work everywhere, so that other
                    # systems than Linux get detect_isolation's one-line error
                    from agents.sandbox.worker import kill_descendants

                    kill_descendants(self.process.pid)
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.process.wait()
            self.process.stdin.close()
            self.process.stdout.close()
        self.process = None
        if self.scratch and not self.isolation.private_filesystem:
            shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch = None

    def release(self) -> None:
        if self.lease is not None:
            os.close(self.lease)
        self.uid, self.lease = None, None


async def _ready(fd: int, writing: bool, deadline: float | None = None) -> None:
    """Wait until `fd` can be written or read, or raise asyncio.TimeoutError at the loop-time `deadline`."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    watch, unwatch = (loop.add_writer, loop.remove_writer) if writing else (loop.add_reader, loop.remove_reader)
    watch(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await asyncio.wait_for(ready, None if deadline is None else max(deadline - loop.time(), 0))
    finally:
        unwatch(fd)


def lease_uid() -> tuple[int, int]:
    """An unprivileged uid that no other worker, of this or any other duet process, is using, and the descriptor
    that holds it. Each uid has a lock file in a root-only folder; an exclusive flock on it is the lease. The kernel
    drops the lock when the descriptor closes, so a duet process that dies, even by SIGKILL, frees its uids, and the
    next worker to lease one kills whatever is left under it (see worker.kill_every_process_of)."""
    import fcntl

    os.makedirs(LEASE_DIR, mode=0o700, exist_ok=True)
    folder = os.lstat(LEASE_DIR)
    if not stat.S_ISDIR(folder.st_mode) or folder.st_uid != 0 or folder.st_mode & 0o077:
        raise RuntimeError(f"{LEASE_DIR} must be a folder only root can use")
    for uid in UNPRIVILEGED_UIDS:
        lease = os.open(os.path.join(LEASE_DIR, str(uid)), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return uid, lease
        except BlockingIOError:
            os.close(lease)
    raise RuntimeError(f"all {len(UNPRIVILEGED_UIDS)} sandbox uids are in use by duet processes")


class Sandbox:
    def __init__(self, limits: SandboxLimits | None = None, isolation: Isolation | None = None):
        """`isolation` defaults to the strongest this machine allows; tests pass a weaker one (isolation.host_isolation)."""
        self.limits = limits or SandboxLimits()
        self.isolation = isolation or detect_isolation()
        self._idle: asyncio.Queue[_Worker] | None = None
        self._running: asyncio.Semaphore | None = None
        self._workers: list[_Worker] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, code: str) -> ExecutionResult:
        """Blocking form for scripts and the CLI; do not call it from inside an event loop."""

        async def once() -> ExecutionResult:
            try:
                return await self.arun(code)
            finally:
                await self.aclose()

        return asyncio.run(once())

    async def arun(self, code: str) -> ExecutionResult:
        idle = self._pool()
        async with self._running:
            worker = await idle.get()
            try:
                reply = await worker.run(code, self.limits)
            finally:
                idle.put_nowait(worker)
        return _result(reply, self.limits)

    def _pool(self) -> asyncio.Queue:
        """The idle queue and the semaphore belong to the event loop that made them, so a new loop gets a new pool,
        and the old pool's workers are killed: one may still hold the reply of a run its loop never finished.

        There are twice as many workers as programs allowed at once: after replying, a worker still kills leftovers
        and forks its next child, and the idle queue hands the next program to a worker that is already done."""
        loop = asyncio.get_running_loop()
        if self._idle is None or self._loop is not loop:
            self.close()
            self._loop = loop
            self._running = asyncio.Semaphore(self.limits.concurrency)
            self._workers = [_Worker(self.isolation) for _ in range(2 * self.limits.concurrency)]
            self._idle = asyncio.Queue()
            for worker in self._workers:
                self._idle.put_nowait(worker)
        return self._idle

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Kill every worker and everything its programs started; needs no event loop, so a pool whose loop is closed
        can be closed too."""
        for worker in self._workers:
            worker.discard()
            worker.release()
        self._idle, self._workers = None, []


def _worker_limits(limits: SandboxLimits) -> dict:
    return {
        "timeout_s": limits.timeout_s,
        "output_bytes": limits.output_chars * 4,
        "rlimits": {
            "RLIMIT_CPU": limits.cpu_s,
            "RLIMIT_AS": limits.memory_mb * 2**20,
            "RLIMIT_FSIZE": limits.file_size_mb * 2**20,
            "RLIMIT_NOFILE": limits.open_files,
            "RLIMIT_NPROC": limits.processes,
            "RLIMIT_CORE": 0,
        },
    }


def _result(reply: dict, limits: SandboxLimits) -> ExecutionResult:
    stdout, cut = _clip(reply["stdout"], limits.output_chars)
    truncated = reply["truncated"] or cut
    if truncated:
        stdout += TRUNCATION_MARKER
    stderr, _ = _clip(reply["stderr"], limits.output_chars)
    error = "the sandbox worker died and was restarted" if reply.get("worker_failed") else _summarize(reply["exit_code"], reply["timed_out"], limits, stdout, stderr)
    return ExecutionResult(
        stdout=stdout, stderr=stderr, error=error, exit_code=reply["exit_code"],
        timed_out=reply["timed_out"], truncated=truncated, duration_s=reply["duration_s"],
    )


def _clip(text: str, limit: int) -> tuple[str, bool]:
    return (text, False) if len(text) <= limit else (text[:limit], True)


def _summarize(code: int | None, timed_out: bool, limits: SandboxLimits, stdout: str, stderr: str) -> str | None:
    if timed_out:
        return f"timed out after {limits.timeout_s:g} s"
    if code == 0:
        return None if stdout.strip() else "no output (print the result)"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if code is not None and code < 0:
        if -code == signal.SIGXCPU:
            return f"CPU time limit of {limits.cpu_s} s exceeded"
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        return f"killed by signal {name}"
    if not lines:
        return f"exited with status {code} and no error message"
    raised = [line.strip() for line in lines if EXCEPTION_LINE.match(line.strip())]
    last = raised[-1] if raised else lines[-1].strip()
    if last.startswith("MemoryError"):
        return f"MemoryError: the program exceeded the {limits.memory_mb} MB memory limit"
    frame = next((line for line in reversed(lines) if re.match(r'\s*File "program\.py", line \d+', line)), None)
    if frame is None:
        return last[:300]
    line_no = re.search(r"line (\d+)", frame).group(1)
    index = lines.index(frame)
    following = lines[index + 1].strip() if index + 1 < len(lines) else ""
    source = following if following and not following.startswith(("File", "^", "~")) and following != last else ""
    return f"{last[:300]} (line {line_no}: {source})" if source else f"{last[:300]} (line {line_no})"
