"""recipe/check_stage2: stage 2 refuses a generator that is not stage 1's, naming the option."""

import pytest
import yaml

from espnet2_almtok.recipe.check_stage2 import main


def write(path, generator_params, **codec_conf):
    path.write_text(yaml.safe_dump({"codec": "almtok", "codec_conf": {"generator_params": generator_params,
                                                                       **codec_conf}}))
    return str(path)


def test_same_generator_passes_even_when_the_codec_switches_differ(tmp_path):
    gp = {"hidden_dim": 32, "query_shortcut": True, "codebook_init": ["exp/a.npy", "exp/b.npy"]}
    moved = {**gp, "codebook_init": ["exp2/a.npy", "exp2/b.npy"]}  # priors read only to initialise
    main([write(tmp_path / "s1.yaml", gp, use_mae_loss=True), write(tmp_path / "s2.yaml", moved, use_mae_loss=False)])


def test_an_option_given_to_stage_1_only_is_refused_with_both_values_and_the_fix(tmp_path):
    s1 = write(tmp_path / "s1.yaml", {"hidden_dim": 32, "query_shortcut": True, "mae_pass": "separate"})
    s2 = write(tmp_path / "s2.yaml", {"hidden_dim": 32, "query_shortcut": False})  # mae_pass: the default
    with pytest.raises(SystemExit) as e:
        main([s1, s2])
    msg = str(e.value)
    assert "query_shortcut: True -> False" in msg and "mae_pass: 'separate' -> 'shared'" in msg
    assert "hidden_dim" not in msg and "--stage2_args" in msg and s1 in msg


def test_an_option_left_out_equals_its_default_given_explicitly(tmp_path):
    main([write(tmp_path / "s1.yaml", {"hidden_dim": 32}),
          write(tmp_path / "s2.yaml", {"hidden_dim": 32, "query_shortcut": False, "windows": [2, 3, 4, 5, 6, 7, 8, 9, 10]})])


def test_a_config_without_generator_params_is_named(tmp_path):
    (tmp_path / "bad.yaml").write_text("codec: dac\n")
    with pytest.raises(ValueError, match="bad.yaml: no codec_conf.generator_params"):
        main([str(tmp_path / "bad.yaml"), str(tmp_path / "bad.yaml")])


def test_stage_1s_config_edited_after_its_training_is_refused(tmp_path):
    """Stage 2 compares against stage 1's config as trained: an edit since (which would hide a
    difference) is refused by the config stamp."""
    from espnet2_almtok.config_stamp import write_config_stamp

    (tmp_path / "exp1").mkdir()
    s1 = write(tmp_path / "exp1" / "config.yaml", {"hidden_dim": 32, "query_shortcut": True})
    write_config_stamp(s1)
    write(tmp_path / "exp1" / "config.yaml", {"hidden_dim": 32, "query_shortcut": False})
    with pytest.raises(ValueError, match=r"exp1/config.yaml is not the config its training wrote \(changed: 'codec_conf'\)"):
        main([s1, write(tmp_path / "s2.yaml", {"hidden_dim": 32, "query_shortcut": False})])
