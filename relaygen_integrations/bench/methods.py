"""The methods a benchmark compares, by name, and the engines that run them over one loaded pair.

    large            the large model alone (the reference every speedup is measured against)
    small            the small model alone
    relay            RelayGen with the pair's calibrated cue profile
    relay-all        RelayGen switching on all 91 candidate cues (no calibration)
    relay:PROFILE    RelayGen with any profile (built-in name or JSON file)
    METHOD+draft     the large model decodes speculatively, the pair's small model drafting
    METHOD+lookup    the large model decodes speculatively, prompt lookup drafting
    RELAY+check      checked relay (core/check.py) at the pair's calibrated threshold (its profile's check.tau)
    RELAY+tau=P      checked relay at threshold P, e.g. relay+tau=0.01 (for sweeps)
    RELAY+exact      checked relay, sample-and-match: the large model's own output
    CHECKED+resume=N after a cut the small model finishes the sentence, at most N times (``+resume``: 3)

Options combine, one of each kind: ``relay:PROFILE+tau=0.1+resume=2``.

``large+draft`` is speculative decoding alone; ``relay+draft`` composes it with relaying. All methods
share the two models' backends (one copy of each model in memory); a speculative method's engine wraps
the shared large backend in a ``SpeculativeBackend`` of its own, so no method changes another's backends.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..core.check import CheckPolicy
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..core.engine import RelayEngine

DEFAULT_METHODS = "large,small,relay,relay-all,large+draft"
SPECULATION = ("draft", "lookup")
RESUME_DEFAULT = 3  # ``+resume`` without a count


@dataclass(frozen=True)
class Method:
    name: str
    mode: str  # large | small | relay
    profile: str | None = None  # None: the pair's own profile
    speculative: str = "off"  # off | draft | lookup
    check: str = "off"  # off | check (the pair's calibrated tau) | exact | tau=P
    resume: int = 0  # resumptions per sentence after a cut (needs a check)


def parse_methods(spec: str, need_large: bool = True) -> list[Method]:
    """``"large,relay,relay+check+resume=2"`` -> methods; unknown names are a ConfigError naming the valid ones.
    ``need_large``: the list must hold ``large`` (a benchmark's speedups are ratios to it)."""
    methods, seen = [], set()
    for name in (s.strip() for s in spec.split(",")):
        if not name:
            continue
        if name in seen:
            raise ConfigError(f"method {name!r} is listed twice")
        seen.add(name)
        methods.append(_parse_method(name))
    if not methods:
        raise ConfigError("no methods given")
    if need_large and "large" not in seen:
        raise ConfigError("the methods must include 'large': every speedup is measured against it")
    return methods


def _parse_method(name: str) -> Method:
    """One method: a base name and '+' options, each of one kind at most (speculation, check, resume)."""
    base, *options = name.split("+")
    if base in ("large", "small", "relay"):
        method = Method(name, base)
    elif base == "relay-all":
        method = Method(name, "relay", "all-candidates")
    elif base.startswith("relay:") and base[6:]:
        method = Method(name, "relay", base[6:])
    else:
        raise ConfigError(f"unknown method {name!r}: use large, small, relay, relay-all or relay:PROFILE, "
                          "optionally with +draft or +lookup (speculative decoding of the large model)")
    given = set()
    for option in options:
        kind = _option_kind(name, option)
        if kind in given:
            raise ConfigError(f"method {name!r}: one {kind} option at most")
        given.add(kind)
        if kind == "speculation":
            if method.mode == "small":
                raise ConfigError(f"method {name!r}: speculation speeds up the large model; small runs alone")
            method = replace(method, speculative=option)
        elif kind == "check":
            if method.mode != "relay":
                raise ConfigError(f"method {name!r}: a check vets the small model's sentences in a relay")
            method = replace(method, check=option)
        else:
            method = replace(method, resume=_resume_count(name, option))
    if method.resume and method.check == "off":
        raise ConfigError(f"method {name!r}: +resume resumes the small model after a check's cut: add +check, "
                          "+exact or +tau=P before it")
    return method


def _option_kind(name: str, option: str) -> str:
    if option in SPECULATION:
        return "speculation"
    if option in ("check", "exact") or option.startswith("tau="):
        if option.startswith("tau="):
            CheckPolicy.parse(option)  # a bad threshold fails here, before any model loads
        return "check"
    if option == "resume" or option.startswith("resume="):
        return "resume"
    raise ConfigError(f"method {name!r}: after '+' comes draft, lookup, check, exact, tau=P or resume[=N], "
                      f"not {option!r}")


def _resume_count(name: str, option: str) -> int:
    """``resume`` alone: at most RESUME_DEFAULT resumptions per sentence; ``resume=N``: N (1 or more)."""
    _, _, count = option.partition("=")
    if not count:
        return RESUME_DEFAULT
    if not count.isdigit() or int(count) < 1:
        raise ConfigError(f"method {name!r}: resume=N takes a whole number of resumptions per sentence, 1 or more")
    return int(count)


class MethodRunner:
    """One engine per method over a shared pair of backends, composed with the drafter its method names."""

    def __init__(self, base: "RelayEngine", methods: list[Method], drafters: dict[str, object]):
        from ..core.engine import RelayEngine
        from ..core.profile import load_profile
        from ..speculative import SpeculativeBackend

        self.large, self.small, self.drafters = base.large, base.small, drafters
        self.engines: dict[str, RelayEngine] = {}
        for m in methods:
            profile = load_profile(m.profile) if m.profile else base.profile
            large = SpeculativeBackend(base.large, drafters[m.speculative]) if m.speculative != "off" else base.large
            self.engines[m.name] = RelayEngine(large, base.small, profile, method_config(m, base.config, base.profile))
        self.methods = {m.name: m for m in methods}

    def engine(self, name: str) -> "RelayEngine":
        return self.engines[name]


def method_config(method: Method, base_config, pair_profile):
    """The relay settings that run ``method``: the base engine's, with the method's mode and check."""
    return replace(base_config, mode=method.mode, check=_check_of(method, pair_profile),
                   resume=method.resume).validated()


def _check_of(method: Method, pair_profile) -> str:
    """The method's check policy; ``check`` is the pair's calibrated threshold (whatever cues the method uses)."""
    if method.check != "check":
        return method.check
    if pair_profile.check_tau is None:
        raise ConfigError(f"method {method.name!r} needs the pair's calibrated check threshold, and profile "
                          f"{pair_profile.name!r} has none: run `relaygen calibrate`, or name one (relay+tau=0.01)")
    return f"tau={pair_profile.check_tau}"
