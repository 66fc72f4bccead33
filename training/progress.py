"""Progress a person can follow wherever the output goes: `duet eval`, `duet data filter`, the cold start's trace
sampling, and the SFT and GRPO steps all show it through `Progress`.

On a terminal it is rich's live bar, as before. Anywhere else (a file, a pipe, nohup, SLURM, CI) it is a plain line
now and then, with the count, the rate and the time left, and never a carriage return or an escape sequence:

    eval  40/200 questions (20%)  0.31 questions/s  elapsed 0:02:09  left 0:08:36
    GRPO  3/70 steps (4%)  reward 0.53  accuracy 12%  format 81%  asked 88%  41.2 s/step  elapsed 0:02:04  left 0:46:02

A line is written at the start, every `every` items, when `seconds` have passed since the last line (a heartbeat,
written even when nothing finished, so a log shows the run is alive), and at the end. The rate counts only what this
run finished, not what a resumed run found done.
"""

from __future__ import annotations

import math
import os
import re
import sys
import threading
import time

from rich.console import Console

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]|\x1b\[[0-9;?]*[A-Za-z]")


def quiet_library_bars(stream=None) -> None:
    """When stderr is not a terminal, turn off the tqdm bars of the libraries duet loads (datasets' "Generating train
    split", the hub's downloads, transformers' shard loading), which would fill a log with carriage returns. Through
    their environment variables, so nothing is imported for it; a value the user set is kept."""
    stream = sys.stderr if stream is None else stream
    if not getattr(stream, "isatty", lambda: False)():
        for name in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS"):
            os.environ.setdefault(name, "1")


def clock_text(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts finished items of `total` (None while unknown). `update` takes rich's keywords (total=, completed=,
    advance=) and `live`, a short text of the latest figures shown after the count; it is also the `on_progress`
    callback `training.evaluate.evaluate` calls. Use it as a context manager, or call `start` and `close`."""

    def __init__(self, label: str, total: int | None = None, *, unit: str = "item", completed: int = 0, console: Console | None = None,
                 every: int | None = None, seconds: float | None = 30.0, enabled: bool = True, clock=time.monotonic):
        self.label, self.unit, self.total, self.completed, self.live = label, unit, total, completed, ""
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.enabled, self.clock, self.seconds = enabled, clock, seconds
        self._every = every
        self.bar = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._started_at = self._last_line_at = None
        self._first = completed
        self._last_line_count = None

    # ---- the plain form

    @property
    def every(self) -> int:
        """Items between two plain lines: given, or a twentieth of the total (every item for up to 20)."""
        if self._every is not None:
            return max(1, self._every)
        return max(1, math.ceil(self.total / 20)) if self.total else 1

    def line(self) -> str:
        """The plain line for the current count."""
        plural = self.unit if self.unit.endswith("s") else f"{self.unit}s"
        count = f"{self.completed}/{self.total}" if self.total is not None else f"{self.completed}"
        parts = [self.label, f"{count} {plural}" + (f" ({self.completed / self.total:.0%})" if self.total else "")]
        if self.live:
            parts.append(self.live)
        elapsed = self.clock() - self._started_at
        finished = self.completed - self._first
        if finished > 0 and elapsed > 0:
            rate = finished / elapsed
            parts.append(f"{rate:.2f} {plural}/s" if rate >= 1 else f"{1 / rate:.1f} s/{self.unit.removesuffix('s')}")
        parts.append(f"elapsed {clock_text(elapsed)}")
        if finished > 0 and self.total is not None and elapsed > 0:
            parts.append(f"left {clock_text((self.total - self.completed) * elapsed / finished)}")
        return CONTROL.sub("", "  ".join(parts))

    def _write(self) -> None:
        """Under the lock: one line, flushed at once so a log shows it now."""
        stream = self.console.file
        stream.write(self.line() + "\n")
        stream.flush()
        self._last_line_at, self._last_line_count = self.clock(), self.completed

    def tick(self) -> None:
        """The heartbeat: a line when `seconds` have passed since the last one (the timer thread calls this)."""
        with self._lock:
            if self.enabled and self.bar is None and self._last_line_at is not None and self.seconds is not None:
                if self.clock() - self._last_line_at >= self.seconds:
                    self._write()

    def _beat(self) -> None:
        while not self._stop.wait(min(self.seconds, 5.0)):
            self.tick()

    # ---- both forms

    def start(self) -> Progress:
        if not self.enabled or self._started_at is not None:
            return self
        self._started_at = self.clock()
        if self.console.is_interactive:  # a terminal that can redraw a line (not a file, a pipe, TERM=dumb)
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Bar(TextColumn(f"[bold]{self.label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                           TextColumn("{task.fields[live]}"), console=self.console)
            self.task = self.bar.add_task(self.label, total=self.total, completed=self.completed, live=self.live)
            self.bar.start()
            return self
        if self.total is not None:  # else the first update, which gives the total, writes the first line
            with self._lock:
                self._write()
        if self.seconds is not None and self.clock is time.monotonic:  # a test's own clock is driven through tick()
            self._thread = threading.Thread(target=self._beat, name=f"progress-{self.label}", daemon=True)
            self._thread.start()
        return self

    def update(self, *, total: int | None = None, completed: int | None = None, advance: int = 0, live: str | None = None) -> None:
        if not self.enabled:
            return
        if self._started_at is None:
            self.start()
        with self._lock:
            if total is not None:
                self.total = total
            if completed is not None:
                if self._last_line_count is None and not advance:  # the count a resumed run starts from
                    self._first = completed
                self.completed = completed
            self.completed += advance
            if live is not None:
                self.live = live
            if self.bar is not None:
                self.bar.update(self.task, total=self.total, completed=self.completed, live=self.live)
            elif self._last_line_count is None or self.completed - self._last_line_count >= self.every or self.completed == self.total:
                if self.completed != self._last_line_count:
                    self._write()

    def close(self, final_line: bool = True) -> None:
        """Stop; in a log, write the last count unless the run is failing (its error is then the last word)."""
        if self._started_at is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        elif final_line:
            with self._lock:
                if self.completed != self._last_line_count:
                    self._write()
        self._started_at = None

    def __enter__(self) -> Progress:
        return self.start()

    def __exit__(self, kind, error, trace) -> None:
        self.close(final_line=kind is None)
