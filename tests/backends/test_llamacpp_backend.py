"""The llama.cpp backend on real GGUF models: tiny random ones for exactness, SmolLM2 for real text."""

import llama_cpp
import numpy as np
import pytest

from relaygen_integrations.backends.llamacpp import LlamaCppBackend
from relaygen_integrations.core.sampling import probability_margin
from relaygen_integrations.errors import ConfigError, ModelNotFoundError


@pytest.fixture(scope="module")
def tiny(tiny_models):
    return LlamaCppBackend(tiny_models["a"], n_ctx=256, n_threads=2, chat_format="raw")


def test_logits_and_margin_match_a_direct_all_positions_evaluation(tiny, tiny_models):
    ids = tiny.tokenize("the cat sat on a mat".encode())
    direct = llama_cpp.Llama(str(tiny_models["a"]), n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    for t in ids:  # token by token, like the backend below: batched evaluation rounds differently
        direct.eval([t])
    tiny.reset()
    for i in range(1, len(ids) + 1):  # one token at a time, as in decoding
        assert tiny.sync(ids[:i]) == 1
        logits = tiny.logits()
        np.testing.assert_array_equal(logits, direct.scores[i - 1])
        p = np.exp(direct.scores[i - 1].astype(np.float64))
        p = np.sort(p / p.sum())
        assert probability_margin(logits) == pytest.approx(p[-1] - p[-2], abs=1e-5)


def test_sync_evaluates_only_unseen_tokens_and_rolls_back_to_the_common_prefix(tiny):
    a = tiny.tokenize(b"shared prefix ")
    b, c = tiny.tokenize(b"one"), tiny.tokenize(b"two!")
    tiny.reset()
    assert tiny.sync(a + b) == len(a + b)
    assert tiny.sync(a + b) == 1  # nothing new, but the last position's logits must be current
    assert tiny.sync(a + c) == len(c)  # only the diverging tail
    rolled = tiny.logits()
    tiny.reset()
    tiny.sync(a + c)
    np.testing.assert_allclose(rolled, tiny.logits(), atol=2e-3)  # batch split differs: a+c vs (a)(c)


def test_vocab_fingerprint_tells_shared_from_different_vocabularies(tiny, tiny_models):
    same = LlamaCppBackend(tiny_models["a"], n_ctx=64, n_threads=1, chat_format="raw")
    other = LlamaCppBackend(tiny_models["b"], n_ctx=64, n_threads=1, chat_format="raw")
    assert same.vocab_fingerprint() == tiny.vocab_fingerprint() != other.vocab_fingerprint()


def test_smollm2_chat_template_special_tokens_and_end_of_generation(smollm2_path):
    b = LlamaCppBackend(smollm2_path, n_ctx=512, n_threads=2)
    prompt = b.chat_prompt([{"role": "user", "content": "Hi"}])
    assert "<|im_start|>user\nHi<|im_end|>" in prompt and prompt.endswith("<|im_start|>assistant\n")
    ids = b.prompt_tokens(prompt)
    im_start, im_end = b.tokenize(b"<|im_start|>", special=True), b.tokenize(b"<|im_end|>", special=True)
    assert len(im_start) == 1 and im_start[0] in ids
    assert b.is_end_of_generation(im_end[0]) and not b.is_end_of_generation(ids[-1])
    text = "café — 3.5 €"
    assert b"".join(b.token_bytes(t) for t in b.tokenize(text.encode())) == text.encode()
    # regression: pieces longer than 32 bytes (runs of spaces in code) came back empty from
    # llama-cpp-python's detokenize, silently dropping them from the output
    indent = "\n" + " " * 48
    ids = b.tokenize(indent.encode())
    assert any(len(b.token_bytes(t)) > 32 for t in ids)
    assert b"".join(b.token_bytes(t) for t in ids) == indent.encode()


def test_bad_model_inputs(tmp_path, tiny_models):
    with pytest.raises(ModelNotFoundError):
        LlamaCppBackend(tmp_path / "missing.gguf")
    with pytest.raises(ConfigError, match="chat template"):
        LlamaCppBackend(tiny_models["a"], n_ctx=64)  # no template in a tiny model: say how to proceed


def test_an_amx_build_loads_weights_outside_llama_cpps_extra_buffers(smollm2_path, monkeypatch):
    """llama.cpp's AMX kernels segfault in batched evaluation on some AMX CPUs (llama.cpp#20824): on a
    build that has them, the backend loads with use_extra_bufts off, and only for its own construction.
    (Whether this build has AMX is what is faked here; the loading and the batched evaluation are real.)"""
    from relaygen_integrations.backends import llamacpp

    default_params = llama_cpp.llama_cpp.llama_model_default_params
    plain = LlamaCppBackend(smollm2_path, n_ctx=128, n_threads=2)
    assert plain.llm.model_params.use_extra_bufts is not llamacpp.amx_build()
    monkeypatch.setattr(llamacpp, "amx_build", lambda: True)
    guarded = LlamaCppBackend(smollm2_path, n_ctx=128, n_threads=2)
    assert guarded.llm.model_params.use_extra_bufts is False
    assert llama_cpp.llama_cpp.llama_model_default_params is default_params  # restored at once
    ids = guarded.tokenize(b"Zebras live in Africa. Their stripes")
    guarded.sync(ids)  # one batch of several tokens: what crashes in AMX kernels
    assert np.isfinite(guarded.logits()).all()
    monkeypatch.setenv("RELAYGEN_LLAMA_AMX", "1")  # the documented way to keep AMX where it works
    assert LlamaCppBackend(smollm2_path, n_ctx=128, n_threads=2).llm.model_params.use_extra_bufts is True


def test_llama_cpp_pythons_private_api_is_pinned_and_used_in_one_checked_place(monkeypatch):
    """Regression: the backend reached into llama-cpp-python's private attributes from several places with
    no upper version bound, so a release renaming one would fail mid-request with an AttributeError."""
    import ast
    import re
    import tomllib
    from pathlib import Path

    import llama_cpp

    from relaygen_integrations.backends import llamacpp_private

    root = Path(__file__).resolve().parents[2]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = [r for reqs in extras.values() for r in reqs if r.startswith("llama-cpp-python")]
    assert pins and all(re.search(r"<\s*[\d.]+", r) for r in pins), pins  # an upper bound everywhere
    package = root / "relaygen_integrations"
    for path in package.rglob("*.py"):
        if path.name == "llamacpp_private.py":
            continue
        names = ("_model", "_ctx", "_batch", "input_ids", "n_tokens", "llama_model_default_params")
        if path.name == "llamacpp_batch.py":  # its n_tokens is the field of the public C API's llama_batch
            names = tuple(n for n in names if n != "n_tokens")
        private = [n.attr for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Attribute)
                   and n.attr in names]
        assert not private, f"{path.relative_to(root)} uses llama-cpp-python internals {private}"
    monkeypatch.delattr(llama_cpp._internals.LlamaBatch, "set_batch")
    with pytest.raises(ImportError, match=r"lacks LlamaBatch.set_batch.*llama-cpp-python==0\.3\.36"):
        llamacpp_private.check()
