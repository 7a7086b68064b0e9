"""The serving layer's request object at work: one pool of sequences shared by an engine and its variants,
async streams posted to the event loop by the worker (no thread of their own), and cancellation. Tiny
float32 models: the same numbers whatever the batch, so texts are compared exactly."""

import asyncio
import threading
import time

import pytest

from relaygen_integrations import RelayConfig, SamplingParams
from relaygen_integrations.backends.llamacpp import LlamaCppBackend
from relaygen_integrations.errors import QueueTimeoutError
from relaygen_integrations.serving.llamacpp import batched_engine
from busy_cues import ANY_LETTER
from round_gate import hold_rounds
from tiny_gguf import write_tiny_gguf

GREEDY = SamplingParams(temperature=0, max_tokens=30)


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_models):
    other = write_tiny_gguf(tmp_path_factory.mktemp("pool") / "tiny-a3.gguf", seed=3)
    return tiny_models["a"], other


def _engine(models, max_batch=2, **cfg):
    def local(path):
        return LlamaCppBackend(path, n_ctx=512, n_threads=1, chat_format="raw")

    return batched_engine(local(models[0]), local(models[1]), ANY_LETTER, RelayConfig(min_large_tokens=1, **cfg),
                          max_batch=max_batch, n_ctx=512, n_threads=1)


def _wait(condition, seconds=30):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_an_async_stream_gives_the_events_of_a_sync_one_without_a_thread_of_its_own(models):
    engine = _engine(models)
    try:
        want = engine.generate("the cat sat", GREEDY, chat=False)

        async def read():
            threads = threading.active_count()
            events = [e async for e in engine.astream("the cat sat", GREEDY, chat=False)]
            return events, threading.active_count() - threads

        events, more_threads = asyncio.run(read())
        assert "".join(e.text for e in events if e.kind == "text") == want.text
        assert events[-1].kind == "done" and events[-1].result.text == want.text
        assert more_threads <= 0  # the pool's workers run it; nothing started per stream
        assert engine.active == 0 and engine.pool.free == 2
    finally:
        engine.close()


def test_cancelling_an_async_stream_cancels_its_request_and_frees_its_sequence(models, tmp_path):
    endless = write_tiny_gguf(tmp_path / "endless.gguf", seed=0, endless=True)
    engine = _engine((endless, models[1]), max_batch=1, mode="large")
    try:
        async def read_one_then_cancel():
            async def consume():
                async for event in engine.astream("the cat", SamplingParams(temperature=0, max_tokens=400), chat=False):
                    if event.kind == "text":
                        await asyncio.sleep(3600)  # a client that stops reading, then goes away
            task = asyncio.create_task(consume())
            await asyncio.sleep(0.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(read_one_then_cancel())
        _wait(lambda: engine.active == 0)
        assert engine.pool.free == 1
        assert engine.generate("a dog", GREEDY, chat=False).stats.generated_tokens > 0  # the sequence serves again
    finally:
        engine.close()


def test_variants_lease_from_one_pool_so_two_requests_never_share_a_sequence(models):
    engine = _engine(models, max_batch=1)
    variant = engine.variant(RelayConfig(mode="large"))
    try:
        assert variant.pool is engine.pool
        gate = hold_rounds(engine.scheduler)  # the base engine's request holds the one sequence
        holder = threading.Thread(target=lambda: engine.generate("the cat", GREEDY, chat=False))
        holder.start()
        _wait(lambda: engine.active == 1)
        with pytest.raises(QueueTimeoutError, match="all 1 \\(max_batch\\)"):
            variant.generate("a dog", GREEDY, chat=False, timeout=0.2)
        gate.open.set()
        holder.join(30)
        r = variant.generate("a dog", GREEDY, chat=False, timeout=10)
        assert r.stats.small.generated_tokens == 0  # the variant's own settings: the large model alone
        variant.close()  # frees nothing of the shared pool
        assert engine.generate("a dog", GREEDY, chat=False).text
    finally:
        engine.close()


def test_a_prepared_request_runs_again_after_a_whole_stream_and_a_cancelled_one_says_so(models, tmp_path):
    """Regression: reading a stream to its result cancelled its request, so running the prepared request a
    second time ended without a result; a request cancelled by its holder now raises Cancelled to a reader."""
    from relaygen_integrations.errors import Cancelled

    engine = _engine(models)
    try:
        request = engine.prepare("the cat sat", GREEDY, chat=False)
        first, second = engine.generate(request), engine.generate(request)
        assert first.text == second.text and second.stats.finish_reason in ("stop", "length")
    finally:
        engine.close()
    endless = write_tiny_gguf(tmp_path / "endless.gguf", seed=0, endless=True)
    engine = _engine((endless, models[1]), max_batch=1, mode="large")
    try:
        request = engine.prepare("a dog ran", SamplingParams(temperature=0, max_tokens=400), chat=False)
        events = engine.stream(request)
        next(events)
        gate = hold_rounds(engine.scheduler)  # the request waits for a round: it cannot end meanwhile
        request.cancel()
        gate.open.set()
        with pytest.raises(Cancelled):
            list(events)
        _wait(lambda: engine.active == 0)
    finally:
        engine.close()
