"""llama.cpp's own `llama-server` (built once by scripts/build_llama_server.sh from the llama.cpp that
llama-cpp-python 0.3.36 vendors) on 127.0.0.1, serving tiny float32 models: recognised as such, relays over
two of them with hand-offs by token id, concurrent relays on its parallel slots, and the clear refusal of what
needs scoring."""

import threading

import pytest

pytest.importorskip("requests", reason="the openai backend needs requests")

from relaygen_integrations import RelayConfig, RelayEngine, SamplingParams  # noqa: E402
from relaygen_integrations.backends.openai import OpenAIBackend  # noqa: E402
from relaygen_integrations.core.sampling import Sampler  # noqa: E402
from relaygen_integrations.errors import ConfigError  # noqa: E402
from relaygen_integrations.testing import LLAMA_SERVER, native_llama_server  # noqa: E402
from busy_cues import ANY_LETTER  # noqa: E402
from tiny_gguf import write_tiny_gguf  # noqa: E402

if not LLAMA_SERVER.is_file():
    pytest.skip("llama-server is not built: bash scripts/build_llama_server.sh (it needs cmake and a C++ compiler; "
                "scripts/test.sh runs it)", allow_module_level=True)

GREEDY = SamplingParams(temperature=0, max_tokens=40)
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny float32 models that write printable ASCII only (valid text), sharing a vocabulary with merges (so
    a hand-off by text could re-tokenise what the other model wrote; by id it cannot)."""
    d = tmp_path_factory.mktemp("llama-server")
    return tuple(write_tiny_gguf(d / f"{role}.gguf", seed=seed, merges=("Ġ t", "t h"), ascii_only=True, chat_template=CHATML)
                 for role, seed in (("large", 0), ("small", 1)))


@pytest.fixture(scope="module")
def servers(models):
    """Two llama-servers with 2 slots each."""
    with native_llama_server(models[0], n_ctx=512, parallel=2) as large_url, \
            native_llama_server(models[1], n_ctx=512, parallel=2) as small_url:
        yield large_url, small_url


def engine(servers, models, **config) -> RelayEngine:
    large, small = (OpenAIBackend(url, chat_format="raw", tokenizer=m) for url, m in zip(servers, models))
    return RelayEngine(large, small, ANY_LETTER, RelayConfig(**config))


def test_llama_server_is_recognised_and_a_relay_over_two_writes_what_it_writes_in_process(servers, models):
    """Hand-offs by token id (the servers get id lists; the in-process pair hands off by id too). Float32
    weights: the server's evaluation order cannot flip a greedy token, so the texts, and where control
    passed, must be the in-process relay's."""
    from relaygen_integrations.backends.llamacpp import LlamaCppBackend

    relay = engine(servers, models)
    assert relay.large.kind == relay.small.kind == "llama-server" and relay.large.by_id and relay.small.by_id
    assert relay.setup.by_ids  # one vocabulary: the engine hands off by id
    prompt = "Zebras live in Africa. Their stripes"
    r = relay.generate(prompt, GREEDY, chat=False)
    local = RelayEngine(*(LlamaCppBackend(m, n_ctx=512, n_threads=1, chat_format="raw") for m in models),
                        ANY_LETTER).generate(prompt, GREEDY, chat=False)
    assert r.text == local.text and [(s.model, s.text) for s in r.segments] == [(s.model, s.text) for s in local.segments]
    st = r.stats
    assert st.switches == local.stats.switches and st.large.server_requests <= st.switches + 2
    assert isinstance(relay.large._request[2]["prompt"], list)  # the context went as token ids


def test_a_token_split_as_no_tokenizer_would_split_it_reaches_the_server_as_it_is(servers, models):
    """"t" then "h" as two tokens: by text the server would read one "th" token. By id it evaluates the
    context as given: its prompt count says so."""
    import requests

    backend = OpenAIBackend(servers[0], chat_format="raw", tokenizer=models[0])
    t, h = (backend.tokenize(c) for c in (b"t", b"h"))
    context = backend.prompt_tokens("The path") + t + h
    assert backend.tokenize(b"th") != t + h
    backend.next_token(context, Sampler(GREEDY.validated()))
    path, root, body = backend._request
    backend.pause()
    answer = requests.post(backend.root_url + path, json={**body, "stream": False, "n_predict": 1}, timeout=60).json()
    assert body["prompt"] == context and answer["tokens_evaluated"] == len(context)


def test_concurrent_relays_use_its_parallel_slots(servers, models):
    """Two relays at once, each with its own backends (the server's slots batch them): both finish whole,
    each with the text it gets alone (tiny float32 models: the order of evaluation cannot flip a token)."""
    prompts = ["Zebras live in Africa. Their stripes", "The sea is wide and deep. Its waves"]
    alone = [engine(servers, models, mode="large").generate(p, GREEDY, chat=False).text for p in prompts]
    together, errors = {}, []

    def run(i):
        try:
            together[i] = engine(servers, models, mode="large").generate(prompts[i], GREEDY, chat=False).text
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and [together[0], together[1]] == alone


def test_what_needs_scoring_is_refused_naming_llama_server(servers, models):
    with pytest.raises(ConfigError, match=r"check=tau=0.1 needs the probability of given tokens, which llama.cpp's "
                                          r"llama-server cannot give here: .* #27174"):
        engine(servers, models, check="tau=0.1")
    from relaygen_integrations.backends.scoring import require_scoring

    with pytest.raises(ConfigError, match=r"^calibration needs .* llama-server .* run the pair in process"):
        require_scoring(OpenAIBackend(servers[0], chat_format="raw"), "calibration")


def test_the_bench_over_llama_servers_measures_and_reports_the_cost_model(servers, models, tmp_path):
    """`relaygen bench run --backend openai` over llama-servers: token-id hand-offs, unit costs measured over
    HTTP (no row calls: llama-server cannot score), and `bench report` prices the answers with them
    (regression: the report failed on unit costs without row calls)."""
    import json
    import subprocess
    import sys

    def relaygen(*args):
        p = subprocess.run([sys.executable, "-m", "relaygen_integrations.cli", *args], capture_output=True, text=True,
                           timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        return p.stdout

    out = tmp_path / "servers.jsonl"
    relaygen("bench", "run", "--data", "gsm8k", "--limit", "1", "--max-tokens", "24", "--no-agreement",
             "--methods", "large,relay", "--large", str(models[0]), "--small", str(models[1]), "--backend", "openai",
             "--large-url", servers[0], "--small-url", servers[1], "--n-ctx", "512", "--out", str(out))
    costs = next(r for r in map(json.loads, out.read_text().splitlines()) if r["type"] == "costs")
    assert costs["large"]["row_sizes"] is None and all(t > 0 for t in costs["large"]["seconds"])
    report = relaygen("bench", "report", str(out), "--out", str(tmp_path / "report.md"), "--no-plots", "--print")
    assert "predicted / measured" in report
