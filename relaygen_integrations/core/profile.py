"""Cue profiles: which switch cues a model pair trusts.

A profile is a named cue list plus the matching mode. Built-in profiles:
``paper-qwen3`` (the cues the paper's calibration chose for Qwen3-1.7B/32B; the default until a pair
is calibrated), ``paper-r1`` (its choice for DeepSeek-R1-Distill-Qwen-1.5B/32B) and ``all-candidates``
(the 91 reference candidates). A profile can also be a JSON
file with at least ``{"cues": [...]}``, as written by calibration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

from ..errors import ConfigError, ModelNotFoundError
from .check import CheckPolicy
from .cues import PAPER_QWEN3_CUES, PAPER_R1_CUES, REFERENCE_CANDIDATES, CueMatcher, MatchMode, validate_cues

BUILTIN_PROFILES = {
    "paper-qwen3": PAPER_QWEN3_CUES,
    "paper-r1": PAPER_R1_CUES,
    "all-candidates": REFERENCE_CANDIDATES,
}
DEFAULT_PROFILE = "paper-qwen3"


@dataclass(frozen=True)
class CueProfile:
    name: str
    cues: tuple[str, ...]
    mode: MatchMode = "word"
    source: str = "builtin"
    check_tau: float | None = None  # the checked relay's calibrated threshold (calibration/threshold.py), if any
    # The check policy ``check="auto"`` (the default) runs for this pair: "off", "exact" or "tau=P". A profile
    # opts in by hand, with ``"check": {"default": "tau"}`` (its calibrated tau), once a benchmark shows it pays.
    # Given as a policy or its spelling ("tau=0.2"); held as a parsed policy.
    check_default: CheckPolicy = CheckPolicy()

    def __post_init__(self) -> None:
        object.__setattr__(self, "check_default", CheckPolicy.parse(self.check_default))

    def matcher(self) -> CueMatcher:
        return CueMatcher(self.cues, self.mode)


def load_profile(spec: "str | Path | Iterable[str] | CueProfile | None", mode: MatchMode | None = None) -> CueProfile:
    """Resolve a profile from a built-in name, a JSON file path, or an explicit cue list."""
    if spec is None:
        spec = DEFAULT_PROFILE
    if isinstance(spec, CueProfile):
        profile = spec
    elif isinstance(spec, (str, Path)) and str(spec) in BUILTIN_PROFILES:
        profile = CueProfile(str(spec), BUILTIN_PROFILES[str(spec)])
    elif isinstance(spec, (str, Path)):
        profile = _from_file(Path(spec))
    else:
        profile = CueProfile("custom", validate_cues(spec), source="list")
    if mode is not None:
        profile = replace(profile, mode=mode)
    profile.matcher()  # validates cues and mode now, before any model work
    return profile


def _from_file(path: Path) -> CueProfile:
    if not path.exists():
        names = ", ".join(BUILTIN_PROFILES)
        raise ModelNotFoundError(f"no cue profile {str(path)!r}: give a JSON file or one of: {names}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cue profile {path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict) or "cues" not in data:
        raise ConfigError(f"cue profile {path} must be a JSON object with a 'cues' list")
    try:
        check = data.get("check") or {}
        if not isinstance(check, dict):
            raise ConfigError(f"'check' must be an object like {{\"tau\": 0.2, \"default\": \"tau\"}}, not {check!r}")
        tau = check.get("tau")
        if tau is not None and not (isinstance(tau, (int, float)) and 0 < tau < 1):
            raise ConfigError(f"check.tau must be a probability in (0, 1), got {tau!r}")
        profile = CueProfile(str(data.get("name", path.stem)), validate_cues(data["cues"]), data.get("matching", "word"),
                             str(path), tau, _default_check(check.get("default", "off"), tau))
        profile.matcher()
    except ConfigError as e:
        raise ConfigError(f"cue profile {path}: {e}") from None
    return profile


def _default_check(default, tau: float | None) -> CheckPolicy:
    """The profile's ``check.default`` as a policy: ``tau`` means its own calibrated threshold."""
    if default == "tau":
        if tau is None:
            raise ConfigError("check.default is 'tau' but the profile records no calibrated check.tau")
        return CheckPolicy("tau", float(tau)).validated()
    if default == "auto":
        raise ConfigError("check.default must be off, tau, exact or tau=P, not 'auto'")
    return CheckPolicy.parse(default)
