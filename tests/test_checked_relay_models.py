"""The checked relay on real (tiny, float32) llama.cpp and transformers models: with ``exact`` the output is the
large model's alone, token for token, greedy and seeded, however often the small model's sentences are cut, and
whether or not the small model resumes a sentence after a cut (``resume``)."""

import pytest

from relaygen_integrations import RelayConfig, RelayEngine, SamplingParams
from relaygen_integrations.backends.llamacpp import LlamaCppBackend
from busy_cues import ANY_LETTER
from tiny_gguf import write_tiny_gguf

PROMPT = "the cat sat on the mat and the dog " * 3


@pytest.fixture(scope="module")
def endless_large(tmp_path_factory):
    """tiny_models["a"]'s vocabulary and weights, but it can never end the text (its end token's logit is 0)."""
    return write_tiny_gguf(tmp_path_factory.mktemp("endless") / "tiny-a-endless.gguf", seed=0, endless=True)


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory):
    """Same vocabulary as tiny_models["a"], other weights: the small model that is often wrong."""
    return write_tiny_gguf(tmp_path_factory.mktemp("checked") / "tiny-a3.gguf", seed=3)


def _backend(kind, path, threads=1):
    if kind == "hf":
        pytest.importorskip("transformers", reason="the hf extra is not installed")
        from relaygen_integrations.backends.transformers import TransformersBackend

        return TransformersBackend(path, n_ctx=512, n_threads=threads, chat_format="raw")
    return LlamaCppBackend(path, n_ctx=512, n_threads=threads, chat_format="raw")


@pytest.mark.parametrize("resume", [0, 3], ids=["cut", "resume"])
@pytest.mark.parametrize("answer", [False, True], ids=["reasoning", "with-answer"])
@pytest.mark.parametrize("kind", ["llamacpp", "hf"])
def test_exact_check_gives_the_large_models_own_tokens(kind, answer, resume, tiny_models, endless_large, other_weights):
    # with-answer: the budget forces the reasoning-end marker 20 tokens before the end and the small model
    # writes the answer, which the large model checks as it ends; the large model never ends the text, so the
    # budget is always reached and the answer is always there, whatever a build's random model writes
    stage = dict(reasoning_end=" mat", answer_reserve_tokens=20) if answer else {}
    large_path = endless_large if answer else tiny_models["a"]
    checked_any = cut_any = resumed_any = 0
    greedy = SamplingParams(temperature=0, max_tokens=80)
    for params in (greedy, SamplingParams(temperature=0.9, seed=5, max_tokens=80), "stop"):
        reference = RelayEngine(_backend(kind, large_path, 2), _backend(kind, other_weights), ANY_LETTER,
                                RelayConfig(mode="large", **stage))
        if params == "stop":  # a stop string the large model alone reaches; the relay must stop at it too
            text = reference.generate(PROMPT, greedy, chat=False).text
            middle = [text[i:i + 3] for i in range(len(text) // 2, len(text) - 3) if "\ufffd" not in text[i:i + 3]]
            params = SamplingParams(temperature=0, max_tokens=80, stop=(middle[0],))
        alone = reference.generate(PROMPT, params, chat=False)
        assert alone.stats.finish_reason == ("stop_string" if params.stop else "length")
        engine = RelayEngine(_backend(kind, large_path, 2), _backend(kind, other_weights), ANY_LETTER,
                             RelayConfig(min_large_tokens=1, check="exact", resume=resume, **stage))
        r = engine.generate(PROMPT, params, chat=False)
        assert r.stats.finish_reason == alone.stats.finish_reason
        assert r.answer == alone.answer
        assert (r.answer != "") == answer or params.stop  # a stop string may come before the answer
        assert r.text == alone.text and r.stats.generated_tokens == alone.stats.generated_tokens
        st = r.stats
        checked_any += st.sentences_checked
        cut_any += st.sentences_cut
        resumed_any += st.resumes
        assert st.resumes <= st.sentences_cut and (st.resumes == 0 or resume)
        assert st.small_tokens_discarded >= st.sentences_cut == st.cut_tokens
        assert sum(s.tokens for s in r.segments) == st.generated_tokens + st.forced_tokens
        if params.stop:  # the run may end on a token decided by a cut, before the cache caught up with the cut
            continue
        # the large model's cache holds the output as it stands (what the large model alone holds), nothing
        # it threw away; it may hold one token more or less than the other (its last one is evaluated or not)
        mine, theirs = engine.large.tokens, reference.large.tokens
        n = min(len(mine), len(theirs))
        assert mine[:n] == theirs[:n] and abs(len(mine) - len(theirs)) <= 1
    assert checked_any > 0 and cut_any > 0  # random weights disagree: cuts really happened
    assert (resumed_any > 0) == (resume > 0)


def test_every_entry_point_takes_the_check_and_refuses_nonsense(smollm2_path, tmp_path):
    """CLI (--check), Python (load_pair), lm-eval (model_args) and LiteLLM (handler keywords): a policy is
    accepted and its counts reported; a bad one is one clear line."""
    import json
    import subprocess
    import sys

    from relaygen_integrations import ConfigError, load_pair

    engine = load_pair("smollm2-135m-self", check="tau=0.05", n_ctx=512, n_threads=2)
    assert str(engine.check_policy) == "tau=0.05"
    with pytest.raises(ConfigError, match="check must be auto, off, exact"):
        load_pair("smollm2-135m-self", check="always", n_ctx=512, n_threads=2)
    cli = [sys.executable, "-m", "relaygen_integrations.cli", "generate", "Say hi.", "--pair", "smollm2-135m-self",
           "--n-ctx", "512", "--threads", "2", "--max-tokens", "16", "--temperature", "0"]
    ok = subprocess.run(cli + ["--check", "exact", "--json"], capture_output=True, text=True,
                        timeout=300)
    assert ok.returncode == 0, ok.stderr
    stats = json.loads(ok.stdout)["stats"]
    assert {"sentences_checked", "sentences_cut", "small_tokens_discarded", "cut_tokens"} <= set(stats)
    assert stats["check"] == "exact"
    # no --check: "auto", the profile's own default policy (this profile names exact)
    profile = tmp_path / "checked-profile.json"
    profile.write_text(json.dumps({"cues": ["the"], "check": {"tau": 0.2, "default": "exact"}}))
    auto = subprocess.run(cli + ["--profile", str(profile), "--json"], capture_output=True, text=True, timeout=300)
    assert auto.returncode == 0, auto.stderr
    assert json.loads(auto.stdout)["stats"]["check"] == "exact"
    assert str(load_pair("smollm2-135m-self", profile=str(profile), n_ctx=512, n_threads=2).check_policy) == "exact"
    assert str(load_pair("smollm2-135m-self", profile=str(profile), check="off", n_ctx=512,
                         n_threads=2).check_policy) == "off"
    bad = subprocess.run(cli + ["--check", "tau=2"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "tau must be a probability in (0, 1)" in bad.stderr and "Traceback" not in bad.stderr
    pytest.importorskip("lm_eval")
    from relaygen_integrations.integrations.lm_eval import RelayGenLM

    lm = RelayGenLM.create_from_arg_string("pretrained=smollm2-135m-self,check=exact,n_ctx=512,"
                                           "n_threads=2,progress=False")
    assert lm.engine.check_policy.kind == "exact"
    with pytest.raises(ConfigError, match="check must be"):
        RelayGenLM.create_from_arg_string("pretrained=smollm2-135m-self,check=maybe,n_ctx=512,n_threads=2")
    pytest.importorskip("litellm")
    from relaygen_integrations.integrations.litellm import RelayGenProvider

    with pytest.raises(ConfigError, match="check must be"):
        RelayGenProvider(check="maybe", n_ctx=512, n_threads=2)
    assert RelayGenProvider(check="exact", n_ctx=512, n_threads=2).load_options["check"] == "exact"


def test_every_entry_point_takes_resume_and_refuses_nonsense(smollm2_path):
    """resume=N through the CLI (generate and serve flags), Python, lm-eval model_args and LiteLLM keywords;
    without a check, or not a count, it is one clear error."""
    import json
    import subprocess
    import sys

    from relaygen_integrations import ConfigError, load_pair
    from relaygen_integrations.cli import build_parser
    from relaygen_integrations.cli_options import spec_mapping
    from relaygen_integrations.options import RelaySpec

    assert load_pair("smollm2-135m-self", check="exact", resume=2, n_ctx=512, n_threads=2).config.resume == 2
    with pytest.raises(ConfigError, match="check is off"):
        load_pair("smollm2-135m-self", check="off", resume=2, n_ctx=512, n_threads=2)
    cli = [sys.executable, "-m", "relaygen_integrations.cli", "generate", "Say hi.", "--pair", "smollm2-135m-self",
           "--n-ctx", "512", "--threads", "2", "--max-tokens", "16", "--temperature", "0", "--check", "exact"]
    ok = subprocess.run(cli + ["--resume", "2", "--json"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert {"resumes", "resumed_tokens", "cues_cut"} <= set(json.loads(ok.stdout)["stats"])
    for bad, message in ((["--resume", "-1"], "resume must be an integer"),
                         (["--resume", "2", "--check", "off"], "check is off")):
        p = subprocess.run(cli + bad, capture_output=True, text=True, timeout=300)
        assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr
    serve = build_parser().parse_args(["serve", "--pair", "smollm2-135m-self", "--check", "exact", "--resume", "3"])
    assert RelaySpec.from_mapping(spec_mapping(serve)).relay.resume == 3
    pytest.importorskip("lm_eval")
    from relaygen_integrations.integrations.lm_eval import RelayGenLM

    lm = RelayGenLM.create_from_arg_string("pretrained=smollm2-135m-self,check=exact,resume=2,n_ctx=512,"
                                           "n_threads=2,progress=False")
    assert lm.engine.config.resume == 2
    with pytest.raises(ConfigError, match="resume must be an integer"):
        RelayGenLM.create_from_arg_string("pretrained=smollm2-135m-self,check=exact,resume=some,n_ctx=512")
    pytest.importorskip("litellm")
    from relaygen_integrations.integrations.litellm import RelayGenProvider

    assert RelayGenProvider(check="exact", resume=2, n_ctx=512, n_threads=2).load_options["resume"] == 2
    with pytest.raises(ConfigError, match="check is off"):
        RelayGenProvider(check="off", resume=1, n_ctx=512, n_threads=2)
