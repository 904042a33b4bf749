"""Codec tokens as ESPnet discrete units: the q1 / all streams round-trip to codes, the warning
for a set whose utterances share their units, and ESPnet's own asr2 trainer (mt_train) on them."""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT
from espnet2_almtok.fileio import flatten_codes, write_meta
from espnet2_almtok.recipe.units import from_units, to_units, write_units


def test_streams_round_trip_to_the_codes():
    codes = np.array([[1, 2, 3], [4, 5, 6], [7, 0, 9]])  # (n_q, N), K = 10
    assert to_units(codes, "q1", 10) == [1, 2, 3]
    assert to_units(codes, "all", 10) == [1, 14, 27, 2, 15, 20, 3, 16, 29]  # frame-major, codebook k + k * K
    assert torch.equal(from_units(to_units(codes, "all", 10), "all", 10, 3)[0], torch.as_tensor(codes))
    assert torch.equal(from_units([1, 2, 3], "q1", 10, 3), torch.tensor([[[1, 2, 3]]]))
    with pytest.raises(ValueError, match="whole number of frames"):
        from_units([1, 2], "all", 10, 3)


def codes_dir(root, sequences):
    """A decode dir's ``codes/`` (Kaldi ark/scp, frame-major int32, meta.yaml) of ``(n_q, N)`` codes."""
    import kaldiio

    d = root / "codes"
    d.mkdir(parents=True)
    with kaldiio.WriteHelper(f"ark,scp:{d / 'codes.ark'},{d / 'codes.scp'}") as writer:
        for i, s in enumerate(sequences):
            writer(f"u{i}", flatten_codes(np.array(s)))
    write_meta(d, {"n_q": 2, "codebook_size": 8, "token_rate": 12.5, "window": 4, "sample_rate": 16000})
    return d


def test_units_files_and_the_warning_for_a_useless_set(tmp_path, caplog):
    same = [[[1, 2, 3, 1], [0, 0, 0, 0]]] * 3 + [[[5, 6, 7, 1], [1, 1, 1, 1]]]
    with caplog.at_level(logging.WARNING):
        info = write_units(codes_dir(tmp_path, same), "all", tmp_path / "out")
    assert "3 of 4 utterances (75 %) share their first-codebook sequence" in caplog.text
    assert (tmp_path / "out/units").read_text().splitlines()[3] == "u3 5 9 6 9 7 9 1 9"
    tokens = (tmp_path / "out/token_list").read_text().splitlines()
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>" and len(tokens) == 2 + 16 + 1
    assert info["unit_rate"] == 25.0 and yaml.safe_load((tmp_path / "out/units.yaml").read_text())["stream"] == "all"
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        write_units(codes_dir(tmp_path / "b", [[[i, i + 1], [0, 0]] for i in range(4)]), "q1", tmp_path / "out_b")
    assert "share their first-codebook sequence" not in caplog.text


MT_CONFIG = """
frontend: embed
frontend_conf: {embed_dim: 32, positional_dropout_rate: 0.0}
encoder: transformer
encoder_conf: {output_size: 32, attention_heads: 2, linear_units: 64, num_blocks: 1, dropout_rate: 0.0, input_layer: null}
decoder: transformer
decoder_conf: {attention_heads: 2, linear_units: 64, num_blocks: 1, dropout_rate: 0.0}
model_conf: {lsm_weight: 0.0}
optim: adam
optim_conf: {lr: 0.001}
batch_type: unsorted
batch_size: 4
max_epoch: 1
num_iters_per_epoch: 3
num_workers: 0
"""


def test_espnet_asr2_trainer_learns_from_q1_units(demo_codec_recipe, tmp_path):
    """asr2's form: ESPnet's own ``espnet2.bin.mt_train`` with our q1 units as the source text
    (word tokens, our token_list) and the transcripts as the target (characters)."""
    dec = demo_codec_recipe / "exp/codec_train_almtok_debug_stage2/decode_w4/test"
    proc = subprocess.run([sys.executable, "-m", "espnet2_almtok.recipe.units", "--codes_dir", str(dec / "codes"),
                           "--stream", "q1", "--out_dir", str(tmp_path / "units")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    units = dict(line.split(maxsplit=1) for line in (tmp_path / "units/units").read_text().splitlines())
    text = dict(line.split(maxsplit=1) for line in (demo_codec_recipe / "dump/raw/test/text").read_text().splitlines())
    assert set(units) == set(text)
    (tmp_path / "text").write_text("".join(f"{k} {text[k]}\n" for k in sorted(units)))
    chars = sorted({c.replace(" ", "<space>") for t in text.values() for c in t})
    (tmp_path / "char_list").write_text("\n".join(["<blank>", "<unk>", *chars, "<sos/eos>"]) + "\n")
    (tmp_path / "src_shape").write_text("".join(f"{k} {len(v.split())}\n" for k, v in units.items()))
    (tmp_path / "tgt_shape").write_text("".join(f"{k} {len(text[k])}\n" for k in units))
    (tmp_path / "mt.yaml").write_text(MT_CONFIG)
    data = []
    for part in ("train", "valid"):
        data += [f"--{part}_data_path_and_name_and_type", f"{tmp_path / 'units/units'},src_text,text",
                 f"--{part}_data_path_and_name_and_type", f"{tmp_path / 'text'},text,text",
                 f"--{part}_shape_file", str(tmp_path / "src_shape"), f"--{part}_shape_file", str(tmp_path / "tgt_shape")]
    proc = subprocess.run([sys.executable, "-m", "espnet2.bin.mt_train", "--config", str(tmp_path / "mt.yaml"),
                           "--src_token_type", "word", "--src_token_list", str(tmp_path / "units/token_list"),
                           "--token_type", "char", "--token_list", str(tmp_path / "char_list"), *data,
                           "--output_dir", str(tmp_path / "exp"), "--ngpu", "0"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1epoch results: [train]" in proc.stderr and (tmp_path / "exp/latest.pth").is_file()
    state = torch.load(tmp_path / "exp/latest.pth", map_location="cpu")
    assert state["frontend.embed.0.weight"].shape[0] == 64 + 3  # the units' vocabulary: K + <blank>, <unk>, <sos/eos>


TTS2_CONFIG = """
tts: fastspeech2
tts_conf: {adim: 32, aheads: 2, elayers: 1, eunits: 64, dlayers: 1, dunits: 64, duration_predictor_layers: 1,
           duration_predictor_chans: 32, pitch_predictor_layers: 1, pitch_predictor_chans: 32,
           energy_predictor_layers: 1, energy_predictor_chans: 32}
pitch_extract: dio          # configured so the model takes pitch/energy; the precomputed ones are used
pitch_extract_conf: {fs: 16000, n_fft: 1024, hop_length: 1280, f0max: 400, f0min: 80, use_token_averaged_f0: true}
energy_extract: energy
energy_extract_conf: {fs: 16000, n_fft: 2048, hop_length: 1280, win_length: 2048, use_token_averaged_energy: true}
optim: adam
optim_conf: {lr: 0.001}
batch_type: unsorted
batch_size: 4
max_epoch: 1
num_iters_per_epoch: 2
num_workers: 0
"""


@pytest.mark.slow  # ~1 min; the asr2 test above keeps ESPnet's trainers on our units in the default suite
def test_espnet_tts2_trainer_learns_q1_units_and_our_decoder_voices_them(demo_codec_recipe, tmp_path):
    """ESPnet's own ``espnet2.bin.tts2_train`` (FastSpeech2 over discrete targets) with our q1
    units as ``discrete_speech``; the codec's decoder turns q1 units (as tts2 would predict them)
    back into audio (one codebook: q1 alone decodes)."""
    from espnet2_almtok import ALMTokenizer
    from espnet2_almtok.recipe.units import SPECIAL

    exp = demo_codec_recipe / "exp/codec_train_almtok_debug_stage2"
    raw = demo_codec_recipe / "dump/raw/test"
    proc = subprocess.run([sys.executable, "-m", "espnet2_almtok.recipe.units", "--codes_dir", str(exp / "decode_w4/test/codes"),
                           "--stream", "q1", "--out_dir", str(tmp_path / "units"), "--tts2_text", str(raw / "text"),
                           "--tts2_wav_scp", str(raw / "wav.scp")], capture_output=True, text=True, cwd=demo_codec_recipe)
    assert proc.returncode == 0, proc.stderr[-3000:]
    t = tmp_path / "units/tts2"
    (tmp_path / "tts2.yaml").write_text(TTS2_CONFIG)
    data = []
    for part in ("train", "valid"):
        for path, name, kind in ((raw / "text", "text", "text"), (raw / "wav.scp", "speech", "sound"),
                                 (t / "discrete_speech", "discrete_speech", "text_int"),
                                 (t / "durations", "durations", "text_int"), (t / "pitch.scp", "pitch", "npy"),
                                 (t / "energy.scp", "energy", "npy")):
            data += [f"--{part}_data_path_and_name_and_type", f"{path},{name},{kind}"]
        data += [f"--{part}_shape_file", str(t / "text_shape")]
    proc = subprocess.run([sys.executable, "-m", "espnet2.bin.tts2_train", "--config", str(tmp_path / "tts2.yaml"),
                           "--src_token_type", "char", "--src_token_list", str(t / "char_list"),
                           "--tgt_token_list", str(tmp_path / "units/token_list"), *data,
                           "--output_dir", str(tmp_path / "exp"), "--ngpu", "0"],
                          cwd=demo_codec_recipe, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1epoch results: [train]" in proc.stderr and "ce_loss" in proc.stderr

    tok = ALMTokenizer.from_pretrained(exp)
    utt, ids = (t / "discrete_speech").read_text().splitlines()[0].split(maxsplit=1)
    units = [int(i) - len(SPECIAL) for i in ids.split()]  # tts2's ids back to units
    from espnet2_almtok.recipe.units import from_units

    wav = tok.decode(from_units(units, "q1", 64, 3), window=4)
    assert wav.shape == (1, len(units) * 4 * 320) and torch.isfinite(wav).all()


def test_bad_inputs_of_the_units_tool_are_named(tmp_path):
    from espnet2_almtok.recipe.units import tts2_inputs

    empty = tmp_path / "empty" / "codes"
    empty.mkdir(parents=True)
    (empty / "codes.scp").write_text("")
    write_meta(empty, {"n_q": 2, "codebook_size": 8, "token_rate": 12.5, "window": 4, "sample_rate": 16000})
    with pytest.raises(ValueError, match="codes.scp lists no utterance: decode the set first"):
        write_units(empty, "q1", tmp_path / "out_empty")
    with pytest.raises(ValueError, match="stream 'q9': choose one of"):
        to_units(np.zeros((2, 3), dtype=int), "q9", 8)

    codes = codes_dir(tmp_path / "c", [[[1, 2, 3], [0, 0, 0]], [[4, 5, 6], [0, 0, 0]]])
    write_units(codes, "all", tmp_path / "all")
    with pytest.raises(ValueError, match="tts2 inputs are made from q1 units .*not 'all'"):
        tts2_inputs(tmp_path / "all", tmp_path / "text", tmp_path / "wav.scp", tmp_path / "tts2")
    write_units(codes, "q1", tmp_path / "q1")
    (tmp_path / "text").write_text("u0 hello\n")  # u1 has no text
    (tmp_path / "wav.scp").write_text(f"u0 {tmp_path / 'a.wav'}\nu1 {tmp_path / 'b.wav'}\n")
    with pytest.raises(ValueError, match=r"utterances without text .* or audio .*: \['u1'\]"):
        tts2_inputs(tmp_path / "q1", tmp_path / "text", tmp_path / "wav.scp", tmp_path / "tts2")
    assert not (tmp_path / "tts2").exists()  # nothing half-written
