"""The Python examples of README.md and the manual run, unchanged, on a small real model: a registry made by
the test names SmolLM2-135M (Q4_1) `qwen2.5-coder-1.5b` and `qwen2.5-coder-0.5b`, so the examples' pair
names resolve to it. The OpenAI-client examples talk to a real `relaygen serve` on 127.0.0.1 (the port in
the example is replaced by a free one). An example that cannot run here says so in a comment right above it
(`<!-- example: not run by the tests (why) -->`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from relaygen_integrations.testing import free_port, wait_until_serving

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- example: not run[^>]*-->\n)?^```python\n(.*?)^```", re.S | re.M)


def examples() -> list[tuple[str, str, bool]]:
    """(page:index, code, run?) for every Python block of the pages."""
    found = []
    for page in PAGES:
        for i, (skip, code) in enumerate(BLOCK.findall(page.read_text())):
            found.append((f"{page.relative_to(REPO).as_posix()}:{i}", code, not skip))
    return found


EXAMPLES = examples()
RUN = [(name, code) for name, code, run in EXAMPLES if run]


def test_most_examples_run():
    assert len(EXAMPLES) >= 8 and len(RUN) >= len(EXAMPLES) - 2


@pytest.fixture(scope="module")
def registry(smollm2_path, tmp_path_factory) -> Path:
    """The registry the examples see: the default pair's names, on SmolLM2-135M's file (already cached)."""
    path = tmp_path_factory.mktemp("registry") / "registry.toml"
    model = ('description = "SmolLM2-135M standing in for {name}"\nfile = "{file}"\nchat_format = "chatml"\n'
             '[[models."{name}".sources]]\ntype = "file"\npath = "{path}"\n')
    path.write_text("".join(f'[models."{name}"]\n' + model.format(name=name, file=smollm2_path.name, path=smollm2_path)
                            for name in ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"))
                    + '[pairs."qwen2.5-coder-1.5b+0.5b"]\nlarge = "qwen2.5-coder-1.5b"\nsmall = "qwen2.5-coder-0.5b"\n'
                      'profile = "paper-qwen3"\ndefault = true\n')
    return path


@pytest.fixture(scope="module")
def env(registry) -> dict:
    return {**os.environ, "RELAYGEN_REGISTRY": str(registry), "HF_HUB_OFFLINE": "1",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


@pytest.fixture(scope="module")
def serve_port(env, tmp_path_factory):
    """`relaygen serve` for the pair the examples name (no key: every bearer token is accepted)."""
    openai = pytest.importorskip("openai")
    pytest.importorskip("fastapi", reason="relaygen serve runs the LiteLLM proxy: litellm[proxy]")
    port, log = free_port(), (tmp_path_factory.mktemp("serve") / "serve.log").open("w+")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "relaygen"), "serve", "--pair", "qwen2.5-coder-1.5b+0.5b",
                             "--threads", "1", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        wait_until_serving(client, proc, "relaygen serve", log=lambda: log.seek(0) or log.read())
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("name,code", RUN, ids=[name for name, _ in RUN])
def test_example_runs(name, code, env, request, tmp_path):
    if "base_url=" in code:
        port = request.getfixturevalue("serve_port")
        code = re.sub(r"127\.0\.0\.1:4000", f"127.0.0.1:{port}", code)
    script = tmp_path / "example.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"{name} failed:\n{done.stderr[-3000:]}"
