"""Makes ``lm_eval --model relaygen`` work after a plain install, for lm-eval releases without
plugin discovery (0.4.x).

The wheel installs this file as the top-level module ``_relaygen_lm_eval_hook`` and a
``relaygen_integrations_lm_eval.pth`` line that imports it when Python starts. It adds one finder to
``sys.meta_path`` that ignores every import except ``lm_eval.models``; once lm-eval's own models are
registered there, it registers ``relaygen`` as a lazy name (nothing of relaygen is imported until
the model is used). Registering any earlier would hide lm-eval's built-in models: lm-eval imports
them only when its registry is empty. Without lm-eval installed, the finder never fires.
``RELAYGEN_LM_EVAL_HOOK=0`` turns it off; ``python evals/startup_cost.py`` measures what it costs.
An editable install holds a copy of this file: reinstall after changing it.
"""

import sys

MODEL_NAME = "relaygen"
MODEL_TARGET = "relaygen_integrations.integrations.lm_eval:RelayGenLM"


def _target():
    """The installed ``lm_eval.models`` entry point itself when there is one: an lm-eval release with
    plugin discovery registers that same object, and lm-eval's registry takes an equal target twice
    without complaint, so neither order of discovery and this hook registers ``relaygen`` twice or
    clashes. Without installed metadata (a source checkout on ``sys.path``): the dotted path."""
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group="lm_eval.models") if ep.name == MODEL_NAME and ep.value == MODEL_TARGET]
    return found[0] if found else MODEL_TARGET


def register_lazily() -> None:
    """Add ``relaygen`` to lm-eval's model registry by name, unless something already did."""
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=_target())


class _RegisterAfter:
    """A loader that runs the real one, then registers relaygen."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        try:
            register_lazily()
        except Exception as e:  # never break lm-eval itself
            print(f"relaygen: could not register with lm-eval ({e})", file=sys.stderr)

    def __getattr__(self, name):
        return getattr(self.loader, name)


class LmEvalModelsFinder:
    """Watches for ``import lm_eval.models``, once."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "lm_eval.models":
            return None
        sys.meta_path.remove(self)
        from importlib.util import find_spec

        spec = find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisterAfter(spec.loader)
        return spec


def install() -> None:
    if "lm_eval.models" in sys.modules:  # too late to watch for it: register now
        register_lazily()
    elif not any(isinstance(f, LmEvalModelsFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, LmEvalModelsFinder())
