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
import sys
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from agents.sandbox.isolation import UNPRIVILEGED_UID_BASE, Isolation, detect_isolation

WORKER = Path(__file__).with_name("worker.py")
TRUNCATION_MARKER = "\n[output truncated]"
WORKER_MARGIN_S = 10.0
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
    def __init__(self, index: int, isolation: Isolation):
        self.uid = UNPRIVILEGED_UID_BASE + index if isolation.unprivileged_uid else None
        self.isolation = isolation
        self.process: asyncio.subprocess.Process | None = None
        self.scratch: str | None = None

    async def start(self) -> None:
        if self.isolation.private_filesystem:
            scratch, keep = "/tmp", sorted({sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path} - {""})
        else:
            scratch, keep = tempfile.mkdtemp(prefix="duet-sandbox-"), []
            os.chmod(scratch, 0o711)
        self.scratch = scratch
        settings = {"uid": self.uid, "scratch": scratch, "private_mounts": self.isolation.private_filesystem, "keep_paths": keep}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "LANG": "C.UTF-8"}
        self.process = await asyncio.create_subprocess_exec(
            *self.isolation.launcher, sys.executable, "-I", str(WORKER), json.dumps(settings),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            env=env, limit=2**24, start_new_session=True,
        )
        ready = await asyncio.wait_for(self.process.stdout.readline(), 60)
        if not ready:
            raise RuntimeError("the sandbox worker failed to start")

    async def run(self, code: str, limits: SandboxLimits) -> dict:
        if self.process is None or self.process.returncode is not None:
            await self.start()
        job = {"code": code, "limits": _worker_limits(limits)}
        self.process.stdin.write((json.dumps(job) + "\n").encode())
        try:
            await self.process.stdin.drain()
            line = await asyncio.wait_for(self.process.stdout.readline(), limits.timeout_s + WORKER_MARGIN_S)
        except (asyncio.TimeoutError, ConnectionError):
            line = b""
        if not line:
            await self.stop()
            return {"stdout": "", "stderr": "", "exit_code": None, "timed_out": False, "truncated": False,
                    "duration_s": 0.0, "worker_failed": True}
        return json.loads(line)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await self.process.wait()
        self.process = None
        if self.scratch and not self.isolation.private_filesystem:
            shutil.rmtree(self.scratch, ignore_errors=True)


class Sandbox:
    def __init__(self, limits: SandboxLimits | None = None):
        self.limits = limits or SandboxLimits()
        self.isolation = detect_isolation()
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
        """Workers belong to the event loop that started them; a new loop gets a new pool.

        There are twice as many workers as programs allowed at once: after replying, a worker still kills leftovers
        and forks its next child, and the idle queue hands the next program to a worker that is already done."""
        loop = asyncio.get_running_loop()
        if self._idle is None or self._loop is not loop:
            self._loop = loop
            self._running = asyncio.Semaphore(self.limits.concurrency)
            self._workers = [_Worker(index, self.isolation) for index in range(2 * self.limits.concurrency)]
            self._idle = asyncio.Queue()
            for worker in self._workers:
                self._idle.put_nowait(worker)
        return self._idle

    async def aclose(self) -> None:
        for worker in self._workers:
            await worker.stop()
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
