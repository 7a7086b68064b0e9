"""How far llama.cpp's batched logits are from single-token decoding, with flash attention off and on.

    python evals/batch_numerics.py --models smollm2-135m,qwen2.5-coder-1.5b

For each model: evaluate a text's first tokens, then its last 10 tokens once one at a time and once as
one batch (as speculative verification and hand-off catch-up do), and print the largest absolute
logit difference. 0.0 means batched evaluation cannot flip a greedy choice.
"""

from __future__ import annotations

import argparse

import numpy as np

from relaygen_integrations.backends.llamacpp import LlamaCppBackend
from relaygen_integrations.fetcher import fetch
from relaygen_integrations.registry import Registry

TEXT = ("Once upon a time a dragon lived in a cave above a quiet village. Every morning it counted its gold. " * 6)


def max_batch_difference(path, flash_attn: bool, threads: int, batch: int = 10) -> float:
    b = LlamaCppBackend(path, n_ctx=1024, n_threads=threads, flash_attn=flash_attn, chat_format="raw")
    ids = b.tokenize(TEXT.encode())
    start = len(ids) - batch
    b.sync(ids[:start])
    single = []
    for i in range(start, len(ids)):
        b.sync(ids[: i + 1])
        single.append(b.logits())
    b.reset()
    b.sync(ids[:start])
    rows = b.evaluate_rows(ids[start:])
    b.close()
    return float(max(np.abs(rows[j] - single[j]).max() for j in range(batch)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2-135m,qwen2.5-coder-1.5b")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    reg = Registry.load()
    print("| model | flash attention off | flash attention on |\n|---|---|---|")
    for name in args.models.split(","):
        path = fetch(reg.model(name), progress=False)
        off, on = (max_batch_difference(path, fa, args.threads) for fa in (False, True))
        print(f"| {name} | {off:.3f} | {on:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
