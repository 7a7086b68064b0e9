"""Scoring over servers on 127.0.0.1: the checked relay, lm-eval's log-likelihoods and calibration with the
large (and small) model behind llama-cpp-python's ``llama_cpp.server``, against the same models in process.

The tiny float32 models add a BOS token (so llama-cpp-python's echoed log-probabilities are aligned) and have a
vocabulary without merges (so the text that server takes re-tokenises to the same ids): the comparison is
exact. A model that adds no BOS gets the shifted echo, which is detected at start-up and refused."""

import json

import numpy as np
import pytest

pytest.importorskip("requests", reason="the openai backend needs requests")

from relaygen_integrations import RelayConfig, RelayEngine, SamplingParams  # noqa: E402
from relaygen_integrations.backends.llamacpp import LlamaCppBackend  # noqa: E402
from relaygen_integrations.backends.openai import OpenAIBackend  # noqa: E402
from relaygen_integrations.errors import ConfigError  # noqa: E402
from relaygen_integrations.testing import llama_server  # noqa: E402
from busy_cues import ANY_LETTER  # noqa: E402
from tiny_gguf import write_tiny_gguf  # noqa: E402

GREEDY = SamplingParams(temperature=0, max_tokens=48)
# llama.cpp needs at least one merge; this one joins two control bytes, which ascii_only models never write
NO_TEXT_MERGE = ("\u0100 \u0101",)
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("scoring")
    return tuple(write_tiny_gguf(d / f"bos-{seed}.gguf", seed=seed, merges=NO_TEXT_MERGE, ascii_only=True, add_bos=True,
                                 chat_template=CHATML) for seed in (0, 1))


@pytest.fixture(scope="module")
def servers(models):
    with llama_server(models[0], n_ctx=512) as large_url, llama_server(models[1], n_ctx=512) as small_url:
        yield large_url, small_url


def over_servers(servers, models, **config) -> RelayEngine:
    large, small = (OpenAIBackend(url, chat_format="raw", tokenizer=m, n_ctx=512) for url, m in zip(servers, models))
    return RelayEngine(large, small, ANY_LETTER, RelayConfig(**config))


def in_process(models, **config) -> RelayEngine:
    large, small = (LlamaCppBackend(m, n_ctx=512, n_threads=1, chat_format="raw") for m in models)
    return RelayEngine(large, small, ANY_LETTER, RelayConfig(**config))


@pytest.mark.parametrize("check", ["tau=0.9", "exact"])
def test_the_check_over_servers_cuts_where_it_cuts_in_process(servers, models, check):
    """Same cuts, at the same positions, with the same large-model tokens: the segments are equal."""
    prompt = "Zebras live in Africa. Their stripes"
    remote = over_servers(servers, models, check=check).generate(prompt, GREEDY, chat=False)
    local = in_process(models, check=check).generate(prompt, GREEDY, chat=False)
    assert local.stats.sentences_cut > 0  # a tau this high cuts random models' sentences
    assert [(s.model, s.text) for s in remote.segments] == [(s.model, s.text) for s in local.segments]
    assert (remote.stats.sentences_checked, remote.stats.sentences_cut, remote.stats.small_tokens_discarded) == \
        (local.stats.sentences_checked, local.stats.sentences_cut, local.stats.small_tokens_discarded)
    assert remote.stats.large.server_requests >= remote.stats.sentences_checked  # one scoring request per check


def test_the_check_over_servers_needs_draws_it_can_make_exactly(servers, models):
    engine = over_servers(servers, models, check="tau=0.5")
    with pytest.raises(ConfigError, match=r"exact for greedy decoding or top_k <= 20; .* top_k unlimited"):
        engine.prepare("Hello", SamplingParams(temperature=0.7, top_k=0), chat=False)
    engine.prepare("Hello", SamplingParams(temperature=0.7, top_k=20), chat=False)  # exact: accepted


def test_lm_eval_loglikelihoods_over_a_server_equal_in_process(servers, models):
    pytest.importorskip("lm_eval")
    from lm_eval_requests import request

    from relaygen_integrations.integrations.lm_eval import RelayGenLM

    asks = [request("loglikelihood", "The sea is", " wide and deep"), request("loglikelihood", "Two and two", " make four")]
    remote = RelayGenLM(engine=over_servers(servers, models), progress=False).loglikelihood(asks)
    local = RelayGenLM(engine=in_process(models), progress=False).loglikelihood(asks)
    np.testing.assert_allclose([r[0] for r in remote], [r[0] for r in local], atol=1e-3)
    assert [r[1] for r in remote] == [r[1] for r in local]
    with pytest.raises(ConfigError, match="does not score a text's first token"):
        RelayGenLM(engine=over_servers(servers, models), progress=False).loglikelihood_rolling(
            [request("loglikelihood_rolling", "A whole document.")])


def test_calibration_over_servers_writes_the_in_process_profile(servers, models, tmp_path):
    from relaygen_integrations.calibration.run import calibrate

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "problem": q, "answer": "0"}) + "\n"
                            for i, q in enumerate(["What is 2 + 3?", "How many legs do 3 cats have?"])))
    args = dict(data=data, problems=2, samples=2, seed=1, candidates=["X", "?", "t", "P", "r", "e", "a", ","], mode="substring", threshold=-1.0,
                min_occurrences=1, progress=False, plot=False, traces_path=tmp_path / "traces.jsonl",
                params=SamplingParams(temperature=0.6, top_p=0.95, top_k=20, max_tokens=40),
                models={"large": {"name": "tiny-bos-0"}, "small": {"name": "tiny-bos-1"}})
    local = calibrate(in_process(models), out=tmp_path / "local.json", **args)
    remote = calibrate(over_servers(servers, models), out=tmp_path / "remote.json", **args)  # the same traces
    assert remote["cues"] == local["cues"] and remote["cost"]["scored_tokens"] == local["cost"]["scored_tokens"]
    assert remote["check"]["tau"] == pytest.approx(local["check"]["tau"], rel=1e-4)
    for a, b in zip(remote["table"], local["table"]):
        assert a["cue"] == b["cue"] and a["occurrences"] == b["occurrences"] and a["tokens"] == b["tokens"]
        assert a["delta"] == pytest.approx(b["delta"], abs=1e-4, nan_ok=True)


def test_a_model_without_bos_gets_the_shifted_echo_which_is_refused(tmp_path):
    model = write_tiny_gguf(tmp_path / "no-bos.gguf", seed=0, merges=NO_TEXT_MERGE, ascii_only=True)
    with llama_server(model, n_ctx=256) as url:
        large = OpenAIBackend(url, chat_format="raw", tokenizer=model, n_ctx=256)
        small = OpenAIBackend(url, chat_format="raw", tokenizer=model, n_ctx=256)
        assert "misaligned" in large.scoring_problem and "#1983" in large.scoring_problem
        with pytest.raises(ConfigError, match=r"check=tau=0.5 needs .* llama_cpp.server cannot give here: its echoed "
                                              r"prompt log-probabilities are misaligned"):
            RelayEngine(large, small, ANY_LETTER, RelayConfig(check="tau=0.5"))
        r = RelayEngine(large, small, ANY_LETTER).generate("Hello there.", GREEDY, chat=False)  # unchecked: fine
        assert r.text


def test_a_tokenizer_that_is_not_the_servers_is_one_clear_error(servers, tmp_path):
    other = write_tiny_gguf(tmp_path / "merges.gguf", seed=0, merges=("Ġ t", "t h"))
    with pytest.raises(ConfigError, match=r"tokenizer must be auto, model, none, the served model's GGUF file or its Hugging Face directory, got '.*nope.gguf' "
                                          r"\(no such file\)"):
        OpenAIBackend(servers[0], chat_format="raw", tokenizer=tmp_path / "nope.gguf")
    with pytest.raises(ConfigError, match=r"tokenises differently from the tokenizer .*merges.gguf \(first difference"):
        OpenAIBackend(servers[0], chat_format="raw", tokenizer=other)


def test_the_bench_runs_the_checked_relay_over_servers_with_the_cost_model(servers, models, tmp_path):
    """`relaygen bench run --backend openai` takes the checked methods (it refused every `+` method) and
    measures the cost model's unit costs over the servers, scoring requests included; the answers' cuts
    are the in-process ones."""
    import subprocess
    import sys

    from busy_cues import ANY_LETTER_FILE as profile

    run = ["bench", "run", "--data", "gsm8k", "--limit", "1", "--max-tokens", "40", "--no-agreement",
           "--methods", f"large,relay:{profile}+tau=0.9", "--large", str(models[0]), "--small", str(models[1])]

    def relaygen(*args):
        p = subprocess.run([sys.executable, "-m", "relaygen_integrations.cli", *args], capture_output=True, text=True,
                           timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]

    relaygen(*run, "--backend", "openai", "--large-url", servers[0], "--small-url", servers[1], "--n-ctx", "512",
             "--tokenizer", "model", "--out", str(tmp_path / "servers.jsonl"))
    relaygen(*run, "--threads", "1", "--no-costs", "--out", str(tmp_path / "local.jsonl"))
    remote, local = ([json.loads(line) for line in (tmp_path / f).read_text().splitlines()]
                     for f in ("servers.jsonl", "local.jsonl"))
    costs = next(r for r in remote if r["type"] == "costs")
    assert costs["large"]["row_seconds"] and all(t > 0 for t in costs["large"]["seconds"])
    checked = [[r for r in rs if r.get("method", "").endswith("+tau=0.9")][0] for rs in (remote, local)]
    assert checked[0]["segments"] == checked[1]["segments"] and checked[0]["text"] == checked[1]["text"]
    assert checked[0]["sentences_checked"] > 0 and checked[0]["models"]["large"]["server_requests"] > 0


def test_top_choices_keyed_by_a_text_many_tokens_share_stand_for_the_end_of_generation(servers, models):
    """llama-cpp-python keys top choices by text, and control tokens and broken UTF-8 bytes all read "".
    Regression: "" was taken for the first such token (byte 0x80), so where the large model would end the
    text the check wrote a broken byte instead (seen in evals/servers_bench.py). With every token in the top
    list, "" must stand for the end of generation."""
    from relaygen_integrations.backends.server_scoring import score

    large = OpenAIBackend(servers[0], chat_format="raw", tokenizer=models[0], n_ctx=512)
    context = large.prompt_tokens("Zebras live in Africa. Their stripes")
    scored = score(large, context, len(context) - 3, top_n=large.vocab.n_vocab)
    empty = {t for row in scored.tops for t, _ in row if large.token_bytes(t).decode("utf-8", "ignore") == ""
             or large.vocab.is_control(t)}
    assert empty and all(large.is_end_of_generation(t) for t in empty)
