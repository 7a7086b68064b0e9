"""The LiteLLM provider through litellm's own entry points, on SmolLM2-135M relaying with itself."""

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

litellm = pytest.importorskip("litellm", reason="the litellm extra is not installed")

from relaygen_integrations import ConfigError, RelayConfig  # noqa: E402
from relaygen_integrations.integrations.litellm import RelayGenProvider, register  # noqa: E402
from busy_cues import ANY_LETTER_FILE  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ENGINE_KEY = f"smollm2-135m-self:{ANY_LETTER_FILE}"  # every letter is a cue: the models switch on any build
MODEL = f"relaygen/{ENGINE_KEY}"
GREEDY = {"temperature": 0, "max_tokens": 48}


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def provider(smollm2_path):
    provider = register(RelayGenProvider(n_threads=2, n_ctx=1024))
    yield provider
    provider.close()


def content_of(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_completion_and_streaming_give_the_same_text_and_relay_usage(provider):
    r = litellm.completion(model=MODEL, messages=ask("Explain why the sky is blue."), **GREEDY)
    text, usage = r.choices[0].message.content, r.usage
    assert text and r.choices[0].finish_reason in ("stop", "length")
    assert usage.completion_tokens == usage.relay["large_tokens"] + usage.relay["small_tokens"] <= 48
    assert usage.relay["switches"] > 0 and usage.relay["small_tokens"] > 0  # the relay really ran
    assert usage.relay["sentences_checked"] == usage.relay["sentences_cut"] == 0  # the check's counts, off here
    assert usage.relay["check"] == "off"  # the policy that ran: this profile names no default
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    engine = provider._engines[ENGINE_KEY]

    def held():  # what the KV caches of all the engine's sequences hold (only this request writes now)
        return sum(len(slot.large.tokens) + len(slot.small.tokens) for slot in engine.slots)

    chunks, evaluated_at_first = [], None
    for chunk in litellm.completion(model=MODEL, messages=ask("Explain why the sky is blue."), stream=True,
                                    stream_options={"include_usage": True}, **GREEDY):
        if evaluated_at_first is None and chunk.choices and chunk.choices[0].delta.content:
            evaluated_at_first = held()
        chunks.append(chunk)
    assert content_of(chunks) == text
    deltas = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) > 10  # delta by delta, not one chunk at the end
    # the first delta reached us while the models still had tokens to write
    assert evaluated_at_first < held()
    writers = {c.provider_specific_fields["relay_model"] for c in deltas}
    assert writers == {"large", "small"}
    def without_time(relay):
        return {k: v for k, v in relay.items() if k != "seconds"}

    assert without_time(deltas[-1].provider_specific_fields["relay"]) == without_time(usage.relay)
    [final] = [c for c in chunks if getattr(c, "usage", None)]
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (usage.prompt_tokens, usage.completion_tokens)


def test_sampling_parameters_are_honoured(provider):
    prompt = ask("Name three colours.")
    stop = litellm.completion(model=MODEL, messages=prompt, stop=["e"], **GREEDY).choices[0].message.content
    full = litellm.completion(model=MODEL, messages=prompt, **GREEDY).choices[0].message.content
    assert "e" in full and stop == full[: full.index("e")]  # "e": a stop string any English answer reaches
    short = litellm.completion(model=MODEL, messages=prompt, temperature=0, max_tokens=5)
    assert short.usage.completion_tokens == 5 and short.choices[0].finish_reason == "length"
    sampled = [litellm.completion(model=MODEL, messages=prompt, temperature=1.0, top_p=0.9, seed=s, max_tokens=24)
               .choices[0].message.content for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2]


def test_async_calls_match_the_sync_ones(provider):
    prompt = ask("Write one sentence about rivers.")
    expected = litellm.completion(model=MODEL, messages=prompt, **GREEDY).choices[0].message.content

    async def run():
        r = await litellm.acompletion(model=MODEL, messages=prompt, **GREEDY)
        stream = await litellm.acompletion(model=MODEL, messages=prompt, stream=True, **GREEDY)
        return r.choices[0].message.content, content_of([c async for c in stream])

    assert asyncio.run(run()) == (expected, expected)


@pytest.fixture
def tiny_provider(tiny_models, tmp_path_factory):
    """A provider over tiny float32 models (the same numbers whatever the batch, so concurrent answers must
    equal serial ones exactly), every letter a cue."""
    from tiny_gguf import write_tiny_gguf

    other = write_tiny_gguf(tmp_path_factory.mktemp("litellm") / "tiny-a3.gguf", seed=3)
    previous = next((p["custom_handler"] for p in litellm.custom_provider_map if p["provider"] == "relaygen"), None)
    provider = register(RelayGenProvider(large=str(tiny_models["a"]), small=str(other), chat_format="raw",
                                         n_threads=1, n_ctx=512, min_large_tokens=1))
    yield provider
    provider.close()
    register(previous)


def test_eight_concurrent_async_requests_equal_the_same_requests_one_by_one(tiny_provider):
    """Eight at once, half streamed, on an engine of four sequences: four run batched, four queue and join."""
    prompts = [ask(f"the cat number {n} sat on the") for n in range(8)]
    params = {"temperature": 0, "max_tokens": 30}
    one_by_one = [litellm.completion(model=MODEL, messages=p, **params).choices[0].message.content for p in prompts]
    assert len(set(one_by_one)) == 8

    async def together():
        async def streamed(p):
            return content_of([c async for c in await litellm.acompletion(model=MODEL, messages=p, stream=True, **params)])

        async def whole(p):
            return (await litellm.acompletion(model=MODEL, messages=p, **params)).choices[0].message.content

        return await asyncio.gather(*[(streamed if i % 2 else whole)(p) for i, p in enumerate(prompts)])

    engine = tiny_provider._engines[ENGINE_KEY]
    assert asyncio.run(together()) == one_by_one
    assert engine.max_batch == 4 and engine.scheduler.widest > 1  # requests really shared llama.cpp calls
    assert engine.active == 0


def test_a_cancelled_stream_frees_its_sequence_and_leaves_the_engine_usable(provider):
    prompt = ask("Tell a long story about a lighthouse keeper.")
    expected = litellm.completion(model=MODEL, messages=prompt, **GREEDY).choices[0].message.content
    engine = provider._engines[ENGINE_KEY]

    async def cancel_mid_stream():
        got = []

        async def consume():
            async for chunk in await litellm.acompletion(model=MODEL, messages=prompt, stream=True,
                                                         temperature=0, max_tokens=400):
                got.append(chunk)

        async def first_chunks():
            while len(got) < 3:
                await asyncio.sleep(0.01)

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first_chunks(), 60)  # bounded: a stream that never starts fails the test
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return len(got)

    assert asyncio.run(cancel_mid_stream()) < 100
    deadline = time.monotonic() + 20
    while engine.active:  # the request notices the cancellation at its next step and frees its sequence
        assert time.monotonic() < deadline, "a cancelled stream kept its sequence"
        time.sleep(0.05)
    written = max(len(s.large.tokens) + len(s.small.tokens) for s in engine.slots)  # prompt + what was generated
    assert written < 2 * 36 + 100  # it stopped soon after the cancellation, far from its 400-token budget
    assert litellm.completion(model=MODEL, messages=prompt, **GREEDY).choices[0].message.content == expected
    # a sync stream abandoned mid-way (no close) holds its sequence only until its request ends: then every
    # sequence is free again (with 4 sequences a next call would succeed either way, so count them)
    stream = litellm.completion(model=MODEL, messages=prompt, stream=True, **GREEDY)
    next(iter(stream)), next(iter(stream))
    assert engine.active == 1
    del stream
    deadline = time.monotonic() + 120
    while engine.active or engine.pool.free != engine.max_batch:
        assert time.monotonic() < deadline, "an abandoned sync stream kept its sequence after its request's end"
        time.sleep(0.05)
    assert litellm.completion(model=MODEL, messages=prompt, **GREEDY).choices[0].message.content == expected


def test_mistakes_map_to_litellm_exceptions(provider):
    with pytest.raises(litellm.NotFoundError, match="unknown pair 'no-such-pair'"):
        litellm.completion(model="relaygen/no-such-pair", messages=ask("hi"))
    with pytest.raises(litellm.ContextWindowExceededError, match="context window of 1024 tokens"):
        litellm.completion(model=MODEL, messages=ask("word " * 1500), max_tokens=8)
    with pytest.raises(litellm.ContextWindowExceededError):  # streams fail at the call, not mid-iteration
        litellm.completion(model=MODEL, messages=ask("word " * 1500), max_tokens=8, stream=True)
    with pytest.raises(litellm.UnsupportedParamsError, match="presence_penalty"):
        litellm.completion(model=MODEL, messages=ask("hi"), presence_penalty=0.5, max_tokens=4)
    with pytest.raises(litellm.UnsupportedParamsError, match="n=1"):
        litellm.completion(model=MODEL, messages=ask("hi"), n=2, max_tokens=4)
    with pytest.raises(litellm.BadRequestError, match="temperature"):
        litellm.completion(model=MODEL, messages=ask("hi"), temperature=-1, max_tokens=4)
    ok = litellm.completion(model=MODEL, messages=ask("hi"), presence_penalty=0.5, drop_params=True, max_tokens=4)
    assert ok.usage.completion_tokens == 4  # drop_params: LiteLLM's documented way to ignore them
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/a.png"}}]}]
    with pytest.raises(litellm.BadRequestError, match="a part of type 'image_url'"):
        litellm.completion(model=MODEL, messages=image, max_tokens=4)


def test_a_content_of_text_parts_is_accepted_as_the_parts_joined(provider):
    parts = [{"role": "user", "content": [{"type": "text", "text": "Say"}, {"type": "text", "text": "hello."}]}]
    as_parts = litellm.completion(model=MODEL, messages=parts, **{**GREEDY, "max_tokens": 6})
    as_text = litellm.completion(model=MODEL, messages=ask("Say\nhello."), **{**GREEDY, "max_tokens": 6})
    assert as_parts.usage.prompt_tokens == as_text.usage.prompt_tokens and as_parts.choices[0].message.content
    streamed = litellm.completion(model=MODEL, messages=parts, stream=True, **{**GREEDY, "max_tokens": 6})
    assert content_of(streamed)


def test_reasoning_stage_goes_to_reasoning_content(smollm2_path):
    """A pair whose reasoning ends at a marker (here, for a quick test that holds on any build, the first
    letter "e"): the reasoning goes to reasoning_content, the rest to content, streamed and not."""
    previous = next((p["custom_handler"] for p in litellm.custom_provider_map if p["provider"] == "relaygen"), None)
    provider = register(RelayGenProvider(reasoning_content=True, n_threads=2, config=RelayConfig(reasoning_end="e")))
    try:
        prompt = ask("Describe how rain forms, step by step.")  # the first "e" ends "reasoning"
        r = litellm.completion(model="relaygen/smollm2-135m-self", messages=prompt, temperature=0, max_tokens=96)
        message = r.choices[0].message
        assert message.reasoning_content and message.content
        assert "e" not in message.reasoning_content
        chunks = list(litellm.completion(model="relaygen/smollm2-135m-self", messages=prompt, temperature=0,
                                         max_tokens=96, stream=True))
        assert "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices) \
            == message.reasoning_content
        assert content_of(chunks) == message.content
    finally:
        provider.close()
        register(previous)


def test_importing_the_provider_makes_no_network_connection():
    code = ("import socket\n"
            "attempts = []\n"
            "def refuse(*args, **kwargs):\n"
            "    attempts.append(args)\n"
            "    raise OSError('network refused by the test')\n"
            "socket.socket.connect = refuse\n"
            "socket.create_connection = refuse\n"
            "import relaygen_integrations.integrations.litellm as p\n"
            "p.register()\n"
            "print(len(attempts))\n")
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "0"


def test_proxy_serves_the_documented_config_over_http(smollm2_path, tmp_path):
    pytest.importorskip("fastapi", reason="the LiteLLM proxy needs litellm[proxy]")
    openai = pytest.importorskip("openai")
    from relaygen_integrations.testing import free_port, wait_until_serving

    readme = (REPO / "docs" / "litellm-serve.md").read_text()
    config = re.search(r"<!-- litellm-proxy-config -->\s*```yaml\n(.*?)```", readme, re.S).group(1)
    assert "relaygen/qwen2.5-coder-1.5b+0.5b" in config
    (tmp_path / "config.yaml").write_text(config.replace("qwen2.5-coder-1.5b+0.5b", "smollm2-135m-self"))
    port, key = free_port(), "sk-relaygen-test-0123456789abcdef"
    env = {**os.environ, "LITELLM_MASTER_KEY": key, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    server = subprocess.Popen([str(Path(sys.executable).parent / "litellm"), "--config", "config.yaml",
                               "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}", api_key=key, max_retries=0)
        wait_until_serving(client, server, "the LiteLLM proxy", timeout=120)
        r = client.chat.completions.create(model="relaygen", messages=ask("Say hello."), temperature=0, max_tokens=24)
        assert r.choices[0].message.content and r.usage.completion_tokens <= 24
        assert r.model_dump()["usage"]["relay"]["large_tokens"] > 0
        stream = client.chat.completions.create(model="relaygen", messages=ask("Say hello."), temperature=0,
                                                max_tokens=24, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == r.choices[0].message.content
        with pytest.raises(openai.BadRequestError, match="context window"):
            client.chat.completions.create(model="relaygen", messages=ask("word " * 5000), max_tokens=8)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_pair_names_litellm_would_route_elsewhere_are_refused_and_the_rest_reach_relaygen(tmp_path):
    """LiteLLM sends some bare model names to a built-in provider before custom ones (BerriAI/litellm
    #23352): a registry pair with such a name is refused when the provider is made (for the proxy: at
    start-up), and every name it accepts really reaches a custom provider registered as ``relaygen``."""
    from relaygen_integrations.integrations.litellm import PROVIDER
    from relaygen_integrations.integrations.litellm_routing import litellm_would_bypass
    from relaygen_integrations.registry import Registry

    bundled = Registry.load()
    reg = tmp_path / "registry.toml"
    reg.write_text(bundled.path.read_text() + '\n[pairs."my-replicate-pair"]\nlarge = "smollm2-135m"\n'
                   'small = "smollm2-135m"\n')
    with pytest.raises(ConfigError, match=r"'my-replicate-pair' \(LiteLLM sends it to replicate\).*23352"):
        RelayGenProvider(registry_path=reg)

    class Recorder(litellm.CustomLLM):  # records which model strings reach a custom provider
        seen: list[str] = []

        def completion(self, model, messages, model_response, **_):
            self.seen.append(model)
            model_response.choices[0].message.content = "ok"
            return model_response

    previous = [dict(p) for p in litellm.custom_provider_map]
    recorder = Recorder()
    litellm.custom_provider_map = [p for p in previous if p["provider"] != PROVIDER] + \
        [{"provider": PROVIDER, "custom_handler": recorder}]
    from litellm.utils import custom_llm_setup

    custom_llm_setup()
    try:
        accepted = [n for n in bundled.pairs] + [f"{n}:all-candidates" for n in bundled.pairs]
        assert all(litellm_would_bypass(n.partition(":")[0]) is None for n in accepted)
        for name in accepted:
            litellm.completion(model=f"{PROVIDER}/{name}", messages=ask("hi"), max_tokens=2)
        assert recorder.seen == accepted
    finally:
        litellm.custom_provider_map = previous
        custom_llm_setup()


def test_streamed_answer_keeps_text_that_shares_a_token_with_the_reasoning_end_marker():
    """Regression: when the marker ended inside a token ("forme|d"), the stream dropped the rest of that
    token from the answer, so streamed content lost characters that the non-streamed content had.
    A scripted model writes the tokens, so the marker ends mid-token on any build."""
    from scripted import ScriptedBackend

    from relaygen_integrations import RelayEngine
    from relaygen_integrations.serving.pool import ConcurrentEngine

    pieces = ["Rain", " is", " formed", " when", " vapour", " cools", "."]
    engine = RelayEngine(ScriptedBackend(pieces), ScriptedBackend(pieces), ["Never"],
                         RelayConfig(mode="large", reasoning_end="forme"))
    previous = next((p["custom_handler"] for p in litellm.custom_provider_map if p["provider"] == "relaygen"), None)
    provider = register(RelayGenProvider(reasoning_content=True))
    provider._engines["scripted"] = ConcurrentEngine([engine])
    try:
        r = litellm.completion(model="relaygen/scripted", messages=ask("How does rain form?"), max_tokens=20)
        assert (r.choices[0].message.reasoning_content, r.choices[0].message.content) == ("Rain is ", "d when vapour cools.")
        chunks = list(litellm.completion(model="relaygen/scripted", messages=ask("How does rain form?"), max_tokens=20,
                                         stream=True))
        assert content_of(chunks) == "d when vapour cools."
        assert "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices) \
            == "Rain is "
    finally:
        provider._engines.clear()
        register(previous)


def test_a_request_beyond_max_batch_waits_at_most_queue_timeout(smollm2_path):
    """No request waits forever (queue_timeout is finite by default): one beyond max_batch fails with
    litellm.Timeout saying why, streamed or not, and is served once a sequence is free."""
    from relaygen_integrations.integrations.litellm import QUEUE_TIMEOUT
    from round_gate import hold_rounds

    assert RelayGenProvider().queue_timeout == QUEUE_TIMEOUT < float("inf")
    with pytest.raises(ConfigError, match="queue_timeout must be a positive number"):
        RelayGenProvider(queue_timeout=None)
    with pytest.raises(ConfigError, match="max_batch must be an integer"):
        RelayGenProvider(max_batch=0)
    previous = next((p["custom_handler"] for p in litellm.custom_provider_map if p["provider"] == "relaygen"), None)
    provider = register(RelayGenProvider(n_threads=2, n_ctx=512, queue_timeout=1.5, max_batch=1))
    try:
        assert litellm.completion(model="relaygen/smollm2-135m-self", messages=ask("Hi"), max_tokens=2).choices
        engine = provider._engines["smollm2-135m-self"]
        gate = hold_rounds(engine.scheduler)  # the one sequence stays busy for as long as the test wants
        held = threading.Thread(target=litellm.completion, kwargs=dict(
            model="relaygen/smollm2-135m-self", messages=ask("Tell a long story."), max_tokens=20))
        held.start()
        deadline = time.monotonic() + 60  # a regression fails the test instead of hanging the suite
        while engine.active == 0:
            assert time.monotonic() < deadline, "the held request never started"
            time.sleep(0.01)
        start = time.monotonic()
        with pytest.raises(litellm.Timeout, match=r"waited 1\.5 s for a free sequence: all 1 \(max_batch\)"):
            litellm.completion(model="relaygen/smollm2-135m-self", messages=ask("Hi"), max_tokens=4, num_retries=0)
        with pytest.raises(litellm.Timeout, match="for a free sequence"):
            list(litellm.completion(model="relaygen/smollm2-135m-self", messages=ask("Hi"), max_tokens=4, stream=True,
                                    num_retries=0))
        assert time.monotonic() - start < 30
        gate.open.set()  # the sequence's request can finish now: the next request is served
        held.join(60)
        assert litellm.completion(model="relaygen/smollm2-135m-self", messages=ask("Hi"), max_tokens=4).choices
    finally:
        provider.close()
        register(previous)


def test_a_failed_load_is_not_retried_on_every_request(smollm2_path, tmp_path, monkeypatch):
    """Regression: after a load failed, every request loaded everything again (seconds each) before
    failing the same way. Now the error is answered from memory for a while, then tried again."""
    from relaygen_integrations.integrations import litellm as provider_module
    from relaygen_integrations.serving import build as loader

    broken = tmp_path / "broken.gguf"
    broken.write_bytes(smollm2_path.read_bytes()[:-1])
    loads = []
    real_load = loader.load_concurrent
    monkeypatch.setattr(loader, "load_concurrent", lambda *a, **k: (loads.append(a), real_load(*a, **k))[1])
    previous = next((p["custom_handler"] for p in litellm.custom_provider_map if p["provider"] == "relaygen"), None)
    provider = register(RelayGenProvider(small=str(broken), n_threads=1, n_ctx=256))
    try:
        for _ in range(3):
            with pytest.raises(litellm.APIError, match="broken.gguf is not a loadable GGUF"):
                litellm.completion(model="relaygen/smollm2-135m-self", messages=ask("Hi"), max_tokens=2, num_retries=0)
        assert len(loads) == 1
        monkeypatch.setattr(provider_module, "LOAD_RETRY_AFTER", 0.0)  # the wait is over: it tries again
        with pytest.raises(litellm.APIError, match="not a loadable GGUF"):
            litellm.completion(model="relaygen/smollm2-135m-self", messages=ask("Hi"), max_tokens=2, num_retries=0)
        assert len(loads) == 2
    finally:
        provider.close()
        register(previous)
