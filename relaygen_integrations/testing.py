"""Start llama-cpp-python's OpenAI-compatible server for one GGUF on 127.0.0.1: for trying the openai
backend on one machine, for its tests (a real server, never a mock) and for benchmarks."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def llama_server(model: Path, n_ctx: int = 1024, threads: int = 1, timeout: float = 120.0) -> Iterator[str]:
    """``python -m llama_cpp.server`` for one GGUF; yields its base URL and stops it afterwards."""
    port = free_port()
    with _serving([sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                   "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--n_threads_batch",
                   str(threads), "--interrupt_requests", "False"],  # queue concurrent requests (its default
                  port, "llama_cpp.server", timeout) as url:      # cuts the running stream short)
        yield url


LLAMA_SERVER = Path(__file__).resolve().parents[1] / "build" / "llama-server" / "bin" / "llama-server"


@contextmanager
def native_llama_server(model: Path, n_ctx: int = 1024, threads: int = 1, parallel: int = 1,
                        binary: Path = LLAMA_SERVER, timeout: float = 120.0) -> Iterator[str]:
    """llama.cpp's own ``llama-server`` (``scripts/build_llama_server.sh`` builds it) for one GGUF, with
    ``parallel`` slots of ``n_ctx`` tokens each; yields its base URL and stops it afterwards."""
    port = free_port()
    with _serving([str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                   "-c", str(n_ctx * parallel), "-np", str(parallel), "-t", str(threads)],
                  port, "llama-server", timeout) as url:
        yield url


@contextmanager
def _serving(cmd: list[str], port: int, what: str, timeout: float) -> Iterator[str]:
    """Run a server process until its ``/v1/models`` answers 200; yield its base URL; stop it after."""
    import requests

    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{what} exited:\n{log.read()[-2000:]}")
            try:
                if requests.get(url + "/models", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start within {timeout} s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def wait_until_serving(client, proc: subprocess.Popen, what: str, timeout: float = 180.0,
                       log: "Callable[[], str] | None" = None) -> None:
    """Poll an OpenAI-compatible server (``client``: an ``openai.OpenAI``) started as ``proc`` until it lists
    its models; raise with the end of its stderr (or of ``log()``, where stderr goes to a file) if it exits
    first, or once ``timeout`` seconds pass."""
    import openai

    deadline = time.monotonic() + timeout
    while True:
        try:
            client.models.list()
            return
        except openai.APIConnectionError:
            if proc.poll() is not None:
                tail = (log() if log else proc.stderr.read() if proc.stderr else "")[-3000:]
                raise RuntimeError(f"{what} exited: {tail}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start within {timeout:g} s") from None
            time.sleep(0.5)
