"""Write tiny random-weight llama GGUF models for exact, fast backend tests (no download needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _byte_pieces() -> list[str]:
    """GPT-2's byte-to-unicode map: one printable character per byte, as byte-level BPE vocabularies use."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def write_tiny_gguf(path: Path, seed: int = 0, n_embd: int = 64, n_layer: int = 2, n_head: int = 4,
                    n_ff: int = 128, n_ctx: int = 512, merges: tuple[str, ...] = ("Ġ t",), endless: bool = False,
                    chat_template: str | None = None, ascii_only: bool = False, add_bos: bool = False) -> Path:
    """A llama-architecture model with a byte-level vocabulary (256 bytes + merges + 3 specials).

    ``endless``: the end-of-text token's output row is zero, so its logit is exactly 0 while the best
    of the ~260 other (random, float32) logits is about +10: greedy decoding can never end the text.
    ``ascii_only``: the same for every byte outside printable ASCII and for <s> and <pad>, so greedy text is
    valid UTF-8 with no control token in it (a server that streams text, not bytes, passes it on unchanged).
    ``add_bos``: the tokenizer puts <s> before a prompt (llama-cpp-python's echoed log-probabilities are
    aligned only for such models)."""
    import gguf

    rng = np.random.default_rng(seed)
    pieces = _byte_pieces()
    tokens = pieces + ["".join(m.split(" ")) for m in merges] + ["<s>", "</s>", "<pad>"]
    types = [gguf.TokenType.NORMAL] * (len(tokens) - 3) + [gguf.TokenType.CONTROL] * 3
    n_vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"tiny-random-{seed}")
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(list(merges))
    w.add_bos_token_id(n_vocab - 3)
    w.add_eos_token_id(n_vocab - 2)
    w.add_add_bos_token(add_bos)
    if chat_template is not None:
        w.add_chat_template(chat_template)

    def t(name, *shape, scale=0.5):
        w.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    t("token_embd.weight", n_vocab, n_embd)
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    output = (rng.standard_normal((n_vocab, n_embd)) * 0.5).astype(np.float32)
    if endless:
        output[n_vocab - 2] = 0.0
    if ascii_only:
        byte_of = {c: b for b, c in enumerate(pieces)}
        unprintable = [256 + i for i, m in enumerate(merges) if not all(0x20 <= byte_of[c] < 0x7F for c in m if c != " ")]
        output[[b for b in range(256) if not 0x20 <= b < 0x7F] + unprintable + [n_vocab - 3, n_vocab - 1]] = 0.0
    w.add_tensor("output.weight", output)
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            t(f"blk.{i}.{name}.weight", n_embd, n_embd, scale=0.2)
        t(f"blk.{i}.ffn_gate.weight", n_ff, n_embd, scale=0.2)
        t(f"blk.{i}.ffn_up.weight", n_ff, n_embd, scale=0.2)
        t(f"blk.{i}.ffn_down.weight", n_embd, n_ff, scale=0.2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
