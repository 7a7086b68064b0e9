"""Concurrent requests in one process: batched llama.cpp sequences through the scheduler's rounds.

Tiny float32 models give the same numbers whatever the batch, so there a concurrent request's output must
equal its serial output exactly (greedy and seeded); on a real quantised model the rule is the speculative
tests' one: every token is the model's first choice decoding alone, or within a rounding-sized gap of it.
"""

import threading
import time

import pytest

from relaygen_integrations import RelayConfig, RelayEngine, SamplingParams
from relaygen_integrations.backends.llamacpp import LlamaCppBackend
from relaygen_integrations.serving.llamacpp import batched_engine
from relaygen_integrations.errors import ConfigError, QueueTimeoutError
from busy_cues import ANY_LETTER
from round_gate import hold_rounds
from tiny_gguf import write_tiny_gguf

PROMPTS = ["the cat sat on the mat", "a dog ran", "then the bird sang and the", "one two three four",
           "on the hill there was", "the end of the"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_models):
    """tiny_models["a"] and a model of the same vocabulary with other weights (so the relay's models differ)."""
    other = write_tiny_gguf(tmp_path_factory.mktemp("serving") / "tiny-a3.gguf", seed=3)
    return tiny_models["a"], other


def _local(path):
    return LlamaCppBackend(path, n_ctx=512, n_threads=1, chat_format="raw")


def _batched(pair, max_batch=4, **kw):
    config = RelayConfig(min_large_tokens=1, **kw.pop("config", {}))
    return batched_engine(_local(pair[0]), _local(pair[1]), ANY_LETTER, config, max_batch=max_batch, n_ctx=512,
                          n_threads=1, **kw)


def _params(i, seeded):
    budget = 20 + 15 * i  # requests of different lengths leave at different rounds, and queued ones join
    return SamplingParams(temperature=0.9, seed=100 + i, max_tokens=budget) if seeded else \
        SamplingParams(temperature=0, max_tokens=budget)


def _concurrently(fn, n):
    out, errors = {}, []

    def run(i):
        try:
            out[i] = fn(i)
        except BaseException as e:  # reported by the test, not lost in a thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return out


@pytest.mark.parametrize("seeded", [False, True], ids=["greedy", "seeded"])
def test_concurrent_relays_equal_serial_ones_and_requests_join_and_leave(pair, seeded):
    """Six relays on four sequences: two wait, join as others finish; each equals its serial run."""
    engine = _batched(pair)
    try:
        got = _concurrently(lambda i: engine.generate(PROMPTS[i], _params(i, seeded), chat=False), len(PROMPTS))
        assert engine.scheduler.widest > 1  # several sequences did share a call
        assert engine.active == 0 and engine.pool.free == 4  # every sequence is free again
    finally:
        engine.close()
    serial = RelayEngine(_local(pair[0]), _local(pair[1]), ANY_LETTER, RelayConfig(min_large_tokens=1))
    for i, prompt in enumerate(PROMPTS):
        want = serial.generate(prompt, _params(i, seeded), chat=False)
        r = got[i]
        assert r.text == want.text and [(s.model, s.text) for s in r.segments] == [(s.model, s.text) for s in want.segments]
        assert r.stats.switches == want.stats.switches > 0  # relays: both models wrote
        assert r.stats.generated_tokens == want.stats.generated_tokens
        assert r.seed == want.seed or not seeded  # greedy requests draw a seed of their own, unused


def test_checked_relays_run_concurrently_too(pair):
    """The check's all-rows catch-up goes through the same rounds: exact gives the large model's own text."""
    engine = _batched(pair, max_batch=3, config={"check": "exact"})
    alone = RelayEngine(_local(pair[0]), _local(pair[1]), ANY_LETTER, RelayConfig(mode="large"))
    try:
        got = _concurrently(lambda i: engine.generate(PROMPTS[i], _params(i, False), chat=False), 3)
    finally:
        engine.close()
    for i in range(3):
        assert got[i].text == alone.generate(PROMPTS[i], _params(i, False), chat=False).text
    assert sum(r.stats.sentences_checked for r in got.values()) > 0


def test_a_request_beyond_max_batch_waits_then_fails_with_a_clear_error(pair):
    engine = _batched(pair, max_batch=1, queue_timeout=30)
    try:
        gate = hold_rounds(engine.scheduler)  # the one sequence's request cannot finish while rounds are held
        first = engine.stream(PROMPTS[0], SamplingParams(temperature=0, max_tokens=30), chat=False)
        holder = threading.Thread(target=lambda: list(first))
        holder.start()
        deadline = time.monotonic() + 60  # a regression fails the test instead of hanging the suite
        while engine.active == 0:
            assert time.monotonic() < deadline, "the first request never started"
            time.sleep(0.01)
        t0 = time.monotonic()
        with pytest.raises(QueueTimeoutError, match=r"waited 0.2 s for a free sequence: all 1 \(max_batch\)"):
            engine.generate(PROMPTS[1], SamplingParams(max_tokens=5), chat=False, timeout=0.2)
        assert time.monotonic() - t0 < 5
        gate.open.set()
        holder.join(30)
        assert engine.generate(PROMPTS[1], SamplingParams(max_tokens=5), chat=False, timeout=5).text is not None
    finally:
        engine.close()


def test_closing_a_stream_cancels_its_request_and_frees_its_sequence_within_a_round(pair, tmp_path):
    endless = write_tiny_gguf(tmp_path / "endless.gguf", seed=0, endless=True)
    engine = batched_engine(_local(endless), _local(pair[1]), ANY_LETTER, RelayConfig(mode="large"), max_batch=1,
                            n_ctx=512, n_threads=1)
    try:
        stream = engine.stream(PROMPTS[0], SamplingParams(temperature=0, max_tokens=400), chat=False)
        first = next(stream)
        assert first.kind == "text"
        gate = hold_rounds(engine.scheduler)  # the request is now waiting for a round
        stream.close()  # the client went away
        rounds = engine.scheduler.rounds
        gate.open.set()
        deadline = time.monotonic() + 10
        while engine.active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.active == 0
        assert engine.scheduler.rounds - rounds <= 2  # the held round, and at most one more evaluation
        r = engine.generate(PROMPTS[1], SamplingParams(temperature=0, max_tokens=10), chat=False, timeout=5)
        assert r.stats.generated_tokens == 10  # the freed sequence serves the next request
    finally:
        engine.close()


def test_quantised_model_concurrent_tokens_are_its_own_first_choices(smollm2_path):
    """Real SmolLM2 Q4_1, four requests at once: batch numerics may part texts at a near-tie, never more."""
    prompts = ["Name three colors.", "Why is the sky blue?", "Write a haiku about rain.", "What is a cat?"]
    params = SamplingParams(temperature=0, max_tokens=40)
    engine = batched_engine(LlamaCppBackend(smollm2_path, n_ctx=64, n_threads=1),
                            LlamaCppBackend(smollm2_path, n_ctx=64, n_threads=1), ANY_LETTER,
                            RelayConfig(mode="large"), max_batch=4, n_ctx=512, n_threads=1)
    check = LlamaCppBackend(smollm2_path, n_ctx=512, n_threads=1)
    try:
        got = _concurrently(lambda i: engine.generate(prompts[i], params), 4)
        assert engine.scheduler.widest > 1
        contexts = [slot.large.tokens for slot in engine.slots]
        exact = total = 0
        for i, prompt in enumerate(prompts):
            ids = check.prompt_tokens(check.chat_prompt([{"role": "user", "content": prompt}]))
            (context,) = [c for c in contexts if c[:len(ids)] == ids]
            out = context[len(ids):][:got[i].stats.generated_tokens]
            assert out
            ctx = list(ids)
            for token in out:
                check.sync(ctx)
                logits = check.logits()
                gap = float(logits.max() - logits[token])
                assert gap < 0.5, f"request {i} emitted a token ranked {gap:.2f} below the first choice"
                exact += gap == 0
                total += 1
                ctx.append(token)
        assert exact >= 0.95 * total
    finally:
        engine.close()


def test_bad_concurrency_settings_are_one_clear_error(pair):
    from relaygen_integrations import load_concurrent, load_pair

    for bad in (0, -1, 1.5, True, 1000):
        with pytest.raises(ConfigError, match="max_batch must be an integer in 1..256"):
            load_concurrent("smollm2-135m-self", max_batch=bad)
    for bad in (0, -2, float("inf"), "5"):
        with pytest.raises(ConfigError, match="queue_timeout must be a positive number"):
            load_concurrent("smollm2-135m-self", queue_timeout=bad)
    with pytest.raises(ConfigError, match=r"asks for a concurrent engine: load_concurrent\(\)"):
        load_pair("smollm2-135m-self", max_batch=4)
    with pytest.raises(ConfigError, match="the hf backend serves one at a time"):
        load_concurrent("smollm2-135m-self", backend="hf", max_batch=2)
    with pytest.raises(ConfigError, match="speculative decoding is not combined with batched requests"):
        load_concurrent("smollm2-135m-self", speculative="lookup", max_batch=2)
