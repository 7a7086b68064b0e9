"""Chat templates for backends that hold no tokenizer (servers): render the model's Jinja template
locally, the way llama.cpp and transformers do, so a partial assistant turn can be continued as raw
text on the server's completion endpoint."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError


@dataclass(frozen=True)
class ChatTemplate:
    source: str  # the Jinja text
    bos_token: str = ""
    eos_token: str = ""

    def render(self, messages: list[dict]) -> str:
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        try:
            return env.from_string(self.source).render(
                messages=messages, bos_token=self.bos_token, eos_token=self.eos_token, add_generation_prompt=True)
        except TemplateError as exc:
            raise ConfigError(f"the chat template rejected these messages: {exc}") from exc


@functools.lru_cache(maxsize=16)
def _gguf_template(path: Path, mtime_ns: int, size: int) -> ChatTemplate:
    """The template and BOS/EOS pieces from GGUF metadata (memory-mapped: reads no weights, but parsing a
    large model's metadata takes seconds, so each file version is parsed once: a concurrent engine over
    servers makes a backend per slot)."""
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields

    def string(key: str) -> str | None:
        f = fields.get(key)
        return bytes(f.parts[f.data[0]]).decode("utf-8") if f is not None else None

    def token(key: str) -> str:
        f, tokens = fields.get(key), fields.get("tokenizer.ggml.tokens")
        if f is None or tokens is None:
            return ""
        i = int(f.parts[f.data[0]][0])
        return bytes(tokens.parts[tokens.data[i]]).decode("utf-8", "replace")

    source = string("tokenizer.chat_template")
    if not source:
        raise ConfigError(f"{path.name} has no chat template: pass chat_format='raw'")
    return ChatTemplate(source, token("tokenizer.ggml.bos_token_id"), token("tokenizer.ggml.eos_token_id"))


def _hf_template(path: Path) -> ChatTemplate:
    config = path / "tokenizer_config.json" if path.is_dir() else path
    data = json.loads(config.read_text())
    source = data.get("chat_template")
    jinja = config.parent / "chat_template.jinja"
    if not source and jinja.is_file():
        source = jinja.read_text()
    if not source:
        raise ConfigError(f"{config} has no chat_template")

    def piece(t):
        return t.get("content", "") if isinstance(t, dict) else (t or "")
    return ChatTemplate(source, piece(data.get("bos_token")), piece(data.get("eos_token")))


def load_chat_template(source: str | Path) -> ChatTemplate:
    """From a GGUF file, a tokenizer_config.json (or a model directory holding one), or Jinja text."""
    if isinstance(source, str) and ("{%" in source or "{{" in source):
        return ChatTemplate(source)
    path = Path(source).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        st = path.stat()
        return _gguf_template(path.resolve(), st.st_mtime_ns, st.st_size)
    if path.is_dir() or path.name.endswith(".json"):
        if not (path / "tokenizer_config.json" if path.is_dir() else path).is_file():
            raise ConfigError(f"no tokenizer_config.json at {path}")
        return _hf_template(path)
    raise ConfigError(f"chat template source {str(source)!r} is not a GGUF file, a tokenizer_config.json, "
                      "a model directory or Jinja text")
