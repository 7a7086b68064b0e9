"""The OpenAI-compatible server backend against real llama-cpp-python servers on 127.0.0.1."""

import time

import pytest

pytest.importorskip("uvicorn", reason="llama_cpp.server needs llama-cpp-python[server]")

from relaygen_integrations import RelayConfig, RelayEngine, SamplingParams  # noqa: E402
from relaygen_integrations.backends.llamacpp import LlamaCppBackend  # noqa: E402
from relaygen_integrations.backends.openai import OpenAIBackend  # noqa: E402
from relaygen_integrations.errors import ConfigError, ServerError  # noqa: E402
from relaygen_integrations.testing import free_port, llama_server  # noqa: E402
from busy_cues import ANY_LETTER, ANY_LETTER_FILE  # noqa: E402
from tiny_gguf import write_tiny_gguf  # noqa: E402


def test_chat_template_from_the_gguf_renders_like_llama_cpp(smollm2_path, smollm2_servers):
    remote = OpenAIBackend(smollm2_servers[0], chat_template=smollm2_path)
    local = LlamaCppBackend(smollm2_path, n_ctx=256, n_threads=1)
    for messages in ([{"role": "user", "content": "Hi"}],
                     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Café? 3.5"}]):
        assert remote.chat_prompt(messages) == local.chat_prompt(messages)
    assert remote.model  # discovered from /v1/models


def test_one_stream_continues_exactly_like_in_process_llama_cpp(tmp_path):
    """A raw prompt evaluated on the server and in process: greedy decoding gives the same text. On a tiny
    float32 model, where batch shapes cannot flip a greedy token (on quantised weights they can: docs/speculative.md's
    rule), so a difference is the backend's; it writes printable ASCII only (a server streams text, and
    random bytes would not survive as text)."""
    model = write_tiny_gguf(tmp_path / "ascii.gguf", seed=0, ascii_only=True)
    prompt = "Zebras live in Africa. Their stripes"
    params = SamplingParams(temperature=0, max_tokens=40)
    with llama_server(model, n_ctx=512) as url:
        remote = OpenAIBackend(url, chat_format="raw")
        r = RelayEngine(remote, OpenAIBackend(url, chat_format="raw"), ["the"],
                        RelayConfig(mode="large")).generate(prompt, params, chat=False)
    local = LlamaCppBackend(model, n_ctx=512, n_threads=1, chat_format="raw")
    expected = RelayEngine(local, LlamaCppBackend(model, n_ctx=64, chat_format="raw"), ["the"],
                           RelayConfig(mode="large")).generate(prompt, params, chat=False)
    assert r.text == expected.text and r.stats.large.generated_tokens == expected.stats.large.generated_tokens
    assert r.stats.large.server_requests == 1  # one streamed request for the whole single-model answer


def test_relay_over_two_servers_hands_text_both_ways(smollm2_path, smollm2_servers):
    large = OpenAIBackend(smollm2_servers[0], chat_template=smollm2_path)
    small = OpenAIBackend(smollm2_servers[1], chat_template=smollm2_path)
    r = RelayEngine(large, small, ANY_LETTER).generate("Why is the sky blue?",
                                                                 SamplingParams(temperature=0, max_tokens=60))
    assert r.stats.handoff == "text" and r.stats.switches >= 1
    assert r.stats.large.server_requests >= 2 and r.stats.small.server_requests >= 1  # control came back
    # each server saw the whole text so far: its context is the prompt plus everything written
    for backend in (large, small):
        context = b"".join(backend.token_bytes(t) for t in backend._stream_context).decode()
        assert r.text.startswith(context[len(backend.chat_prompt([{"role": "user", "content": "Why is the sky blue?"}])):])


def test_the_idle_model_has_no_open_stream(smollm2_path, smollm2_servers):
    """Regression: a stream left open when control passed kept the idle server generating up to the
    request's max_tokens, competing with the active one (3x slower relays on one machine)."""
    large = OpenAIBackend(smollm2_servers[0], chat_template=smollm2_path)
    small = OpenAIBackend(smollm2_servers[1], chat_template=smollm2_path)
    engine = RelayEngine(large, small, ["the", "is", "and"])
    seen = set()
    for event in engine.stream("Why is the sky blue?", SamplingParams(temperature=0, max_tokens=60)):
        if event.kind == "text":
            idle = small if event.model == "large" else large
            assert idle._response is None, f"{event.model} writes while the other server still streams"
            seen.add(event.model)
    assert seen == {"large", "small"}
    assert large._response is None and small._response is None  # closed when the request ended


def test_server_down_is_a_clear_error_naming_the_url_after_retries(smollm2_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    start = time.monotonic()
    with pytest.raises(ServerError, match=f"cannot reach {url}/models after 3 attempts.*server running"):
        OpenAIBackend(url, chat_format="raw", retries=2, backoff=0.05)
    assert time.monotonic() - start < 5


def test_server_stopping_between_requests_and_http_errors(smollm2_path):
    with llama_server(smollm2_path, n_ctx=128) as url:
        backend = OpenAIBackend(url, chat_format="raw", retries=1, backoff=0.05)
        engine = RelayEngine(backend, OpenAIBackend(url, chat_format="raw"), ["the"], RelayConfig(mode="large"))
        assert engine.generate("Hello", SamplingParams(temperature=0, max_tokens=5), chat=False).text
        with pytest.raises(ServerError, match=rf"{url}/completions answered HTTP 400"):  # over the server's n_ctx
            engine.generate("word " * 400, SamplingParams(temperature=0, max_tokens=5), chat=False)
    with pytest.raises(ServerError, match=f"cannot reach {url}/completions"):
        engine.generate("Hello", SamplingParams(temperature=0, max_tokens=5), chat=False)


def test_bad_configuration():
    with pytest.raises(ConfigError, match="http"):
        OpenAIBackend("localhost:8000", chat_format="raw")
    with pytest.raises(ConfigError, match="chat_template"):
        OpenAIBackend("http://127.0.0.1:9/v1")
    with pytest.raises(ConfigError, match="not a GGUF file"):
        OpenAIBackend("http://127.0.0.1:9/v1", chat_template="/no/such/file")


def test_cli_generate_over_two_servers(smollm2_servers):
    from test_cli import relaygen

    large, small = smollm2_servers
    p = relaygen("generate", "Why is the sky blue?", "--pair", "smollm2-135m-self", "--backend", "openai",
                 "--large-url", large, "--small-url", small, "--temperature", "0", "--max-tokens", "40", "--json",
                 "--profile", str(ANY_LETTER_FILE))
    assert p.returncode == 0, p.stderr
    import json

    rec = json.loads(p.stdout)
    assert rec["stats"]["switches"] >= 1 and rec["stats"]["handoff"] == "text"
    bad = relaygen("generate", "hi", "--backend", "openai", "--large-url", large)
    assert bad.returncode == 2 and "small_url" in bad.stderr and "Traceback" not in bad.stderr
    wrong = relaygen("generate", "hi", "--dtype", "bfloat16")
    assert wrong.returncode == 2 and "--dtype: not an option of the llamacpp backend (it is one of hf)" in wrong.stderr
    kind = relaygen("generate", "hi", "--pair", "smollm2-135m-self", "--backend", "openai", "--large-url", large,
                    "--small-url", small, "--server", "vllm", "--max-tokens", "4")
    assert kind.returncode == 2 and "server='vllm', but" in kind.stderr and "Traceback" not in kind.stderr
    checked = relaygen("generate", "hi", "--pair", "smollm2-135m-self", "--backend", "openai", "--large-url", large,
                       "--small-url", small, "--check", "tau=0.1", "--max-tokens", "4")
    assert checked.returncode == 2 and "llama-cpp-python's llama_cpp.server cannot give here" in checked.stderr
    local = relaygen("generate", "hi", "--server", "vllm")
    assert local.returncode == 2 and "--server: not an option of the llamacpp backend" in local.stderr


def test_a_requests_seed_and_id_table_do_not_depend_on_what_the_backend_served_before(smollm2_servers):
    """Regression: the seed sent was seed + the number of requests the backend had ever sent, so the
    same request sampled differently on a long-lived backend (a proxy) than on a fresh one; and every
    prompt and answer stayed in the backend's id table forever."""
    large_url, small_url = smollm2_servers
    params = SamplingParams(temperature=0.8, seed=11, max_tokens=8)

    def run(backend, prompt):
        RelayEngine(backend, OpenAIBackend(small_url, chat_format="raw"), ["the"],
                    RelayConfig(mode="large")).generate(prompt, params, chat=False)
        return backend._request[2]["seed"]  # one stream per request here (8 tokens)

    fresh = OpenAIBackend(large_url, chat_format="raw")
    seed = run(fresh, "The river runs")
    used = OpenAIBackend(large_url, chat_format="raw")
    for i in range(3):
        run(used, f"Prompt number {i} was about mountains")
    assert run(used, "The river runs") == seed
    assert not any(b"Prompt number" in piece for piece in used._pieces)  # earlier requests are gone


def test_scoring_is_a_capability_checked_once_before_any_work(smollm2_path, smollm2_servers, tmp_path):
    """A server backend cannot score text: lm-eval's loglikelihood and calibration say so in one line,
    before generating anything (calibration used to write every trace first)."""
    pytest.importorskip("lm_eval")
    from lm_eval_requests import request

    from relaygen_integrations.backends.scoring import Scoring
    from relaygen_integrations.calibration.run import calibrate
    from relaygen_integrations.integrations.lm_eval import RelayGenLM

    large, small = (OpenAIBackend(url, chat_template=smollm2_path) for url in smollm2_servers)
    assert not isinstance(large, Scoring) and isinstance(LlamaCppBackend(smollm2_path, n_ctx=64), Scoring)
    engine = RelayEngine(large, small, ANY_LETTER)
    lm = RelayGenLM(engine=engine, progress=False)
    with pytest.raises(ConfigError, match=r"loglikelihood \(multiple-choice tasks\) needs the probability of given "
                                          r"tokens, which llama-cpp-python's llama_cpp.server cannot give here"):
        lm.loglikelihood([request("loglikelihood", "Question: 2+2?\nAnswer:", " 4")])
    with pytest.raises(ConfigError, match=r"^calibration .* llama_cpp.server .* run the pair in process"):
        calibrate(engine, data="gsm8k", out=tmp_path / "profile.json", problems=1, samples=1, progress=False)
    assert large._stream_context == small._stream_context == [] and not list(tmp_path.iterdir())  # nothing sent


def test_a_checked_relay_over_servers_is_one_clear_error(smollm2_path, smollm2_servers):
    """The error names the server (recognised at start-up), what is missing and what to do instead."""
    large, small = (OpenAIBackend(url, chat_template=smollm2_path) for url in smollm2_servers)
    with pytest.raises(ConfigError, match=r"check=tau=0.01 needs the probability of given tokens, which "
                                          r"llama-cpp-python's llama_cpp.server cannot give here: .* the unchecked "
                                          r"relay \(check=off\) works over any server"):
        RelayEngine(large, small, ANY_LETTER, RelayConfig(check="tau=0.01"))
    # the default, check="auto", runs a profile's default policy only where the pair can check: off here
    from dataclasses import replace

    profile = replace(ANY_LETTER, check_default="tau=0.01")
    assert str(RelayEngine(large, small, profile, RelayConfig()).check_policy) == "off"


def test_the_server_kind_is_recognised_and_a_wrong_one_refused(smollm2_path, smollm2_servers):
    url = smollm2_servers[0]
    assert OpenAIBackend(url, chat_format="raw").kind == "llama-cpp-python"
    assert OpenAIBackend(url, chat_format="raw", server="llama-cpp-python").kind == "llama-cpp-python"
    assert OpenAIBackend(url, chat_format="raw", server="openai").kind == "openai"  # the protocol only, by choice
    with pytest.raises(ConfigError, match=r"server='sglang', but http://127.0.0.1:\d+ answers as llama-cpp-python's "
                                          r"llama_cpp.server: pass server='llama-cpp-python'"):
        OpenAIBackend(url, chat_format="raw", server="sglang")
    with pytest.raises(ConfigError, match="server must be one of sglang, vllm, llama-server, llama-cpp-python, openai"):
        OpenAIBackend(url, chat_format="raw", server="tgi")


def test_each_kind_is_recognised_by_what_only_it_answers():
    """The probe over the answers each kind gives (read from their source; see backends/server_kind.py)."""
    from relaygen_integrations.backends.server_kind import probe

    answers = {
        "llama-server": {"/props": {"default_generation_settings": {}, "total_slots": 1}},
        "sglang": {"/get_model_info": {"model_path": "Qwen/Qwen3-32B", "is_generation": True}},
        "vllm": {"/v1/models": {"data": [{"id": "Qwen/Qwen3-32B", "owned_by": "vllm", "max_model_len": 32768}]}},
        "llama-cpp-python": {"/openapi.json": {"info": {"title": "\U0001f999 llama.cpp Python API"}}},
        "openai": {"/v1/models": {"data": [{"id": "gpt", "owned_by": "someone"}]}},
    }
    for kind, answer in answers.items():
        assert probe(answer.get) == kind


def test_concurrent_relays_over_two_servers_all_finish(smollm2_servers):
    """Regression: llama_cpp.server by default cut a running stream short whenever another request came, the
    cut relay reopened its stream and cut the other one, and two relays made almost no progress (the
    load test's level of 2 clients). The testing helper starts the servers queueing instead."""
    from concurrent.futures import ThreadPoolExecutor

    from relaygen_integrations import load_concurrent

    large, small = smollm2_servers
    engine = load_concurrent("smollm2-135m-self", backend="openai", large_url=large, small_url=small, max_batch=3,
                             profile=str(ANY_LETTER_FILE), min_large_tokens=2)  # every letter a cue: hand-offs
    try:
        params = SamplingParams(temperature=0, max_tokens=24)
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(engine.generate, q, params) for q in ("Name a color.", "Why rain?", "Say hi.")]
            results = [f.result(timeout=600) for f in futures]  # a livelock fails here instead of hanging
        for r in results:
            assert r.stats.finish_reason in ("stop", "length") and r.stats.generated_tokens <= 24
    finally:
        engine.close()


def test_a_gguf_chat_template_is_parsed_once_per_file(smollm2_path):
    from relaygen_integrations.backends.chat_template import load_chat_template

    assert load_chat_template(smollm2_path) is load_chat_template(str(smollm2_path))  # one parse for all slots
