"""The tuned-config cache: a stored winner is what the next call uses; corrupt, newer-schema and
foreign files are refused with one warning; concurrent writers lose nothing."""

import json
import multiprocessing as mp
import os
import warnings

import pytest

from scanforge.kernels import codegen
from scanforge.kernels.ir import ScanSpec
from scanforge.tuning import cache, cache_import
from scanforge.tuning.configs import config_for, default_config
from scanforge.tuning.fingerprint import SCHEMA_VERSION, fingerprint

SPEC = ScanSpec(has_D=True)
SHAPE = (2, 100, 300, 16)


def _config(**changes):
    """A valid numba_cpu forward config (the default with some choices changed)."""
    return dict(default_config("numba_cpu", SPEC), **changes)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCANFORGE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cache, "_warned", set())
    cache.forget()
    yield tmp_path
    cache.forget()


def test_buckets_round_sizes_up_to_powers_of_two_and_keep_N():
    assert cache.bucket((2, 100, 300, 16)) == (2, 128, 512, 16)
    assert cache.bucket((1, 1, 1, 4)) == (1, 1, 1, 4)
    assert cache.bucket((3, 1536, 2048, 16)) == (4, 2048, 2048, 16)


def test_the_fingerprint_keeps_its_parts():
    """Each shipped backend's fingerprint names the same parts as the files written before the backends declared
    them (device, library and version, templates hash, torch, scanforge, schema): an existing cache keeps working."""
    libraries = {"reference": "torch", "numba_cpu": "numba", "triton": "triton", "numba_cuda": "numba-cuda"}
    for name, library in libraries.items():
        fp = fingerprint(name)
        assert set(fp) == {"schema", "backend", "device", "library", "torch", "scanforge", "kernels"}, name
        assert fp["library"].split()[0] == library and fp["kernels"] == codegen.templates_hash(name), name


def test_a_stored_config_is_used_by_the_next_call_and_by_near_shapes():
    tuned = _config(LAYOUT="scalar", BLOCK_D=4)
    assert config_for("numba_cpu", SPEC, SHAPE) == default_config("numba_cpu", SPEC)
    cache.store("numba_cpu", SPEC, SHAPE, tuned, seconds=1.0)
    assert config_for("numba_cpu", SPEC, SHAPE) == tuned
    assert config_for("numba_cpu", SPEC, (2, 128, 512, 16)) == tuned  # same bucket
    assert config_for("numba_cpu", SPEC, (8, 1024, 4096, 16)) == tuned  # nearest tuned bucket
    assert config_for("numba_cpu", SPEC, (2, 100, 300, 8)) == default_config("numba_cpu", SPEC)  # N differs
    assert config_for("numba_cpu", ScanSpec(), SHAPE) == default_config("numba_cpu", ScanSpec())  # spec differs
    cache.forget()  # a new process reads it from disk
    assert config_for("numba_cpu", SPEC, SHAPE) == tuned


def _write_user_file(data):
    path = cache.user_file("numba_cpu")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def test_an_entry_outside_the_current_space_is_refused():
    cache.store("numba_cpu", SPEC, SHAPE, {"BLOCK_D": 16, "OLD_KNOB": 1})
    with pytest.warns(UserWarning, match="not configs of the current search space"):
        assert config_for("numba_cpu", SPEC, SHAPE) == default_config("numba_cpu", SPEC)


@pytest.mark.parametrize("content, message", [
    ("{not json", "is corrupt"),
    ({"schema": SCHEMA_VERSION}, "is corrupt"),
    ({"schema": SCHEMA_VERSION + 1, "fingerprint": {}, "entries": {}}, "newer than"),
    ("foreign", "was tuned for"),
])
def test_a_bad_cache_file_is_refused_with_one_warning(content, message):
    if content == "foreign":
        other = dict(fingerprint("numba_cpu"), device="Some Other CPU")
        entry = {"spec": SPEC.key(), "bucket": list(cache.bucket(SHAPE)), "config": {"BLOCK_D": 1}}
        content = {"schema": SCHEMA_VERSION, "fingerprint": other,
                   "entries": {cache.entry_key(SPEC, cache.bucket(SHAPE)): entry}}
    _write_user_file(content)
    with pytest.warns(UserWarning, match=message):
        assert config_for("numba_cpu", SPEC, SHAPE) == default_config("numba_cpu", SPEC)
    cache.forget()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second read stays quiet: one warning per file
        assert config_for("numba_cpu", SPEC, SHAPE) == default_config("numba_cpu", SPEC)


def test_a_cache_tuned_for_other_kernel_templates_is_refused_naming_what_changed():
    """A cache written before the templates changed was timed on other kernel sources: never used for these."""
    old = dict(fingerprint("numba_cpu"), kernels="0123456789ab")
    entry = {"spec": SPEC.key(), "bucket": list(cache.bucket(SHAPE)), "config": _config(LAYOUT="scalar", BLOCK_D=2)}
    _write_user_file({"schema": SCHEMA_VERSION, "fingerprint": old,
                      "entries": {cache.entry_key(SPEC, cache.bucket(SHAPE)): entry}})
    with pytest.warns(UserWarning, match=r"another fingerprint \(kernels: '0123456789ab' there, '[0-9a-f]+' here\)"):
        assert config_for("numba_cpu", SPEC, SHAPE) == default_config("numba_cpu", SPEC)


def test_import_refuses_a_file_of_another_fingerprint_with_one_warning(tmp_path):
    cache.store("numba_cpu", SPEC, SHAPE, _config(LAYOUT="scalar", BLOCK_D=2))
    data = json.loads(cache.user_file("numba_cpu").read_text())
    data["fingerprint"]["device"] = "Another CPU"
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="was tuned for numba_cpu on Another CPU .*not imported") as seen:
        assert cache_import.import_file(foreign) == (None, 0)
    assert len(seen) == 1 and len(cache.cache_files()) == 1
    assert cache.clear() == 1 and config_for("numba_cpu", SPEC, SHAPE) == default_config("numba_cpu", SPEC)


def test_a_shipped_file_for_this_device_is_a_fallback(tmp_path, monkeypatch):
    shipped = tmp_path / "shipped.json"
    entry = {"spec": SPEC.key(), "bucket": list(cache.bucket(SHAPE)), "config": _config(BLOCK_D=32)}
    shipped.write_text(json.dumps({"schema": SCHEMA_VERSION, "fingerprint": fingerprint("numba_cpu"),
                                   "entries": {cache.entry_key(SPEC, cache.bucket(SHAPE)): entry}}))
    monkeypatch.setattr(cache, "shipped_files", lambda: [shipped])
    assert config_for("numba_cpu", SPEC, SHAPE) == _config(BLOCK_D=32)
    cache.store("numba_cpu", SPEC, SHAPE, _config(BLOCK_D=8))  # the user's own tuning wins
    assert config_for("numba_cpu", SPEC, SHAPE) == _config(BLOCK_D=8)


def _store_many(root, worker):
    os.environ["SCANFORGE_CACHE_DIR"] = root
    for i in range(8):
        cache.store("numba_cpu", SPEC, (1, 2 ** (worker + 1), 2 ** (i + 1), 16), {"BLOCK_D": i})  # raw entries


def test_concurrent_writers_lose_no_entry(private_cache):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_store_many, args=(str(private_cache), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert len(json.loads(cache.user_file("numba_cpu").read_text())["entries"]) == 32


def test_cache_commands_list_show_export_import_clear(tmp_path, capsys):
    from scanforge.cli import main

    cache.store("numba_cpu", SPEC, SHAPE, _config(LAYOUT="scalar", BLOCK_D=2), seconds=1e-3,
                default_seconds=2e-3, trials=5)
    assert main(["cache", "show", "--backend", "numba_cpu"]) == 0
    assert "2.00x" in capsys.readouterr().out
    exported = tmp_path / "exported.json"
    assert main(["cache", "export", str(exported), "--backend", "numba_cpu"]) == 0
    assert main(["cache", "clear"]) == 0
    assert config_for("numba_cpu", SPEC, SHAPE) == default_config("numba_cpu", SPEC)
    assert main(["cache", "import", str(exported)]) == 0
    assert "used on this machine" in capsys.readouterr().out
    assert config_for("numba_cpu", SPEC, SHAPE)["BLOCK_D"] == 2
    assert main(["cache", "list"]) == 0
    assert "yes" in capsys.readouterr().out
