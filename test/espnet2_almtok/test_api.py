import math

import pytest
import torch
import yaml

from conftest import speechlike
from espnet2_almtok import ALMTokenizer
from espnet2_almtok.audio import AudioError


def test_rates_and_bitrates(tokenizer):
    assert tokenizer.sample_rate == 16000
    for w in range(2, 11):
        assert tokenizer.token_rate(w) == pytest.approx(50 / w)
        assert tokenizer.bitrate(w) == pytest.approx(50 / w * 3 * math.log2(64))


def test_encode_decode_round_trip_shape_and_dtype(tokenizer):
    wav = speechlike(1.0)
    codes = tokenizer.encode(wav, 16000, window=4)
    assert codes.shape == (1, 3, 13) and codes.dtype == torch.long
    out = tokenizer.decode(codes, window=4)
    assert out.shape == (1, 13 * 4 * 320) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_other_rate_is_resampled_and_channels_downmixed(tokenizer):
    wav16 = speechlike(1.0)
    import torchaudio

    wav8 = torchaudio.functional.resample(wav16, 16000, 8000)
    codes8 = tokenizer.encode(wav8, 8000, window=4)
    assert codes8.shape == (1, 3, 13)
    stereo = torch.stack([wav16, wav16])  # (C, T), channels first
    assert torch.equal(tokenizer.encode([stereo], 16000), tokenizer.encode(wav16, 16000))
    assert torch.equal(tokenizer.encode(stereo.unsqueeze(0), 16000), tokenizer.encode(wav16, 16000))


def test_batch_of_unequal_lengths_matches_one_by_one(tokenizer):
    clips = [speechlike(s, seed=i) for i, s in enumerate((0.3, 1.1, 0.7))]
    codes, lengths = tokenizer.encode(clips, 16000, window=3, return_lengths=True)
    assert codes.shape[0] == 3
    for i, clip in enumerate(clips):
        single = tokenizer.encode(clip, 16000, window=3)
        assert lengths[i] == single.shape[-1] == tokenizer.num_tokens(len(clip), 3)
        assert torch.equal(codes[i, :, : lengths[i]], single[0])


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(0), "empty"),
    (torch.zeros(16000), "all zeros"),
    (torch.tensor([0.1, float("nan")] * 800), "NaN or inf"),
    (torch.tensor([0.1, float("inf")] * 800), "NaN or inf"),
])
def test_bad_audio_is_named_and_explained(tokenizer, bad, match):
    with pytest.raises(AudioError, match=match):
        tokenizer.encode(bad, 16000)


def test_bad_clip_in_a_batch_is_named(tokenizer):
    with pytest.raises(AudioError, match="clip 1: the audio is empty"):
        tokenizer.encode([speechlike(0.2), torch.zeros(0)], 16000)


@pytest.mark.parametrize("rate", [12000, 96000, 192000, 12345])
def test_uncommon_and_high_rates_are_resampled(tokenizer, tmp_path, rate):
    """Any whole rate with a short resampling kernel is coded like the same speech at 16 kHz
    (same token count), from an array and from a file."""
    import soundfile
    import torchaudio

    wav = torchaudio.functional.resample(speechlike(0.5), 16000, rate)
    soundfile.write(tmp_path / "x.wav", wav.numpy(), rate)
    expected = tokenizer.encode(speechlike(0.5), 16000).shape
    assert tokenizer.encode(wav, rate).shape == tokenizer.encode(tmp_path / "x.wav").shape == expected


def test_unsupported_rate_and_window_and_codes(tokenizer):
    with pytest.raises(AudioError, match="unsupported sample rate 1000; give a whole number of Hz from 4000"):
        tokenizer.encode(speechlike(0.2), 1000)
    with pytest.raises(AudioError, match=r"unsupported sample rate 44057 Hz: its ratio to 16000 Hz \(44057:16000\)"):
        tokenizer.encode(speechlike(0.2), 44057)
    with pytest.raises(ValueError, match="w=11 was not trained"):
        tokenizer.encode(speechlike(0.2), 16000, window=11)
    with pytest.raises(ValueError, match="out of range"):
        tokenizer.decode(torch.full((1, 3, 5), 64))
    with pytest.raises(ValueError, match="integers"):
        tokenizer.decode(torch.zeros(1, 3, 5))


def test_not_audio_file_is_reported(tmp_path):
    from espnet2_almtok.audio import read_audio

    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio")
    with pytest.raises(AudioError, match="notes.wav is not readable audio"):
        read_audio(bad)
    with pytest.raises(AudioError, match="does not exist"):
        read_audio(tmp_path / "missing.wav")


def test_checkpoint_of_another_config_is_rejected(tmp_path, debug_config):
    conf = yaml.safe_load(open(debug_config))
    exp = tmp_path / "exp"
    exp.mkdir()
    other = dict(conf)
    other["codec_conf"] = {**conf["codec_conf"],
                           "generator_params": {**conf["codec_conf"]["generator_params"], "hidden_dim": 32}}
    small = ALMTokenizer(other["codec_conf"])
    torch.save({"codec.generator." + k: v for k, v in small.generator.state_dict().items()}, exp / "model.pth")
    with open(exp / "config.yaml", "w") as f:
        yaml.safe_dump(conf, f)
    with pytest.raises(ValueError, match="trained with another config"):
        ALMTokenizer.from_pretrained(exp)
    with pytest.raises(FileNotFoundError, match="no model file"):
        (exp / "model.pth").unlink()
        ALMTokenizer.from_pretrained(exp)


def test_state_dict_round_trip_through_from_pretrained(tmp_path, debug_config, tokenizer):
    exp = tmp_path / "exp"
    exp.mkdir()
    torch.save({"codec.generator." + k: v for k, v in tokenizer.generator.state_dict().items()}, exp / "model.pth")
    (exp / "config.yaml").write_text(open(debug_config).read())
    loaded = ALMTokenizer.from_pretrained(exp)
    wav = speechlike(0.6)
    assert torch.equal(loaded.encode(wav, 16000), tokenizer.encode(wav, 16000))


@pytest.mark.parametrize("config, fs", [("train_almtok_paper.yaml", 24000), ("train_almtok_speech16k.yaml", 16000)])
def test_paper_size_configs_build_and_code_at_the_paper_rates(config, fs):
    from conftest import ROOT

    tok = ALMTokenizer.from_config(ROOT / "conf/tuning" / config)
    assert (tok.n_q, tok.codebook_size, tok.sample_rate) == (3, 2048, fs)
    assert tok.token_rate(4) == pytest.approx(12.5) and tok.bitrate(4) == pytest.approx(412.5)
    gen = tok.generator
    assert 89e6 < tok.num_parameters < 91e6  # the README: 90.2 M of the 109.9 M generator at inference
    codes = tok.encode(speechlike(1.0, sr=fs), fs, window=8)
    assert codes.shape == (1, 3, 7) and int(codes.max()) < 2048
    assert tok.decode(codes, window=8).shape == (1, 7 * 8 * gen.hop_length)


class _RunsCode:
    """Unpickling this calls ``Path.touch`` on a chosen file (what a crafted model file does)."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.target),))


def test_a_crafted_model_file_is_refused_without_running_code(tmp_path, debug_config, tokenizer):
    from espnet2_almtok.api import load_state_dict

    marker = tmp_path / "pwned"
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "config.yaml").write_text(open(debug_config).read())
    state = {"codec.generator." + k: v for k, v in tokenizer.generator.state_dict().items()}
    torch.save({**state, "payload": _RunsCode(marker)}, exp / "model.pth")
    with pytest.raises(ValueError, match=r"model\.pth holds objects other than tensors.*latest\.pth"):
        ALMTokenizer.from_pretrained(exp)
    assert not marker.exists()
    # a truncated file names itself
    (exp / "model.pth").write_bytes(open(exp / "model.pth", "rb").read()[:1000])
    with pytest.raises(ValueError, match=r"model\.pth is not a readable PyTorch file"):
        load_state_dict(exp / "model.pth")
    # state dicts, bare or under "model" with plain-typed extras, load
    torch.save({"model": state, "optimizers": [{"state": {}, "param_groups": [{"lr": 1e-3}]}]}, exp / "checkpoint.pth")
    assert set(load_state_dict(exp / "checkpoint.pth")) == set(state)


def test_common_array_layouts_are_read_as_one_clip(tokenizer, tmp_path):
    """soundfile's (T, C), torchaudio's (C, T), int16 PCM and a file path all give the codes of
    the same mono clip; batches are (B, C, T) or lists."""
    import numpy as np
    import soundfile

    mono = speechlike(0.8)
    ref = tokenizer.encode(mono, 16000)
    stereo_tc = torch.stack([mono, mono], 1)  # soundfile.read layout
    assert torch.equal(tokenizer.encode(stereo_tc.numpy(), 16000), ref)
    assert torch.equal(tokenizer.encode(stereo_tc.T, 16000), ref)  # torchaudio.load layout
    assert torch.equal(tokenizer.encode(stereo_tc, 16000, channels_first=False), ref)
    pcm = (mono.numpy() * 32767).astype(np.int16)
    assert (tokenizer.encode(pcm, 16000) != ref).float().mean() < 0.05  # scaled, not 32767x too loud
    soundfile.write(tmp_path / "a.wav", stereo_tc.numpy(), 16000)
    assert (tokenizer.encode(tmp_path / "a.wav") != ref).float().mean() < 0.05  # PCM16 on disk
    with pytest.raises(AudioError, match="is 16000 Hz but sample_rate=8000"):
        tokenizer.encode(str(tmp_path / "a.wav"), 8000)
    with pytest.raises(AudioError, match="ambiguous"):
        tokenizer.encode(torch.randn(4, 4), 16000)
    with pytest.raises(ValueError, match="sample_rate is required"):
        tokenizer.encode(mono)
    batch = tokenizer.encode(torch.stack([stereo_tc.T, stereo_tc.T]), 16000)  # (B, C, T)
    assert batch.shape[0] == 2 and torch.equal(batch[1], ref[0])


@pytest.mark.parametrize("window", [4.5, "4", True])
def test_a_fractional_or_non_numeric_window_is_refused(tokenizer, window):
    with pytest.raises((ValueError, TypeError)):
        tokenizer.encode(speechlike(0.3), 16000, window=window)


def full_codec_exp(tmp_path, debug_config):
    """An exp dir as training leaves it: config.yaml and a model file of the whole GAN codec
    (generator with its MAE/AR heads, and the discriminator)."""
    from espnet2_almtok.codec.almtok import ALMTokenizerCodec

    conf = yaml.safe_load(open(debug_config))
    codec_conf = {**conf["codec_conf"],
                  "generator_params": {**conf["codec_conf"]["generator_params"], "codebook_init": None}}
    codec = ALMTokenizerCodec(**codec_conf).eval()
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "config.yaml").write_text(open(debug_config).read())
    torch.save({"codec." + k: v for k, v in codec.state_dict().items()}, exp / "valid.mel_loss.best.pth")
    return exp, codec


def test_from_pretrained_holds_the_inference_generator_only_and_leaves_no_temp_dir(tmp_path, debug_config,
                                                                                 monkeypatch):
    import tempfile

    from espnet2_almtok.recipe import pack

    exp, codec = full_codec_exp(tmp_path, debug_config)
    pack.main(["--exp_dir", str(exp), "--out", str(tmp_path / "packed.zip")])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    wav = speechlike(0.45)
    for source in (exp, tmp_path / "packed.zip"):
        tok = ALMTokenizer.from_pretrained(source)
        assert list(scratch.iterdir()) == []  # the zip's temporary directory is gone
        names = {n for n, _ in tok.named_modules()} | {n for n, _ in tok.named_parameters()}
        assert not any(("discriminator" in n or "mae" in n or "ar_head" in n) for n in names), names
        used = sum(p.numel() for k, p in codec.generator.named_parameters()
                   if not k.startswith(("mae_", "ar_head")))
        assert tok.num_parameters == used < sum(p.numel() for p in codec.generator.parameters())
        assert torch.equal(tok.encode(wav, 16000), codec.generator.encode(wav.view(1, 1, -1), 4))
    # a zip whose weights do not load leaves nothing behind either
    broken = tmp_path / "broken.zip"
    import zipfile

    with zipfile.ZipFile(broken, "w") as zf:
        zf.write(exp / "config.yaml", "almtok/config.yaml")
        zf.writestr("almtok/model.pth", b"not a model")
    with pytest.raises(ValueError, match=r"broken\.zip:almtok/model\.pth (is not a readable|holds objects)"):
        ALMTokenizer.from_pretrained(broken)
    assert list(scratch.iterdir()) == []


def test_a_zip_in_espnets_pack_format_loads(tmp_path, debug_config):
    from espnet2.main_funcs.pack_funcs import pack

    exp, codec = full_codec_exp(tmp_path, debug_config)
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        pack(files={"model_file": "exp/valid.mel_loss.best.pth"}, yaml_files={"train_config": "exp/config.yaml"},
             outpath=tmp_path / "espnet.zip")
    finally:
        os.chdir(cwd)
    tok = ALMTokenizer.from_pretrained(tmp_path / "espnet.zip")
    wav = speechlike(0.3)
    assert torch.equal(tok.encode(wav, 16000), codec.generator.encode(wav.view(1, 1, -1), 4))


def test_a_model_file_without_generator_weights_is_refused_naming_it(tmp_path, debug_config):
    exp, codec = full_codec_exp(tmp_path, debug_config)
    torch.save({"codec.discriminator." + k: v for k, v in codec.discriminator.state_dict().items()},
               exp / "valid.mel_loss.best.pth")
    with pytest.raises(ValueError, match=r"valid\.mel_loss\.best\.pth holds no ALMTokenizer generator weights"):
        ALMTokenizer.from_pretrained(exp)


def test_bfloat16_runs_the_networks_in_half_precision_and_the_codebook_search_in_float32(debug_config):
    tok = ALMTokenizer.from_config(debug_config, dtype="bfloat16")
    seen = {}
    tok.generator.encoder.layers.layers[0].linear1.register_forward_hook(  # the encoder's matmuls
        lambda m, a, out: seen.update(encoder=out.dtype) and None)
    tok.generator.quantizer.project_in.register_forward_pre_hook(lambda m, a: seen.update(vq=a[0].dtype) and None)
    wav = speechlike(2.0)
    codes = tok.encode(wav, 16000, window=4)
    assert seen == {"encoder": torch.bfloat16, "vq": torch.float32}
    out = tok.decode(codes, window=4)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    ref = ALMTokenizer.from_config(debug_config)
    ref.load_state_dict(tok.state_dict())
    assert codes.shape == ref.encode(wav, 16000, window=4).shape
    with pytest.raises(ValueError, match="dtype must be one of"):
        ALMTokenizer.from_config(debug_config, dtype="int8")


def test_an_oversized_yaml_member_of_a_packed_zip_is_refused_before_it_is_read(tmp_path):
    """A zip bomb's meta.yaml (17 MiB that compress to kB) is refused by its declared size."""
    import zipfile

    from espnet2_almtok import ALMTokenizer

    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("meta.yaml", " " * (17 << 20))
        zf.writestr("exp/config.yaml", "codec: almtok\n")
    assert path.stat().st_size < 1 << 20
    with pytest.raises(ValueError, match=r"bomb.zip: member meta.yaml is 17825792 bytes, over the 16777216"):
        ALMTokenizer.from_pretrained(path)


def test_a_packed_zip_member_larger_than_the_free_disk_is_refused_before_extraction(tmp_path, debug_config,
                                                                                    monkeypatch):
    """The weights are extracted to TMPDIR: a disk with less room than the member is named, with
    the fix, before anything is written (not an OSError half-way through a large file)."""
    import shutil
    import tempfile

    from espnet2_almtok.recipe import pack

    exp, _ = full_codec_exp(tmp_path, debug_config)
    pack.main(["--exp_dir", str(exp), "--out", str(tmp_path / "packed.zip")])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=100_000))
    with pytest.raises(ValueError, match=rf"packed.zip: member almtok/\S+ is \d+\.\d\d GB, more than the 0.00 GB "
                                         rf"free in the temporary directory {scratch} .*set TMPDIR"):
        ALMTokenizer.from_pretrained(tmp_path / "packed.zip")
    assert list(scratch.iterdir()) == []


def test_layouts_and_types_that_cannot_be_right_are_refused_not_coded(tokenizer):
    """A (B, T, C) batch is read as such only when said; a layout flag must be a bool; bool and
    complex samples or codes are not audio or codes."""
    clips = torch.stack([speechlike(0.5, seed=s) for s in range(2)])  # (B, T)
    ref = tokenizer.encode(clips.unsqueeze(1), 16000)  # (B, C=1, T)
    assert torch.equal(tokenizer.encode(clips.unsqueeze(2), 16000, channels_first=False), ref)  # (B, T, C) said
    with pytest.raises(AudioError, match=r"more channels than samples as \(B, C, T\); say its layout"):
        tokenizer.encode(clips.unsqueeze(2), 16000)
    with pytest.raises(ValueError, match="channels_first must be True, False or None, got 'False'"):
        tokenizer.encode(clips, 16000, channels_first="False")
    for bad in (clips > 0, clips.to(torch.complex64)):
        with pytest.raises(AudioError, match="samples are not audio|expected an array of audio samples"):
            tokenizer.encode(bad, 16000)
        with pytest.raises(AudioError, match="expected an array of audio samples"):
            tokenizer.encode(bad.numpy(), 16000)
    codes = tokenizer.encode(speechlike(0.5), 16000)
    for bad in (codes > 0, codes.to(torch.complex64)):
        with pytest.raises(ValueError, match="codes must be integers"):
            tokenizer.decode(bad)


def test_inputs_named_in_the_sweep_get_a_clear_answer(tokenizer):
    import numpy as np

    codes = tokenizer.encode(speechlike(0.5), 16000)
    assert torch.equal(tokenizer.encode(speechlike(0.5), 16000, n_q=np.int64(2)), codes[:, :2])  # as window does
    for bad in (["a", "b"], [[1, 2], [3]]):
        with pytest.raises(ValueError, match="codes must be an integer array"):
            tokenizer.decode(bad)
    with pytest.raises(TypeError, match="from_pretrained takes the path of an exp dir or a packed .zip, got NoneType"):
        ALMTokenizer.from_pretrained(None)


def test_a_yaml_alias_bomb_in_a_packed_zip_is_refused_before_it_expands(tmp_path):
    """'Billion laughs': nine levels of ten aliases each (a few hundred bytes, 10^9 strings once expanded)."""
    import zipfile

    lines = ['a0: &a0 ["lol"]'] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("meta.yaml", "\n".join(lines) + "\n")
        zf.writestr("exp/config.yaml", "codec: almtok\n")
    with pytest.raises(ValueError, match="meta.yaml uses YAML aliases"):
        ALMTokenizer.from_pretrained(path)
