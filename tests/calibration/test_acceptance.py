"""Cues chosen by acceptance (calibration/acceptance.py): the small model writes the sentence after each cue
occurrence in the traces, the large model checks it at tau, and each cue gets the share the check keeps."""

import json

import numpy as np
import pytest

from relaygen_integrations import ConfigError, load_profile
from relaygen_integrations.calibration.acceptance import (cue_acceptance, fire_points, pooled_share,
                                                          select_by_acceptance, small_sentence)
from relaygen_integrations.calibration.run import calibrate
from relaygen_integrations.core.sampling import Sampler, SamplingParams
from scripted import ScriptedBackend

# The trace is the large model's script; the small model's differs in one digit after "Then,".
LARGE = ["We", " add", ".", " Now", ",", " the", " sum", " is", " ", "7", ".", " Then", ",", " it", " is", " ", "8",
         ".", " Now", ",", " we", " stop", "."]
SMALL = ["6" if p == "8" else p for p in LARGE]
TRACE = "".join(LARGE)


def prompt(backend):
    return backend.tokenize(backend.chat_prompt([{"role": "user", "content": "q"}]).encode())


def test_a_cue_fires_on_the_token_that_confirms_it():
    small = ScriptedBackend(SMALL)
    ids = small.tokenize(TRACE.encode())
    starts = np.cumsum([0] + [len(small.token_bytes(t)) for t in ids[:-1]])
    points = fire_points(TRACE, starts, ["Now,", "Then,", "Never"], "word")
    assert points == {5: ["Now,"], 13: ["Then,"], 20: ["Now,"]}  # the cut lies just after the token holding ","


def test_the_small_models_sentence_ends_as_at_runtime():
    small = ScriptedBackend(SMALL)
    context = prompt(small) + small.tokenize("We add. Now, the sum is 7. Then,".encode())
    sentence = small_sentence(small, context, Sampler(SamplingParams(temperature=0)))
    assert b"".join(small.token_bytes(t) for t in sentence) == b" it is 6."  # " Now" only confirmed the end


def test_each_cue_gets_the_share_of_its_sentences_the_check_keeps():
    large, small = ScriptedBackend(LARGE), ScriptedBackend(SMALL)
    large.sync(prompt(large))  # a scripted model's rows start after its prompt (a real model's anywhere)
    stats = cue_acceptance(small, large, [(prompt(small), TRACE)], ["Now,", "Then,", "Never"], "word", tau=0.01)
    now, then = stats["Now,"], stats["Then,"]
    assert (now.sentences, now.whole, now.tokens, now.kept) == (2, 2, 9, 9)  # " the sum is 7." and " we stop."
    assert (then.sentences, then.whole, then.tokens, then.kept) == (1, 0, 5, 3)  # " it is 6.": cut at "6"
    assert stats["Never"].sentences == 0 and np.isnan(stats["Never"].share)
    assert pooled_share(stats) == pytest.approx(12 / 14)
    occurrences = {"Now,": 2, "Then,": 1}
    assert select_by_acceptance(stats, None, 1, occurrences) == (["Now,"], pytest.approx(12 / 14))
    assert select_by_acceptance(stats, 0.5, 1, occurrences)[0] == ["Now,", "Then,"]
    assert select_by_acceptance(stats, 0.5, 2, occurrences)[0] == ["Now,"]  # "Then," occurs once
    capped = cue_acceptance(small, large, [(prompt(small), TRACE)], ["Now,"], "word", tau=0.01, per_cue=1)
    assert capped["Now,"].sentences == 1


PROBLEMS = [{"id": f"p{i}", "problem": q, "answer": "0"} for i, q in
            enumerate(["What is 2 + 3?", "A box has 4 red and 5 blue balls. How many balls?"])]
WORDS = ["the", "is", "a", "and", "of", "to", "The", "It"]


def test_calibrate_selects_by_acceptance_and_records_both_sets(smollm2_path, tmp_path):
    from relaygen_integrations import RelayConfig, RelayEngine
    from relaygen_integrations.backends.llamacpp import LlamaCppBackend

    engine = RelayEngine(LlamaCppBackend(smollm2_path, n_ctx=1024, n_threads=2),
                         LlamaCppBackend(smollm2_path, n_ctx=1024, n_threads=2), WORDS, RelayConfig(mode="large"))
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    params = SamplingParams(temperature=0.6, top_p=0.95, top_k=20, max_tokens=32).validated()
    common = dict(data=data, problems=2, samples=2, seed=1, params=params, candidates=WORDS, threshold=-1.0,
                  min_occurrences=1, progress=False, plot=False, check_quantile=0.2)
    out = tmp_path / "acc.json"
    profile = calibrate(engine, out=out, select="acceptance", per_cue=2, **common)
    selection = profile["selection"]
    assert selection["by"] == "acceptance" and "accepted share" in selection["rule"]
    assert set(selection["margin_cues"]) <= set(WORDS) and set(profile["cues"]) <= set(WORDS) and profile["cues"]
    scored = [r for r in profile["table"] if r["accepted"]["sentences"]]
    assert scored and all(r["accepted"]["sentences"] <= 2 for r in scored)
    assert all(0 <= r["accepted"]["kept"] <= r["accepted"]["tokens"] for r in scored)
    bar = selection["min_accepted"]
    for r in profile["table"]:  # the rule, as documented
        share = r["accepted"]["share"]
        assert r["selected"] == (share is not None and share >= bar and r["occurrences"] >= 1)
    assert load_profile(out).cues == tuple(profile["cues"])
    margin = calibrate(engine, out=tmp_path / "margin.json", **common)  # the same traces, reused
    assert "accepted" not in margin["table"][0] and margin["cues"] == selection["margin_cues"]
    for bad, message in ((dict(select="best"), "--select must be margin or acceptance"),
                         (dict(select="acceptance", min_accepted=1.5), "--min-accepted must be a share"),
                         (dict(select="acceptance", per_cue=0), "--acceptance-samples must be a positive")):
        with pytest.raises(ConfigError, match=message):
            calibrate(engine, out=tmp_path / "bad.json", **{**common, **bad})
    with pytest.raises(ConfigError, match="needs the pair's tau"):  # 4 short traces: too few tokens for 0.1%
        calibrate(engine, out=tmp_path / "bad.json", select="acceptance", **{**common, "check_quantile": 0.001})
