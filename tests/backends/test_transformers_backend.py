"""The transformers backend: checked against llama.cpp on the same GGUF weights (tiny random models
stored in float32, so both compute the same function) and on real SmolLM2 text."""

import numpy as np
import pytest

pytest.importorskip("transformers", reason="the hf extra is not installed")

from relaygen_integrations.backends.llamacpp import LlamaCppBackend  # noqa: E402
from relaygen_integrations.backends.transformers import TransformersBackend  # noqa: E402
from relaygen_integrations.core.sampling import probability_margin  # noqa: E402
from relaygen_integrations.errors import ConfigError, ModelNotFoundError  # noqa: E402


@pytest.fixture(scope="module")
def tiny_pair(tiny_models):
    return (TransformersBackend(tiny_models["a"], n_ctx=256, n_threads=2, chat_format="raw"),
            LlamaCppBackend(tiny_models["a"], n_ctx=256, n_threads=2, chat_format="raw"))


@pytest.fixture(scope="module")
def smol_pair(smollm2_path):
    return (TransformersBackend(smollm2_path, n_ctx=1024, n_threads=2),
            LlamaCppBackend(smollm2_path, n_ctx=1024, n_threads=2))


def test_same_float32_weights_give_the_same_logits_as_llama_cpp(tiny_pair):
    hf, cpp = tiny_pair
    ids = cpp.tokenize(b"the cat sat on the mat")
    assert hf.tokenize(b"the cat sat on the mat") == ids
    hf.reset(), cpp.reset()
    for i in range(1, len(ids) + 1):
        hf.sync(ids[:i]), cpp.sync(ids[:i])
        # llama.cpp keeps its KV cache in float16: differences stay around 1e-2 on logits of ~10
        np.testing.assert_allclose(hf.logits(), cpp.logits(), atol=0.05)
        assert hf.logits().argmax() == cpp.logits().argmax()
        assert probability_margin(hf.logits()) == pytest.approx(probability_margin(cpp.logits()), abs=0.01)


def test_sync_evaluates_only_unseen_tokens_and_crops_the_cache_on_rollback(tiny_pair):
    hf, _ = tiny_pair
    a, b, c = hf.tokenize(b"shared prefix "), hf.tokenize(b"one"), hf.tokenize(b"two!")
    hf.reset()
    assert hf.sync(a + b) == len(a + b)
    assert hf.sync(a + b) == 1
    assert hf.sync(a + c) == len(c)
    assert hf._cache.get_seq_length() == len(a + c) == len(hf.tokens)
    rolled = hf.logits()
    hf.reset()
    hf.sync(a + c)
    np.testing.assert_allclose(rolled, hf.logits(), atol=1e-4)


def test_position_margins_match_token_by_token_decoding(tiny_pair):
    hf, _ = tiny_pair
    ids = hf.tokenize(b"one two three four five six")
    batched = hf.position_margins(ids, 3, chunk=4)
    hf.reset()
    one_by_one = [(hf.sync(ids[:i]), probability_margin(hf.logits()))[1] for i in range(3, len(ids))]
    np.testing.assert_allclose(batched, one_by_one, atol=1e-4)


def test_smollm2_tokenizer_template_and_bytes_agree_with_llama_cpp(smol_pair):
    hf, cpp = smol_pair
    assert hf.vocab_fingerprint() == cpp.vocab_fingerprint()  # token ids are interchangeable
    assert all(hf.token_bytes(i) == cpp.token_bytes(i) for i in range(hf.n_vocab))
    messages = [{"role": "user", "content": "Café: 3.5 € — why?\n日本"}]
    prompt = hf.chat_prompt(messages)
    assert prompt == cpp.chat_prompt(messages)
    assert hf.prompt_tokens(prompt) == cpp.prompt_tokens(prompt)
    im_end = cpp.tokenize(b"<|im_end|>", special=True)[0]
    assert hf.tokenize(b"<|im_end|>", special=True) == [im_end]
    assert hf.tokenize(b"<|im_end|>") != [im_end]  # written as text, it is not the control token
    assert hf.is_end_of_generation(im_end) and not hf.is_end_of_generation(hf.tokenize(b"Hi")[0])


def test_smollm2_greedy_text_agrees_with_llama_cpp_up_to_near_ties(smol_pair):
    """The GGUF is Q4_1: transformers dequantises it to float32, llama.cpp multiplies quantised
    blocks, so logits differ a little. Teacher-force llama.cpp's greedy text through transformers:
    every token must be transformers' choice too, or a near-tie there."""
    hf, cpp = smol_pair
    ids = cpp.prompt_tokens(cpp.chat_prompt([{"role": "user", "content": "Why is the sky blue?"}]))
    context = list(ids)
    cpp.reset(), hf.reset()
    agree = 0
    for _ in range(40):
        cpp.sync(context), hf.sync(context)
        token = int(cpp.logits().argmax())
        logits = hf.logits()
        gap = logits.max() - logits[token]
        assert gap < 0.5, f"llama.cpp chose a token that transformers ranks {gap:.2f} below its best"
        agree += gap == 0
        context.append(token)
    assert agree >= 36


def test_sharing_weights_keeps_separate_caches(tiny_pair):
    hf, _ = tiny_pair
    twin = TransformersBackend.sharing_weights(hf)
    assert twin.model is hf.model
    hf.reset()
    twin.sync(hf.tokenize(b"abc"))
    assert hf.tokens == [] and hf._cache.get_seq_length() == 0 and twin._cache.get_seq_length() == 3


def test_bad_inputs(tmp_path, tiny_models):
    with pytest.raises(ModelNotFoundError):
        TransformersBackend(tmp_path / "missing.gguf")
    with pytest.raises(ConfigError, match="dtype"):
        TransformersBackend(tiny_models["a"], dtype="int3")
    with pytest.raises(ConfigError, match="chat template"):
        TransformersBackend(tiny_models["a"])  # the tiny models carry no template
