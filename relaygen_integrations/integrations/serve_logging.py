"""The log of ``relaygen serve``: a client's mistake is one line, a server failure keeps its traceback.

LiteLLM's proxy logs a 4xx that a provider raised with its whole traceback (it counts a provider's 4xx
as a deployment problem), and an auth failure over two lines. Here the provider is in process, so a 4xx
from it is the client's: a filter on the proxy's loggers rewrites each record carrying a 4xx to one
line, ``relaygen serve: client error 400 (Bad Request): <what was wrong>``, and leaves everything else,
5xx tracebacks included, as it was.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

PROXY_LOGGERS = ("LiteLLM Proxy", "LiteLLM Router", "LiteLLM")


def client_status(error: BaseException | None) -> int | None:
    """The 4xx status an exception stands for (litellm's ``status_code``, ProxyException's ``code``), or None."""
    for name in ("status_code", "code"):
        value = getattr(error, name, None)
        if value is not None and not isinstance(value, bool):
            try:
                status = int(str(value))
            except ValueError:
                continue
            return status if 400 <= status < 500 else None
    return None


def what_was_wrong(error: BaseException) -> str:
    """The exception's message on one line, without LiteLLM's class-name prefix and fallback footer."""
    detail = getattr(error, "detail", None)  # fastapi's HTTPException: the proxy puts {"error": ...} there
    if isinstance(detail, dict) and "error" in detail:
        detail = detail["error"]
    text = str(getattr(error, "message", None) or detail or error)
    first = text.strip().split("\n\n")[0]
    if first.startswith("litellm.") and ": " in first:
        first = first.split(": ", 1)[1]
    return " ".join(first.split())


AUTH_FAILURE = "litellm.proxy.proxy_server.user_api_key_auth(): Exception occured"  # LiteLLM's message
NO_KEY, WRONG_KEY = "no API key was sent", "the API key is wrong"  # serve.check_key's 401s


class ClientErrorsOnOneLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(AUTH_FAILURE) and record.exc_info is None and record.args:
            # an auth failure LiteLLM counts as the client's (else it attaches the traceback): its
            # message and the client's address, which LiteLLM writes on a second line
            why = str(record.args[0])
            status = "401 (Unauthorized)" if why.startswith((NO_KEY, WRONG_KEY)) else "(authentication)"
            address = record.args[1] if len(record.args) > 1 else "?"
            record.msg, record.args = "relaygen serve: client error %s: %s (from %s)", (status, why, address)
            return True
        errors = [record.exc_info[1]] if record.exc_info else []
        errors += [a for a in (record.args if isinstance(record.args, tuple) else ()) if isinstance(a, BaseException)]
        if any(isinstance(e, json.JSONDecodeError) for e in errors):
            return False  # the proxy logs a body it cannot parse twice; the second record carries the 400
        for error in errors:
            status = client_status(error)
            if status is not None:
                try:
                    phrase = HTTPStatus(status).phrase
                except ValueError:  # a 4xx code with no standard name
                    phrase = "Client Error"
                record.msg, record.args = "relaygen serve: client error %d (%s): %s", (status, phrase,
                                                                                     what_was_wrong(error))
                record.exc_info = record.exc_text = record.stack_info = None
                return True
        return True


def install() -> None:
    """Add the filter to LiteLLM's loggers (in the proxy process; idempotent)."""
    for name in PROXY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ClientErrorsOnOneLine) for f in logger.filters):
            logger.filters.insert(0, ClientErrorsOnOneLine())  # before LiteLLM's, which turn args to text
