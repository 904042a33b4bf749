"""The codec as a tokenizer choice: ALMTokenizer or an ESPnet codec exp behind one interface."""

import argparse

import pytest
import soundfile
import torch
import yaml

from conftest import ROOT, speechlike


@pytest.fixture(scope="module")
def dac_exp(tmp_path_factory):
    """An (untrained) ESPnet DAC exp dir as ALMTokCodecTask writes it: config.yaml + latest.pth."""
    from espnet2_almtok.tasks.codec import ALMTokCodecTask

    exp = tmp_path_factory.mktemp("dac_exp")
    conf = yaml.safe_load((ROOT / "conf/benchmark/dac.yaml").read_text())
    conf.setdefault("model_conf", {})
    (exp / "config.yaml").write_text(yaml.safe_dump(conf))
    torch.save(ALMTokCodecTask.build_model(argparse.Namespace(**conf)).state_dict(), exp / "latest.pth")
    return exp


def test_espnet_codec_encodes_and_decodes(dac_exp):
    from espnet2_almtok.codec_tokenizer import ESPnetCodecTokenizer, codec_kind, load_codec_tokenizer

    assert codec_kind(dac_exp) == "dac"
    tok = load_codec_tokenizer(dac_exp)
    assert isinstance(tok, ESPnetCodecTokenizer) and not tok.windowed
    assert tok.codebook_size == 1024 and tok.token_rate() == 16000 / tok.hop_length
    codes, lengths = tok.encode([speechlike(1.0), speechlike(0.5, seed=1)], 16000, return_lengths=True)
    assert codes.shape == (2, tok.n_q, 50) and lengths.tolist() == [50, 25]
    assert codes.min() >= 0 and codes.max() < 1024
    # a clip's codes do not depend on the batch it is in
    alone = tok.encode([speechlike(0.5, seed=1)], 16000)
    assert torch.equal(alone[0], codes[1, :, :25])
    assert tok.decode(codes[:1]).shape == (1, 50 * tok.hop_length)


def test_almtok_exp_loads_as_almtokenizer(tmp_path, debug_config):
    import shutil

    from espnet2_almtok import ALMTokenizer
    from espnet2_almtok.codec_tokenizer import load_codec_tokenizer

    shutil.copy(debug_config, tmp_path / "config.yaml")
    ref = ALMTokenizer.from_config(debug_config, use_priors=False)
    torch.save({f"codec.generator.{k}": v for k, v in ref.generator.state_dict().items()}, tmp_path / "model.pth")
    tok = load_codec_tokenizer(tmp_path)
    assert isinstance(tok, ALMTokenizer) and tok.windowed and tok.check_window(4) == 4
    assert torch.equal(tok.encode(speechlike(0.5), 16000, 4), ref.encode(speechlike(0.5), 16000, 4))


def test_codec_inference_with_an_espnet_codec(dac_exp, tmp_path):
    from espnet2_almtok.inference import codec_inference
    from espnet2_almtok.fileio import read_codes_scp, read_meta

    soundfile.write(tmp_path / "a.wav", speechlike(0.6).numpy(), 16000)
    (tmp_path / "wav.scp").write_text(f"a {tmp_path / 'a.wav'}\n")
    out = tmp_path / "out"
    codec_inference.main(["--model_dir", str(dac_exp), "--data_path_and_name_and_type",
                          f"{tmp_path}/wav.scp,audio,sound", "--output_dir", str(out)])
    meta = read_meta(out / "codes")
    assert meta["window"] is None and meta["codebook_size"] == 1024 and meta["token_rate"] == 50.0
    codes = dict(read_codes_scp(out / "codes" / "codes.scp"))
    assert codes["a"].shape == (meta["n_q"], 30)
    assert soundfile.info(out / "wav" / "a.wav").frames == int(0.6 * 16000)


def test_missing_codec_model_is_named(tmp_path):
    from espnet2_almtok.codec_tokenizer import load_codec_tokenizer

    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_codec_tokenizer(tmp_path / "nowhere")
