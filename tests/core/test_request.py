"""A request is prepared once (rendered, validated, tokenised), runs from its ``Request``, and is cancelled
by whoever holds it, whatever the backend. Scripted models (real backends of the protocol) count the work."""

import pytest

from relaygen_integrations import ConfigError, RelayConfig, RelayEngine, SamplingParams
from relaygen_integrations.core.request import Request
from relaygen_integrations.errors import Cancelled, ContextWindowError
from scripted import ScriptedBackend

SCRIPT = ["We", " start", " with", " the", " numbers", ".", " Now", ",", " we", " add", " 3", " to", " it", ".",
          " Then", " done", "."]
GREEDY = SamplingParams(temperature=0, max_tokens=200)


class Counting(ScriptedBackend):
    """A scripted model that counts how often it renders and tokenises a prompt."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.rendered = self.tokenised = 0

    def chat_prompt(self, messages):
        self.rendered += 1
        return super().chat_prompt(messages)

    def tokenize(self, text, special=False, add_bos=False):
        self.tokenised += 1
        return super().tokenize(text, special, add_bos)


def engine(**cfg):
    return RelayEngine(Counting(SCRIPT), Counting(SCRIPT), ["Now,"], RelayConfig(**cfg))


def test_a_request_is_rendered_and_tokenised_once_then_runs_without_preparing_again():
    e = engine()
    large, small = e.large, e.small
    messages = [{"role": "user", "content": "add"}]
    large.rendered = small.rendered = 0  # the engine's start-up probe of both templates
    e.prepare(messages, GREEDY)
    assert (large.rendered, small.rendered) == (2, 0)  # the large model's template, and once per conversation
    large.rendered = large.tokenised = small.tokenised = 0  # shape its placeholder rendering (chat.py)
    request = e.prepare(messages, GREEDY)
    assert isinstance(request, Request) and request.params.seed is not None  # a seed is fixed once, here
    assert set(request.prompt_ids) == {"large", "small"}
    assert (large.rendered, small.rendered) == (1, 0)
    pieces = large.tokenised
    assert pieces == small.tokenised == 3  # template, content, template: once each
    r = e.generate(request)
    assert r.text == "".join(SCRIPT) and r.seed == request.params.seed
    assert (large.rendered, large.tokenised, small.tokenised) == (1, pieces, pieces)  # nothing again


def test_check_is_prepare_and_a_bad_request_fails_there_before_any_cache_is_touched():
    e = engine()
    assert e.check == e.prepare
    with pytest.raises(ConfigError, match="max_tokens must be a positive integer"):
        e.prepare("add", SamplingParams(max_tokens=0))
    with pytest.raises(ConfigError, match="the prompt is empty"):
        e.prepare("   ")
    small = RelayEngine(Counting(SCRIPT, n_ctx=8), Counting(SCRIPT, n_ctx=8), ["Now,"])
    with pytest.raises(ContextWindowError, match="longer than the large model's context window of 8"):
        small.prepare("a prompt that is much longer than eight tokens")
    assert small.large.tokens == [] and small.small.tokens == []  # nothing evaluated


def test_a_model_that_takes_no_part_is_not_tokenised_for():
    e = engine(mode="large")
    request = e.prepare("add", GREEDY)
    assert list(request.prompt_ids) == ["large"] and e.small.tokenised == 0


@pytest.mark.parametrize("mode", ["relay", "large", "small"])
def test_a_cancelled_request_stops_at_its_next_step_on_any_backend(mode):
    e = engine(mode=mode)
    request = e.prepare("add", GREEDY)
    events = e.stream(request)
    first = next(events)
    assert first.kind in ("text", "switch")
    request.cancel()
    with pytest.raises(Cancelled):
        list(events)
    r = e.generate("add", GREEDY)  # the engine is free again, and the next request runs whole
    assert r.stats.finish_reason == "stop"


def test_a_request_cancelled_before_it_starts_writes_nothing():
    e = engine()
    request = e.prepare("add", GREEDY)
    request.cancel()
    with pytest.raises(Cancelled):
        e.generate(request)
    assert e.large.tokens == []  # no model step was taken


class Rewriting(ScriptedBackend):
    """A template that changes contents beyond trimming (upper-cases them), and a control token ``<ctl>``."""

    def chat_prompt(self, messages):
        return super().chat_prompt([{**m, "content": m["content"].upper()} for m in messages])

    def tokenize(self, text, special=False, add_bos=False):
        ids = super().tokenize(text.replace(b"<ctl>", b""), special, add_bos)
        return ids + [self.eos] if special and b"<ctl>" in text else ids  # the control token's id


def test_a_template_that_rewrites_contents_tokenises_whole_unless_a_content_holds_control_text():
    e = RelayEngine(Rewriting(SCRIPT), Rewriting(SCRIPT), ["Now,"])
    request = e.prepare("add", GREEDY)
    assert request.prompt.content_spans is None  # cannot be located: the whole text, as rendered
    assert request.prompt_ids["large"] == e.large.prompt_tokens(request.prompt_text)
    assert e.prepare("   trimmed  ", GREEDY).prompt.content_spans is None
    with pytest.raises(ConfigError, match="holds control-token text"):
        e.prepare("add <ctl>", GREEDY)


def test_a_template_that_trims_contents_still_has_them_located():
    class Trimming(ScriptedBackend):
        def chat_prompt(self, messages):
            return super().chat_prompt([{**m, "content": m["content"].strip()} for m in messages])

    e = RelayEngine(Trimming(SCRIPT), Trimming(SCRIPT), ["Now,"])
    prompt = e.prepare("  add  ", GREEDY).prompt
    (span,) = prompt.content_spans
    assert prompt.text[span[0]:span[1]] == "add"
