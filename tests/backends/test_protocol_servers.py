"""The SGLang and vLLM paths of the server backend against protocol test servers (tests/protocol_servers.py:
the request and response fields each server's released source defines, over a real tiny model in process;
not SGLang or vLLM themselves, which need GPUs). Hand-offs by token id, the check, lm-eval's
log-likelihoods and calibration equal the same models in process. The models add no BOS token, as the
default pair: these servers score them correctly (llama-cpp-python's cannot)."""

import json

import numpy as np
import pytest

pytest.importorskip("requests", reason="the openai backend needs requests")

from relaygen_integrations import RelayConfig, RelayEngine, SamplingParams  # noqa: E402
from relaygen_integrations.backends.llamacpp import LlamaCppBackend  # noqa: E402
from relaygen_integrations.backends.openai import OpenAIBackend  # noqa: E402
from relaygen_integrations.errors import ConfigError, ServerError  # noqa: E402
from busy_cues import ANY_LETTER  # noqa: E402
from protocol_servers import protocol_server  # noqa: E402
from tiny_gguf import write_tiny_gguf  # noqa: E402

GREEDY = SamplingParams(temperature=0, max_tokens=48)
SETUPS = {"sglang": ("sglang", True, False), "sglang-incremental-stream": ("sglang", True, True),
          "vllm": ("vllm", True, False), "vllm-openai-endpoint": ("vllm", False, False)}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("protocol")
    return tuple(write_tiny_gguf(d / f"m{seed}.gguf", seed=seed, merges=("Ġ t", "t h"), ascii_only=True) for seed in (0, 1))


@pytest.fixture(scope="module", params=list(SETUPS))
def setup(request, models):
    kind, scale_out, incremental = SETUPS[request.param]
    with protocol_server(kind, models[0], scale_out, incremental) as large, \
            protocol_server(kind, models[1], scale_out, incremental) as small:
        yield kind, scale_out, (large[0], small[0]), (large[1], small[1])


def over_servers(setup, models, **config) -> RelayEngine:
    large, small = (OpenAIBackend(url, chat_format="raw", tokenizer=m, n_ctx=512) for url, m in zip(setup[2], models))
    return RelayEngine(large, small, ANY_LETTER, RelayConfig(**config))


def in_process(models, **config) -> RelayEngine:
    large, small = (LlamaCppBackend(m, n_ctx=512, n_threads=1, chat_format="raw") for m in models)
    return RelayEngine(large, small, ANY_LETTER, RelayConfig(**config))


@pytest.mark.parametrize("check", ["off", "tau=0.9", "exact"])
def test_relays_and_checks_over_the_server_equal_in_process(setup, models, check):
    relay = over_servers(setup, models, check=check)
    assert relay.large.kind == setup[0] and relay.large.by_id and relay.setup.by_ids
    prompt = "Zebras live in Africa. Their stripes"
    remote = relay.generate(prompt, GREEDY, chat=False)
    local = in_process(models, check=check).generate(prompt, GREEDY, chat=False)
    assert [(s.model, s.text) for s in remote.segments] == [(s.model, s.text) for s in local.segments]
    assert (remote.stats.sentences_checked, remote.stats.sentences_cut) == \
        (local.stats.sentences_checked, local.stats.sentences_cut)
    if check != "off":
        assert local.stats.sentences_cut > 0


def test_lm_eval_loglikelihoods_over_the_server_equal_in_process(setup, models):
    pytest.importorskip("lm_eval")
    from lm_eval_requests import request

    from relaygen_integrations.integrations.lm_eval import RelayGenLM

    asks = [request("loglikelihood", "The sea is", " wide and deep"), request("loglikelihood", "", "Two and two")]
    rolling = [request("loglikelihood_rolling", "A whole document, scored from its first token.")]
    remote, local = (RelayGenLM(engine=e, progress=False) for e in (over_servers(setup, models), in_process(models)))
    np.testing.assert_allclose([r[0] for r in remote.loglikelihood(asks)], [r[0] for r in local.loglikelihood(asks)],
                               atol=1e-3)
    np.testing.assert_allclose(remote.loglikelihood_rolling(rolling), local.loglikelihood_rolling(rolling), atol=1e-3)


def test_calibration_over_the_server_writes_the_in_process_profile(setup, models, tmp_path):
    from relaygen_integrations.calibration.run import calibrate

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "problem": q, "answer": "0"}) + "\n"
                            for i, q in enumerate(["What is 2 + 3?", "How many legs do 3 cats have?"])))
    args = dict(data=data, problems=2, samples=1, seed=1, candidates=["X", "?", "t", "P", "r", "e", "a", ","],
                mode="substring", threshold=-1.0, min_occurrences=1, progress=False, plot=False, check_quantile=0.2,
                traces_path=tmp_path / "traces.jsonl",
                params=SamplingParams(temperature=0.6, top_p=0.95, top_k=20, max_tokens=40),
                models={"large": {"name": "tiny-0"}, "small": {"name": "tiny-1"}})
    local = calibrate(in_process(models), out=tmp_path / "local.json", **args)
    remote = calibrate(over_servers(setup, models), out=tmp_path / "remote.json", **args)
    assert remote["cues"] == local["cues"]
    assert 0 < local["check"]["tau"] < 1 and remote["check"]["tau"] == pytest.approx(local["check"]["tau"], rel=1e-4)


def test_a_tokenizer_that_is_not_the_servers_is_refused_at_start_up(setup, tmp_path):
    other = write_tiny_gguf(tmp_path / "other.gguf", seed=0, merges=("Ġ t", "t h", "Ġ th", "e r"))
    with pytest.raises(ConfigError, match=r"tokenises differently from the tokenizer .*other.gguf \(first difference"):
        OpenAIBackend(setup[2][0], chat_format="raw", tokenizer=other)


def test_a_server_that_fails_mid_relay_is_one_clear_error_and_the_engine_serves_the_next_request(setup, models):
    """500s are retried (a server that recovers costs nothing but time); one that keeps failing, or dies,
    is one error naming it; the same engine then answers the next request as if nothing had happened."""
    relay = over_servers(setup, models, check="tau=0.9")
    for b in (relay.large, relay.small):
        b.backoff = 0.01
    large_faults = setup[3][0]
    prompt = "Zebras live in Africa. Their stripes"
    local = in_process(models, check="tau=0.9").generate(prompt, GREEDY, chat=False)
    large_faults.update(status=500, count=2)  # fewer than the retries: recovered
    assert relay.generate(prompt, GREEDY, chat=False).text == local.text
    for status in (500, 0):  # keeps answering 500; dies (connections closed unanswered)
        events = relay.stream(prompt, GREEDY, chat=False)
        next(events)
        large_faults.update(status=status, count=100)
        with pytest.raises(ServerError, match=r"http://127.0.0.1:\d+/.* (answered HTTP 500|after 4 attempts)"):
            list(events)
        large_faults.update(count=0)
        assert relay.generate(prompt, GREEDY, chat=False).text == local.text


def test_ids_llama_server_held_back_come_first_re_derived_from_their_text(models):
    """llama-server sends a token that ends inside a UTF-8 character with the next one's chunk, listing only
    that one (tools/server/server-context.cpp): the text's leading bytes are the held-back tokens."""
    from relaygen_integrations.backends.llamacpp_vocab import GGUFVocab
    from relaygen_integrations.backends.server_tokens import missing_ids

    vocab = GGUFVocab(models[0])
    e_acute = "é".encode()
    first, second = ([t] for t in vocab.tokenize(e_acute))  # a byte-level vocabulary: one token per byte
    listed = vocab.tokenize(b"x")
    assert missing_ids(listed, e_acute + b"x", vocab.token_bytes, vocab.tokenize) == vocab.tokenize(e_acute) + listed
    assert missing_ids(second, e_acute, vocab.token_bytes, vocab.tokenize) == first + second
    assert missing_ids(listed, b"x", vocab.token_bytes, vocab.tokenize) == listed  # nothing held back


def test_a_scoring_path_that_recomputes_the_prefix_is_named(setup, models):
    """vLLM without --enable-scale-out scores through /v1/completions, which skips its prefix cache: the bench
    says so (and prices what the server recomputes: the whole context per check)."""
    from relaygen_integrations.backends.server_scoring import slow_path

    large = over_servers(setup, models).large
    note = slow_path(large)
    assert (note is not None and "--enable-scale-out" in note) == (setup[0] == "vllm" and not setup[1])
    rows, evaluated = large.check_rows(large.prompt_tokens("The sea is wide and deep"), 3)
    assert evaluated == (len(large.prompt_tokens("The sea is wide and deep")) if note else 4)


@pytest.fixture(scope="module")
def hf_tokenizers(models, tmp_path_factory):
    """Hugging Face tokenizer directories of the tiny models (as a vLLM or SGLang user has them), written by
    transformers from the GGUF files."""
    transformers = pytest.importorskip("transformers")
    out = []
    for m in models:
        d = tmp_path_factory.mktemp("hf-tokenizer")
        transformers.AutoTokenizer.from_pretrained(str(m.parent), gguf_file=m.name).save_pretrained(d)
        transformers.AutoConfig.from_pretrained(str(m.parent), gguf_file=m.name).save_pretrained(d)
        out.append(d)
    return out


def test_a_hugging_face_tokenizer_directory_hands_off_and_checks_by_id(setup, models, hf_tokenizers):
    large, small = (OpenAIBackend(url, chat_format="raw", tokenizer=d, n_ctx=512) for url, d in zip(setup[2], hf_tokenizers))
    relay = RelayEngine(large, small, ANY_LETTER, RelayConfig(check="tau=0.9"))
    assert large.by_id and relay.setup.by_ids and type(large.vocab).__name__ == "HFTokenizer"
    prompt = "Zebras live in Africa. Their stripes"
    remote = relay.generate(prompt, GREEDY, chat=False)
    local = in_process(models, check="tau=0.9").generate(prompt, GREEDY, chat=False)
    assert [(s.model, s.text) for s in remote.segments] == [(s.model, s.text) for s in local.segments]
