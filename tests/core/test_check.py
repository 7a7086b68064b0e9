"""The check policies of a checked relay, on hand-made rows (the engine's wiring is tested elsewhere)."""

import numpy as np
import pytest

from relaygen_integrations.core.check import CheckPolicy, check_segment, token_probabilities
from relaygen_integrations.core.sampling import Sampler, SamplingParams
from relaygen_integrations.errors import ConfigError

GREEDY = Sampler(SamplingParams(temperature=0).validated())


def rows_for(probabilities: list[dict[int, float]], vocab: int = 8) -> np.ndarray:
    """Logits whose softmax gives each row's stated probabilities (the rest shared equally)."""
    out = []
    for row in probabilities:
        rest = (1 - sum(row.values())) / (vocab - len(row))
        p = np.array([row.get(i, rest) for i in range(vocab)])
        out.append(np.log(p).astype(np.float32))
    return np.stack(out)


def test_policies_parse_and_reject_nonsense():
    assert CheckPolicy.parse(None) == CheckPolicy.parse("off") == CheckPolicy() and not CheckPolicy().active
    assert CheckPolicy.parse("exact").kind == "exact"
    assert CheckPolicy.parse("tau=0.01") == CheckPolicy.parse(0.01) == CheckPolicy("tau", 0.01)
    assert str(CheckPolicy.parse("tau=0.05")) == "tau=0.05"
    for bad in ("tau=1.5", "tau=0", "sometimes", -0.1, float("nan")):
        with pytest.raises(ConfigError):
            CheckPolicy.parse(bad)


def test_token_probabilities_are_the_plain_softmax():
    rows = rows_for([{1: 0.5}, {2: 0.25, 3: 0.25}])
    np.testing.assert_allclose(token_probabilities(rows, [1, 3]), [0.5, 0.25], rtol=1e-5)


def test_tau_cuts_at_the_first_unlikely_token_and_writes_the_large_models_own():
    rows = rows_for([{1: 0.9}, {2: 0.6, 5: 0.3}, {3: 0.9}, {4: 0.9}])
    assert check_segment(CheckPolicy("tau", 0.01), GREEDY, rows, [1, 5, 3]) == (3, None)  # 0.3 >= 0.01: kept
    assert check_segment(CheckPolicy("tau", 0.5), GREEDY, rows, [1, 5, 3]) == (1, 2)  # 0.3 < 0.5: cut, own 2
    assert check_segment(CheckPolicy("off"), GREEDY, rows, [0, 0, 0]) == (3, None)


def test_a_flat_row_does_not_cut_when_the_large_model_would_write_the_same_token():
    rows = rows_for([{1: 0.9}, {6: 0.13}, {3: 0.9}])  # row 1: 6 is the most likely, yet under 0.2
    assert check_segment(CheckPolicy("tau", 0.2), GREEDY, rows, [1, 6, 3]) == (3, None)


def test_exact_keeps_only_what_the_large_model_would_draw_itself():
    rows = rows_for([{1: 0.9}, {2: 0.6, 5: 0.3}, {3: 0.9}])
    assert check_segment(CheckPolicy("exact"), GREEDY, rows, [1, 2, 3]) == (3, None)
    assert check_segment(CheckPolicy("exact"), GREEDY, rows, [1, 5, 3]) == (1, 2)  # p = 0.3 is not enough


def test_exact_uses_random_numbers_as_decoding_one_token_at_a_time():
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((5, 40)).astype(np.float32)
    params = SamplingParams(temperature=0.8, seed=4).validated()
    one_by_one = Sampler(params)
    expected = [one_by_one(rows[i]) for i in range(5)]
    tokens = expected[:3] + [(expected[3] + 1) % 40, 0]
    assert check_segment(CheckPolicy("exact"), Sampler(params), rows, tokens) == (3, expected[3])
