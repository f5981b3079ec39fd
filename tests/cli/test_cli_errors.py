"""The command line's user errors are one line naming what to fix, exit code 2, no traceback (unless
--debug); cache and show-kernel commands default to this machine's backend and take --backend after
the action; --config and cache import go through the tuner's validation of configs; the summary of
`scanforge tune` says what happened and fits the terminal."""

import json
import math

import pytest
from rich.console import Console

from scanforge.cli import main
from scanforge.cli.tune import closing_line, result_text, summary_table
from scanforge.kernels.ir import ScanSpec
from scanforge.tuning import cache
from scanforge.tuning.configs import default_config
from scanforge.tuning.fingerprint import fingerprint
from scanforge.tuning.trials import Task
from scanforge.tuning.tuner import Outcome


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCANFORGE_CACHE_DIR", str(tmp_path / "cache"))
    cache.forget()
    yield
    cache.forget()


def _bad_config_toml(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text('[scan_fwd]\nLAYOUT = "bogus"\nBLOCK_Q = 8\n')
    return str(path)


def _cache_file(tmp_path, config):
    """A numba_cpu cache file for this machine holding one entry with ``config``."""
    spec = ScanSpec()
    data = {"schema": 1, "fingerprint": fingerprint("numba_cpu"),
            "entries": {cache.entry_key(spec, (1, 64, 256, 16)): {"spec": spec.key(), "bucket": [1, 64, 256, 16],
                                                                  "config": config}}}
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps(data))
    return str(path)


CASES = {
    "storage folder missing": (["tune", "--storage", "sqlite:////nonexistent/dir/x.db", "--shapes", "1x8x16x4",
                                "--variant", "causal", "--phase", "fwd"], "the folder /nonexistent/dir does not exist"),
    "storage kind unknown": (["tune", "--storage", "bogus://x", "--shapes", "1x8x16x4"],
                             "--storage bogus://x: unknown kind of database 'bogus'"),
    "storage not a url": (["tune", "--storage", "studies.db"], "is not a storage URL"),
    "import missing file": (["cache", "import", "/nonexistent.json"], "no such file: /nonexistent.json"),
    "export into a missing folder": (["cache", "export", "/nonexistent/x.json"], "the folder /nonexistent does not"),
    "negative trial timeout": (["tune", "--trial-timeout", "-5"], "--trial-timeout: expected a number of seconds > 0"),
    "negative budget": (["tune", "--budget-seconds", "-1"], "--budget-seconds: expected a number of seconds > 0"),
    "zero trials": (["tune", "--trials", "0"], "--trials: expected an int >= 1"),
    "zero workers": (["tune", "--workers", "0"], "--workers: expected an int >= 1"),
    "bad shape": (["tune", "--shapes", "1x2"], "--shapes: expected BATCHxDIMxLxN"),
    "unknown backend": (["cache", "show", "--backend", "nope"], "--backend: expected one of"),
    "gather has no decode": (["show-kernel", "--op", "topk_gather", "--phase", "decode"],
                             "a top-k gather has no decode phase"),
    "reference has no kernels": (["show-kernel", "--backend", "reference"], "this backend has no generated kernels"),
    "config file missing": (["check", "--config", "/nonexistent.toml"], "no such file: /nonexistent.toml"),
}


@pytest.mark.parametrize("argv, expected", CASES.values(), ids=CASES.keys())
def test_a_user_error_is_one_line_and_exit_code_2(capsys, argv, expected):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in captured.out + captured.err, lines


def test_check_refuses_a_config_outside_the_search_space(tmp_path, capsys):
    assert main(["check", "--quick", "--backend", "numba_cpu", "--config", _bad_config_toml(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    for part in ("x.toml", "[scan_fwd] on numba_cpu", "LAYOUT = 'bogus' is not one of its choices ['channels', "
                 "'scalar']", "BLOCK_Q is not a parameter of scan_fwd (its parameters: LAYOUT, EXP, BLOCK_D"):
        assert part in err


def test_check_refuses_a_config_that_breaks_a_constraint(tmp_path, capsys):
    path = tmp_path / "y.toml"
    path.write_text("[scan_fwd]\nBLOCK_D = 4\n")  # the channels layout needs BLOCK_D >= 8
    assert main(["check", "--quick", "--backend", "numba_cpu", "--config", str(path)]) == 2
    assert "breaks the constraint \"LAYOUT == 'scalar' or BLOCK_D >= 8\"" in capsys.readouterr().err


def test_cache_import_refuses_an_entry_outside_the_search_space(tmp_path, capsys):
    bad = {**default_config("numba_cpu", ScanSpec()), "LAYOUT": "bogus"}
    assert main(["cache", "import", _cache_file(tmp_path, bad)]) == 2
    err = capsys.readouterr().err
    assert "tuned.json" in err and "[scan_fwd] LAYOUT = 'bogus' is not one of its choices" in err
    assert not cache.user_file("numba_cpu").exists()  # nothing imported


def test_debug_shows_the_traceback():
    with pytest.raises(ValueError, match="no such file"):
        main(["--debug", "cache", "import", "/nonexistent.json"])
    with pytest.raises(ValueError, match="no such file"):
        main(["cache", "import", "/nonexistent.json", "--debug"])


def test_cache_commands_default_to_this_machines_backend_and_take_backend_after_the_action(tmp_path, capsys):
    good = default_config("numba_cpu", ScanSpec())
    assert main(["cache", "import", _cache_file(tmp_path, good)]) == 0
    for argv in (["cache", "export", str(tmp_path / "a.json")],  # this machine (no GPU here): numba_cpu
                 ["cache", "export", "--backend", "numba_cpu", str(tmp_path / "b.json")],
                 ["cache", "--backend", "numba_cpu", "export", str(tmp_path / "c.json")]):
        assert main(argv) == 0, capsys.readouterr()
    for name in "abc":
        assert json.loads((tmp_path / f"{name}.json").read_text())["fingerprint"]["backend"] == "numba_cpu"
    assert main(["cache", "show"]) == 0
    assert "numba_cpu on" in capsys.readouterr().out


def test_show_kernel_defaults_to_this_machines_backend(capsys):
    assert main(["show-kernel"]) == 0
    assert "from numba import" in capsys.readouterr().out  # no GPU here: the Numba CPU kernel


def _outcome(**fields):
    task = Task("numba_cpu", ScanSpec(), (1, 64, 256, 16), "causal")
    config = default_config("numba_cpu", ScanSpec())
    return Outcome(task, "study", dict(config), dict(config), 4.96e-4, 4.96e-4, **fields)


def test_the_summary_says_what_happened_and_fits_80_columns():
    reason = ("best config LAYOUT=channels EXP=poly BLOCK_D=32 CHUNK_L=1024 (0.501 ms, -0.9%) did not beat the "
              "default (0.496 ms) by more than 15.4% (the re-timing noise) when re-timed; default kept")
    kept = _outcome(trials=1, complete=1, measured_now=1, remeasured=1, interrupted=1, noisy=1, note=reason)
    won = _outcome(trials=4, complete=3, failed=1, measured_now=4, accepted=True)
    console = Console(width=80, record=True)
    console.print(summary_table([kept, won]))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    rows = [line.split("│")[1:-1] for line in text.splitlines() if line.count("│") == 7]
    column = ["".join(row[i].strip() + " " for row in rows) for i in range(6)]  # each column's cells, in order
    assert "".join(f"not cached: {reason}".split()) in "".join(column[5].split())  # the reason is never cut
    assert "1 re-measured 1 interrupted 1 noisy" in " ".join(column[1].split())
    assert "4 measured (1 failed)" in " ".join(column[1].split())
    assert result_text(won).startswith("cached: LAYOUT=") and result_text(kept).startswith("not cached: best")
    assert "nothing was cached" in closing_line([kept], 1.0)
    assert "1 tuned config(s) cached" in closing_line([kept, won], 1.0) and not math.isnan(won.speedup)
