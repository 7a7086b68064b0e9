"""Protocol test servers for SGLang and vLLM, which need GPUs and cannot run here.

Each implements exactly the request and response fields relaygen's server backend uses, as the released
source defines them, over a real tiny GGUF model run in process (llama.cpp): these are test servers, not
SGLang or vLLM, and the paths they test are protocol-tested only.

- SGLang 0.5.23: ``/generate`` (srt/managers/io_struct.py ``GenerateReqInput``: ``input_ids``,
  ``sampling_params``, ``stream``, ``return_logprob``, ``logprob_start_len``, ``top_logprobs_num``; replies as
  srt/managers/tokenizer_manager.py builds them: cumulative ``output_ids`` while streaming, ``meta_info`` with
  ``completion_tokens``, ``finish_reason``, ``input_token_logprobs`` whose entry at ``logprob_start_len`` is None
  (srt/managers/scheduler_components/logprob_result_processor.py), ``input_top_logprobs``,
  ``output_top_logprobs``, ``cached_tokens``), ``/get_model_info``, ``/tokenize`` (entrypoints/http_server.py).
- vLLM 0.34.0: ``/v1/completions`` with a token-id prompt, ``return_token_ids`` (each stream chunk's
  ``choices[0].token_ids``), ``prompt_logprobs`` (``{id: {logprob, rank, decoded_token}}`` per prompt position,
  None first), ``logprobs`` with ``return_tokens_as_token_ids`` (keys ``token_id:ID``)
  (entrypoints/openai/completion/protocol.py); ``/inference/v1/generate`` (entrypoints/scale_out/
  token_in_token_out/protocol.py: ``token_ids``, ``sampling_params`` with ``prompt_logprobs``,
  ``prompt_logprob_start``, ``skip_reading_prefix_cache``; 403 unless started with ``--enable-scale-out``;
  ``prompt_logprob_start >= len - 1`` rejected as in v1/engine/input_processor.py); ``/v1/models``
  (``owned_by: "vllm"``); ``/tokenize``.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from relaygen_integrations.backends.llamacpp import LlamaCppBackend
from relaygen_integrations.core.sampling import Sampler, SamplingParams


class TinyModel:
    """The tiny model behind a test server: one request at a time."""

    def __init__(self, path: Path):
        self.backend = LlamaCppBackend(path, n_ctx=512, n_threads=1, chat_format="raw")
        self.lock = threading.Lock()

    def generate(self, ids, max_tokens, temperature=1.0, top_p=1.0, top_k=0, seed=0):
        """Yield (token, is the end) up to ``max_tokens`` (the end-of-generation token included)."""
        sampler = Sampler(SamplingParams(temperature=temperature, top_p=top_p, top_k=max(top_k, 0), seed=seed,
                                         max_tokens=max_tokens).validated())
        context = list(ids)
        with self.lock:
            for _ in range(max_tokens):
                token = self.backend.next_token(context, sampler).token
                context.append(token)
                end = self.backend.is_end_of_generation(token)
                yield token, end
                if end:
                    return

    def logprob_rows(self, ids, n):
        """Log-softmax rows predicting the last ``n`` tokens of ``ids`` and the next one."""
        with self.lock:
            rows, _ = self.backend.check_rows(list(ids), n)
        rows = rows.astype(np.float64)
        return rows - np.log(np.exp(rows - rows.max(1, keepdims=True)).sum(1, keepdims=True)) - rows.max(1, keepdims=True)

    def piece(self, token):
        return self.backend.token_bytes(token).decode("utf-8", errors="replace")


def _top(row, n):
    ids = np.argsort(-row, kind="stable")[:n]
    return [(int(t), float(row[t])) for t in ids]


def _rank(row, token):
    return int((row > row[token]).sum()) + 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    routes: dict = {}
    faults: dict = {}  # the next ``count`` POSTs answer ``status``, or are dropped unanswered (``status`` 0)

    def log_message(self, *args):
        pass

    def _reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for event in events:
                self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client closed the stream: stop generating
        self.close_connection = True

    def do_GET(self):
        route = self.routes.get(("GET", self.path))
        return self._reply(404, {"detail": "Not Found"}) if route is None else self._reply(200, route(self))

    def do_POST(self):
        route = self.routes.get(("POST", self.path))
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if route is None:
            return self._reply(404, {"detail": "Not Found"})
        if self.faults.get("count", 0) > 0:
            self.faults["count"] -= 1
            if self.faults["status"]:
                return self._reply(self.faults["status"], {"error": {"message": "injected fault"}})
            self.close_connection = True  # as a server that died: the connection closes with no answer
            return
        result = route(self, body)
        if isinstance(result, tuple):
            return self._reply(*result)
        if result is not None:
            self._reply(200, result)


def sglang_routes(model: TinyModel, incremental: bool = False) -> dict:
    def generate(h, body):
        ids, sp = body["input_ids"], body.get("sampling_params", {})
        args = (sp.get("max_new_tokens", 128), sp.get("temperature", 1.0), sp.get("top_p", 1.0), sp.get("top_k", -1),
                sp.get("sampling_seed", 0))
        if body.get("return_logprob"):
            start, n_top = body.get("logprob_start_len", -1), body.get("top_logprobs_num", 0)
            rows = model.logprob_rows(ids, len(ids) - start - 1)
            gen = [t for t, _ in model.generate(ids, 1, *args[1:])]
            return {"text": model.piece(gen[0]), "output_ids": gen, "meta_info": {
                "input_token_logprobs": [[None, ids[start], None]] + [[float(r[t]), t, None] for r, t in zip(rows, ids[start + 1:])],
                "input_top_logprobs": [None] + [[[lp, t, None] for t, lp in _top(r, n_top)] for r in rows[:-1]],
                "output_token_logprobs": [[float(rows[-1][gen[0]]), gen[0], None]],
                "output_top_logprobs": [[[lp, t, None] for t, lp in _top(rows[-1], n_top)]],
                "cached_tokens": start, "completion_tokens": 1, "finish_reason": {"type": "length", "length": 1}}}

        def events():
            out = []
            for token, end in model.generate(ids, *args):
                out.append(token)
                done = end or len(out) == args[0]
                reason = {"type": "stop", "matched": token} if end else {"type": "length", "length": args[0]} if done else None
                sent = [token] if incremental else list(out)  # --incremental-streaming-output: the new ids only
                yield {"text": "", "output_ids": sent, "meta_info": {"completion_tokens": len(out), "finish_reason": reason}}
        h._stream(events())

    return {("GET", "/get_model_info"): lambda h: {"model_path": str(model.backend.path), "is_generation": True},
            ("GET", "/v1/models"): lambda h: {"object": "list", "data": [{"id": "tiny", "owned_by": "sglang"}]},
            ("POST", "/tokenize"): lambda h, b: {"tokens": model.backend.tokenize(b["prompt"].encode()), "count": 0,
                                                 "max_model_len": 512},
            ("POST", "/generate"): generate}


def _prompt_logprobs(model, ids, first, n_top):
    """vLLM's prompt log-probs: None up to ``first``, then ``{id: {logprob, rank, decoded_token}}`` (the top-N
    and the prompt token), and the row after the prompt."""
    rows = model.logprob_rows(ids, len(ids) - first)
    out = [None] * first
    for r, t in zip(rows, ids[first:]):
        entry = {str(i): {"logprob": lp, "rank": k + 1, "decoded_token": model.piece(i)} for k, (i, lp) in enumerate(_top(r, n_top))}
        entry[str(t)] = {"logprob": float(r[t]), "rank": _rank(r, t), "decoded_token": model.piece(t)}
        out.append(entry)
    return out, rows[-1]


def vllm_routes(model: TinyModel, scale_out: bool) -> dict:
    def completions(h, body):
        ids, n_top = body["prompt"], body.get("logprobs") or 0
        args = (body.get("max_tokens", 16), body.get("temperature", 1.0), body.get("top_p", 1.0), body.get("top_k", 0),
                body.get("seed", 0))
        if body.get("stream"):
            if body.get("prompt_logprobs") is not None:
                return 400, {"error": {"message": "`prompt_logprobs` are not available when `stream=True`."}}

            def events():
                count = 0
                for token, end in model.generate(ids, *args):
                    count += 1
                    reason = "stop" if end else "length" if count == args[0] else None
                    yield {"choices": [{"index": 0, "text": "" if end else model.piece(token), "token_ids": [token],
                                        "finish_reason": reason}]}
            return h._stream(events())
        first = len(ids) if body.get("prompt_logprobs") is None else 1
        prompt, last = _prompt_logprobs(model, ids, first, body.get("prompt_logprobs") or 0)
        gen = [t for t, _ in model.generate(ids, 1, *args[1:])]
        top = {f"token_id:{t}": lp for t, lp in _top(last, n_top)}
        return {"choices": [{"index": 0, "text": model.piece(gen[0]), "token_ids": gen, "finish_reason": "length",
                             "prompt_logprobs": prompt if body.get("prompt_logprobs") is not None else None,
                             "logprobs": {"tokens": [f"token_id:{gen[0]}"], "top_logprobs": [top]}}]}

    def generate(h, body):
        if not scale_out:
            return 403, {"error": {"message": "Scale-out endpoints are disabled. Restart vllm serve with --enable-scale-out"}}
        ids, sp = body["token_ids"], body["sampling_params"]
        start = sp.get("prompt_logprob_start")
        if start is not None and start >= len(ids) - 1:
            return 400, {"error": {"message": "prompt_logprob_start must be less than the prompt length - 1"}}
        first = len(ids) if sp.get("prompt_logprobs") is None else (start or 0) + 1
        prompt, last = _prompt_logprobs(model, ids, first, sp.get("prompt_logprobs") or 0)
        gen = [t for t, _ in model.generate(ids, sp.get("max_tokens", 16), sp.get("temperature", 1.0))][:1]
        tops = [{"token_id": t, "logprob": lp, "rank": k + 1} for k, (t, lp) in enumerate(_top(last, sp.get("logprobs") or 0))]
        content = [{"token_id": gen[0], "logprob": float(last[gen[0]]), "rank": _rank(last, gen[0]), "top_logprobs": tops}]
        return {"choices": [{"index": 0, "token_ids": gen, "finish_reason": "length", "logprobs": {"content": content}}],
                "prompt_logprobs": prompt if sp.get("prompt_logprobs") is not None else None}

    return {("GET", "/v1/models"): lambda h: {"object": "list", "data": [{"id": "tiny", "owned_by": "vllm",
                                                                          "max_model_len": 512}]},
            ("POST", "/tokenize"): lambda h, b: {"tokens": model.backend.tokenize(b["prompt"].encode()), "count": 0,
                                                 "max_model_len": 512},
            ("POST", "/v1/completions"): completions, ("POST", "/inference/v1/generate"): generate}


@contextmanager
def protocol_server(kind: str, model_path: Path, scale_out: bool = True, incremental: bool = False):
    """An SGLang or vLLM protocol test server on 127.0.0.1; yields its base URL and its faults (set
    ``faults.update(status=500, count=2)`` to fail the next two POSTs, ``status=0`` to drop them).
    ``scale_out``: vLLM's ``--enable-scale-out``; ``incremental``: SGLang's ``--incremental-streaming-output``."""
    model = TinyModel(model_path)
    routes = sglang_routes(model, incremental) if kind == "sglang" else vllm_routes(model, scale_out)
    faults = {"status": 500, "count": 0}
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"routes": routes, "faults": faults}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", faults
    finally:
        server.shutdown()
        server.server_close()
        model.backend.close()
