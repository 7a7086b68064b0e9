"""What an OpenAI-compatible server is. They share the completion protocol but differ in what the checked
relay, calibration and log-likelihoods need (scoring given tokens after a cached prefix, token-id prompts);
../shared/docs/server-scoring.md sets that out from each server's released source.

A server is recognised once, at start-up, by an endpoint only its kind answers (or named with ``server=``,
which is then checked the same way):
- llama.cpp's ``llama-server``: ``GET /props`` (its slots' settings, ``default_generation_settings``);
- SGLang: ``GET /get_model_info`` (``model_path``; sglang/srt/entrypoints/http_server.py);
- vLLM: ``/v1/models`` entries ``owned_by: "vllm"`` (vllm/entrypoints/openai/serving_models.py);
- llama-cpp-python's ``llama_cpp.server``: its FastAPI app's title, "llama.cpp Python API" (server/app.py);
- anything else is ``openai``: the completion protocol only.
"""

from __future__ import annotations

from ..errors import ConfigError

KINDS = ("sglang", "vllm", "llama-server", "llama-cpp-python", "openai")
LABELS = {"sglang": "SGLang", "vllm": "vLLM", "llama-server": "llama.cpp's llama-server",
          "llama-cpp-python": "llama-cpp-python's llama_cpp.server", "openai": "an OpenAI-compatible server"}
# why a kind cannot give what the checked relay, calibration and log-likelihoods need, and what to do instead
NO_SCORING = {
    "llama-server": "llama-server returns no log-probabilities of prompt tokens (it rejects `echo`; llama.cpp "
                    "issue #27174 is open)",
    "openai": "the OpenAI completion protocol has no standard way to score given tokens after a cached prefix",
}
INSTEAD = ("serve the large model with SGLang or vLLM (llama-cpp-python's server for models that add a BOS "
           "token), or run the pair in process (the llamacpp or hf backend on the same weights); the unchecked "
           "relay (check=off) works over any server")
NO_TOKENIZER = ("scoring over a server goes by token id, so it needs the served model's tokenizer here: pass "
                "tokenizer= (its GGUF file; --tokenizer on the command line)")


def scoring_refusal(kind: str, what: str, problem: str | None = None) -> str:
    """One message: what needs scoring, which server cannot give it and why, and what to do instead.
    ``problem``: why this server cannot, where its kind could (no tokenizer, a failed probe)."""
    why = problem or NO_SCORING[kind]
    return f"{what} needs the probability of given tokens, which {LABELS[kind]} cannot give here: " \
           f"{why}; {INSTEAD}"


def probe(get) -> str:
    """The server's kind from what it answers. ``get(path)``: the JSON of a GET on the server's root
    (``/props``, not ``/v1/props``), or None when it answers otherwise (404, not JSON, an error)."""
    props = get("/props")
    if isinstance(props, dict) and "default_generation_settings" in props:
        return "llama-server"
    info = get("/get_model_info")
    if isinstance(info, dict) and "model_path" in info:
        return "sglang"
    models = get("/v1/models")
    owners = {m.get("owned_by") for m in (models or {}).get("data", []) if isinstance(m, dict)} \
        if isinstance(models, dict) else set()
    if "vllm" in owners:
        return "vllm"
    api = get("/openapi.json")
    if isinstance(api, dict) and "llama.cpp Python API" in str((api.get("info") or {}).get("title", "")):
        return "llama-cpp-python"
    return "openai"


def resolve(given: str | None, get, url: str) -> str:
    """``given`` (``server=``) checked against what the server at ``url`` answers, or the probed kind. A kind
    the probe recognises as another is refused; an unrecognised server is taken at its word."""
    if given is not None and given not in KINDS:
        raise ConfigError(f"server must be one of {', '.join(KINDS)}, not {given!r}")
    if given == "openai":
        return given  # the completion protocol only, by choice: nothing to recognise
    found = probe(get)
    if given is None:
        return found
    if found not in ("openai", given):
        raise ConfigError(f"server={given!r}, but {url} answers as {LABELS[found]}: pass server={found!r}, "
                          "or leave server out to have it recognised")
    return given
