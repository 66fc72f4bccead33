"""A subprocess sandbox: fresh interpreter, fresh working directory, scrubbed environment, rlimits, wall-clock kill.

The error text is written for the requester to read: exception type and message with the failing line, or
"timed out after N s", or "no output". Short, because it goes back into the model's context.
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
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

CHILD = Path(__file__).with_name("child.py")
TRUNCATION_MARKER = "\n[output truncated]"
SAFE_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


class SandboxLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(5.0, gt=0)
    cpu_s: int = Field(10, ge=1)
    memory_mb: int = Field(1024, ge=64)
    file_size_mb: int = Field(16, ge=1)
    open_files: int = Field(64, ge=16)
    output_chars: int = Field(4000, ge=64)
    concurrency: int = Field(os.cpu_count() or 2, ge=1)


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


class Sandbox:
    def __init__(self, limits: SandboxLimits | None = None):
        self.limits = limits or SandboxLimits()
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop = None

    def run(self, code: str) -> ExecutionResult:
        """Blocking form for scripts and the CLI; do not call it from inside an event loop."""
        return asyncio.run(self.arun(code))

    async def arun(self, code: str) -> ExecutionResult:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            self._slots, self._slots_loop = asyncio.Semaphore(self.limits.concurrency), loop
        async with self._slots:
            workdir = Path(tempfile.mkdtemp(prefix="duet-exec-"))
            try:
                return await self._execute(code, workdir)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)

    async def _execute(self, code: str, workdir: Path) -> ExecutionResult:
        limits = self.limits
        program = workdir / "program.py"
        program.write_text(code, encoding="utf-8")
        rlimits = {
            "RLIMIT_CPU": limits.cpu_s,
            "RLIMIT_AS": limits.memory_mb * 2**20,
            "RLIMIT_FSIZE": limits.file_size_mb * 2**20,
            "RLIMIT_NOFILE": limits.open_files,
            "RLIMIT_CORE": 0,
        }
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-I", str(CHILD), json.dumps(rlimits), "program.py",
            cwd=workdir, env={**SAFE_ENV, "HOME": str(workdir), "TMPDIR": str(workdir)},
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        cap = limits.output_chars * 4
        readers = asyncio.gather(_read_capped(process.stdout, cap), _read_capped(process.stderr, cap))
        timed_out = False
        try:
            await asyncio.wait_for(process.wait(), limits.timeout_s)
        except asyncio.TimeoutError:
            timed_out = True
        _kill_group(process.pid)
        await process.wait()
        (stdout, out_cut), (stderr, _) = await readers
        duration = time.perf_counter() - started
        stdout_text, text_cut = _clip(stdout.decode("utf-8", errors="replace"), limits.output_chars)
        truncated = out_cut or text_cut
        if truncated:
            stdout_text += TRUNCATION_MARKER
        stderr_text, _ = _clip(stderr.decode("utf-8", errors="replace"), limits.output_chars)
        return ExecutionResult(
            stdout=stdout_text,
            stderr=stderr_text,
            error=_summarize(process.returncode, timed_out, limits, stdout_text, stderr_text),
            exit_code=None if timed_out else process.returncode,
            timed_out=timed_out,
            truncated=truncated,
            duration_s=round(duration, 4),
        )


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> tuple[bytes, bool]:
    """Keep the first `cap` bytes and drain the rest, so a giant print neither fills memory nor blocks the child."""
    kept = bytearray()
    cut = False
    while chunk := await stream.read(65536):
        room = cap - len(kept)
        kept += chunk[: max(room, 0)]
        cut = cut or len(chunk) > room
    return bytes(kept), cut


def _clip(text: str, limit: int) -> tuple[str, bool]:
    return (text, False) if len(text) <= limit else (text[:limit], True)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _summarize(code: int | None, timed_out: bool, limits: SandboxLimits, stdout: str, stderr: str) -> str | None:
    if timed_out:
        return f"timed out after {limits.timeout_s:g} s"
    if code == 0:
        return None if stdout.strip() else "no output (print the result)"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        if -code == signal.SIGXCPU:
            return f"CPU time limit of {limits.cpu_s} s exceeded"
        return f"killed by signal {name}"
    if not lines:
        return f"exited with status {code} and no error message"
    last = lines[-1].strip()
    if last.startswith("MemoryError"):
        return f"MemoryError: the program exceeded the {limits.memory_mb} MB memory limit"
    frame = next((line for line in reversed(lines) if re.match(r'\s*File "program\.py", line \d+', line)), None)
    if frame is None:
        return last[:300]
    line_no = re.search(r"line (\d+)", frame).group(1)
    index = lines.index(frame)
    source = lines[index + 1].strip() if index + 1 < len(lines) and not lines[index + 1].lstrip().startswith(("File", "^")) else ""
    where = f" (line {line_no}: {source})" if source else f" (line {line_no})"
    return f"{last[:300]}{where}"
