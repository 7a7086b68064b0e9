"""Every class of bad input, through every entry point (CLI, Python API, LiteLLM, lm-eval): the entry
point's own error type, one line of message, no traceback, and nothing written or cached."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from relaygen_integrations import SamplingParams, load_pair
from relaygen_integrations.testing import free_port
from relaygen_integrations.errors import RelayGenError
from relaygen_integrations.registry import relaygen_home

PAIR = "smollm2-135m-self"
N_CTX = 512
ENTRY_POINTS = ["cli", "python", "litellm", "lm_eval"]
CASES = {  # name: (settings that differ from a good request, what the one line must say)
    "empty prompt": ({"prompt": ""}, "the prompt is empty"),
    "whitespace prompt": ({"prompt": " \n\t "}, "the prompt is empty"),
    "over-long prompt": ({"prompt": "word " * 700}, f"context window of {N_CTX} tokens"),
    "max_tokens 0": ({"max_tokens": 0}, "max_tokens must be a positive integer"),
    "max_tokens -1": ({"max_tokens": -1}, "max_tokens must be a positive integer"),
    "temperature -1": ({"temperature": -1.0}, "temperature must be >= 0"),
    "top_p 2": ({"top_p": 2.0}, r"top_p must be in \(0, 1\]"),
    "unknown pair": ({"pair": "no-such-pair"}, "unknown pair 'no-such-pair'"),
    "unknown profile": ({"profile": "no-such-profile"}, "no cue profile 'no-such-profile'"),
    "profile with wrong types": ({"profile": "@wrong-types.json"}, "every cue must be a non-empty string"),
    "unreadable profile JSON": ({"profile": "@unreadable.json"}, "is not readable JSON"),
    "truncated GGUF": ({"large": "@truncated.gguf"}, r"truncated\.gguf is not a loadable GGUF model file \(truncated"),
    "non-GGUF file": ({"large": "@random.gguf"}, r"random\.gguf is not a loadable GGUF model file \(it does not start"),
    "missing file": ({"large": "/no/such/model.gguf"}, "model file not found: /no/such/model.gguf"),
    "closed server port": ({"backend": "openai"}, r"cannot reach http://127\.0\.0\.1:\d+/v1"),
    "threads 0": ({"threads": 0}, "threads must be a positive integer, got 0"),
    "draft_max 0": ({"speculative": "draft", "draft_max": 0}, "draft_max must be an integer in 1..64, got 0"),
    "another backend's option": ({"dtype": "bfloat16"}, r"dtype: not an option of the llamacpp backend \(it is one of hf\)"),
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, smollm2_path):
    d = tmp_path_factory.mktemp("bad-files")
    (d / "wrong-types.json").write_text('{"cues": [1, 2], "matching": "word"}')
    (d / "unreadable.json").write_text('{"cues": ["Now",')
    data = Path(smollm2_path).read_bytes()
    (d / "truncated.gguf").write_bytes(data[:-1])  # one byte short
    (d / "random.gguf").write_bytes(os.urandom(1 << 16))
    return d


def settings(name: str, files: Path) -> dict:
    given, _ = CASES[name]
    s = {"prompt": "Say hi.", "max_tokens": 8, "temperature": 0.0, "top_p": 1.0, "pair": PAIR, "profile": None,
         "large": None, "backend": "llamacpp", "threads": 2, "speculative": None, "draft_max": None, "dtype": None,
         **given}
    for key in ("profile", "large"):
        if isinstance(s[key], str) and s[key].startswith("@"):
            s[key] = str(files / s[key][1:])
    if s["backend"] == "openai":  # nothing listens on a fresh free port
        s["url"] = f"http://127.0.0.1:{free_port()}/v1"
        s["threads"] = None
    return s


def snapshot(*folders: Path) -> dict:
    """Every file under the folders, with its size: what a failed request must leave unchanged."""
    return {str(p): p.stat().st_size for folder in folders if folder.exists() for p in folder.rglob("*")}


def via_cli(s: dict, workdir: Path) -> str:
    args = ["generate", s["prompt"], "--pair", s["pair"], "--max-tokens", str(s["max_tokens"]),
            "--temperature", str(s["temperature"]), "--top-p", str(s["top_p"]), "--backend", s["backend"]]
    if s["backend"] == "openai":
        args += ["--large-url", s["url"], "--small-url", s["url"]]
    else:
        args += ["--n-ctx", str(N_CTX), "--threads", str(s["threads"])]
    for key, flag in (("profile", "--profile"), ("large", "--large"), ("speculative", "--speculative"),
                      ("draft_max", "--draft-max"), ("dtype", "--dtype")):
        if s[key] is not None:
            args += [flag, str(s[key])]
    p = subprocess.run([sys.executable, "-m", "relaygen_integrations.cli", *args], capture_output=True, text=True,
                       cwd=workdir, timeout=300)
    assert p.returncode == 2, f"exit {p.returncode}: {p.stderr[-2000:]}"
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1 and not p.stdout, p.stderr
    assert p.stderr.startswith("relaygen: error: ")
    return p.stderr


def load_options(s: dict) -> dict:
    out = {"backend": s["backend"], "large": s["large"], "profile": s["profile"]}
    if s["backend"] == "openai":
        out.update(large_url=s["url"], small_url=s["url"])
    else:
        out.update(n_ctx=N_CTX, n_threads=s["threads"])
    if s["speculative"]:
        out.update(speculative=s["speculative"], draft_max=s["draft_max"])
    if s["dtype"]:
        out.update(dtype=s["dtype"])
    return {k: v for k, v in out.items() if v is not None}


def via_python(s: dict, workdir: Path) -> str:
    with pytest.raises(RelayGenError) as e:
        engine = load_pair(s["pair"], **load_options(s))
        engine.generate(s["prompt"], SamplingParams(max_tokens=s["max_tokens"], temperature=s["temperature"],
                                                     top_p=s["top_p"]))
    return str(e.value)


def via_litellm(s: dict, workdir: Path) -> str:
    litellm = pytest.importorskip("litellm")
    import openai

    from relaygen_integrations.integrations.litellm import PROVIDER, RelayGenProvider, register

    options = load_options(s)
    profile = options.pop("profile", None)
    previous = next((p["custom_handler"] for p in litellm.custom_provider_map if p["provider"] == PROVIDER), None)
    try:
        handler = RelayGenProvider(**options)
    except RelayGenError as e:  # a bad option fails when the handler is made (for the proxy: at start-up)
        return str(e)
    provider = register(handler)
    try:
        with pytest.raises(openai.APIError) as e:
            litellm.completion(model=f"relaygen/{s['pair']}" + (f":{profile}" if profile else ""),
                               messages=[{"role": "user", "content": s["prompt"]}], max_tokens=s["max_tokens"],
                               temperature=s["temperature"], top_p=s["top_p"], num_retries=0)
    finally:
        provider.close()
        if previous is not None:
            register(previous)
    assert type(e.value).__module__.startswith("litellm"), type(e.value)  # one of LiteLLM's mapped exceptions
    return str(e.value)


def via_lm_eval(s: dict, workdir: Path) -> str:
    pytest.importorskip("lm_eval")
    from lm_eval_requests import request

    from relaygen_integrations.integrations.lm_eval import RelayGenLM

    args = {"pretrained": s["pair"], **{("n_threads" if k == "threads" else k): v for k, v in load_options(s).items()},
            "progress": False, "stats_path": workdir / "stats.jsonl"}
    args.pop("n_threads", None) if s["backend"] == "openai" else None
    model_args = ",".join(f"{k}={v}" for k, v in args.items())  # the --model_args form
    gen_kwargs = {"max_gen_toks": s["max_tokens"], "temperature": s["temperature"], "top_p": s["top_p"],
                  "do_sample": s["temperature"] != 0}
    with pytest.raises(RelayGenError) as e:
        lm = RelayGenLM.create_from_arg_string(model_args)
        lm.generate_until([request("generate_until", s["prompt"], gen_kwargs)])
    return str(e.value)


ADAPTERS = {"cli": via_cli, "python": via_python, "litellm": via_litellm, "lm_eval": via_lm_eval}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_one_clear_line(case, entry, bad_files, tmp_path):
    import re

    s = settings(case, bad_files)
    workdir = tmp_path / "work"
    workdir.mkdir()
    before = snapshot(relaygen_home(), workdir, bad_files)
    message = ADAPTERS[entry](s, workdir)
    assert "\n" not in message.strip(), message
    assert re.search(CASES[case][1], message), message
    assert snapshot(relaygen_home(), workdir, bad_files) == before  # nothing written, fetched or cached


@pytest.mark.parametrize("case", ["unknown pair", "truncated GGUF", "threads 0"])
def test_the_lm_eval_command_reports_a_mistake_in_one_line(case, bad_files, tmp_path):
    """lm-eval prints a traceback for whatever its model raises; relaygen's mistakes are one line there too."""
    pytest.importorskip("lm_eval")
    s = settings(case, bad_files)
    model_args = {"pretrained": s["pair"], "n_threads": s["threads"], **({"large": s["large"]} if s["large"] else {})}
    out = tmp_path / "out"
    p = subprocess.run([str(Path(sys.executable).parent / "lm_eval"), "--model", "relaygen", "--model_args",
                        ",".join(f"{k}={v}" for k, v in model_args.items()), "--tasks", "relaygen_gsm8k_cot",
                        "--include_path", str(Path(__file__).parents[1] / "evals" / "tasks"), "--limit", "1",
                        "--output_path", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 2, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    import re

    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("relaygen: error: ") and re.search(CASES[case][1], last), p.stderr[-2000:]
    assert not out.exists()


def test_a_damaged_cached_model_names_the_command_that_repairs_it(smollm2_path, tmp_path, monkeypatch):
    """A registry model whose cached file was cut short after its fetch: loading it says which
    command verifies and re-fetches it, and that command does."""
    from relaygen_integrations.errors import ModelFileError
    from relaygen_integrations.fetcher import sha256_file

    registry = tmp_path / "registry.toml"
    registry.write_text(f'''
[models.smol-copy]
file = "smol-copy.gguf"
chat_format = "chatml"
[[models.smol-copy.sources]]
type = "file"
path = "{smollm2_path}"
sha256 = "{sha256_file(Path(smollm2_path))}"
[pairs.smol-copy-pair]
large = "smol-copy"
small = "smol-copy"
''')
    env = {"RELAYGEN_HOME": str(tmp_path / "home"), "RELAYGEN_REGISTRY": str(registry)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cached = Path(load_pair("smol-copy-pair", n_ctx=N_CTX, n_threads=1).large.path)  # fetched and loaded
    cached.write_bytes(cached.read_bytes()[:-1])
    with pytest.raises(ModelFileError, match=r"registry model 'smol-copy' does not load: .* run `relaygen models "
                                             r"fetch smol-copy` to verify it and fetch it anew"):
        load_pair("smol-copy-pair", n_ctx=N_CTX, n_threads=1)
    p = subprocess.run([sys.executable, "-m", "relaygen_integrations.cli", "models", "fetch", "smol-copy"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    assert p.returncode == 0 and "damaged copy replaced" in p.stdout, p.stderr
    assert load_pair("smol-copy-pair", n_ctx=N_CTX, n_threads=1).generate("Hi", SamplingParams(max_tokens=2)).text
