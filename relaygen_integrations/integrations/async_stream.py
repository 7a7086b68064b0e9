"""A blocking iterator as an async one: the LiteLLM provider's async streams."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

T = TypeVar("T")


async def in_thread(chunks: Iterator[T]) -> AsyncIterator[T]:
    """Drive a blocking chunk iterator from a thread; cancelling or closing this stream closes it.
    The thread makes the next chunk only when the consumer asks for it (back-pressure, as a sync stream
    has), so a slow reader never piles up chunks and a cancelled one stops the model within a token."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    wanted, stop = threading.Event(), threading.Event()

    def post(item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone
            stop.set()

    def work() -> None:
        try:
            while True:
                wanted.wait()
                wanted.clear()
                if stop.is_set():
                    break
                chunk = next(chunks, None)
                if chunk is None:
                    break
                post(("chunk", chunk))
        except BaseException as e:  # handed to the consumer
            post(("error", e))
        finally:
            chunks.close()  # type: ignore[attr-defined]
            post(("end", None))

    threading.Thread(target=work, name="relaygen-stream", daemon=True).start()
    try:
        while True:
            wanted.set()
            kind, item = await queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        wanted.set()
