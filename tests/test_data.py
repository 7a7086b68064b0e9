"""The vendored benchmark files are exactly the documented ones (counts, ids, fields, checksums)."""

import hashlib
import json
from pathlib import Path

import pytest

from relaygen_integrations.math_tasks import load_problems

DATA = Path(__file__).resolve().parents[1] / "evals" / "data"
FILES = {
    "gsm8k_test.jsonl": (1319, "e52ac1a06e35eeb28dc245b9c40ae82e5b63cf8b64cdc9c6a4aad79685ba35be"),
    "math500.jsonl": (500, "30ce1b9abccc8ef7a0a481f304cc5f7c93f1dfa707a55daa0e786c44e631bb1f"),
    "aime2024.jsonl": (30, "c1c884f122947722111b46e21bfec74a9e5066fff57658fb4db4c82692ed6688"),
    "aime2025.jsonl": (30, "64919b4abb81f12f40627a82406f0dc92c941c8d9709e52c9cfe6bfdd9dff28c"),
    "amc23.jsonl": (40, "b419227ac1cbf6c95d71bbc409ba274500ad8ad2a7fb05bd537bad1262e5b2f0"),
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_vendored_file_matches_its_documented_checksum_and_shape(name):
    lines, sha = FILES[name]
    path = DATA / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == lines and len({r["id"] for r in rows}) == lines
    assert all(isinstance(r[k], str) and r[k] for r in rows for k in ("id", "problem", "answer", "source"))
    assert len(load_problems(path)) == lines
    assert name in (DATA / "README.md").read_text()
