import numpy as np
import pytest

from relaygen_integrations.core.sampling import Sampler, SamplingParams, probability_margin
from relaygen_integrations.errors import ConfigError


def test_margin_is_top1_minus_top2_probability():
    logits = np.array([1.0, 3.0, 2.0, -1.0], dtype=np.float32)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    assert probability_margin(logits) == pytest.approx(p[1] - p[2], abs=1e-7)


def test_greedy_is_argmax():
    assert Sampler(SamplingParams(temperature=0).validated())(np.array([0.1, 5, 2], dtype=np.float32)) == 1


def test_same_seed_same_tokens_and_top_k_is_respected():
    logits = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    params = SamplingParams(temperature=1.0, top_k=5, top_p=1.0, seed=7).validated()
    first = Sampler(params)(logits)
    s1, s2 = Sampler(params), Sampler(params)
    draws1, draws2 = [s1(logits) for _ in range(200)], [s2(logits) for _ in range(200)]
    assert draws1 == draws2 and first == draws1[0]
    assert set(draws1) <= set(np.argsort(-logits)[:5].tolist())
    assert len(set(draws1)) > 1


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    draws = {Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=0.7, seed=s).validated())(logits) for s in range(100)}
    assert draws == {0, 1}


@pytest.mark.parametrize("kw", [dict(max_tokens=0), dict(max_tokens=-3), dict(temperature=-1), dict(top_p=0),
                                dict(top_k=-1), dict(stop=("",)),
                                # wrong types: a clear error, not a TypeError from a comparison
                                dict(temperature="0.5"), dict(top_p=None), dict(max_tokens=True),
                                dict(max_tokens=8.0), dict(seed=1.5), dict(top_k="20")])
def test_bad_params_are_rejected(kw):
    with pytest.raises(ConfigError, match=next(iter(kw))):
        SamplingParams(**kw).validated()


def test_numpy_numbers_are_accepted():
    p = SamplingParams(temperature=np.float32(0.5), max_tokens=np.int64(8), seed=np.int32(3)).validated()
    assert p.max_tokens == 8 and p.seed == 3
