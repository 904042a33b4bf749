"""ESPnet's codec inference with almtok registered: the codes of our codec_inference, for an exp
dir, a packed zip and a moved exp dir whose prior files are gone."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

from conftest import speechlike


def make_exp(root: Path, debug_config: Path):
    """An ESPnet exp dir of the debug config as the trainer writes it: the full ``config.yaml``
    (every task option) with absolute ``codebook_init`` prior paths, and the full model's
    weights (``codec.*``: generator and discriminator). -> (exp dir, prior dir, codec)."""
    from espnet2_almtok.codec.almtok import ALMTokenizerCodec
    from espnet2_almtok.tasks.codec import ALMTokCodecTask

    conf = vars(ALMTokCodecTask.get_parser().parse_args(["--config", str(debug_config)]))
    conf.update(version="202511", distributed=False)  # what ESPnet's trainer adds at the end
    priors = root / "semantic_prior"
    priors.mkdir(parents=True)
    rng = np.random.default_rng(0)
    gen = conf["codec_conf"]["generator_params"]
    for i in range(1, gen["n_q"] + 1):
        np.save(priors / f"codebook_{i}.npy", rng.standard_normal((gen["codebook_size"], gen["codebook_dim"]),
                                                                  dtype=np.float32))
    gen["codebook_init"] = [str((priors / f"codebook_{i}.npy").resolve()) for i in range(1, gen["n_q"] + 1)]
    exp = root / "codec_debug_stage2"
    exp.mkdir()
    (exp / "config.yaml").write_text(yaml.safe_dump(conf))
    torch.manual_seed(0)
    codec = ALMTokenizerCodec(**conf["codec_conf"]).eval()
    torch.save({"codec." + k: v for k, v in codec.state_dict().items()}, exp / "valid.mel_loss.best.pth")
    return exp, priors, codec


@pytest.fixture(scope="module")
def exp(tmp_path_factory, debug_config):
    return make_exp(tmp_path_factory.mktemp("exp"), debug_config)[0]


@pytest.fixture(scope="module")
def wav_scp(tmp_path_factory):
    """A short clip and one of 1.7 s, over three times the debug config's 0.5 s context."""
    d = tmp_path_factory.mktemp("wavs")
    for utt, seconds in (("short", 0.37), ("long", 1.7)):
        soundfile.write(d / f"{utt}.wav", speechlike(seconds, seed=len(utt)).numpy(), 16000, "PCM_16")
    (d / "wav.scp").write_text("".join(f"{u} {d / (u + '.wav')}\n" for u in ("short", "long")))
    return d / "wav.scp"


def our_codes(model, scp, out, window, *extra):
    from espnet2_almtok.inference import codec_inference
    from espnet2_almtok.fileio import read_codes_scp

    codec_inference.main(["--model_dir", str(model), "--data_path_and_name_and_type", f"{scp},audio,sound",
                          "--output_dir", str(out), "--window", str(window), *(extra or ["--encode_only"])])
    return dict(read_codes_scp(out / "codes" / "codes.scp"))


def espnet_codes(out, scp, *model_args, window=None):
    """Runs gan_codec_inference; -> {utt: codes (n_q, N)}, {utt: resynthesis}."""
    from espnet2_almtok.inference import gan_codec_inference

    args = [*model_args, "--data_path_and_name_and_type", f"{scp},audio,sound", "--output_dir", str(out),
            "--num_workers", "0"]
    if window is not None:
        args += ["--window", str(window)]
    gan_codec_inference.main(args)
    codes = {}
    for line in (out / "codec" / "codec.scp").read_text().splitlines():
        utt, path = line.split(maxsplit=1)
        c = np.load(path)
        assert c.ndim == 3 and c.shape[1] == 1  # ESPnet's (n_q, B, N)
        codes[utt] = c[:, 0]
    wavs = {p.stem: soundfile.read(p)[0] for p in (out / "wav").glob("*.wav")}
    return codes, wavs


def assert_same_codes(theirs, ours):
    assert sorted(theirs) == sorted(ours) == ["long", "short"]
    for utt in ours:
        assert theirs[utt].shape == ours[utt].shape, utt
        assert np.array_equal(theirs[utt], ours[utt]), utt


def test_espnet_inference_of_an_exp_dir_and_a_packed_zip_gives_codec_inference_codes(exp, wav_scp, tmp_path):
    from espnet2_almtok.recipe import pack

    window = 3  # not the config's inference_window (4): the window reaches encoding and decoding
    ours = our_codes(exp, wav_scp, tmp_path / "ours", window, "--batch_size", "1")  # with resynthesis
    assert ours["long"].shape == (3, int(np.ceil(1.7 * 16000 / (320 * window))))
    theirs, wavs = espnet_codes(tmp_path / "espnet", wav_scp, "--train_config", str(exp / "config.yaml"),
                                "--model_file", str(exp / "valid.mel_loss.best.pth"), window=window)
    assert_same_codes(theirs, ours)
    assert len(wavs["long"]) == int(1.7 * 16000) and len(wavs["short"]) == int(0.37 * 16000)  # trimmed
    for utt, wav in wavs.items():  # decoded at the same window, in the same windows
        assert np.array_equal(wav, soundfile.read(tmp_path / "ours" / "wav" / f"{utt}.wav")[0]), utt

    zipped = pack.pack(exp, tmp_path / "almtok_packed.zip")  # generator-only weights
    theirs, _ = espnet_codes(tmp_path / "espnet_zip", wav_scp, "--model_tag", str(zipped), window=window)
    assert_same_codes(theirs, ours)
    assert_same_codes(our_codes(zipped, wav_scp, tmp_path / "ours_zip", window), ours)

    # default window: the config's inference_window (4)
    theirs, _ = espnet_codes(tmp_path / "espnet_w4", wav_scp, "--model_tag", str(zipped))
    assert_same_codes(theirs, our_codes(exp, wav_scp, tmp_path / "ours_w4", 4))


def test_a_moved_exp_dir_loads_without_its_prior_files(tmp_path, wav_scp, debug_config):
    from espnet2_almtok import ALMTokenizer

    exp, priors, codec = make_exp(tmp_path / "orig", debug_config)
    moved = shutil.copytree(exp, tmp_path / "elsewhere" / exp.name)
    shutil.rmtree(tmp_path / "orig")  # the exp dir and the priors its config.yaml names are gone
    assert not priors.exists()
    wav = speechlike(0.9, seed=3)
    tok = ALMTokenizer.from_pretrained(moved)
    expected = codec.generator.encode(wav.view(1, 1, -1), 4, chunking=tok.chunking)  # 0.5 s windows
    assert torch.equal(tok.encode(wav, 16000, window=4), expected)
    theirs, _ = espnet_codes(tmp_path / "espnet", wav_scp, "--train_config", str(moved / "config.yaml"))
    assert_same_codes(theirs, our_codes(moved, wav_scp, tmp_path / "ours", 4))


def test_a_model_file_missing_generator_weights_is_refused(exp, wav_scp, tmp_path):
    from espnet2_almtok.inference import gan_codec_inference

    state = torch.load(exp / "valid.mel_loss.best.pth")
    torch.save({"model": state}, tmp_path / "checkpoint.pth")  # a trainer checkpoint: ESPnet would load nothing
    with pytest.raises(ValueError, match=r"checkpoint\.pth lacks .* generator weights"):
        gan_codec_inference.main(["--train_config", str(exp / "config.yaml"),
                                  "--model_file", str(tmp_path / "checkpoint.pth"),
                                  "--data_path_and_name_and_type", f"{wav_scp},audio,sound",
                                  "--output_dir", str(tmp_path / "out")])


def test_an_untrained_window_is_refused(exp, wav_scp, tmp_path):
    with pytest.raises(ValueError, match="window"):
        espnet_codes(tmp_path / "out", wav_scp, "--train_config", str(exp / "config.yaml"), window=11)


def test_a_packed_zip_naming_members_outside_its_directory_writes_nothing_there(exp, wav_scp, tmp_path):
    """ESPnet's ``unpack`` writes each member ``meta.yaml`` lists to ``outpath / name`` unchecked: a
    member named ``../../..<victim>`` (or an absolute path) with a correct sha256 replaced a file
    anywhere (a ``.bashrc``: code execution at the next shell). ``--model_tag`` now extracts the
    config and the model file only, with cleaned names: nothing is written outside, the model loads."""
    import hashlib
    import zipfile

    from espnet2_almtok.recipe import pack

    good = pack.pack(exp, tmp_path / "good.zip")
    victims = [tmp_path / "victim" / "notes.yaml", tmp_path / "victim2" / "config.yaml"]
    for victim in victims:
        victim.parent.mkdir()
    with zipfile.ZipFile(good) as zf:
        meta = yaml.safe_load(zf.read("meta.yaml"))
        members = {n: zf.read(n) for n in zf.namelist() if n != "meta.yaml"}
    config_name = meta["yaml_files"]["train_config"]
    for victim, name in ((victims[0], "../" * 16 + str(victims[0]).lstrip("/")), (victims[1], str(victims[1]))):
        evil = dict(members)
        evil[name] = evil.pop(config_name)
        bad_meta = {**meta, "yaml_files": {"train_config": name}}
        bad_meta["sha256"] = {n: hashlib.sha256(data).hexdigest() for n, data in evil.items()}
        path = tmp_path / f"evil_{victim.parent.name}.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("meta.yaml", yaml.safe_dump(bad_meta))
            for n, data in evil.items():
                zf.writestr(n, data)
        codes, _ = espnet_codes(tmp_path / f"out_{victim.parent.name}", wav_scp, "--model_tag", str(path))
        assert sorted(codes) == ["long", "short"]
        assert not victim.exists(), f"{path} wrote {victim}"


def test_audio_at_another_rate_is_refused_not_coded_as_the_models(exp, tmp_path):
    """ESPnet's loader does not resample: a 48 kHz file was coded as 16 kHz audio (1 s in, 3 s out)."""
    from conftest import speechlike
    from espnet2_almtok.inference import gan_codec_inference

    soundfile.write(tmp_path / "hi.wav", speechlike(1.0, sr=48000).numpy(), 48000)
    (tmp_path / "wav.scp").write_text(f"u48 {tmp_path / 'hi.wav'}\n")
    with pytest.raises(ValueError, match=r"utterance u48 .* is 48000 Hz, the model codes 16000 Hz audio: resample it"):
        gan_codec_inference.main(["--train_config", str(exp / "config.yaml"), "--data_path_and_name_and_type",
                                  f"{tmp_path / 'wav.scp'},audio,sound", "--output_dir", str(tmp_path / "out"),
                                  "--num_workers", "0"])
    assert not (tmp_path / "out" / "codec" / "codec.scp").exists()
