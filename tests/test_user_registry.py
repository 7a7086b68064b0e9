"""Pairs of your own without editing the package: $RELAYGEN_HOME/registry.toml merged over the shipped
registry, profiles written by `relaygen calibrate --pair` found for their pair, $RELAYGEN_REGISTRY still
replacing the shipped registry; and the shipped reasoning pairs, well formed."""

import json
import re

import pytest

from relaygen_integrations.cli import main
from relaygen_integrations.core.profile import BUILTIN_PROFILES, load_profile
from relaygen_integrations.errors import FetchError, ModelNotFoundError
from relaygen_integrations.loader import resolve_pair
from relaygen_integrations.options import RelaySpec
from relaygen_integrations.registry import Registry, default_registry_path, user_profile_path


@pytest.fixture
def home(tmp_path, monkeypatch, smollm2_path):
    """An empty $RELAYGEN_HOME whose model cache is the real one (SmolLM2 is fetched there)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(smollm2_path.parent, target_is_directory=True)
    monkeypatch.setenv("RELAYGEN_HOME", str(home))
    monkeypatch.delenv("RELAYGEN_REGISTRY", raising=False)
    return home


MY_PAIR = f'''
[models."my-smol"]
description = "SmolLM2 under a name of my own"
file = "SmolLM2-135M-Instruct.Q4_1.gguf"
chat_format = "chatml"

[pairs."my-pair"]
large = "my-smol"
small = "my-smol"
'''


def test_the_users_registry_adds_pairs_and_overrides_shipped_keys(home):
    (home / "mine.json").write_text(json.dumps({"cues": ["Hence"]}))
    (home / "registry.toml").write_text(MY_PAIR + '[pairs."smollm2-135m-self"]\nprofile = "mine.json"\n')
    reg = Registry.load()
    assert reg.files == (default_registry_path(), home / "registry.toml")
    assert "my-pair" in reg.pairs and "qwen2.5-coder-1.5b+0.5b" in reg.pairs  # shipped pairs stay
    smol = reg.pair("smollm2-135m-self")
    assert (smol.large, smol.small) == ("smollm2-135m", "smollm2-135m")  # the shipped keys the user left alone
    assert reg.pair_profile(smol) == home / "mine.json"  # resolved beside the file that names it
    assert reg.pair_profile(reg.pair("qwen2.5-coder-1.5b+0.5b")) == \
        default_registry_path().parent / "profiles" / "qwen2.5-coder-1.5b+0.5b.json"
    assert reg.pair().name == "qwen2.5-coder-1.5b+0.5b"
    (home / "registry.toml").write_text(MY_PAIR + "default = true\n")
    assert Registry.load().pair().name == "my-pair"  # the user's default wins


def test_registry_env_still_replaces_the_shipped_registry(home, tmp_path, monkeypatch):
    (home / "registry.toml").write_text(MY_PAIR)
    own = tmp_path / "own" / "registry.toml"
    own.parent.mkdir()
    own.write_text(MY_PAIR.replace("my-pair", "only-pair") + 'profile = "p.json"\n')
    (own.parent / "p.json").write_text(json.dumps({"cues": ["Thus"]}))
    user_profile_path("only-pair").parent.mkdir()
    user_profile_path("only-pair").write_text(json.dumps({"cues": ["Now"]}))
    monkeypatch.setenv("RELAYGEN_REGISTRY", str(own))
    reg = Registry.load()
    assert set(reg.pairs) == {"only-pair"} and reg.files == (own,)
    assert reg.pair_profile(reg.pair("only-pair")) == own.parent / "p.json"  # no user profile with it


def test_a_calibrated_profile_is_found_for_its_pair_unless_the_users_registry_names_one(home):
    (home / "registry.toml").write_text(MY_PAIR)
    assert resolve_pair(RelaySpec(pair="my-pair")).profile is None  # the default cues, not calibrated
    mine = user_profile_path("my-pair")
    mine.parent.mkdir()
    mine.write_text(json.dumps({"cues": ["Hence"]}))
    assert resolve_pair(RelaySpec(pair="my-pair")).profile == mine
    assert resolve_pair(RelaySpec(pair="my-pair", profile="paper-r1")).profile == "paper-r1"  # asked for
    (home / "registry.toml").write_text(MY_PAIR + 'profile = "all-candidates"\n')
    assert resolve_pair(RelaySpec(pair="my-pair")).profile == "all-candidates"


@pytest.mark.parametrize("text,error,match", [
    ("[pairs.x\n", FetchError, "not valid TOML"),
    ('[pairs."p"]\nsmall = "smollm2-135m"\n', FetchError, "names no large model"),
    ('[pairs."p"]\nlarge = "nope"\nsmall = "smollm2-135m"\n', ModelNotFoundError, "unknown model nope"),
    ('[models."m"]\ndescription = "no file"\n', FetchError, "needs a file"),
])
def test_a_broken_user_registry_is_one_clear_error(home, text, error, match):
    (home / "registry.toml").write_text(text)
    with pytest.raises(error, match=match):
        Registry.load()


def test_calibrate_pair_writes_where_the_pair_finds_it(home, tmp_path, capsys, monkeypatch):
    """`relaygen calibrate --pair NAME` with no --out: the profile lands in $RELAYGEN_HOME/profiles, the pair
    runs with its cues from then on, `models list` says it is calibrated, and --default-check is the user's
    choice of making its tau the default check."""
    (home / "registry.toml").write_text(MY_PAIR)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(2)))
    args = ["calibrate", "--pair", "my-pair", "--data", str(data), "--problems", "2", "--samples", "1",
            "--max-tokens", "16", "--threads", "1", "--threshold", "-1", "--min-occurrences", "1",
            "--check-quantile", "0.2", *[a for w in ("the", "is", "a", "and", "of", "to") for a in ("--cue", w)]]
    assert main(args) == 0
    out = capsys.readouterr().out
    written = user_profile_path("my-pair")
    assert f"wrote {written}" in out and "--default-check" in out  # the choice is offered
    profile = load_profile(written)
    assert profile.cues and str(profile.check_default) == "off"
    assert resolve_pair(RelaySpec(pair="my-pair")).profile == written
    assert main(args + ["--default-check"]) == 0
    assert "now runs tau" in capsys.readouterr().out
    assert load_profile(written).check_default.kind == "tau"
    monkeypatch.setenv("COLUMNS", "250")  # rich's table width when not on a terminal
    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    row = next(line for line in listed.splitlines() if "my-pair" in line)
    assert "calibrated (by you" in row and "tau=" in row


def test_calibrate_without_out_refuses_models_that_are_not_the_pairs(home, capsys):
    assert main(["calibrate", "--pair", "smollm2-135m-self", "--large", "smollm2-135m"]) == 2
    assert "--out" in capsys.readouterr().err


REASONING_PAIRS = ["qwen3-32b+1.7b", "qwen3-8b+0.6b", "deepseek-r1-distill-qwen-32b+1.5b",
                   "deepseek-r1-distill-qwen-32b+7b"]


@pytest.mark.parametrize("name", REASONING_PAIRS)
def test_the_shipped_reasoning_pairs_are_well_formed(name, monkeypatch):
    monkeypatch.delenv("RELAYGEN_REGISTRY", raising=False)
    reg = Registry.load(default_registry_path())
    pair = reg.pair(name)
    family = "paper-r1" if name.startswith("deepseek") else "paper-qwen3"
    assert pair.profile == family and family in BUILTIN_PROFILES
    large, small = reg.model(pair.large), reg.model(pair.small)
    assert large.chat_format == small.chat_format
    for model in (large, small):
        assert model.reasoning_end == "</think>" and model.file.endswith(".gguf")
        hub = [s for s in model.sources if s["type"] == "huggingface"]
        assert hub and all(s["filename"] == model.file and re.fullmatch(r"[\w.-]+/[\w.-]+", s["repo"]) for s in hub)
        for s in hub:
            assert "sha256" not in s or re.fullmatch(r"[0-9a-f]{64}", s["sha256"])
            assert "size" not in s or (isinstance(s["size"], int) and s["size"] > 10**8)
    resolved = resolve_pair(RelaySpec(pair=name))
    assert resolved.reasoning_end == "</think>" and resolved.profile == family


def test_a_model_of_your_own_is_used_where_it_is(home, smollm2_path, tmp_path):
    """``path =``: the user's file is used in place (no copy into the cache); a missing one is one clear error."""
    from relaygen_integrations.fetcher import fetch

    (home / "registry.toml").write_text(f'[models.here]\npath = "{smollm2_path}"\n[models.gone]\n'
                                        f'path = "{tmp_path / "gone.gguf"}"\n')
    reg = Registry.load()
    assert fetch(reg.model("here")) == smollm2_path and reg.model("here").file == smollm2_path.name
    with pytest.raises(FetchError, match="gone.gguf does not exist"):
        fetch(reg.model("gone"))
