"""A thinking pair end to end, brought by a user: tiny float32 models with a think-stage chat template (the
prompt opens ``<think>``), declared in $RELAYGEN_HOME/registry.toml with ``reasoning_end = "</think>"``. The
large model reasons inside <think> (with every letter a cue, so the small model relays), the budget closes
the reasoning (the tiny models never write </think> themselves: the marker is appended and the answer model
writes the reserved tokens after it); `relaygen serve` and LiteLLM put the reasoning in reasoning_content and
the answer in content, and lm-eval grades only the answer."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_gguf import write_tiny_gguf

REPO = Path(__file__).resolve().parents[1]
THINK_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                  "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}")
BUDGET, ANSWER = 48, 12  # tokens in all, and reserved for the answer


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """$RELAYGEN_HOME with the user's registry: two tiny models of one vocabulary, and the pair."""
    home = tmp_path_factory.mktemp("home")
    files = {role: write_tiny_gguf(home / f"tiny-think-{role}.gguf", seed=seed, endless=True, ascii_only=True,
                                   n_ctx=1024, chat_template=THINK_TEMPLATE)
             for role, seed in (("large", 0), ("small", 3))}
    models = "".join(f'[models."tiny-think-{role}"]\npath = "{path}"\nchat_format = "chatml"\n'
                     for role, path in files.items())
    (home / "registry.toml").write_text(
        models + '[pairs."tiny-think"]\nlarge = "tiny-think-large"\nsmall = "tiny-think-small"\n'
        f'reasoning_end = "</think>"\nprofile = "{REPO / "tests" / "any-letter.json"}"\n')
    return home


@pytest.fixture
def env(home, monkeypatch) -> dict:
    monkeypatch.setenv("RELAYGEN_HOME", str(home))
    monkeypatch.delenv("RELAYGEN_REGISTRY", raising=False)
    return {**os.environ}


def test_the_reasoning_is_relayed_and_the_answer_written_after_the_marker(env):
    from relaygen_integrations import SamplingParams, load_pair

    engine = load_pair("tiny-think", n_threads=1, answer_reserve_tokens=ANSWER)
    r = engine.generate([{"role": "user", "content": "What is 2 + 2?"}],
                        SamplingParams(temperature=0, max_tokens=BUDGET))
    reasoning, marker, answer = r.text.partition("</think>")
    assert marker and reasoning and answer and r.answer == answer
    assert r.stats.switches > 0 and r.stats.small.generated_tokens > 0  # the small model relayed
    assert {s.stage for s in r.segments} == {"reasoning", "answer"}
    assert all(s.model == "small" for s in r.segments if s.stage == "answer" and s.text)


def test_litellm_puts_the_reasoning_in_reasoning_content(env):
    litellm = pytest.importorskip("litellm")
    from relaygen_integrations.integrations.litellm import RelayGenProvider, register

    previous = next((p["custom_handler"] for p in litellm.custom_provider_map if p["provider"] == "relaygen"), None)
    provider = register(RelayGenProvider(n_threads=1, answer_reserve_tokens=ANSWER))
    try:
        messages = [{"role": "user", "content": "What is 2 + 2?"}]
        r = litellm.completion(model="relaygen/tiny-think", messages=messages, max_tokens=BUDGET, temperature=0)
        message = r.choices[0].message
        assert message.reasoning_content and message.content
        assert "</think>" not in message.content and "</think>" not in message.reasoning_content
        chunks = list(litellm.completion(model="relaygen/tiny-think", messages=messages, max_tokens=BUDGET,
                                         temperature=0, stream=True))
        streamed = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
        assert streamed == message.reasoning_content
    finally:
        provider.close()
        register(previous)


def test_relaygen_serve_puts_the_reasoning_in_reasoning_content(env, tmp_path):
    openai = pytest.importorskip("openai")
    pytest.importorskip("fastapi", reason="relaygen serve runs the LiteLLM proxy: litellm[proxy]")
    from relaygen_integrations.testing import free_port, wait_until_serving

    port, log = free_port(), (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "relaygen"), "serve", "--pair", "tiny-think",
                             "--answer-reserve", str(ANSWER), "--threads", "1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
        wait_until_serving(client, proc, "relaygen serve", log=lambda: log.seek(0) or log.read())
        r = client.chat.completions.create(model="tiny-think", max_tokens=BUDGET, temperature=0,
                                           messages=[{"role": "user", "content": "What is 2 + 2?"}])
        message = r.choices[0].message
        reasoning = (message.model_extra or {}).get("reasoning_content")
        assert reasoning and message.content and "</think>" not in message.content
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_lm_eval_grades_the_answer_not_the_reasoning(env, tmp_path):
    """`lm_eval --model relaygen` on the math task: the response it grades (and logs) is the text after
    </think>; in Python the same request's full text holds the reasoning, which think_end_token=none keeps."""
    pytest.importorskip("lm_eval")
    from lm_eval_requests import request
    from relaygen_integrations.integrations.lm_eval import RelayGenLM

    model_args = json.dumps({"pretrained": "tiny-think", "answer_reserve_tokens": ANSWER, "n_threads": 1})
    done = subprocess.run([str(Path(sys.executable).parent / "lm_eval"), "--model", "relaygen", "--model_args",
                           model_args, "--tasks", "relaygen_gsm8k_cot", "--include_path", "evals/tasks",
                           "--apply_chat_template", "--limit", "2", "--gen_kwargs", f"max_gen_toks={BUDGET}",
                           "--output_path", str(tmp_path), "--log_samples"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    [samples] = (tmp_path / "tiny-think").glob("samples_relaygen_gsm8k_cot_*.jsonl")
    responses = [json.loads(line)["resps"][0][0] for line in samples.read_text().splitlines()]
    assert len(responses) == 2 and all(r and "</think>" not in r for r in responses)
    gen = {"until": [], "max_gen_toks": BUDGET, "do_sample": False}
    graded = RelayGenLM(pretrained="tiny-think", answer_reserve_tokens=ANSWER, n_threads=1, progress=False)
    whole = RelayGenLM(engine=graded.engine, think_end_token="none", progress=False)
    [answer] = graded.generate_until([request("generate_until", "What is 2 + 2?", gen)])
    [text] = whole.generate_until([request("generate_until", "What is 2 + 2?", gen)])
    assert "</think>" in text and answer == text.rsplit("</think>", 1)[1].lstrip() and answer
