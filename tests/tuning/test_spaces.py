"""Search spaces are data: every shipped file parses and validates; a malformed one is a clear
error naming the file and key; constraints filter the grid."""

import pytest

from scanforge import backends
from scanforge.tuning.spaces import backend_spaces, parse_file

GOOD = """
[scan_fwd]
constraints = ["BLOCK_D * N <= 64"]
[scan_fwd.params]
BLOCK_D = [2, 4, 8]
[scan_fwd.default]
BLOCK_D = 4
"""


@pytest.mark.parametrize("backend", [b for b in backends.names() if b != "reference"])
def test_every_shipped_space_file_is_valid(backend):
    spaces = backend_spaces(backend)
    assert {"scan_fwd", "scan_bwd", "gather_fwd", "gather_bwd"} <= set(spaces)
    for space in spaces.values():
        assert all(space.default[k] in v for k, v in space.params.items())


def test_constraints_filter_the_grid(tmp_path):
    space = parse_file("x.toml", GOOD)["scan_fwd"]
    assert [c["BLOCK_D"] for c in space.grid((2, 64, 128, 16))] == [2, 4]
    assert space.violated({"BLOCK_D": 8}, (2, 64, 128, 16)) == "BLOCK_D * N <= 64"
    assert space.violated({"BLOCK_D": 8}, (2, 64, 128, 4)) is None


def test_a_dtype_default_overrides_the_family_default_for_that_dtype():
    space = parse_file("x.toml", GOOD + "[scan_fwd.float32.default]\nBLOCK_D = 2\n")["scan_fwd"]
    assert space.default_for("float32") == {"BLOCK_D": 2}
    assert space.default_for("bfloat16") == space.default == {"BLOCK_D": 4}


@pytest.mark.parametrize("text, message", [
    ("[scan_fwd\n", "not valid TOML"),
    (GOOD.replace("BLOCK_D = 4", "BLOCK_D = 3"), "scan_fwd].default.BLOCK_D: 3 is not one of its choices"),
    (GOOD.replace("[2, 4, 8]", "[]"), "scan_fwd].params.BLOCK_D: expected a non-empty list"),
    (GOOD.replace("[2, 4, 8]", "[2, 2]"), "repeated choices"),
    (GOOD.replace("BLOCK_D * N", "BLOCK_X * N"), "uses 'BLOCK_X'"),
    (GOOD.replace("BLOCK_D * N <= 64", "__import__('os')"), "only arithmetic"),
    (GOOD.replace("BLOCK_D * N <= 64", "BLOCK_D <="), "is not a Python expression"),
    (GOOD + "[scan_fwd.tiles]\nX = 1\n", "unknown keys ['tiles']"),
    (GOOD.replace("[scan_fwd.default]\nBLOCK_D = 4\n", ""), "missing [scan_fwd.default]"),
    (GOOD.replace("scan_fwd", "conv_fwd"), "unknown kernel family"),
    (GOOD + "[scan_fwd.float32.default]\nBLOCK_D = 16\n", "float32.default.BLOCK_D: 16 is not a parameter"),
    (GOOD + "[scan_fwd.float32]\nBLOCK_D = 2\n", "expected only a [float32.default] table"),
])
def test_a_malformed_space_names_the_file_and_key(text, message):
    with pytest.raises(ValueError, match="bad.toml") as info:
        parse_file("bad.toml", text)
    assert message in str(info.value)
