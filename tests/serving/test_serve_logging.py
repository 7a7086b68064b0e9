"""The log of `relaygen serve`, record by record: LiteLLM's own proxy logger with the filter `relaygen serve`
installs, fed the exceptions the proxy logs (the end-to-end lines: tests/serving/test_serve.py)."""

import io
import json
import logging

import pytest

litellm = pytest.importorskip("litellm")

from relaygen_integrations.integrations import serve_logging  # noqa: E402


@pytest.fixture
def proxy_log():
    """What LiteLLM's proxy logger writes, with the filter installed, formatted with tracebacks."""
    serve_logging.install()
    logger, out = logging.getLogger("LiteLLM Proxy"), io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)


def raised(error: Exception):
    try:
        raise error
    except Exception as e:
        return e


def test_a_clients_mistake_is_one_line_and_a_server_failure_keeps_its_traceback(proxy_log):
    logger, out = proxy_log
    bad = raised(litellm.BadRequestError(message="max_tokens must be a positive integer, got -5", model="m",
                                         llm_provider="relaygen"))
    logger.error("_handle_llm_api_exception(): Exception occured - litellm_call_id=%s - %s", "id-1", bad,
                 exc_info=bad)
    broken = raised(litellm.APIError(status_code=500, message="the engine broke", model="m", llm_provider="relaygen"))
    logger.error("_handle_llm_api_exception(): Exception occured - litellm_call_id=%s - %s", "id-2", broken,
                 exc_info=broken)
    lines = out.getvalue().splitlines()
    assert lines[0] == "relaygen serve: client error 400 (Bad Request): max_tokens must be a positive integer, got -5"
    assert lines[1].startswith("_handle_llm_api_exception(): Exception occured - litellm_call_id=id-2")
    assert "Traceback (most recent call last):" in lines and "the engine broke" in out.getvalue()
    serve_logging.install()
    assert sum(isinstance(f, serve_logging.ClientErrorsOnOneLine)
               for f in logging.getLogger("LiteLLM Proxy").filters) == 1


def test_a_bad_body_and_a_refused_key_are_one_line_each(proxy_log):
    from litellm.proxy._types import ProxyException

    logger, out = proxy_log
    decode = raised(json.JSONDecodeError("unexpected end of data", '{"model":', 9))
    logger.error("Invalid JSON payload received: %s", decode)  # the proxy logs a bad body twice
    logger.error("Invalid JSON payload received: %s", ProxyException(
        message=f"Invalid JSON payload: {decode}", type="invalid_request_error", param="request_body", code=400))
    logger.error("litellm.proxy.proxy_server.user_api_key_auth(): Exception occured - %s\nRequester IP Address:%s%s",
                 "the API key is wrong: send the key", "127.0.0.1", "")
    assert out.getvalue().splitlines() == [
        "relaygen serve: client error 400 (Bad Request): Invalid JSON payload: unexpected end of data: line 1 "
        "column 10 (char 9)",
        "relaygen serve: client error 401 (Unauthorized): the API key is wrong: send the key (from 127.0.0.1)"]
