"""The checked relay's default threshold: a low quantile of the large model's probability of its own tokens."""

import numpy as np
import pytest

from relaygen_integrations.backends.llamacpp import LlamaCppBackend
from relaygen_integrations.calibration.threshold import self_probabilities, threshold_from
from relaygen_integrations.core.engine import RelayConfig, RelayEngine
from relaygen_integrations.core.sampling import SamplingParams
from relaygen_integrations.errors import ConfigError


def test_threshold_is_the_pooled_quantile():
    probs = [np.linspace(0.001, 1, 500), np.linspace(0.5, 1, 500)]
    assert threshold_from(probs, 0.01) == pytest.approx(np.quantile(np.concatenate(probs), 0.01))
    with pytest.raises(ConfigError, match="too few"):
        threshold_from([np.ones(10)], 0.01)
    with pytest.raises(ConfigError, match="quantile"):
        threshold_from(probs, 0.7)


def test_the_large_model_rates_its_own_greedy_tokens_above_an_inserted_odd_word(smollm2_path):
    """Teacher forcing over its own greedy trace gives the model's own first choices; a word forced into the
    trace where it makes no sense gets far less (the situation is made, not hoped for)."""
    large = LlamaCppBackend(smollm2_path, n_ctx=1024, n_threads=2, flash_attn=True)
    engine = RelayEngine(large, LlamaCppBackend(smollm2_path, n_ctx=256, n_threads=1), ["zzz"], RelayConfig(mode="large"))
    prompt = "Name three colours and say why the sky is blue."
    chat = large.chat_prompt([{"role": "user", "content": prompt}])
    greedy = engine.generate(prompt, SamplingParams(temperature=0, max_tokens=40)).text
    p_greedy = self_probabilities(large, chat, greedy)
    assert len(p_greedy) > 10 and np.all((p_greedy > 0) & (p_greedy <= 1))
    odd = self_probabilities(large, chat, greedy + " Walrus")
    assert len(odd) > len(p_greedy) and odd[len(p_greedy):].min() < np.median(p_greedy)
