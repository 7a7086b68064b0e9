"""The whole engine on real GGUF models through llama.cpp."""

from pathlib import Path

import pytest

from relaygen_integrations import ConfigError, RelayConfig, RelayEngine, SamplingParams
from relaygen_integrations.backends.llamacpp import LlamaCppBackend
from busy_cues import ANY_LETTER
from tiny_gguf import write_tiny_gguf

GREEDY = SamplingParams(temperature=0, max_tokens=96)
PROMPT = "Explain in three sentences why the sky is blue."


@pytest.fixture(scope="module")
def smol_pair(smollm2_path):
    def make(**cfg):
        large = LlamaCppBackend(smollm2_path, n_ctx=1024, n_threads=2)
        small = LlamaCppBackend(smollm2_path, n_ctx=1024, n_threads=2)
        return RelayEngine(large, small, ANY_LETTER, RelayConfig(**cfg))
    return make


def test_both_models_write_and_each_evaluates_prompt_plus_own_plus_handed_tokens(smol_pair):
    engine = smol_pair()
    r = engine.generate(PROMPT, GREEDY)
    assert r.stats.switches >= 2 and r.stats.large.generated_tokens > 0 and r.stats.small.generated_tokens > 0
    assert {s.model for s in r.segments} == {"large", "small"}
    assert "".join(s.text for s in r.segments) == r.text
    for role in ("large", "small"):
        backend, st = getattr(engine, role), getattr(r.stats, role)
        assert sum(n * c for n, c in st.calls.items()) == st.evaluated_tokens  # the returned steps add up
        # the KV invariant: prompt + own output + the other model's segments handed over, nothing more
        other = r.stats.small if role == "large" else r.stats.large
        assert st.evaluated_tokens == len(backend.tokens)
        assert st.prompt_tokens + st.handoff_tokens + st.generated_tokens - st.evaluated_tokens in (0, 1)
        assert st.handoff_tokens <= other.generated_tokens


def test_identical_models_relay_gives_the_single_model_text(tiny_models):
    """Same weights in both roles: whoever writes, greedy picks the same tokens, so hand-offs are lossless.
    A tiny random model has wide logit gaps, so batch rounding (see method.md) cannot flip a near-tie."""
    def make(mode):
        large = LlamaCppBackend(tiny_models["a"], n_ctx=256, n_threads=2, chat_format="raw")
        small = LlamaCppBackend(tiny_models["a"], n_ctx=256, n_threads=2, chat_format="raw")
        from relaygen_integrations.core.profile import load_profile
        cues = load_profile(list("aeiou"), mode="substring")
        return RelayEngine(large, small, cues, RelayConfig(mode=mode, min_large_tokens=2))
    params = SamplingParams(temperature=0, max_tokens=120)
    relay = make("relay").generate("Once upon a time. There was", params, chat=False)
    alone = make("large").generate("Once upon a time. There was", params, chat=False)
    assert relay.stats.switches >= 1 and relay.stats.small.generated_tokens > 0 and relay.stats.large.generated_tokens > 0
    assert relay.text == alone.text


def test_stream_matches_generate(smol_pair):
    engine = smol_pair()
    events = list(engine.stream(PROMPT, GREEDY))
    deltas = [e for e in events if e.kind == "text"]
    assert "".join(e.text for e in deltas) == events[-1].result.text == engine.generate(PROMPT, GREEDY).text
    assert {e.model for e in deltas} == {"large", "small"}


def test_text_handoff_between_different_vocabularies(smollm2_path, tiny_models):
    large = LlamaCppBackend(smollm2_path, n_ctx=1024, n_threads=2, chat_format="raw")
    small = LlamaCppBackend(tiny_models["b"], n_ctx=512, n_threads=2, chat_format="raw")
    engine = RelayEngine(large, small, ANY_LETTER)
    prompt = "Once upon a time, there was a little girl who"
    r = engine.generate(prompt, SamplingParams(temperature=0, max_tokens=40), chat=False)
    assert r.stats.handoff == "text" and r.stats.switches >= 1
    for backend in (large, small):  # each context is the prompt plus the output, in its own tokens
        context = b"".join(backend.token_bytes(t) for t in backend.tokens).decode("utf-8", "replace")
        assert context.startswith(prompt)
        assert r.text.startswith(context[len(prompt):].rstrip("\ufffd"))


def test_prompt_longer_than_context_fails_before_evaluation(smollm2_path):
    large = LlamaCppBackend(smollm2_path, n_ctx=64, n_threads=2)
    small = LlamaCppBackend(smollm2_path, n_ctx=64, n_threads=2)
    engine = RelayEngine(large, small)
    with pytest.raises(ConfigError, match="context window of 64"):
        engine.generate("word " * 200, GREEDY)
    assert large.tokens == small.tokens == []  # nothing evaluated


def test_generation_stops_cleanly_when_the_context_fills(tmp_path):
    """A model that cannot end its text greedily (tiny_gguf's ``endless``), a context of 64 tokens and a
    budget of 96: the context fills first, on any build."""
    path = write_tiny_gguf(tmp_path / "endless.gguf", seed=3, endless=True)
    large = LlamaCppBackend(path, n_ctx=64, n_threads=2, chat_format="raw")
    small = LlamaCppBackend(path, n_ctx=64, n_threads=2, chat_format="raw")
    prompt = "the cat sat on the mat and the dog ran off"[:40]
    r = RelayEngine(large, small, ANY_LETTER).generate(prompt, GREEDY, chat=False)
    assert r.stats.finish_reason == "context" and r.text
    assert r.stats.large.prompt_tokens + r.stats.generated_tokens <= 64 < r.stats.large.prompt_tokens + 96


def test_a_pair_whose_template_refuses_system_messages_can_relay(tmp_path):
    """Regression: the pair check rendered a probe chat with a system message, so models whose template
    refuses one (Mistral's) could not be paired, and the Jinja error escaped as a traceback."""
    from llama_cpp.llama_chat_format import MISTRAL_INSTRUCT_CHAT_TEMPLATE

    path = write_tiny_gguf(tmp_path / "mistral-like.gguf", seed=4, chat_template=MISTRAL_INSTRUCT_CHAT_TEMPLATE)
    engine = RelayEngine(LlamaCppBackend(path, n_ctx=256, n_threads=2), LlamaCppBackend(path, n_ctx=256, n_threads=2),
                         ANY_LETTER)
    r = engine.generate("Say something.", SamplingParams(temperature=0, max_tokens=12))
    assert r.stats.generated_tokens > 0
    broken = write_tiny_gguf(tmp_path / "broken.gguf", seed=4, chat_template="{{ raise_exception('no chat here') }}")
    with pytest.raises(ConfigError, match=r"large model's chat template cannot render a user message \(no chat here\)"):
        RelayEngine(LlamaCppBackend(broken, n_ctx=256, n_threads=2), LlamaCppBackend(broken, n_ctx=256, n_threads=2))


def test_load_pair_closes_what_it_loaded_when_it_fails_and_a_backend_closes_its_drafter(smollm2_path, tmp_path,
                                                                                          monkeypatch):
    """Regression: a load that failed part-way left the models it had loaded to the garbage collector,
    and closing a llama.cpp backend left its draft model's context open."""
    from relaygen_integrations import load_pair
    from relaygen_integrations.errors import ModelFileError

    closed = []
    real_close = LlamaCppBackend.close
    monkeypatch.setattr(LlamaCppBackend, "close", lambda self: (closed.append(self.path), real_close(self))[1])
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(Path(smollm2_path).read_bytes()[:-1])
    with pytest.raises(ModelFileError):
        load_pair("smollm2-135m-self", small=broken, n_ctx=128, n_threads=1)
    assert closed == [Path(smollm2_path)]  # the large model, loaded before the small one failed
    engine = load_pair("smollm2-135m-self", speculative="draft", n_ctx=128, n_threads=1)
    draft = engine.large.drafter.backend
    engine.large.close()
    assert draft.llm._ctx.ctx is None and engine.large.target.llm._ctx.ctx is None
