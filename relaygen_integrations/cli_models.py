"""``relaygen models list | fetch | path``: the registry's models and pairs, their files and their cues."""

from __future__ import annotations

import sys
from pathlib import Path

from .errors import RelayGenError


def cues_of(registry, pair) -> tuple[str, str]:
    """(which cues the pair runs with, its default check) as a user reads them in ``models list``."""
    from .core.profile import BUILTIN_PROFILES, DEFAULT_PROFILE, load_profile
    from .registry import user_profile_path

    source = registry.pair_profile(pair)
    if source is None or str(source) in BUILTIN_PROFILES:
        return f"{source or DEFAULT_PROFILE} (the paper's; not calibrated)", "off"
    if not Path(source).is_file():
        return f"missing: {source}", "-"
    try:
        profile = load_profile(source)
    except RelayGenError as exc:
        return f"broken: {exc}", "-"
    whose = "by you" if Path(source) == user_profile_path(pair.name) else "shipped"
    return f"calibrated ({whose}, {len(profile.cues)} cues): {source}", str(profile.check_default)


def cmd_models(args) -> int:
    from .fetcher import fetch, verify_cached
    from .registry import Registry, is_fetched, model_path, relaygen_home

    reg = Registry.load()
    if args.action == "list":
        from rich.console import Console
        from rich.table import Table

        console = Console(highlight=False)
        table = Table(title=f"models ({', '.join(map(str, reg.files))})", title_justify="left")
        for col in ("name", "role", "fetched", "description"):
            table.add_column(col, no_wrap=col == "name")
        for m in reg.models.values():
            table.add_row(m.name, m.role, "yes" if is_fetched(m) else "no", m.description)
        console.print(table)
        pairs = Table(title="pairs", title_justify="left")
        for col in ("name", "large", "small", "cues", "default check"):
            pairs.add_column(col, no_wrap=col == "name")
        for p in reg.pairs.values():
            cues, check = cues_of(reg, p)
            pairs.add_row(p.name + (" (default)" if p.default else ""), p.large, p.small, cues, check)
        console.print(f"cache: {relaygen_home() / 'models'}")
        console.print(pairs)
        return 0
    if not args.name:
        raise RelayGenError(f"`relaygen models {args.action}` needs a model or pair name")
    names = [reg.pairs[args.name].large, reg.pairs[args.name].small] if args.name in reg.pairs else [args.name]
    names = list(dict.fromkeys(names))
    if args.action == "path":
        for name in names:
            path = model_path(reg.model(name))
            if not path.is_file():
                raise RelayGenError(f"{name} is not fetched yet: run `relaygen models fetch {name}`")
            print(path)
        return 0
    if args.source and len(names) > 1:
        raise RelayGenError("--from takes one file: name a single model, not a pair")
    for name in names:
        entry = reg.model(name)
        was = is_fetched(entry) and verify_cached(entry)  # a damaged cached file is fetched anew
        damaged = is_fetched(entry) and not was
        path = fetch(entry, from_file=args.source, progress=sys.stderr.isatty(), verify=damaged)
        state = "already fetched, verified" if was else "damaged copy replaced" if damaged else "fetched and verified"
        print(f"{name}: {state}: {path}")
    return 0
