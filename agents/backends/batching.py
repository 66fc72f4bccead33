"""Gathers concurrent `generate` calls into one batch for backends whose engine is synchronous.

Why: the graph runs many questions at once, and each requester node calls the backend on its own. Running those calls
one by one would waste the batch dimension; this queue lets them meet. Requests that arrive while a batch runs form
the next batch. The engine runs in a worker thread so the event loop keeps routing the graph meanwhile.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable

from agents.backends.base import Generation, GenerationRequest


class BatchingQueue:
    def __init__(self, run_batch: Callable[[list[GenerationRequest]], list[Generation]], max_batch_size: int):
        self._run_batch = run_batch
        self._max_batch_size = max_batch_size
        self._pending: list[tuple[GenerationRequest, asyncio.Future]] = []
        self._worker: asyncio.Task | None = None
        self._wakeup: asyncio.Event | None = None

    async def submit(self, requests: list[GenerationRequest]) -> list[Generation]:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._serve())
        futures = []
        for request in requests:
            future = loop.create_future()
            self._pending.append((on_caller_loop(request, loop), future))
            futures.append(future)
        self._wakeup.set()
        return list(await asyncio.gather(*futures))

    async def _serve(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(0)  # let callers scheduled in the same tick join this batch
            while self._pending:
                batch, self._pending = self._pending[: self._max_batch_size], self._pending[self._max_batch_size :]
                try:
                    results = await asyncio.to_thread(self._run_batch, [request for request, _ in batch])
                except Exception as error:  # noqa: BLE001 - handed to every caller of the failed batch
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)


def on_caller_loop(request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> GenerationRequest:
    """Stream callbacks fire on the engine thread; run them on the caller's loop, in the caller's context (LangGraph's
    stream writer lives in a context variable of the node that asked)."""
    if request.on_text is None:
        return request
    callback, context = request.on_text, contextvars.copy_context()
    return GenerationRequest(request.prompt_ids, request.params, lambda text: loop.call_soon_threadsafe(callback, text, context=context))
