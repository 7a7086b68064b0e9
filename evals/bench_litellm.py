"""Time to first token and throughput through LiteLLM versus calling the engine directly.

For each prompt the three ways run back to back (direct `engine.stream`, `litellm.completion(stream=True)`,
`await litellm.acompletion(stream=True)`), in a rotating order, on the same loaded engine (the provider's),
greedy, so all three write the same tokens. Time to first token: from the call to the first text delta.
The direct calls go to the provider's own engine (``ConcurrentEngine``: llama.cpp evaluates on its one
scheduler thread whoever calls, as llama-cpp-python's OpenMP build wants: docs/design.md, limits).

    python evals/bench_litellm.py --problems 5 --max-tokens 128 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relaygen_integrations import SamplingParams  # noqa: E402
from relaygen_integrations.integrations.litellm import RelayGenProvider, register  # noqa: E402
from relaygen_integrations.math_tasks import load_problems, math_prompt  # noqa: E402

import litellm  # noqa: E402  (after the provider: it switches off litellm's price-list download)
from litellm.types.utils import Delta, ModelResponseStream, StreamingChoices  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "gsm8k_test.jsonl"


def direct(engine, messages, max_tokens):
    t0, first, text = time.perf_counter(), None, ""
    for event in engine.stream(messages, SamplingParams(temperature=0, max_tokens=max_tokens)):
        if event.kind == "text" and event.text:
            first = first or time.perf_counter() - t0
            text += event.text
        elif event.kind == "done":
            tokens = event.result.stats.generated_tokens
    return first, time.perf_counter() - t0, tokens, text


class _Timing:
    """Time to first text, text and token count of one streamed LiteLLM response."""

    def __init__(self):
        self.t0, self.first, self.text, self.tokens = time.perf_counter(), None, "", None

    def take(self, chunk) -> None:
        delta = chunk.choices[0].delta.content if chunk.choices else None
        if delta:
            self.first = self.first or time.perf_counter() - self.t0
            self.text += delta
            relay = (chunk.provider_specific_fields or {}).get("relay")
            if relay:  # on the last text chunk
                self.tokens = relay["large_tokens"] + relay["small_tokens"]

    def result(self):
        return self.first, time.perf_counter() - self.t0, self.tokens, self.text


def through_litellm(model, messages, max_tokens):
    timing = _Timing()
    for chunk in litellm.completion(model=model, messages=messages, stream=True, temperature=0, max_tokens=max_tokens):
        timing.take(chunk)
    return timing.result()


async def through_litellm_async(model, messages, max_tokens):
    timing = _Timing()
    async for chunk in await litellm.acompletion(model=model, messages=messages, stream=True, temperature=0,
                                                 max_tokens=max_tokens):
        timing.take(chunk)
    return timing.result()


class _Instant(litellm.CustomLLM):
    """A provider whose chunks cost nothing to make: what is left is LiteLLM's own overhead."""

    def streaming(self, *args, **kwargs):
        for _ in range(300):
            yield ModelResponseStream(choices=[StreamingChoices(index=0, delta=Delta(content="x"))])

    async def astreaming(self, *args, **kwargs):
        for chunk in self.streaming():
            yield chunk


def litellm_overhead(repeats: int = 7) -> dict[str, tuple[float, float]]:
    """Median milliseconds from the call to the first chunk, and per further chunk, sync and async."""
    litellm.custom_provider_map.append({"provider": "instant", "custom_handler": _Instant()})
    messages = [{"role": "user", "content": "x"}]

    def sync_once():
        t0 = time.perf_counter()
        it = iter(litellm.completion(model="instant/x", messages=messages, stream=True))
        next(it)
        t1 = time.perf_counter()
        n = sum(1 for _ in it)
        return t1 - t0, (time.perf_counter() - t1) / n

    async def async_once():
        t0 = time.perf_counter()
        it = (await litellm.acompletion(model="instant/x", messages=messages, stream=True)).__aiter__()
        await it.__anext__()
        t1 = time.perf_counter()
        n = 0
        async for _ in it:
            n += 1
        return t1 - t0, (time.perf_counter() - t1) / n

    out = {}
    for name, once in (("sync", sync_once), ("async", lambda: asyncio.run(async_once()))):
        once()
        runs = [once() for _ in range(repeats)]
        out[name] = (statistics.median(r[0] for r in runs) * 1e3, statistics.median(r[1] for r in runs) * 1e3)
    return out


def concurrency(model: str, n: int, max_tokens: int) -> None:
    """Requests to one engine are serialised, so N at once should take as long as N one by one."""
    prompts = [[{"role": "user", "content": math_prompt(p["problem"])}] for p in load_problems(DATA, limit=n)]

    async def together():
        calls = [litellm.acompletion(model=model, messages=m, temperature=0, max_tokens=max_tokens) for m in prompts]
        return await asyncio.gather(*calls)

    t0 = time.perf_counter()
    alone = [litellm.completion(model=model, messages=m, temperature=0, max_tokens=max_tokens) for m in prompts]
    t1 = time.perf_counter()
    at_once = asyncio.run(together())
    t2 = time.perf_counter()
    same = sum(a.choices[0].message.content == b.choices[0].message.content for a, b in zip(alone, at_once))
    print(f"\n{n} requests one by one: {t1 - t0:.1f} s; all at once (acompletion): {t2 - t1:.1f} s "
          f"(ratio {(t2 - t1) / (t1 - t0):.2f}); identical texts: {same}/{n}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default="qwen2.5-coder-1.5b+0.5b")
    ap.add_argument("--problems", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2, help="passes over the problems")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--concurrent", type=int, default=0,
                    help="also time N different requests sent at once (acompletion) against the same N one by one")
    args = ap.parse_args()
    # the unchecked relay, as measured in evals/results/litellm_overhead.md (before the checked default)
    provider = register(RelayGenProvider(check="off", **({"n_threads": args.threads} if args.threads else {})))
    model = f"relaygen/{args.pair}"
    litellm.completion(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)  # load + warm up
    engine = provider._engines[args.pair]
    ways = {
        "engine.stream (direct)": lambda m: direct(engine, m, args.max_tokens),
        "litellm.completion(stream=True)": lambda m: through_litellm(model, m, args.max_tokens),
        "litellm.acompletion(stream=True)": lambda m: asyncio.run(through_litellm_async(model, m, args.max_tokens)),
    }
    rows = {name: [] for name in ways}
    problems = load_problems(DATA, limit=args.problems)
    for r in range(args.rounds):
        for i, p in enumerate(problems):
            messages = [{"role": "user", "content": math_prompt(p["problem"])}]
            names = list(ways)
            names = names[(i + r) % 3:] + names[: (i + r) % 3]  # rotate who goes first
            texts = set()
            for name in names:
                first, total, tokens, text = ways[name](messages)
                rows[name].append((first, total, tokens))
                texts.add(text)
            if len(texts) != 1:
                print(f"warning: problem {i}: the three ways wrote different texts", file=sys.stderr)
    print(f"pair {args.pair}, {args.problems} GSM8K problems x {args.rounds} rounds, greedy, max_tokens "
          f"{args.max_tokens}, ways interleaved per problem\n")
    print("| way | time to first token, ms (median, min-max) | tokens/s (median, min-max) | TTFT / direct | tok/s / direct |")
    print("|---|---|---|---|---|")
    base_ttft = statistics.median(r[0] for r in rows["engine.stream (direct)"])
    base_tps = statistics.median(r[2] / r[1] for r in rows["engine.stream (direct)"])
    for name, values in rows.items():
        ttft = [v[0] * 1e3 for v in values]
        tps = [v[2] / v[1] for v in values]
        print(f"| {name} | {statistics.median(ttft):.0f} ({min(ttft):.0f}-{max(ttft):.0f}) | "
              f"{statistics.median(tps):.1f} ({min(tps):.1f}-{max(tps):.1f}) | "
              f"{statistics.median(ttft) / 1e3 / base_ttft:.2f} | {statistics.median(tps) / base_tps:.3f} |")
    if args.concurrent:
        concurrency(model, args.concurrent, args.max_tokens)
    print("\nLiteLLM's own overhead (a provider that makes chunks for free, 300 chunks):")
    for name, (call, chunk) in litellm_overhead().items():
        print(f"- {name}: {call:.1f} ms from the call to the first chunk, {chunk:.2f} ms per further chunk")


if __name__ == "__main__":
    main()
