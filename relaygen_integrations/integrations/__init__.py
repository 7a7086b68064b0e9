"""Adapters that let other tools drive the relay: lm-evaluation-harness (``lm_eval``) and LiteLLM."""
