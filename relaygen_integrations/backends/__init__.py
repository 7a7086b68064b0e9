"""One file per backend, each translating the protocol in ``base.py`` to its library."""
