"""One option surface: everything that builds an engine, validated in one place.

Every entry point (``relaygen`` flags, lm-eval ``model_args``, LiteLLM handler keywords, bench settings)
ends in ``RelaySpec.from_mapping``. Its keys are the spec's own fields, ``RelayConfig``'s fields (or a
whole ``config=``), and the chosen backend's options (``backends.backend_options``); anything else is a
ConfigError naming what is accepted. Nothing is dropped: an option of another backend is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from .backends import BACKENDS, backend_options, check_backend_name
from .core.config import RelayConfig
from .errors import ConfigError

SPECULATIVE_MODES = ("auto", "off", "draft", "lookup")
RELAY_FIELDS = tuple(f.name for f in fields(RelayConfig))


@dataclass(frozen=True)
class RelaySpec:
    """What to load and how to relay. ``large``/``small``: registry names or model paths overriding the
    pair's; ``large_url``/``small_url``: the servers (backend openai); ``profile``: a profile name, file
    or cue list; ``speculative``: off, draft, lookup or auto (draft when the large model is on a GPU);
    ``max_batch``/``queue_timeout``: how many requests a concurrent engine serves at once, and how long
    one more waits for a free sequence."""

    pair: str | None = None
    large: Any = None
    small: Any = None
    backend: str = "llamacpp"
    large_url: str | None = None
    small_url: str | None = None
    profile: Any = None
    cue_matching: str | None = None
    speculative: str = "auto"
    draft_max: int = 8
    draft_model: Any = None
    registry_path: Any = None
    progress: bool = False
    max_batch: int = 1  # concurrent requests (build_concurrent); more wait for a free sequence ...
    queue_timeout: float = 600.0  # ... this many seconds at most
    relay: RelayConfig = field(default_factory=RelayConfig)
    backend_options: dict = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, mapping: dict, spelled=None, what: str = "option") -> "RelaySpec":
        """Split ``mapping`` into spec fields, RelayConfig fields and backend options, and validate them.
        ``spelled``: how the caller's user writes a backend option (the CLI: ``--threads`` for n_threads);
        ``what``: what the caller calls its options in an error (lm-eval: "relaygen model argument")."""
        own = {f.name for f in fields(cls)} - {"relay", "backend_options"}
        given = dict(mapping)
        config = given.pop("config", None) or RelayConfig()
        if not isinstance(config, RelayConfig):
            raise ConfigError(f"config must be a RelayConfig, not {type(config).__name__}")
        relay = {k: given.pop(k) for k in RELAY_FIELDS if k in given}
        spec = {k: given.pop(k) for k in own if k in given}
        options = {**given, **spec.pop("backend_options", {})}
        backend = check_backend_name(spec.get("backend", "llamacpp"))
        known = backend_options(backend)
        wrong = [k for k in options if k not in known]
        if wrong:
            name = spelled or (lambda option: option)
            takes = f"the {backend} backend takes {', '.join(name(k) for k in known if spelled is None or name(k) != k)}"
            others = {b: backend_options_if_installed(b) for b in BACKENDS if b != backend}
            foreign = {k: [b for b, opts in others.items() if k in opts] for k in wrong}
            unknown = [k for k in wrong if not foreign[k]]
            if unknown:
                raise ConfigError(f"unknown {what}(s): {', '.join(name(k) for k in unknown)}; {takes}"
                                  + ("" if spelled else f", besides {', '.join(sorted(own | set(RELAY_FIELDS)))}"))
            k = wrong[0]
            raise ConfigError(f"{name(k)}: not an option of the {backend} backend (it is one of "
                              f"{' and '.join(foreign[k])}); {takes}")
        return cls(**spec, relay=replace(config, **relay).validated(), backend_options=options).validated()

    def validated(self) -> "RelaySpec":
        check_backend_name(self.backend)
        if self.speculative not in SPECULATIVE_MODES:
            raise ConfigError(f"speculative must be one of {', '.join(SPECULATIVE_MODES)}, not {self.speculative!r}")
        if self.speculative in ("draft", "lookup") and self.backend == "openai":
            raise ConfigError("speculative decoding runs in process (llamacpp or hf); a server does its own")
        if isinstance(self.draft_max, bool) or not isinstance(self.draft_max, int) or not 1 <= self.draft_max <= 64:
            raise ConfigError(f"draft_max must be an integer in 1..64, got {self.draft_max!r}")
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int) or not 1 <= self.max_batch <= 256:
            raise ConfigError(f"max_batch must be an integer in 1..256 (concurrent requests), got {self.max_batch!r}")
        if isinstance(self.queue_timeout, bool) or not isinstance(self.queue_timeout, (int, float)) \
                or not 0 < self.queue_timeout < float("inf"):
            raise ConfigError(f"queue_timeout must be a positive number of seconds, got {self.queue_timeout!r}")
        if self.backend == "openai" and not (self.large_url and self.small_url):
            raise ConfigError("the openai backend needs the two servers' URLs: large_url= and small_url= "
                              "(--large-url, --small-url)")
        if self.backend != "openai" and (self.large_url or self.small_url):
            raise ConfigError("server URLs are for backend='openai'")
        return self


def backend_options_if_installed(name: str) -> dict:
    """Another backend's options, for a better error; nothing when its library is not installed."""
    try:
        return backend_options(name)
    except ImportError:
        return {}
