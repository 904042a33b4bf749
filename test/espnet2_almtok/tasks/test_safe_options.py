"""ESPnet's nested-dict options (--codec_conf ...) are read as YAML and never run code."""

import argparse

import pytest

import espnet2_almtok.tasks  # noqa: F401  (installs the safe action)
from espnet2.utils.nested_dict_action import NestedDictAction


def parser():
    p = argparse.ArgumentParser(exit_on_error=False)
    p.add_argument("--codec_conf", action=NestedDictAction, default={"a": 1})
    return p


def test_key_values_and_mappings_still_parse():
    args = parser().parse_args(["--codec_conf", "b.c=3", "--codec_conf", "use_mae_loss=false",
                                "--codec_conf", "{d: [1, 2], e: true}"])
    assert args.codec_conf == {"a": 1, "b": {"c": 3}, "use_mae_loss": False, "d": [1, 2], "e": True}


@pytest.mark.parametrize("word", ['__import__("os").system("touch {marker}")',
                                  'a=!!python/object/apply:os.system ["touch {marker}"]',
                                  '!!python/object/apply:os.system ["touch {marker}"]'])
def test_code_in_an_option_is_refused_and_never_runs(tmp_path, word):
    marker = tmp_path / "PWNED"
    with pytest.raises((argparse.ArgumentError, SystemExit)):
        parser().parse_args(["--codec_conf", word.format(marker=marker)])
    assert not marker.exists()
