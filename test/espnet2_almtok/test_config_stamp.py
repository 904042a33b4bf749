"""The training config's stamp (espnet2_almtok/config_stamp.py): an exp dir's config.yaml edited
after training is refused naming the keys; the same options in another layout, or no stamp, load."""

import pytest
import yaml

from espnet2_almtok.config_stamp import (STAMP_NAME, check_config_stamp, config_stamp_problem,
                                         write_config_stamp)

CONF = {"config": "conf/train.yaml", "codec": "almtok", "crop_length": 8000,
        "codec_conf": {"sampling_rate": 16000, "generator_params": {"windows": [2, 4], "n_q": 3}},
        "version": "202511"}


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "exp" / "config.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(CONF, sort_keys=False))
    write_config_stamp(path)
    return path


def test_the_config_training_wrote_passes_and_the_stamp_sits_beside_it(config):
    assert (config.parent / STAMP_NAME).is_file()
    assert config_stamp_problem(config) is None
    check_config_stamp(config)


def test_the_same_options_in_another_layout_pass(config):
    config.write_text("# a comment\n" + yaml.safe_dump(CONF, sort_keys=True, indent=4))
    assert config_stamp_problem(config) is None


@pytest.mark.parametrize("edit, says", [
    (lambda c: {**c, "crop_length": 48000}, r"changed: 'crop_length'"),
    (lambda c: {**c, "codec_conf": {**c["codec_conf"], "sampling_rate": 24000}}, r"changed: 'codec_conf'"),
    (lambda c: {k: v for k, v in c.items() if k != "version"}, r"lost: 'version'"),
    (lambda c: {**c, "inference_window": 2}, r"added: 'inference_window'"),
])
def test_an_edited_config_is_refused_naming_the_key_and_the_fix(config, edit, says):
    config.write_text(yaml.safe_dump(edit(dict(CONF)), sort_keys=False))
    with pytest.raises(ValueError, match=says) as e:
        check_config_stamp(config)
    message = str(e.value)
    assert str(config) in message and f"delete {config.parent / STAMP_NAME}" in message


def test_a_config_cut_short_names_every_key_it_lost(config):
    text = config.read_text()
    config.write_text(text[: text.index("codec_conf")])
    with pytest.raises(ValueError, match=r"lost: 'codec_conf', 'version'"):
        check_config_stamp(config)


def test_no_stamp_loads_as_before_and_a_broken_stamp_is_named(config):
    stamp = config.parent / STAMP_NAME
    stamp.write_text("- not a stamp\n")
    with pytest.raises(ValueError, match=rf"its stamp {stamp} is unreadable"):
        check_config_stamp(config)
    stamp.unlink()
    config.write_text(yaml.safe_dump({**CONF, "crop_length": 1}))
    assert config_stamp_problem(config) is None


def test_mappings_with_keys_of_mixed_types_are_stamped():
    """YAML allows {1: a, b: c}; JSON cannot sort such keys: the stamp still digests them, by type."""
    from espnet2_almtok.config_stamp import config_stamp

    keys = config_stamp("m: {1: a, b: c}\n")["keys"]
    assert keys == config_stamp("m: {b: c, 1: a}\n")["keys"] != config_stamp("m: {'1': a, b: c}\n")["keys"]


def test_a_file_system_without_locks_warns_and_goes_on(tmp_path, monkeypatch, caplog):
    """hold_lock (format jobs, decoding): a mount without flock (ENOLCK) is not a second job."""
    import errno
    import fcntl

    from espnet2_almtok.fileio import hold_lock

    def no_locks(*_):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    handle = hold_lock(tmp_path, "format job", "")
    handle.close()
    assert "cannot lock" in caplog.text and "No locks available" in caplog.text
