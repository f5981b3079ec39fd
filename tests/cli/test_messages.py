"""Messages a user meets on misuse say what to fix in one line: a cache import of a file that is not one,
sizes below 1, which of two flags is wrong, a --config that would force nothing, the dtypes the kernels take,
an unknown --backend named as a flag, and "nothing to export" on stderr."""

import json

import pytest
import torch

import scanforge as sf
from scanforge.cli import main
from scanforge.kernels.ir import ScanSpec
from scanforge.tuning import cache
from scanforge.tuning.configs import default_config
from scanforge.tuning.fingerprint import fingerprint


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCANFORGE_CACHE_DIR", str(tmp_path / "cache"))
    cache.forget()
    yield
    cache.forget()


def _one_error_line(capsys, argv, code=2) -> str:
    assert main(argv) == code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


NOT_A_CACHE_FILE = {"not json": ("x.json", "not json", "not JSON"), "a list": ("x.json", "[1, 2]", "got a JSON array"),
                    "other keys": ("x.json", '{"a": [1,2,3]}', "it has no schema, fingerprint, entries"),
                    "empty": ("x.json", "", "the file is empty")}


@pytest.mark.parametrize("name, text, expected", NOT_A_CACHE_FILE.values(), ids=NOT_A_CACHE_FILE.keys())
def test_cache_import_of_a_file_that_is_not_a_cache_file_is_one_line(tmp_path, capsys, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    line = _one_error_line(capsys, ["cache", "import", str(path)])
    assert f"{path} is not a scanforge cache file: " in line and expected in line
    assert "using default configs" not in line and "ignored" not in line


def test_tune_shapes_below_one_say_so(capsys):
    line = _one_error_line(capsys, ["tune", "--shapes", "0x4x8x16"])
    assert "--shapes: every size must be >= 1, got '0x4x8x16'" in line


@pytest.mark.parametrize("argv, expected", [
    (["serve-storage", "--port", "99999"], "--port: expected a port in 1..65535, got '99999'"),
    (["serve-storage", "--storage", "sqlite:///x.db", "--threads", "0"], "--threads: expected an int >= 1, got '0'"),
])
def test_serve_storage_names_the_flag_that_failed(capsys, argv, expected):
    line = _one_error_line(capsys, argv)
    assert expected in line and ("--threads" not in line if "--port" in expected else "--port" not in line)


def test_check_with_an_unknown_backend_names_the_flag(capsys):
    line = _one_error_line(capsys, ["check", "--backend", "nosuch"])
    assert line.startswith("scanforge check: error: --backend: expected one of ") and "nosuch" in line
    assert "None" not in line


def _numba_cpu_cache_file(path, entries):
    path.write_text(json.dumps({"schema": 1, "fingerprint": fingerprint("numba_cpu"), "entries": entries}))
    return str(path)


def test_check_config_that_forces_nothing_says_so(tmp_path, capsys):
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    no_parameter = tmp_path / "bare.toml"
    no_parameter.write_text("[scan_fwd]\n")
    for path in (empty, no_parameter):
        line = _one_error_line(capsys, ["check", "--quick", "--backend", "numba_cpu", "--config", str(path)])
        assert f"--config {path}: nothing was forced" in line
    forced = tmp_path / "forced.toml"
    forced.write_text("[scan_fwd]\nBLOCK_D = 8\n")
    line = _one_error_line(capsys, ["check", "--quick", "--backend", "reference", "--config", str(forced)])
    assert "nothing was forced: the backends checked (reference) take no config" in line
    spec, bucket = ScanSpec(), (1, 64, 256, 16)
    other = _numba_cpu_cache_file(tmp_path / "tuned.json", {cache.entry_key(spec, bucket): {
        "spec": spec.key(), "bucket": list(bucket), "config": default_config("numba_cpu", spec)}})
    line = _one_error_line(capsys, ["check", "--quick", "--backend", "reference", "--config", other])
    assert "its configs are for numba_cpu, which is not checked" in line and "add --backend numba_cpu" in line
    line = _one_error_line(capsys, ["check", "--quick", "--backend", "numba_cpu", "--config",
                                    _numba_cpu_cache_file(tmp_path / "none.json", {})])
    assert "a cache file without entries; nothing to verify" in line


def test_cache_export_with_nothing_tuned_says_so_on_stderr(tmp_path, capsys):
    assert main(["cache", "export", str(tmp_path / "out.json")]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "nothing to export" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert not (tmp_path / "out.json").exists()


def test_float64_is_refused_naming_the_dtypes_the_kernels_take():
    u = torch.randn(1, 2, 4)
    A, B, C = -torch.ones(2, 3), torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    kernels = "expected dtype torch.float32, torch.float16 or torch.bfloat16 ("
    with pytest.raises(TypeError, match=r"^u: " + kernels.replace("(", r"\(")) as e:
        sf.selective_scan(u.double(), u.abs().double(), A, B, C, backend="reference")
    assert "floating dtype" not in str(e.value)
    with pytest.raises(TypeError, match=r"^initial_state: " + kernels.replace("(", r"\(")) as e:
        sf.selective_scan(u, u.abs(), A, B, C, initial_state=torch.zeros(1, 2, 3, dtype=torch.float64),
                          backend="reference")
    assert "floating dtype" not in str(e.value)
    with pytest.raises(TypeError, match=r"^state: " + kernels.replace("(", r"\(")) as e:
        sf.selective_state_update(torch.zeros(1, 2, 3, dtype=torch.float64), u[..., 0], u[..., 0].abs(), A,
                                  B[..., 0], C[..., 0], backend="reference")
    assert "floating dtype" not in str(e.value)
