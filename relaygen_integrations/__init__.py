"""RelayGen: a large model reasons, a small model writes the easy sentences after calibrated cues."""

from .core.engine import RelayConfig, RelayEngine
from .core.events import RelayEvent, RelayResult, RelayStats, Segment
from .core.profile import CueProfile, load_profile
from .core.sampling import SamplingParams
from .errors import ConfigError, FetchError, ModelNotFoundError, RelayGenError, ServerError

__version__ = "0.1.0"


def load_pair(*args, **kwargs) -> RelayEngine:
    """Build a RelayEngine for a registry pair; see ``relaygen_integrations.loader.load_pair``."""
    from .loader import load_pair as _load_pair

    return _load_pair(*args, **kwargs)


__all__ = [
    "RelayConfig", "RelayEngine", "RelayEvent", "RelayResult", "RelayStats", "Segment", "CueProfile",
    "load_profile", "SamplingParams", "ConfigError", "FetchError", "ModelNotFoundError",
    "RelayGenError", "ServerError", "load_pair", "__version__",
]
