"""Every ``relaygen ...`` command line that README.md and the manual (docs/) show is parsed by the real CLI
parser, and its values are checked where the CLI checks them before loading a model (the relay settings, the
sampling settings, bench method names): a renamed or removed flag, or a value the CLI would refuse, fails here."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"(?<!`)`(relaygen [^`]+)`(?!`)")
SHELL_LANGS = {"", "bash", "sh", "console", "shell"}


def shown_commands(text: str) -> list[str]:
    """The relaygen command lines of one page: in shell code blocks (continuation lines joined, comments
    dropped, ``$(relaygen ...)`` substitutions too) and in inline code that starts with ``relaygen``."""
    found = []
    for lang, body in FENCE.findall(text):
        if lang not in SHELL_LANGS:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            found += re.findall(r"\$\((relaygen [^)]*)\)", line)
            if not re.match(r"\s*([A-Z_]+=\S+\s+)*relaygen\b", line):
                continue
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):  # VAR=value relaygen ...
                words = words[1:]
            if words and words[0] == "relaygen":
                found.append(shlex.join(words))
    return found


def named_commands(text: str) -> list[str]:
    """Commands named in running text (`relaygen calibrate --default-check`): a command and some of its
    flags, not a whole command line (a log line such as `relaygen serve: error: ...` is neither)."""
    return [m for m in INLINE.findall(FENCE.sub("", text)) if not re.match(r"relaygen( \w+)*:", m)]


COMMANDS = [(page.relative_to(REPO).as_posix(), cmd) for page in PAGES for cmd in shown_commands(page.read_text())]
NAMED = sorted({(page.relative_to(REPO).as_posix(), cmd) for page in PAGES for cmd in named_commands(page.read_text())})


def test_the_pages_show_commands():
    pages = {page for page, _ in COMMANDS}
    assert "README.md" in pages and len(pages) >= 6
    assert len(COMMANDS) >= 30 and len(NAMED) >= 20


def check_command(argv: list[str]) -> None:
    """Parse as `relaygen` would and run the checks it makes before any model is loaded; raise on a mistake."""
    from relaygen_integrations.cli import build_parser
    from relaygen_integrations.errors import RelayGenError

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0:  # --help, --version
            return
        raise AssertionError(err.getvalue().strip().splitlines()[-1]) from None
    try:
        if args.command in ("generate", "serve"):
            from relaygen_integrations.cli_options import flag, params_from_args, spec_mapping
            from relaygen_integrations.options import RelaySpec

            RelaySpec.from_mapping(spec_mapping(args), spelled=flag)
        if args.command == "generate":
            params_from_args(args)
        if args.command == "bench" and getattr(args, "methods", None):
            from relaygen_integrations.bench.methods import parse_methods

            parse_methods(args.methods, need_large=args.bench_command == "run")
    except RelayGenError as exc:
        raise AssertionError(f"relaygen: error: {exc}") from None


@pytest.mark.parametrize("page,command", COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_shown_command_parses(page, command):
    check_command(shlex.split(command)[1:])


def check_named(words: list[str]) -> None:
    """The (sub)commands exist and each flag named is one of the last command's."""
    from relaygen_integrations.cli import build_parser

    parser, positional_seen = build_parser(), False
    for word in words:
        if word.startswith("-"):
            assert word.split("=")[0] in parser._option_string_actions, f"{word}: no such flag of {parser.prog}"
            continue
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = [a for a in parser._positionals._group_actions if a.choices and not a.option_strings]
        if subs and word in subs[0].choices:
            parser = subs[0].choices[word]
        elif chosen and not positional_seen:
            assert word in chosen[0].choices, f"{word}: no such command of {parser.prog}"
        positional_seen = positional_seen or not subs


@pytest.mark.parametrize("page,command", NAMED, ids=[f"{p}:{c[:60]}" for p, c in NAMED])
def test_named_command_exists(page, command):
    check_named(shlex.split(command)[1:])


@pytest.mark.parametrize("command", [
    "relaygen generate hi --no-such-flag",              # a removed flag
    "relaygen generate hi --check sometimes",           # a value the relay settings refuse
    "relaygen generate hi --resume 2 --check off",      # resuming needs a check
    "relaygen bench run --methods large,relay+nothing",  # a method name the bench refuses
    "relaygen models remove x",                          # a subcommand that does not exist
])
def test_a_wrong_command_fails_the_check(command):
    with pytest.raises(AssertionError):
        check_command(shlex.split(command)[1:])


@pytest.mark.parametrize("command", ["relaygen serve --no-such-flag", "relaygen models remove", "relaygen bench rerun"])
def test_a_wrong_named_command_fails_the_check(command):
    with pytest.raises(AssertionError):
        check_named(shlex.split(command)[1:])
