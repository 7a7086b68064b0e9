"""The lm-evaluation-harness model: the real `lm_eval` command, registration, and the LM contract."""

import json
import os
import subprocess
import sys
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")
pytest.importorskip("math_verify", reason="the lm-eval extra is not installed")

from lm_eval_requests import request  # noqa: E402

from relaygen_integrations import ConfigError, RelayConfig, RelayEngine  # noqa: E402
from relaygen_integrations.backends.llamacpp import LlamaCppBackend  # noqa: E402
from relaygen_integrations.integrations.lm_eval import RelayGenLM  # noqa: E402
from busy_cues import LETTERS  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LM_EVAL = Path(sys.executable).parent / "lm_eval"


def run_lm_eval(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(LM_EVAL), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_lm_eval_command_runs_relaygen_on_a_local_task(smollm2_path, tmp_path):
    """`lm_eval --model relaygen` as users type it, with JSON model_args whose cues contain commas."""
    cues = ["Therefore,", "So,", "First,", *LETTERS]  # letters as substrings: the relay runs on any build
    model_args = json.dumps({"pretrained": "smollm2-135m-self", "n_threads": 2, "cues": cues,
                             "cue_matching": "substring"})
    p = run_lm_eval("--model", "relaygen", "--model_args", model_args, "--tasks", "relaygen_gsm8k_cot",
                    "--include_path", "evals/tasks", "--apply_chat_template", "--limit", "3",
                    "--gen_kwargs", "max_gen_toks=48", "--output_path", str(tmp_path), "--log_samples")
    assert p.returncode == 0, p.stderr[-3000:]
    [results_file] = (tmp_path / "smollm2-135m-self").glob("results_*.json")
    results = json.loads(results_file.read_text())
    assert 0.0 <= results["results"]["relaygen_gsm8k_cot"]["exact_match,none"] <= 1.0
    info = results["config"]["relaygen"]
    assert info["cues"] == cues and info["cue_matching"] == "substring" and info["scored_by"] == "large"
    stats = info["stats"]["relaygen_gsm8k_cot"]
    assert stats["requests"] == 3 and stats["large_tokens"] + stats["small_tokens"] == stats["generated_tokens"]
    assert stats["switches_per_request"] > 0 and 0 < stats["large_share"] < 1  # the relay really ran
    # per-request statistics beside the results file, one line per request, matching the samples
    rows = [json.loads(line) for line in Path(info["requests_file"]).read_text().splitlines()]
    assert Path(info["requests_file"]).parent == results_file.parent
    assert sorted(r["doc_id"] for r in rows) == [0, 1, 2]
    assert sum(r["generated_tokens"] for r in rows) == stats["generated_tokens"]
    [samples_file] = (tmp_path / "smollm2-135m-self").glob("samples_relaygen_gsm8k_cot_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(samples) == 3 and all(s["resps"][0][0].strip() for s in samples)
    assert all("<|im_start|>" in s["arguments"]["gen_args_0"]["arg_0"] for s in samples)  # chat template applied


def test_registration_keeps_lm_evals_built_in_models():
    code = ("from lm_eval.api.registry import get_model, model_registry\n"
            "cls = get_model('relaygen')\n"
            "print(cls.__module__, cls.__name__, get_model('dummy').__name__, get_model('hf').__name__,\n"
            "      'vllm' in model_registry, len(model_registry))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    module, name, dummy, hf, has_vllm, count = p.stdout.split()
    assert (module, name) == ("relaygen_integrations.integrations.lm_eval", "RelayGenLM")
    assert dummy == "DummyLM" and hf == "HFLM" and has_vllm == "True"
    import lm_eval.models  # noqa: F401

    from lm_eval.api.registry import model_registry

    assert int(count) == len(model_registry)  # relaygen added in this process too, nothing hidden


def test_startup_hook_is_installed_and_imports_nothing_until_lm_eval_does():
    import site

    installed = [Path(d) for d in site.getsitepackages() if (Path(d) / "relaygen_integrations_lm_eval.pth").exists()]
    assert installed, "the wheel's .pth start-up hook is not installed"
    hook = installed[0] / "_relaygen_lm_eval_hook.py"
    source = REPO / "relaygen_integrations" / "integrations" / "lm_eval_hook.py"
    assert hook.read_text() == source.read_text(), "installed hook is stale: reinstall (pip install -e .)"
    code = "import sys; print(sorted(m for m in sys.modules if m.split('.')[0] in ('relaygen_integrations', 'lm_eval', 'numpy', '_relaygen_lm_eval_hook')))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and not p.stderr
    assert p.stdout.strip() == "['_relaygen_lm_eval_hook']"
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "RELAYGEN_LM_EVAL_HOOK": "0"})
    assert off.stdout.strip() == "[]"  # the documented switch turns it off


def test_startup_hook_is_inert_where_lm_eval_is_not_installed(tmp_path):
    """A bare environment with only the hook: start-up is silent and `import lm_eval` fails as usual."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "env")], check=True, timeout=120)
    py = tmp_path / "env" / "bin" / "python"
    site_dir = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
    src = REPO / "relaygen_integrations" / "integrations"
    (site_dir / "_relaygen_lm_eval_hook.py").write_text((src / "lm_eval_hook.py").read_text())
    (site_dir / "relaygen_integrations_lm_eval.pth").write_text((src / "relaygen_integrations_lm_eval.pth").read_text())
    p = subprocess.run([str(py), "-c", "import sys; print(type(sys.meta_path[0]).__name__); import lm_eval"],
                       capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == "LmEvalModelsFinder"
    assert p.returncode == 1 and p.stderr.strip().endswith("ModuleNotFoundError: No module named 'lm_eval'")


def test_model_args_key_value_form_accepts_cue_lists_and_reports_mistakes(smollm2_path):
    lm = RelayGenLM.create_from_arg_string('pretrained=smollm2-135m-self,cues=["So,","Now"],n_threads=2,progress=False')
    assert lm.engine.profile.cues == ("So,", "Now")
    lm = RelayGenLM.create_from_arg_string('{"pair": "smollm2-135m-self", "cues": ["So, then", "Now"], "progress": false}')
    assert lm.engine.profile.cues == ("So, then", "Now")
    for bad, message in [("pretrained=smollm2-135m-self,temprature=0.5", "unknown relaygen model argument"),
                         ("pretrained=smollm2-135m-self,backend=hf,n_gpu_layers=10", "n_gpu_layers"),
                         ('pretrained=smollm2-135m-self,cues="So,"', "cues must be a list"),
                         ("pretrained=smollm2-135m-self,pair=other", "pass the pair once"),
                         ('{"pretrained": "smollm2-135m-self",', "does not parse")]:
        with pytest.raises(ConfigError, match=message):
            RelayGenLM.create_from_arg_string(bad)


@pytest.fixture(scope="module")
def smol_lm(smollm2_path):
    return RelayGenLM(pretrained="smollm2-135m-self", n_threads=2, n_ctx=1024, progress=False,
                      cues=["the", "is", "and"])


def test_generate_until_honours_until_budget_sampling_and_seeds(smol_lm):
    prompt = smol_lm.apply_chat_template([{"role": "user", "content": "Write three sentences about cats."}])
    greedy = request("generate_until", prompt, {"until": [], "max_gen_toks": 24, "do_sample": False})
    a, b = smol_lm.generate_until([greedy, greedy])
    assert a == b and a
    assert smol_lm.records[-1]["generated_tokens"] <= 24 and smol_lm.records[-1]["finish_reason"] == "length"
    [cut] = smol_lm.generate_until([request("generate_until", prompt, {"until": ["."], "max_gen_toks": 64})])
    assert "." not in cut and a.startswith(cut)
    sampled = request("generate_until", prompt, {"do_sample": True, "temperature": 1.0, "max_gen_toks": 24})
    smol_lm._seen.clear()  # a new evaluation run
    first, repeat = smol_lm.generate_until([sampled, sampled])  # a repeated request is a new sample
    assert first != repeat
    smol_lm._seen.clear()
    assert smol_lm.generate_until([sampled])[0] == first  # same prompt, same base seed: same sample
    with pytest.raises(ConfigError, match="unsupported generation argument"):
        smol_lm.generate_until([request("generate_until", prompt, {"repetition_penalty": 1.1})])
    with pytest.raises(ConfigError, match="do_sample=True with temperature=0"):
        smol_lm.generate_until([request("generate_until", prompt, {"do_sample": True, "temperature": 0})])
    with pytest.raises(ConfigError, match=r"unit doc 7: .*context window of 1024 tokens \(raise n_ctx="):
        smol_lm.generate_until([request("generate_until", "word " * 1500, {"max_gen_toks": 8}, doc_id=7)])


def test_lm_evals_device_is_a_preference():
    """lm-eval passes --device, default cuda:0 even on machines without CUDA."""
    from relaygen_integrations.integrations.lm_eval import _apply_device
    from relaygen_integrations.options import RelaySpec

    def options(device, **given):
        return _apply_device(RelaySpec.from_mapping({"n_ctx": 4096, **given}), device).backend_options

    assert options("cuda:0")["n_gpu_layers"] == -1
    assert options("cpu")["n_gpu_layers"] == 0
    assert options("cuda:0", n_gpu_layers=10)["n_gpu_layers"] == 10
    import torch

    expected = "cuda:0" if torch.cuda.is_available() else "auto"
    assert options("cuda:0", backend="hf")["device"] == expected
    servers = dict(backend="openai", large_url="http://127.0.0.1:9", small_url="http://127.0.0.1:9")
    assert "device" not in _apply_device(RelaySpec.from_mapping(servers), "cuda:0").backend_options


def test_apply_chat_template_continues_a_prefilled_assistant_turn(smol_lm):
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "The answer is"}]
    text = smol_lm.apply_chat_template(chat, add_generation_prompt=False)
    assert text == smol_lm.apply_chat_template(chat[:1]) + "The answer is"


def direct_logprob(llm: llama_cpp.Llama, ids: list[int], first: int) -> float:
    """Sum of log p(ids[i] | ids[:i]) for i >= first, from llama.cpp's own all-position logits."""
    llm.reset()
    llm.eval(ids)
    rows = llm.scores[first - 1: len(ids) - 1].astype(np.float64)
    rows -= rows.max(axis=1, keepdims=True)
    logp = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
    return float(sum(logp[i, t] for i, t in enumerate(ids[first:])))


def test_loglikelihood_is_the_large_models_and_ranks_choices_like_it(smollm2_path, tiny_models):
    """The large model is SmolLM2, the small a random tiny model: scores must be SmolLM2's own."""
    large = LlamaCppBackend(smollm2_path, n_ctx=512, n_threads=2, chat_format="raw")
    small = LlamaCppBackend(tiny_models["a"], n_ctx=512, n_threads=2, chat_format="raw")
    lm = RelayGenLM(engine=RelayEngine(large, small, ["So,"]), progress=False)
    context = "Question: What is the capital of France?\nAnswer:"
    choices = [" Paris", " London", " banana", " the moon"]
    scores = lm.loglikelihood([request("loglikelihood", context, c, doc_id=i) for i, c in enumerate(choices)])
    direct_llm = llama_cpp.Llama(str(smollm2_path), n_ctx=512, n_threads=2, logits_all=True, verbose=False)
    ctx_ids = large.tokenize(context.encode(), special=True, add_bos=True)
    direct = [direct_logprob(direct_llm, ctx_ids + large.tokenize(c.encode(), special=True), len(ctx_ids))
              for c in choices]
    np.testing.assert_allclose([s for s, _ in scores], direct, atol=0.05)  # batch shapes differ slightly
    assert np.argsort([s for s, _ in scores]).tolist() == np.argsort(direct).tolist()
    assert scores[0][0] == max(s for s, _ in scores)
    tiny = RelayGenLM(engine=RelayEngine(large, small, ["So,"], RelayConfig(mode="small")), progress=False)
    tiny_scores = tiny.loglikelihood([request("loglikelihood", context, c) for c in choices])
    assert not np.allclose([s for s, _ in tiny_scores], direct, atol=0.5)  # the test can tell them apart
    # rolling loglikelihood over one window equals the direct sum after the document-start token
    text = "The quick brown fox jumps over the lazy dog."
    [rolling] = lm.loglikelihood_rolling([request("loglikelihood_rolling", text)])  # lm-eval 0.4: (text,) -> float
    ids = [large.document_start_token()] + large.tokenize(text.encode(), special=True)
    assert rolling == pytest.approx(direct_logprob(direct_llm, ids, 1), abs=0.05)
    # lm-eval 0.5: ("", text) -> (logprob, False)
    [(logprob, greedy)] = lm.loglikelihood_rolling([request("loglikelihood_rolling", "", text)])
    assert logprob == rolling and greedy is False
    with pytest.raises(ConfigError, match="its context must be empty"):
        lm.loglikelihood_rolling([request("loglikelihood_rolling", "Some context", text)])


def test_chat_message_contexts_are_rendered_with_the_models_template(smol_lm):
    """lm-eval 0.5 may hand a model the conversation itself: the same prompt as the rendered string;
    a content may be a list of text parts (joined by newlines), and a part that is not text is refused."""
    chat = [{"role": "user", "content": "Write one sentence about cats."}]
    rendered = smol_lm.apply_chat_template(chat)
    parts = [{"role": "user", "content": [{"type": "text", "text": "Write one sentence"},
                                          {"type": "text", "text": "about cats."}]}]
    assert smol_lm.apply_chat_template(parts) == smol_lm.apply_chat_template(
        [{"role": "user", "content": "Write one sentence\nabout cats."}])
    with pytest.raises(ConfigError, match="'input_audio'"):
        smol_lm.apply_chat_template([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}])
    kwargs = {"until": [], "max_gen_toks": 16, "do_sample": False}
    as_text, as_messages = smol_lm.generate_until([request("generate_until", rendered, kwargs),
                                                   request("generate_until", chat, kwargs)])
    assert as_messages == as_text and as_text
    assert smol_lm.records[-1]["prompt_tokens"] == smol_lm.records[-2]["prompt_tokens"]
    scores = smol_lm.loglikelihood([request("loglikelihood", rendered, " Cats"), request("loglikelihood", chat, " Cats")])
    assert scores[0] == scores[1]


def test_a_perplexity_task_runs_through_lm_evals_own_evaluator(smollm2_path, tiny_models):
    """The rolling-loglikelihood contract differs between lm-eval 0.4 and 0.5; lm-eval's evaluator
    must get from relaygen what it expects on the installed release, and the metric must be ours."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    sys.path.insert(0, str(REPO / "tests" / "lm_eval_tasks" / "relaygen_test_perplexity"))
    from utils import TEXTS

    large = LlamaCppBackend(smollm2_path, n_ctx=512, n_threads=2, chat_format="raw")
    small = LlamaCppBackend(tiny_models["a"], n_ctx=512, n_threads=1, chat_format="raw")
    lm = RelayGenLM(engine=RelayEngine(large, small, ["So,"]), progress=False)
    out = simple_evaluate(model=lm, tasks=["relaygen_test_perplexity"],
                          task_manager=TaskManager(include_path=str(REPO / "tests" / "lm_eval_tasks")))
    [result] = [v for k, v in out["results"].items() if k.endswith("relaygen_test_perplexity")]
    lls = lm.loglikelihood_rolling([request("loglikelihood_rolling", t) for t in TEXTS])
    n_bytes = sum(len(t.encode("utf-8")) for t in TEXTS)
    assert result["byte_perplexity,none"] == pytest.approx(np.exp(-sum(lls) / n_bytes), rel=1e-6)
    assert result["bits_per_byte,none"] == pytest.approx(-sum(lls) / n_bytes / np.log(2), rel=1e-6)


DISCOVERY = """
import sys
from importlib.metadata import entry_points
from lm_eval.api.registry import get_model, model_registry

def discover():  # what a release with plugin discovery does (lm-eval PR #4013), without skipping names
    for ep in entry_points(group="lm_eval.models"):
        model_registry.register(ep.name, target=ep)

order = sys.argv[1]
if order == "hook-then-discovery":
    import lm_eval.models  # the start-up hook registers relaygen here
    discover()
else:  # the hook is off (RELAYGEN_LM_EVAL_HOOK=0) until discovery has run; then it does what it does
    import lm_eval.models
    discover()
    import _relaygen_lm_eval_hook as hook
    hook.install()
    hook.register_lazily()
from relaygen_integrations.integrations.lm_eval import register
register()  # the documented manual registration, on top: still one relaygen
cls = get_model("relaygen")
print(cls.__module__, cls.__name__, get_model("dummy").__name__, get_model("hf").__name__, len(model_registry))
"""


@pytest.mark.parametrize("order", ["hook-then-discovery", "discovery-then-hook"])
def test_start_up_hook_and_a_future_plugin_discovery_register_relaygen_once(order):
    env = {**os.environ, "RELAYGEN_LM_EVAL_HOOK": "1" if order == "hook-then-discovery" else "0"}
    p = subprocess.run([sys.executable, "-c", DISCOVERY, order], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "could not register" not in p.stderr
    module, name, dummy, hf, count = p.stdout.split()
    assert (module, name, dummy, hf) == ("relaygen_integrations.integrations.lm_eval", "RelayGenLM", "DummyLM", "HFLM")
    import lm_eval.models  # noqa: F401 - registers the built-in models in this process too
    from lm_eval.api.registry import model_registry

    builtins = {k for k in model_registry if k != "relaygen"}
    assert int(count) == len(builtins) + 1  # every built-in model still there, relaygen once


def test_batch_size_runs_requests_together_with_the_answers_of_one_at_a_time(tiny_models, tmp_path):
    """batch_size=4 on tiny float32 models (the same numbers whatever the batch): six generate_until requests,
    greedy and seeded, give the answers and seeds of batch_size=1, in request order; scoring still works."""
    from tiny_gguf import write_tiny_gguf

    other = write_tiny_gguf(tmp_path / "tiny-a3.gguf", seed=3)
    common = dict(pretrained="smollm2-135m-self", large=str(tiny_models["a"]), small=str(other), chat_format="raw",
                  n_threads=1, n_ctx=512, cues=LETTERS, cue_matching="substring", min_large_tokens=1, progress=False)
    reqs = [request("generate_until", f"the cat number {i} sat on the", {"until": [], "max_gen_toks": 20 + 4 * i},
                    doc_id=i) for i in range(4)]
    reqs += [request("generate_until", f"a dog {i} ran", {"do_sample": True, "temperature": 0.9, "max_gen_toks": 24},
                     doc_id=4 + i) for i in range(2)]
    one = RelayGenLM(**common, batch_size=1, stats_path=str(tmp_path / "one.jsonl"))
    four = RelayGenLM.create_from_arg_obj(dict(common, stats_path=str(tmp_path / "four.jsonl")),
                                          {"batch_size": 4, "max_batch_size": None, "device": None})
    try:
        assert one.batch_size == 1 and four.batch_size == 4
        want, got = one.generate_until(reqs), four.generate_until(reqs)
        assert got == want and len(set(got)) == 6
        assert four.engine.scheduler.widest > 1  # requests really shared llama.cpp calls
        assert [r["doc_id"] for r in four.records] == list(range(6))
        assert [r["switches"] for r in four.records] == [r["switches"] for r in one.records]
        assert sum(r["switches"] for r in four.records) > 0
        pair = [request("loglikelihood", "the cat", " sat"), request("loglikelihood", "the cat", " ran")]
        for (a, greedy_a), (b, greedy_b) in zip(four.loglikelihood(pair), one.loglikelihood(pair)):
            assert a == pytest.approx(b, abs=1e-4) and greedy_a == greedy_b
    finally:
        four.engine.close()
    auto = RelayGenLM.create_from_arg_obj(dict(common), {"batch_size": "auto", "max_batch_size": None})
    assert auto.batch_size == 4
    auto.engine.close()
    for bad in ("0", "x", -3, "300"):
        with pytest.raises(ConfigError, match="batch_size must be a positive integer up to 256 or 'auto'"):
            RelayGenLM(**common, batch_size=bad)
    with pytest.raises(ConfigError, match="speculative decoding is not combined with batched requests"):
        RelayGenLM(**common, batch_size=2, speculative="lookup")
