"""Answer checks under a time limit, in worker processes that are killed and replaced when a check overruns.

Why processes: judging (training/answers.py) hands model output to sympy, which on hostile input (`10^{10^{10}}`
against a symbolic gold answer, deep braces) can run for ever or take all memory inside C code, where no thread or
signal can stop it. Pebble's ProcessPool gives each check a timeout and replaces the worker it kills. Workers start
with "spawn" (the parent may hold torch threads, which a fork would copy half-locked), lazily on the first check,
and are reused for the next ones; the overhead per check is a pipe round trip (about a millisecond).

The checker is usable from plain code (`check`) and from asyncio (`acheck`, many checks in flight at once). What the
answer brought on itself is a wrong `Verdict` with its reason: a check that overran its time, or a worker that died
while judging it (sympy exhausting the worker's memory in C code). A failure of the machinery is never a verdict: when
the workers cannot start, or the checker was closed under a check, `check` raises `CheckerError`, so a run stops and
says why instead of reading as wrong answers.
`close()` (or leaving the `with` block) stops the workers; an unclosed checker is stopped at interpreter exit.
"""

from __future__ import annotations

import asyncio
import atexit
import multiprocessing
import os
import resource
import signal
import threading
import weakref
from concurrent.futures import Future, InvalidStateError, TimeoutError
from concurrent.futures.process import BrokenProcessPool

from pebble import ProcessExpired, ProcessPool

from agents.errors import DuetError
from training.answers import Verdict, judge, load_judges, wrong

DEFAULT_TIMEOUT_S = 5.0
WORKER_MEMORY_BYTES = 2 * 1024**3  # judging needs ~300 MB; a 4 GB power must fail fast, not take the machine's memory


class CheckerClosed(RuntimeError):
    """Set on checks still running when the checker is closed."""


class CheckerError(DuetError):
    """The checking machinery failed: no verdict on the answer was reached."""


class AnswerChecker:
    """Judges answers in `workers` worker processes, each check limited to `timeout_s` seconds."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, workers: int = 2) -> None:
        if timeout_s <= 0 or workers < 1:
            raise ValueError("an answer checker needs a positive timeout and at least one worker")
        self.timeout_s = timeout_s
        self.workers = workers
        self._pool: ProcessPool | None = None
        self._lock = threading.Lock()
        self._in_flight: set[Future] = set()
        self._abandoned: weakref.WeakSet[Future] = weakref.WeakSet()  # in flight when the checker was closed

    def check(self, row: dict, answer: str | None) -> Verdict:
        future = self._submit(row, answer)
        try:
            return future.result()
        except Exception as error:  # noqa: BLE001 - sorted into the answer's doing or the machinery's
            return self._verdict_on_failure(future, error)

    async def acheck(self, row: dict, answer: str | None) -> Verdict:
        future = self._submit(row, answer)
        try:
            return await asyncio.wrap_future(future)
        except Exception as error:  # noqa: BLE001 - sorted into the answer's doing or the machinery's
            return self._verdict_on_failure(future, error)

    def close(self) -> None:
        """Stop the workers now (a check still running is abandoned); a later check starts new ones."""
        with self._lock:
            pool, self._pool = self._pool, None
            abandoned = list(self._in_flight)
        self._abandoned.update(abandoned)
        if pool is not None:
            atexit.unregister(self.close)
            pool.stop()
            pool.join()
        for future in abandoned:  # a stopped pool may leave its futures unresolved; no caller may hang
            try:
                future.set_exception(CheckerClosed())
            except InvalidStateError:
                pass

    def __enter__(self) -> AnswerChecker:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def _submit(self, row: dict, answer: str | None) -> Future:
        # only what judging reads crosses the pipe: the question text can be long
        needed = {key: row[key] for key in ("answer", "source", "metadata") if key in row}
        try:
            future = self._running_pool().schedule(judge, args=(needed, answer), timeout=self.timeout_s)
        except RuntimeError:  # the pool broke (its workers could not start, or were killed while idle): restart it
            self.close()
            try:
                future = self._running_pool().schedule(judge, args=(needed, answer), timeout=self.timeout_s)
            except RuntimeError as error:
                raise CheckerError(f"the answer checker's worker processes cannot be started ({error}); no verdict was reached") from error
        self._in_flight.add(future)
        future.add_done_callback(self._in_flight.discard)
        return future

    def _running_pool(self) -> ProcessPool:
        with self._lock:
            if self._pool is None:
                context = multiprocessing.get_context("spawn")
                self._pool = ProcessPool(max_workers=self.workers, initializer=_start_worker, context=context)
                atexit.register(self.close)
            return self._pool

    def _verdict_on_failure(self, future: Future, error: BaseException) -> Verdict:
        """A wrong verdict when the answer made its check overrun or kill its worker; CheckerError otherwise."""
        if future in self._abandoned:  # whatever the stopped pool reported
            raise CheckerError("the answer checker was closed before a check ended; no verdict was reached") from error
        if isinstance(error, TimeoutError):
            return wrong(f"timed out after {self.timeout_s:g} s")
        if isinstance(error, ProcessExpired):
            return wrong(f"the checking process died (exit code {error.exitcode})")
        cause = f"{type(error).__name__}{f': {error}' if str(error) else ''}"
        if not isinstance(error, BrokenProcessPool):
            raise CheckerError(f"the answer checker failed ({cause}); no verdict was reached") from error
        raise CheckerError(
            f"the answer checker could not run ({cause}): its worker processes did not start. Called from your own "
            "script? Its workers start with spawn, which imports the script again: put the script's code under "
            "`if __name__ == \"__main__\":`"
        ) from error


def _start_worker() -> None:
    """Runs in each new worker before its first check."""
    # pebble installs a Python SIGTERM handler, which a check stuck in C code (a huge power) never reaches, so a kill
    # on timeout would wait seconds for pebble's SIGKILL; the default action ends the worker at once
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = WORKER_MEMORY_BYTES if hard == resource.RLIM_INFINITY else min(WORKER_MEMORY_BYTES, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):  # judging is single-threaded; spare the memory
        os.environ.setdefault(variable, "1")
    load_judges()
