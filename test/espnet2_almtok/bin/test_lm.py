"""The LM entry points on demo tokens: lm_data -> lm_train (ESPnet trainer) -> lm_inference."""

import shutil
from pathlib import Path

import pytest
import soundfile
import torch
import yaml

from conftest import DEBUG_CONFIG, ROOT
from conftest import run_python as run

LM_CONFIG = ROOT / "conf" / "tuning" / "train_lm_debug.yaml"


def make_codec_exp(path: Path) -> Path:
    """An (untrained) ALMTokenizer exp dir: config.yaml + model.pth, as from_pretrained reads it."""
    from espnet2_almtok import ALMTokenizer

    path.mkdir(parents=True)
    shutil.copy(DEBUG_CONFIG, path / "config.yaml")
    torch.manual_seed(0)  # module fixtures run before the per-test seed
    tok = ALMTokenizer.from_config(DEBUG_CONFIG, use_priors=False)
    torch.save({f"codec.generator.{k}": v for k, v in tok.generator.state_dict().items()}, path / "model.pth")
    return path


@pytest.fixture(scope="module")
def demo_lm(tmp_path_factory):
    """Demo corpus -> codec tokens -> BPE -> LM data dirs for train/dev/test."""
    from espnet2_almtok.inference import codec_inference
    from espnet2_almtok.recipe import data_prep, lm_data

    root = tmp_path_factory.mktemp("demo_lm")
    data_prep.main(["demo", "--db", str(root / "db"), "--out", str(root / "data")])
    codec = make_codec_exp(root / "codec")
    for s in ("train", "dev", "test"):
        codec_inference.main(["--model_dir", str(codec), "--data_path_and_name_and_type",
                              f"{root}/data/{s}/wav.scp,audio,sound", "--output_dir", str(root / "codes" / s),
                              "--window", "4", "--encode_only"])
    lm_data.main(["bpe", "--text", str(root / "data/train/text"), "--nbpe", "120", "--out_dir", str(root / "bpe")])
    for s in ("train", "dev", "test"):
        lm_data.main(["build", "--audio_dir", str(root / "data" / s), "--codes_dir", str(root / "codes" / s / "codes"),
                      "--bpemodel", str(root / "bpe/bpe.model"), "--out", str(root / "lm" / s),
                      "--token_list", str(root / "lm/tokens.txt"), "--max_len", "1024"])
    return root


def test_lm_data_dirs(demo_lm):
    from espnet2_almtok.lm.vocab import Vocabulary

    tasks = dict(line.split() for line in (demo_lm / "lm/train/task").read_text().splitlines())
    assert sum(t == "asr" for t in tasks.values()) == 42 and sum(t == "caption" for t in tasks.values()) == 4
    assert tasks["caption-sounds-chirp"] == "caption" and tasks["tts-spkenus-s00"] == "tts"
    text = dict(line.split(maxsplit=1) for line in (demo_lm / "lm/train/text").read_text().splitlines())
    assert text["caption-sounds-chirp"] == "a tone sweeping up from low to high"
    vocab = Vocabulary.from_token_list(demo_lm / "lm/tokens.txt")
    assert (vocab.n_q, vocab.codebook_size) == (3, 64)
    assert (demo_lm / "lm/train/skipped").read_text() == ""


def read_epoch_losses(exp: Path):
    reporter = torch.load(exp / "checkpoint.pth", map_location="cpu", weights_only=False)["reporter"]
    return [reporter["stats"][e]["train"]["loss"] for e in sorted(reporter["stats"])]


@pytest.fixture(scope="module")
def trained_lm(demo_lm):
    exp = demo_lm / "exp_lm"
    args = ["-m", "espnet2_almtok.bin.lm_train", "--config", str(LM_CONFIG),
            "--token_list", str(demo_lm / "lm/tokens.txt"), "--bpemodel", str(demo_lm / "bpe/bpe.model"),
            "--layout", "delay", "--max_epoch", "3", "--num_iters_per_epoch", "30", "--output_dir", str(exp)]
    for mode, s in (("train", "train"), ("valid", "dev")):
        for f in ("task,task,text", "text,text,text", "codes.scp,codes,kaldi_ark"):
            args += [f"--{mode}_data_path_and_name_and_type", f"{demo_lm}/lm/{s}/{f}"]
        args += [f"--{mode}_shape_file", f"{demo_lm}/lm/{s}/dec_seq_shape"]
    run(args, cwd=demo_lm)
    return exp


def test_lm_train_loss_falls_on_demo_tokens(trained_lm):
    losses = read_epoch_losses(trained_lm)
    assert len(losses) == 3 and losses[-1] < 0.7 * losses[0], losses
    config = yaml.safe_load((trained_lm / "config.yaml").read_text())
    assert config["layout"] == "delay" and config["token_list"][:3] == ["<pad>", "<empty>", "<eos>"]


def test_lm_inference_asr_returns_text(demo_lm, trained_lm):
    from espnet2_almtok.inference import lm_inference

    out = demo_lm / "decode_asr"
    lm_inference.main(["--model_dir", str(trained_lm), "--data_dir", str(demo_lm / "lm/test"), "--task", "asr",
                       "--method", "beam", "--beam_size", "3", "--max_new_tokens", "20", "--output_dir", str(out)])
    hyps = dict((line.split(maxsplit=1) + [""])[:2] for line in (out / "text").read_text().splitlines())
    refs = dict(line.split(maxsplit=1) for line in (out / "ref").read_text().splitlines())
    assert set(hyps) == set(refs) and len(refs) == 12 and "spkenus-s08" in refs
    assert all(isinstance(h, str) for h in hyps.values()) and any(h.strip() for h in hyps.values())
    assert (out / ".done").exists() and not (out / "tmp").exists()


def test_lm_inference_tts_writes_codes_and_audio(demo_lm, trained_lm):
    from espnet2_almtok.inference import lm_inference
    from espnet2_almtok.fileio import read_codes_scp

    out = demo_lm / "decode_tts"
    lm_inference.main(["--model_dir", str(trained_lm), "--data_dir", str(demo_lm / "lm/test"), "--task", "tts",
                       "--method", "sample", "--top_k", "10", "--max_new_tokens", "60", "--batch_size", "5",
                       "--codec_model", str(demo_lm / "codec"), "--key_file", str(demo_lm / "data/test/text"),
                       "--output_dir", str(out)])
    codes = dict(read_codes_scp(out / "codes" / "codes.scp"))
    assert len(codes) == 12
    wavs = dict(line.split() for line in (out / "wav" / "wav.scp").read_text().splitlines())
    for utt, c in codes.items():
        assert c.shape[0] == 3 and 0 < c.shape[1] <= 60 and c.min() >= 0 and c.max() < 64, utt
        info = soundfile.info(wavs[utt])
        assert info.samplerate == 16000 and info.frames == c.shape[1] * 4 * 320, utt


def test_lm_inference_refuses_tokens_of_another_codec(demo_lm, trained_lm, tmp_path):
    from espnet2_almtok.inference import lm_inference

    data = tmp_path / "data"
    shutil.copytree(demo_lm / "lm/test", data)
    meta = yaml.safe_load((data / "meta.yaml").read_text())
    (data / "meta.yaml").write_text(yaml.safe_dump({**meta, "codebook_size": 1024, "n_q": 8}))
    with pytest.raises(ValueError, match="8 x 1024 codes but the LM was trained on 3 x 64"):
        lm_inference.main(["--model_dir", str(trained_lm), "--data_dir", str(data), "--task", "asr",
                           "--output_dir", str(tmp_path / "out")])


def test_lm_train_print_config_round_trip(tmp_path):
    out = run(["-m", "espnet2_almtok.bin.lm_train", "--config", str(LM_CONFIG), "--print_config"], cwd=tmp_path).stdout
    printed = yaml.safe_load(out)
    assert printed["lm"] == "transformer" and printed["lm_conf"]["max_len"] == 1024 and printed["layout"] == "flat"
    (tmp_path / "printed.yaml").write_text(out)
    again = run(["-m", "espnet2_almtok.bin.lm_train", "--config", "printed.yaml", "--print_config"], cwd=tmp_path)
    assert yaml.safe_load(again.stdout) == printed


def test_model_info_reports_lm_sizes(capsys):
    """The README's LM sizes come from this command."""
    from espnet2_almtok.inference import model_info

    model_info.main(["--config", str(ROOT / "conf/tuning/train_lm_base.yaml")])
    out = capsys.readouterr().out
    assert "11160 ids (5000 text pieces, 3 x 2048 codes)" in out
    assert "layout flat (the config's): 102.2 M parameters" in out and "layout delay: 119.4 M" in out


def test_model_info_reads_a_trained_lms_vocabulary(trained_lm, capsys):
    """A trained LM's config.yaml carries its token list: its size, not the default assumption's."""
    from espnet2_almtok.inference import model_info
    from espnet2_almtok.lm.vocab import Vocabulary

    config = yaml.safe_load((trained_lm / "config.yaml").read_text())
    n = len(Vocabulary.from_token_list(config["token_list"]))
    model_info.main(["--config", str(trained_lm / "config.yaml")])
    assert f"vocabulary: {n} ids" in capsys.readouterr().out and n != 11160


@pytest.mark.parametrize("content, says", [(None, "cannot read it"), ("a: [unclosed", "is not a YAML file"),
                                           ("just a string", "holds no codec_conf or lm_conf"),
                                           (b"\xff\xfe\x00binary", "is not a YAML file")])
def test_model_info_names_a_bad_config(tmp_path, capsys, content, says):
    from espnet2_almtok.inference import model_info

    path = tmp_path / "config.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as e:
        model_info.main(["--config", str(path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and str(path) in err and says in err


def test_an_lm_config_edited_after_training_is_refused_naming_the_key(demo_lm, trained_lm, tmp_path):
    """The LM training stamped its config.yaml (config_stamp): lm_inference refuses it edited."""
    from espnet2_almtok.config_stamp import STAMP_NAME
    from espnet2_almtok.inference import lm_inference

    exp = tmp_path / "exp_lm"
    shutil.copytree(trained_lm, exp)
    assert (exp / STAMP_NAME).is_file()
    config = yaml.safe_load((exp / "config.yaml").read_text())
    (exp / "config.yaml").write_text(yaml.safe_dump({**config, "layout": "flat"}, sort_keys=False))
    with pytest.raises(ValueError, match=r"is not the config its training wrote \(changed: 'layout'\)"):
        lm_inference.main(["--model_dir", str(exp), "--data_dir", str(demo_lm / "lm/test"), "--task", "asr",
                           "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out" / ".done").exists()
