"""The relay over inference servers against the same models in process (issue 30's measurements).

Part 1, the default pair on two llama.cpp `llama-server`s (hand-offs by token id, the unchecked relay):
`relaygen bench run --backend openai` and the same bench in process, GSM8K test 0-19, methods large,relay,
greedy, 512 tokens; then accuracy, paired answers, HTTP requests per answer, and each file's cost model.

Part 2, the checked relay and calibration over a scoring server: no server that runs here scores the default
pair correctly (llama-server cannot score; llama-cpp-python's echo is misaligned for models without a BOS
token), so two tiny float32 models that add a BOS token, on two `llama_cpp.server`s. `relaygen calibrate` in
process and over the servers from the same traces (GSM8K 1279-1282, the calibration slice), then the bench
with the checked relay at the profile's cues on GSM8K 0-19 both ways: the same profile, the same cuts.

    python evals/servers_bench.py --out evals/results/bench_servers     # resumable: the benches append

The servers run on 127.0.0.1 with 2 threads each (started and stopped here); the in-process runs use 2 threads.
Both parts run one after the other, never at the same time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny model writer of the test suite

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def relaygen(*args: str) -> None:
    print("$ relaygen " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "relaygen_integrations.cli", *args], check=True, cwd=ROOT)


def records(path: Path) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("type") == "sample"]


def paired(a: Path, b: Path, label_a: str, label_b: str) -> list[str]:
    """Per method: accuracy both ways, answers that agree in correctness, identical texts, requests per answer."""
    ra, rb = ({(r["id"], r["method"]): r for r in records(p)} for p in (a, b))
    lines = [f"| method | correct ({label_a}) | correct ({label_b}) | same correctness | identical texts | "
             f"s/answer ({label_a}) | s/answer ({label_b}) | HTTP requests per answer ({label_b}) |",
             "|---|---|---|---|---|---|---|---|"]
    for method in sorted({m for _, m in ra} & {m for _, m in rb}):
        keys = sorted(k for k in ra if k[1] == method and k in rb)
        x, y = [ra[k] for k in keys], [rb[k] for k in keys]
        requests = [sum(r["models"][role].get("server_requests", 0) for role in ("large", "small")) for r in y]
        lines.append(f"| {method} | {sum(r['correct'] for r in x)}/{len(x)} | {sum(r['correct'] for r in y)}/{len(y)} | "
                     f"{sum(p['correct'] == q['correct'] for p, q in zip(x, y))}/{len(x)} | "
                     f"{sum(p['text'] == q['text'] for p, q in zip(x, y))}/{len(x)} | "
                     f"{sum(r['wall_s'] for r in x) / len(x):.1f} | {sum(r['wall_s'] for r in y) / len(y):.1f} | "
                     f"{sum(requests) / len(requests):.1f} |")
    return lines


def report(path: Path) -> str:
    p = subprocess.run([sys.executable, "-m", "relaygen_integrations.cli", "bench", "report", str(path), "--out",
                        str(path.with_suffix("")) + "_report", "--no-plots", "--print"], capture_output=True, text=True, cwd=ROOT)
    return p.stdout


def _row_ms(path: Path, n: int) -> float:
    """The large model's measured seconds for a row call (a check) of ``n`` tokens, in ms."""
    costs = next(r for r in map(json.loads, path.read_text().splitlines()) if r.get("type") == "costs")["large"]
    return 1000 * costs["row_seconds"][costs["row_sizes"].index(n)]


def part1(out: Path, limit: int) -> list[str]:
    from relaygen_integrations.registry import Registry, model_path
    from relaygen_integrations.testing import LLAMA_SERVER, native_llama_server

    if not LLAMA_SERVER.is_file():
        sys.exit("build llama-server first: bash scripts/build_llama_server.sh")
    reg = Registry.load()
    large, small = "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"
    common = ["bench", "run", "--data", "gsm8k", "--methods", "large,relay", "--limit", str(limit), "--max-tokens",
              "512", "--no-agreement", "--large", large, "--small", small]
    local = out / "gsm8k_in_process.jsonl"
    relaygen(*common, "--threads", "2", "--out", str(local))
    remote = out / "gsm8k_llama_server.jsonl"
    with native_llama_server(model_path(reg.model(large)), n_ctx=4096, threads=2) as large_url, \
            native_llama_server(model_path(reg.model(small)), n_ctx=4096, threads=2) as small_url:
        relaygen(*common, "--backend", "openai", "--large-url", large_url, "--small-url", small_url, "--n-ctx", "4096",
                 "--out", str(remote))
    return ["## Part 1: the default pair on two llama-servers (token-id hand-offs) against in process", "",
            *paired(local, remote, "in process", "llama-server"), "",
            "### bench report, in process", "", "```", report(local).rstrip(), "```", "",
            "### bench report, over llama-server", "", "```", report(remote).rstrip(), "```", ""]


def part2(out: Path, limit: int) -> list[str]:
    from relaygen_integrations.testing import llama_server
    from tiny_gguf import write_tiny_gguf

    models = [write_tiny_gguf(out / f"tiny-bos-{s}.gguf", seed=s, merges=("\u0100 \u0101",), ascii_only=True,
                              add_bos=True, chat_template=CHATML, n_ctx=1024) for s in (0, 1)]
    cues = ["--cue", "e", "--cue", "a", "--cue", "t", "--cue", "o", "--cue", "X", "--cue", "?", "--substring-cues"]
    calibration = ["calibrate", "--data", "gsm8k", "--start", "1279", "--problems", "4", "--samples", "2",
                   "--max-tokens", "96", "--min-occurrences", "1", "--threshold", "-1", "--check-quantile", "0.2",
                   "--large", str(models[0]), "--small", str(models[1]), "--traces", str(out / "tiny.traces.jsonl"), *cues]
    bench = ["bench", "run", "--data", "gsm8k", "--limit", str(limit), "--max-tokens", "96", "--no-agreement",
             "--large", str(models[0]), "--small", str(models[1])]
    relaygen(*calibration, "--threads", "2", "--out", str(out / "tiny_in_process.json"))
    tau = json.loads((out / "tiny_in_process.json").read_text())["check"]["tau"]
    methods = ["--methods", f"large,relay:{out / 'tiny_in_process.json'}+tau={tau:.6g}"]
    relaygen(*bench, *methods, "--threads", "2", "--out", str(out / "tiny_in_process.jsonl"))
    with llama_server(models[0], n_ctx=1024, threads=2) as large_url, llama_server(models[1], n_ctx=1024, threads=2) as small_url:
        server = ["--backend", "openai", "--large-url", large_url, "--small-url", small_url, "--n-ctx", "1024",
                  "--tokenizer", "model"]
        relaygen(*calibration, *server, "--out", str(out / "tiny_llama_cpp_server.json"))
        relaygen(*bench, *methods, *server, "--out", str(out / "tiny_llama_cpp_server.jsonl"))
    a, b = (json.loads((out / f"tiny_{n}.json").read_text()) for n in ("in_process", "llama_cpp_server"))
    same_table = all(x["cue"] == y["cue"] and x["tokens"] == y["tokens"] and (x["delta"] == y["delta"] or (
        x["delta"] is not None and y["delta"] is not None and abs(x["delta"] - y["delta"]) < 1e-4))
        for x, y in zip(a["table"], b["table"]))
    ra, rb = ({r["id"]: r for r in records(out / f"tiny_{n}.jsonl") if r["method"] != "large"}
              for n in ("in_process", "llama_cpp_server"))
    same_cuts = sum(ra[k]["segments"] == rb[k]["segments"] and ra[k]["text"] == rb[k]["text"] for k in ra if k in rb)
    check_ms = [_row_ms(out / f"tiny_{n}.jsonl", 16) for n in ("in_process", "llama_cpp_server")]
    return ["## Part 2: calibration and the checked relay over llama_cpp.server (tiny float32 BOS-adding pair)", "",
            f"- calibration from the same traces: cues in process {a['cues']}, over the servers {b['cues']}; "
            f"tau {a['check']['tau']:.6g} and {b['check']['tau']:.6g}; the cue table the same: {same_table}; "
            f"scoring took {a['cost']['wall_seconds_this_run']['margins']} s in process and "
            f"{b['cost']['wall_seconds_this_run']['margins']} s over the servers",
            f"- checked relay: {same_cuts} of {len(ra)} answers with the same text and the same hand-offs and cuts; "
            f"checking a 16-token sentence (the cost model's row call, median of 3) took {check_ms[0]:.1f} ms in "
            f"process and {check_ms[1]:.1f} ms over the server (one HTTP request)", "",
            *paired(out / "tiny_in_process.jsonl", out / "tiny_llama_cpp_server.jsonl", "in process", "llama_cpp.server"),
            "", "### bench report, over llama_cpp.server", "", "```", report(out / "tiny_llama_cpp_server.jsonl").rstrip(),
            "```", ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="evals/results/bench_servers")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--part", choices=("1", "2", "both"), default="both")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# The relay over servers against in process", "", "Written by `python evals/servers_bench.py` "
             f"(`--limit {args.limit}`); see its docstring for what runs where.", ""]
    if args.part in ("1", "both"):
        lines += part1(out, args.limit)
    if args.part in ("2", "both"):
        lines += part2(out, args.limit)
    (out / ("README.md" if args.part == "both" else f"README_part{args.part}.md")).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
