"""Speculative decoding on real GGUF models: output identical to plain decoding, in relay too."""

import numpy as np
import pytest
from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

from relaygen_integrations import ConfigError, RelayConfig, RelayEngine, SamplingParams
from relaygen_integrations.backends.llamacpp import LlamaCppBackend
from relaygen_integrations.core.sampling import Sampler
from relaygen_integrations.speculative import DraftModel, SpeculativeBackend, prompt_lookup, verify_draft
from busy_cues import ANY_LETTER
from tiny_gguf import write_tiny_gguf

BUSY_CUES = ["the", "is", "and", "a", "to"]


def test_verify_draft_accepts_the_matching_prefix_and_draws_one_more_token():
    rows = np.full((4, 10), -5.0, dtype=np.float32)
    for i, best in enumerate([3, 4, 7, 1]):
        rows[i, best] = 5.0
    greedy = Sampler(SamplingParams(temperature=0).validated())
    assert verify_draft(greedy, rows, [3, 4, 7]) == [3, 4, 7, 1]  # all accepted + the bonus token
    assert verify_draft(greedy, rows, [3, 9, 7]) == [3, 4]  # rejected at 1: the target's token instead


def test_verify_draft_consumes_random_numbers_like_one_token_at_a_time():
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((6, 50)).astype(np.float32)
    params = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, seed=7).validated()
    sequential = Sampler(params)
    expected = [sequential(rows[i]) for i in range(6)]
    draft = expected[:3] + [(expected[3] + 1) % 50, 0]  # right for 3 tokens, then wrong
    assert verify_draft(Sampler(params), rows, draft) == expected[:4]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_models):
    """Target 'a', and a drafter with the same vocabulary but other weights (so it is sometimes wrong)."""
    other = write_tiny_gguf(tmp_path_factory.mktemp("draft") / "tiny-a2.gguf", seed=2)
    return tiny_models["a"], other


def _engine(target_path, drafter, mode="large", n_batch=512, small_path=None):
    large = LlamaCppBackend(target_path, n_ctx=512, n_threads=2, n_batch=n_batch, chat_format="raw")
    if drafter in ("draft-same", "draft-other"):
        weights = target_path if drafter == "draft-same" else small_path
        drafter = DraftModel(LlamaCppBackend(weights, n_ctx=512, n_threads=1, chat_format="raw"), max_tokens=5)
        large = SpeculativeBackend(large, drafter)
    elif drafter == "lookup":
        large = SpeculativeBackend(large, prompt_lookup(5))
    small = LlamaCppBackend(small_path or target_path, n_ctx=512, n_threads=1, chat_format="raw")
    return RelayEngine(large, small, BUSY_CUES, RelayConfig(mode=mode, min_large_tokens=2))


@pytest.mark.parametrize("mode", ["large", "relay"])
@pytest.mark.parametrize("drafter", ["draft-same", "draft-other", "lookup"])
def test_tiny_models_speculation_gives_the_same_tokens_greedy_and_seeded(tiny, mode, drafter):
    target, draft = tiny
    prompt = "the cat sat on the mat and the dog " * 12  # ~250 tokens: longer than n_batch=64
    for params in (SamplingParams(temperature=0, max_tokens=120), SamplingParams(temperature=0.9, seed=3, max_tokens=120)):
        plain = _engine(target, None, mode, n_batch=64, small_path=draft).generate(prompt, params, chat=False)
        fast = _engine(target, drafter, mode, n_batch=64, small_path=draft).generate(prompt, params, chat=False)
        assert fast.text == plain.text
        st = fast.stats.large
        assert st.drafted_tokens > 0 and 0 <= st.accepted_draft_tokens <= st.drafted_tokens
        if drafter == "draft-same" and params.greedy:  # the target's own weights draft what it would pick
            assert st.accepted_draft_tokens == st.drafted_tokens
        if drafter == "draft-other":  # random weights disagree: rejections are exercised
            assert st.accepted_draft_tokens < st.drafted_tokens
        assert fast.stats.small.drafted_tokens == 0
        assert fast.stats.small.generated_tokens == plain.stats.small.generated_tokens  # relayed, not drafted


STORY = ("Once upon a time a dragon lived in a cave above a quiet village. Every morning it counted "
         "its gold, and every evening it read old books about the stars. ")
OPTS = dict(n_ctx=2048, n_threads=2, flash_attn=True)


def _smol_run(path, prompt, drafter, mode, params):
    large, small = LlamaCppBackend(path, **OPTS), LlamaCppBackend(path, **OPTS)
    if drafter:
        large = SpeculativeBackend(large, DraftModel(LlamaCppBackend(path, **OPTS), max_tokens=6))
    engine = RelayEngine(large, small, ANY_LETTER, RelayConfig(mode=mode))
    return engine, engine.generate(prompt, params)


def _assert_targets_greedy_choices(path, engine, result, limit=100):
    """Every token speculation emitted is what the target, decoding one token at a time, ranks first,
    or within a rounding-sized gap of it. Batched verification rounds differently from one-by-one
    decoding on quantised weights, by an amount that depends on the build's kernels, so the texts
    themselves may part at a near-tie; this property holds on any correct build."""
    check = LlamaCppBackend(path, **OPTS)
    n_prompt = result.stats.large.prompt_tokens
    context = list(engine.large.target.tokens[:n_prompt])
    out = (engine.large._plan or engine.large.target.tokens)[n_prompt:][:result.stats.generated_tokens]
    assert out, "nothing was generated"
    exact = 0
    for token in out[:limit]:
        check.sync(context)
        logits = check.logits()
        gap = float(logits.max() - logits[token])
        assert gap < 0.5, f"speculation emitted a token the target ranks {gap:.2f} below its first choice"
        exact += gap == 0
        context.append(token)
    assert exact >= 0.95 * min(len(out), limit)


@pytest.mark.parametrize("prompt_repeats", [12, 18])  # ~450 tokens, and ~660: longer than n_batch 512
def test_smollm2_greedy_speculation_emits_only_the_targets_greedy_tokens(smollm2_path, prompt_repeats):
    """Real model; a second SmolLM2 context drafts."""
    prompt = STORY * prompt_repeats + "\nContinue the story in a few sentences."
    engine, fast = _smol_run(smollm2_path, prompt, True, "large", SamplingParams(temperature=0, max_tokens=100))
    st = fast.stats.large
    assert st.drafted_tokens > 0 and st.accepted_draft_tokens > 0.8 * st.drafted_tokens  # the same weights draft well
    _assert_targets_greedy_choices(smollm2_path, engine, fast)


def test_smollm2_relay_with_speculation_keeps_drafts_away_from_the_small_model(smollm2_path):
    """Relay + speculation on a real model: the relay's small model never sees a drafted token, its
    context is prompt + own + handed over, nothing else. (That relay + speculation gives exactly the
    relay's tokens is tested on the tiny float32 models above, which have no near-ties.)"""
    prompt = STORY * 12 + "\nContinue the story in a few sentences."
    engine, fast = _smol_run(smollm2_path, prompt, True, "relay", SamplingParams(temperature=0, max_tokens=120))
    st = fast.stats
    assert st.switches > 0 and st.large.drafted_tokens > 0
    assert st.large.accepted_draft_tokens > 0.8 * st.large.drafted_tokens
    m = st.small
    assert m.generated_tokens > 0 and m.drafted_tokens == 0
    assert m.prompt_tokens + m.handoff_tokens + m.generated_tokens - m.evaluated_tokens in (0, 1)
    assert engine.small is not engine.large.drafter.backend


def test_draft_model_plugs_into_llama_cpp_pythons_own_hook(tiny):
    import llama_cpp

    target, draft = tiny
    drafter = DraftModel(LlamaCppBackend(draft, n_ctx=512, n_threads=1, chat_format="raw"), max_tokens=4)

    def complete(draft_model):
        llm = llama_cpp.Llama(str(target), n_ctx=512, n_threads=1, draft_model=draft_model, verbose=False,
                              flash_attn=True)
        return llm.create_completion("the cat sat on", max_tokens=40, temperature=0)["choices"][0]["text"]

    assert complete(drafter) == complete(None)
    assert drafter.backend.tokens  # it drafted from its own context


def test_adaptive_draft_length_follows_acceptance(tiny):
    target, _ = tiny
    d = DraftModel(LlamaCppBackend(target, n_ctx=64, n_threads=1, chat_format="raw"), max_tokens=8)
    for _ in range(10):
        d.feedback(8, 8)
    assert d.k == 8
    for _ in range(10):
        d.feedback(8, 0)
    assert d.k == 1
    assert isinstance(prompt_lookup(3), LlamaPromptLookupDecoding)


def test_a_requests_drafts_do_not_depend_on_earlier_requests(tiny):
    """Regression: the adaptive draft length carried over from one request to the next, so the same
    request drafted (and verified in batches) differently depending on what ran before it."""
    target, draft = tiny
    engine = _engine(target, "draft-other", "large", small_path=draft)
    params = SamplingParams(temperature=0, max_tokens=60)

    def run(prompt):
        r = engine.generate(prompt, params, chat=False)
        return r.text, r.stats.large.drafted_tokens, r.stats.large.accepted_draft_tokens, r.stats.large.eval_calls

    first = run("the cat sat on the mat")
    run("a dog is a dog is a dog and the")  # another request moves the acceptance estimate
    assert run("the cat sat on the mat") == first


def test_bad_speculative_settings(tiny, tiny_models):
    target, _ = tiny
    large = LlamaCppBackend(target, n_ctx=64, n_threads=1, chat_format="raw")
    with pytest.raises(ConfigError, match="vocabulary differs"):
        SpeculativeBackend(large, DraftModel(LlamaCppBackend(tiny_models["b"], n_ctx=64, n_threads=1, chat_format="raw")))
    with pytest.raises(ConfigError, match="its own backend"):
        SpeculativeBackend(large, DraftModel(large))
    from relaygen_integrations import load_pair

    with pytest.raises(ConfigError, match="runs in process"):
        load_pair("smollm2-135m-self", backend="openai", speculative="draft", large_url="http://127.0.0.1:9",
                  small_url="http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="draft_max"):
        load_pair("smollm2-135m-self", speculative="draft", draft_max=0)
    with pytest.raises(ConfigError, match="speculative must be"):
        load_pair("smollm2-135m-self", speculative="fast")


def test_drafters_declare_feedback_and_reset_on_a_protocol(tiny):
    from relaygen_integrations.speculative.draft import ModelDrafter

    target, _ = tiny
    assert isinstance(DraftModel(LlamaCppBackend(target, n_ctx=64, n_threads=1, chat_format="raw")), ModelDrafter)
    assert not isinstance(prompt_lookup(3), ModelDrafter)  # plain LlamaDraftModel: none of the hooks


@pytest.mark.parametrize("mode", ["large", "relay"])
@pytest.mark.parametrize("weights", ["same", "other"])
def test_speculation_wraps_the_transformers_backend_too(tiny, mode, weights):
    """The wrapper needs only what every local backend has (sync, logits, evaluate_rows): transformers
    drafting with transformers gives the plain tokens on tiny float32 models, greedy and seeded."""
    pytest.importorskip("transformers", reason="the hf extra is not installed")
    from relaygen_integrations.backends.transformers import TransformersBackend

    target, draft = tiny

    def engine(speculate: bool) -> RelayEngine:
        large = TransformersBackend(target, n_ctx=512, n_threads=2, chat_format="raw")
        if speculate:
            drafting = target if weights == "same" else draft
            drafter = DraftModel(TransformersBackend(drafting, n_ctx=512, n_threads=1, chat_format="raw"), max_tokens=5)
            large = SpeculativeBackend(large, drafter)
        small = TransformersBackend(draft, n_ctx=512, n_threads=1, chat_format="raw")
        return RelayEngine(large, small, BUSY_CUES, RelayConfig(mode=mode, min_large_tokens=2))

    prompt = "the cat sat on the mat and the dog " * 4
    for params in (SamplingParams(temperature=0, max_tokens=60), SamplingParams(temperature=0.9, seed=3, max_tokens=60)):
        plain, fast = engine(False).generate(prompt, params, chat=False), engine(True).generate(prompt, params, chat=False)
        assert fast.text == plain.text
        st = fast.stats
        assert st.large.drafted_tokens > 0 and 0 <= st.large.accepted_draft_tokens <= st.large.drafted_tokens
        if weights == "same" and params.greedy:
            assert st.large.accepted_draft_tokens == st.large.drafted_tokens
        if weights == "other":  # random weights disagree: rejections are exercised
            assert st.large.accepted_draft_tokens < st.large.drafted_tokens
        assert sum(n * c for n, c in st.large.row_calls.items()) == st.large.drafted_tokens
        assert st.draft.eval_calls > 0 and st.small.drafted_tokens == 0


def test_load_pair_composes_speculation_on_the_hf_backend(smollm2_path):
    pytest.importorskip("transformers", reason="the hf extra is not installed")
    from relaygen_integrations import load_pair

    engine = load_pair("smollm2-135m-self", backend="hf", speculative="lookup", n_ctx=512, n_threads=2, mode="large")
    assert isinstance(engine.large, SpeculativeBackend) and engine.large.target.name == "hf"
    r = engine.generate("Repeat exactly: one two three, one two three, one two three.",
                        SamplingParams(temperature=0, max_tokens=24))
    assert r.stats.large.drafted_tokens > 0 and r.stats.generated_tokens > 0
    engine.large.close()


def test_speculative_auto_drafts_where_the_large_model_is_on_a_gpu_and_is_off_on_a_cpu(smollm2_path, monkeypatch):
    """Every entry point's default. A GPU cannot be had here: the large backend's own report of where
    it runs (``on_gpu``, what a CUDA or Metal build says with layers offloaded) is what the choice reads."""
    from relaygen_integrations import load_pair

    cpu = load_pair("smollm2-135m-self", speculative="auto", n_ctx=256, n_threads=1, mode="large")
    assert not cpu.large.on_gpu() and not isinstance(cpu.large, SpeculativeBackend)
    monkeypatch.setattr(LlamaCppBackend, "on_gpu", lambda self: True)
    gpu = load_pair("smollm2-135m-self", speculative="auto", n_ctx=256, n_threads=1, mode="large")
    assert isinstance(gpu.large, SpeculativeBackend) and isinstance(gpu.large.drafter, DraftModel)
    r = gpu.generate("Count from one to ten.", SamplingParams(temperature=0, max_tokens=16))
    assert r.stats.large.drafted_tokens > 0
