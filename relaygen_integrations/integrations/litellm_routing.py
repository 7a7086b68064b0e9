"""Which ``relaygen/<pair>`` model strings LiteLLM really hands to this provider.

LiteLLM strips the ``relaygen/`` prefix and then tests the bare name against some built-in providers
before it tries custom ones (BerriAI/litellm#23352), so a pair with such a name would silently be
served by another provider. The provider refuses those names instead.
"""

from __future__ import annotations

import litellm

from ..errors import ConfigError


def litellm_would_bypass(name: str) -> str | None:
    """The built-in provider LiteLLM sends ``relaygen/<name>`` to instead of this one, if any: names
    containing ``replicate`` or ``clarifai``, or listed among a few providers' models (and, in older
    LiteLLM releases, OpenAI's) never reach a custom provider."""
    for word, listed in (("replicate", litellm.replicate_models), ("clarifai", litellm.clarifai_models)):
        if word in name.lower() or name in listed:
            return word
    for provider, listed in (("petals", litellm.petals_models), ("snowflake", litellm.snowflake_models),
                             ("ovhcloud", getattr(litellm, "ovhcloud_models", ())),
                             ("openai", litellm.open_ai_chat_completion_models)):
        if name in listed:
            return provider
    return None


def check_pair_names(names) -> None:
    """Refuse, with one clear line, pair names that LiteLLM would route past this provider."""
    clashes = {n: p for n in names if (p := litellm_would_bypass(n))}
    if clashes:
        listed = ", ".join(f"{n!r} (LiteLLM sends it to {p})" for n, p in sorted(clashes.items()))
        raise ConfigError(f"pair name(s) {listed} cannot be served as relaygen/<pair>: LiteLLM routes such names to "
                          "a built-in provider before custom ones (BerriAI/litellm#23352); rename the pair")
