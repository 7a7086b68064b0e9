"""`relaygen serve` under a process manager: a stop signal ends its whole process tree and frees the port;
a proxy that dies on its own ends `relaygen serve` with a non-zero status and a reason. Real processes,
a real stream in flight, on a tiny float32 model that never ends its text."""

import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="relaygen serve runs the LiteLLM proxy: litellm[proxy]")
openai = pytest.importorskip("openai")
psutil = pytest.importorskip("psutil")
if not sys.platform.startswith("linux"):
    pytest.skip("process groups and PR_SET_PDEATHSIG are checked on Linux", allow_module_level=True)

from relaygen_integrations.testing import free_port, wait_until_serving  # noqa: E402
from tiny_gguf import write_tiny_gguf  # noqa: E402

RELAYGEN = Path(sys.executable).parent / "relaygen"
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
HANG_GUARD_S = 120  # not a timing claim: only how long a broken build may take to fail instead of hanging


def start(tmp_path):
    """`relaygen serve` on an endless tiny model; returns (process, client, port, stderr file)."""
    model = write_tiny_gguf(tmp_path / "endless.gguf", seed=0, endless=True, n_ctx=4096, chat_template=CHATML)
    port, log = free_port(), (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen([str(RELAYGEN), "serve", "--pair", "smollm2-135m-self", "--large", str(model),
                             "--small", str(model), "--mode", "large", "--n-ctx", "4096", "--threads", "1",
                             "--max-batch", "2", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=log)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0,
                           timeout=HANG_GUARD_S)
    wait_until_serving(client, proc, "relaygen serve", log=lambda: log.seek(0) or log.read())
    return proc, client, port, log


def port_is_free(port: int) -> bool:
    """Whether a restarted server could listen there (with SO_REUSEADDR, as uvicorn does: the closed
    connections' TIME_WAIT entries do not hold a port, a listener does)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def alive(pids) -> list[int]:
    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name)
def test_a_stop_signal_ends_the_whole_process_tree_and_frees_the_port(tmp_path, sig):
    """SIGKILL cannot be handled: the proxy learns of it from the kernel (PR_SET_PDEATHSIG)."""
    proc, client, port, log = start(tmp_path)
    tree = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    assert len(tree) >= 2  # relaygen serve and the LiteLLM proxy it runs
    stream = client.chat.completions.create(model="smollm2-135m-self", messages=[{"role": "user", "content": "go"}],
                                            temperature=0, max_tokens=4000, stream=True)
    next(iter(stream))  # a request in flight, which the model would never end by itself
    ended = threading.Event()

    def drain():
        try:
            for _ in stream:
                pass
        except Exception:  # the server cut the stream: what a stop may do to it
            pass
        ended.set()

    threading.Thread(target=drain, daemon=True).start()
    proc.send_signal(sig)
    code = proc.wait(HANG_GUARD_S)
    psutil.wait_procs([psutil.Process(p) for p in alive(tree)], timeout=HANG_GUARD_S)
    assert alive(tree) == [], "a process of relaygen serve outlived it"
    assert code == (128 + sig if sig != signal.SIGKILL else -sig)
    assert ended.wait(HANG_GUARD_S), "the in-flight stream was neither finished nor cancelled"
    assert port_is_free(port)
    log.seek(0)
    if sig != signal.SIGKILL:
        assert f"relaygen serve: {sig.name}: stopping" in log.read()


def test_serve_exits_non_zero_and_says_why_when_its_proxy_dies(tmp_path):
    proc, _client, port, log = start(tmp_path)
    (proxy,) = psutil.Process(proc.pid).children()
    proxy.kill()
    assert proc.wait(HANG_GUARD_S) == 1
    log.seek(0)
    assert "relaygen serve: error: the LiteLLM proxy was killed by SIGKILL" in log.read()
    assert port_is_free(port)
