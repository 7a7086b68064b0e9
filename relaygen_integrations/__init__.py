"""RelayGen: a large model reasons, a small model writes the easy sentences after calibrated cues.

The public names are imported on first use, so importing the package (as the lm-eval start-up hook
does in every Python process of the environment) costs almost nothing.
"""

from __future__ import annotations

from importlib import import_module

TYPE_CHECKING = False  # not typing's: importing typing would cost more than this whole module

__version__ = "0.1.0"

_HOME = {
    "RelayConfig": ".core.config", "RelayEngine": ".core.engine",
    "RelayEvent": ".core.events", "RelayResult": ".core.events", "RelayStats": ".core.events",
    "Segment": ".core.events", "CueProfile": ".core.profile", "load_profile": ".core.profile",
    "SamplingParams": ".core.sampling", "load_pair": ".loader", "load_concurrent": ".serving.build", "RelaySpec": ".options",
    "ConcurrentEngine": ".serving.pool", "QueueTimeoutError": ".errors",
    "ConfigError": ".errors", "ContextWindowError": ".errors", "FetchError": ".errors",
    "ModelFileError": ".errors", "ModelNotFoundError": ".errors", "RelayGenError": ".errors", "ServerError": ".errors",
}
__all__ = [*_HOME, "__version__"]

if TYPE_CHECKING:
    from .core.config import RelayConfig
    from .core.engine import RelayEngine
    from .core.events import RelayEvent, RelayResult, RelayStats, Segment
    from .core.profile import CueProfile, load_profile
    from .core.sampling import SamplingParams
    from .serving.pool import ConcurrentEngine
    from .errors import (ConfigError, ContextWindowError, FetchError, ModelFileError, ModelNotFoundError,
                         QueueTimeoutError, RelayGenError, ServerError)
    from .loader import load_pair
    from .options import RelaySpec
    from .serving.build import load_concurrent


def __getattr__(name: str):
    if name in _HOME:
        value = getattr(import_module(_HOME[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
