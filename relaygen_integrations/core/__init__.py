"""The relay itself, pure Python: no backend, torch or llama_cpp import anywhere in this package."""
