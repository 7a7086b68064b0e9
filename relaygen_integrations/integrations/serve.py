"""``relaygen serve``: an OpenAI-compatible endpoint for a pair, on the LiteLLM proxy, with no config to write.

The command writes the proxy's config (the pair as the one model, this module's ``handler`` as its
provider, this module's ``check_key`` as its auth when a key is set) and runs LiteLLM's proxy on it. The
handler's options travel to the proxy process as JSON in ``RELAYGEN_SERVE_OPTIONS``, the key in
``RELAYGEN_SERVE_KEY``. Without a key the endpoint is open (it listens on 127.0.0.1 by default); with
one, a request without it or with another is a 401 saying so (the proxy's own master key, without a
database, answers a wrong key with ``400 No connected db``). The proxy runs in a session of its own, which
``supervise`` stops whole on a stop signal; ``serve_logging`` keeps a client's mistake to one log line.
"""

from __future__ import annotations

import hmac
import importlib.util
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import ConfigError, RelayGenError

ENV_OPTIONS, ENV_KEY, ENV_MODEL = "RELAYGEN_SERVE_OPTIONS", "RELAYGEN_SERVE_KEY", "RELAYGEN_SERVE_MODEL"


def proxy_config(model_name: str, model: str) -> dict:
    """The LiteLLM proxy config ``relaygen serve`` runs: one model, this module's handler and key check.
    The proxy refuses to start without a master key; the one given is random and unused, since the key
    check decides every request first."""
    return {
        "model_list": [{"model_name": model_name, "litellm_params": {"model": f"relaygen/{model}"}}],
        "litellm_settings": {"custom_provider_map": [
            {"provider": "relaygen", "custom_handler": f"{__name__}.handler"}]},
        "general_settings": {"custom_auth": f"{__name__}.check_key", "master_key": f"sk-{secrets.token_hex(32)}"},
    }


async def check_key(request, api_key: str):
    """The proxy's auth hook: with a served key, the request's bearer token must be it; without, all pass."""
    from litellm.proxy._types import ProxyErrorTypes, ProxyException, UserAPIKeyAuth

    from .serve_logging import NO_KEY, WRONG_KEY

    expected = os.environ.get(ENV_KEY)
    sent = (api_key or "").removeprefix("Bearer ").strip()
    if expected is None or sent and hmac.compare_digest(sent.encode(), expected.encode()):
        return UserAPIKeyAuth(api_key=sent or None)
    why = NO_KEY if not sent else WRONG_KEY
    raise ProxyException(message=f"{why}: send the key `relaygen serve` was started with (--key or "
                                 f"${ENV_KEY}) as the bearer token (OpenAI clients: api_key=...)",
                         type=ProxyErrorTypes.auth_error, param="api_key", code=401)


def _handler():
    """The provider the proxy imports; in the proxy process it loads the served pair at start-up, so the
    first request does not wait for it and a pair that does not load ends the start with one line."""
    from . import serve_logging
    from .litellm import RelayGenProvider

    serve_logging.install()
    provider = RelayGenProvider(**json.loads(os.environ.get(ENV_OPTIONS, "{}")))
    model = os.environ.get(ENV_MODEL)
    if model:
        try:
            provider._engine(model)
        except RelayGenError as e:
            print(f"relaygen serve: error: {e}", file=sys.stderr, flush=True)
            os._exit(2)
    return provider


def serve(pair: str | None, options: dict, host: str = "127.0.0.1", port: int = 4000, key: str | None = None,
          model_name: str | None = None) -> int:
    """Check the options here (one line for a mistake), then run the proxy until it is stopped."""
    import yaml

    from ..registry import Registry
    from .litellm import RelayGenProvider

    pair = Registry.load(options.get("registry_path")).pair(pair).name  # an unknown pair fails here
    RelayGenProvider(**options).close()  # every option is checked here, before the proxy starts
    if key is not None and not key.strip():
        raise ConfigError("the API key is empty: pass --key with a value, or leave it out for an open endpoint")
    grace = os.environ.get("GRACEFUL_SHUTDOWN_TIMEOUT", str(STOP_GRACE_S))
    try:
        grace_s = float(grace)
    except ValueError:
        grace_s = math.nan
    if not 0 <= grace_s < math.inf:
        raise ConfigError(f"$GRACEFUL_SHUTDOWN_TIMEOUT must be a number of seconds >= 0, not {grace!r}")
    litellm_cli = shutil.which("litellm", path=str(Path(sys.executable).parent)) or shutil.which("litellm")
    if litellm_cli is None or importlib.util.find_spec("fastapi") is None:
        raise ConfigError("relaygen serve runs LiteLLM's proxy: pip install 'relaygen-integrations[serve]'")
    folder = Path(tempfile.mkdtemp(prefix="relaygen-serve-"))
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(proxy_config(model_name or pair, pair), sort_keys=False))
    config.chmod(0o600)
    env = {**os.environ, ENV_OPTIONS: json.dumps(options), ENV_MODEL: pair, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("LITELLM_MASTER_KEY", None)  # the served key is ours; a master key would want a database
    env.pop(ENV_KEY, None)
    env["GRACEFUL_SHUTDOWN_TIMEOUT"] = str(grace_s)  # LiteLLM's: uvicorn then cancels what is still running
    if key is not None:
        env[ENV_KEY] = key
    print(f"relaygen serve: {model_name or pair} at http://{host}:{port}/v1 "
          f"({'API key required' if key else 'no API key'}; config {config})", file=sys.stderr, flush=True)
    # one worker: each would load the models, and one engine already serves max_batch requests at once
    proxy = subprocess.Popen([litellm_cli, "--config", str(config), "--host", host, "--port", str(port),
                              "--num_workers", "1"], env=env, start_new_session=True,
                             preexec_fn=_die_with_parent())
    try:
        return supervise(proxy, grace_s)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, n))
STOP_GRACE_S = 5.0  # default time in-flight requests get to finish after a stop signal (then uvicorn cancels them)
KILL_AFTER_S = 5.0  # past the grace, the proxy's process group is killed outright


def supervise(proxy: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> int:
    """Wait for the proxy. SIGTERM, SIGINT or SIGHUP here stops its whole process group (it runs in a
    session of its own, so nothing of it outlives us): a SIGTERM, on which uvicorn stops accepting,
    gives in-flight requests ``grace_s`` and cancels the rest; a SIGKILL if anything is left after
    ``KILL_AFTER_S`` more. Returns 128 + the signal then (the shell's convention), and non-zero, saying
    why, when the proxy ends without being asked to."""
    received: list[int] = []

    def on_signal(signum, _frame):
        if not received:
            received.append(signum)
            print(f"relaygen serve: {signal.Signals(signum).name}: stopping (in-flight requests get "
                  f"{grace_s:g} s)", file=sys.stderr, flush=True)
            _signal_group(proxy.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    try:
        kill_at = None
        while (code := proxy.poll()) is None:
            if received and kill_at is None:
                kill_at = time.monotonic() + grace_s + KILL_AFTER_S
            if kill_at is not None and time.monotonic() > kill_at:
                _signal_group(proxy.pid, signal.SIGKILL)
            time.sleep(0.1)
    finally:
        for s, handler_before in previous.items():
            signal.signal(s, handler_before)
        _signal_group(proxy.pid, signal.SIGKILL)  # whatever the proxy started and left behind
    if received:
        return 128 + received[0]
    why = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
    print(f"relaygen serve: error: the LiteLLM proxy {why} (its log is above); the endpoint is down",
          file=sys.stderr, flush=True)
    return code if code > 0 else 1


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):  # the group is gone already
        pass


def _die_with_parent():
    """A hook for the proxy's process before it starts (Linux): a SIGTERM when ``relaygen serve`` dies, even
    by SIGKILL, which no handler of ours sees. ``prctl`` is looked up here, before the fork: the child then
    only calls it (a fork of a threaded process must not import or allocate before exec)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


handler = _handler()
