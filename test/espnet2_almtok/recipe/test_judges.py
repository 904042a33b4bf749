"""The independent judges on known clips: espeak-ng English speech vs white noise of the same
length; speaker similarity with a tiny random x-vector model saved by the test (no downloads)."""

import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from espnet2_almtok.recipe import judges as J

FOX = "the quick brown fox jumps over the lazy dog"


def espeak(path, text: str, voice: str = "en-us+f2", rate: int = 140) -> tuple:
    """espeak-ng speech -> (float32 ``(T,)``, sample rate), read back from ``path``."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(path), text], check=True)
    wav, sr = soundfile.read(str(path), dtype="float32")
    return wav, sr


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The fox sentence at 16 kHz ``(T,)`` and its native-rate original."""
    wav, sr = espeak(tmp_path_factory.mktemp("espeak") / "fox.wav", FOX)
    return J.to_16k(wav, sr), (wav, sr)


@pytest.fixture(scope="module")
def noise(clip):
    return np.clip(0.1 * np.random.default_rng(0).standard_normal(clip[0].size), -1, 1).astype(np.float32)


@pytest.fixture(scope="module")
def asr():
    return J.SphinxASR()


def wer(ref: str, hyp: str) -> float:
    return J.asr_error_rates({"u": ref}, {"u": hyp})[0]["wer"]


def test_sphinx_understands_speech_and_not_noise(asr, clip, noise):
    speech16, (native, sr) = clip
    text = asr(speech16, 16000)
    assert text == text.lower() and wer(FOX, text) <= 50.0, text
    assert wer(FOX, asr(noise, 16000)) >= 90.0
    # other rates are resampled; the result does not depend on the clips decoded before
    assert sr != 16000 and asr(native, sr) == text
    assert asr(np.zeros(0, np.float32), 16000) == ""


def test_error_rates_normalise_both_sides():
    corpus, rows = J.asr_error_rates({"a": "The quick, brown FOX!", "b": "don't stop"}, {"a": "the quick brown box"})
    assert rows["a"]["wer"] == 25.0 and rows["b"]["wer"] == 100.0  # a missing hypothesis is empty
    assert corpus["wer"] == pytest.approx(100 * 3 / 6) and corpus["n"] == 2


def test_dnsmos_prefers_clean_speech_and_names_short_clips(clip, noise, caplog):
    mos = J.DNSMOS()
    clean, noisy = mos(clip[0], 16000), mos(noise, 16000)
    assert set(clean) == {"dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808"}
    assert all(1.0 <= v <= 5.0 for v in (*clean.values(), *noisy.values()))
    assert clean["dnsmos_ovrl"] > noisy["dnsmos_ovrl"] + 1.0, (clean, noisy)
    short = mos(clip[0][:3200], 16000, name="utt_short")  # 0.2 s
    assert all(math.isnan(v) for v in short.values()) and "utt_short" in caplog.text
    assert all(math.isnan(v) for v in mos(np.zeros(0, np.float32), 16000).values())


def tiny_xvector_dir(path, safe: bool = True):
    """A randomly initialised tiny ``WavLMForXVector`` + feature extractor saved in ``path``."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    cfg = WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                      conv_dim=(32, 32), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                      num_conv_pos_embedding_groups=2, tdnn_dim=(32, 32), tdnn_kernel=(3, 1), tdnn_dilation=(1, 1),
                      xvector_output_dim=16, num_buckets=32, max_bucket_distance=64)
    torch.manual_seed(0)
    WavLMForXVector(cfg).save_pretrained(path, safe_serialization=safe)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(path)
    return path


def test_speaker_similarity_with_a_tiny_random_model(tmp_path, clip, noise):
    sim = J.SpeakerSimilarity(tiny_xvector_dir(tmp_path / "xvec"))
    assert sim(clip[0], clip[0], 16000) == pytest.approx(1.0, abs=1e-5)
    other = sim(clip[0], noise, 16000)
    assert isinstance(other, float) and -1.0 <= other <= 1.0
    native, sr = clip[1]
    assert sim(native, native, sr) == pytest.approx(1.0, abs=1e-5)  # resampled to the model's rate
    assert math.isnan(sim(clip[0][:1600], clip[0], 16000))  # 0.1 s: too short


def test_speaker_similarity_refuses_pickled_weights(tmp_path):
    with pytest.raises(RuntimeError, match="safetensors"):
        J.SpeakerSimilarity(tiny_xvector_dir(tmp_path / "bin", safe=False))
    with pytest.raises(FileNotFoundError, match="config.json"):
        J.SpeakerSimilarity(tmp_path)


def test_judge_selection_and_missing_packages(monkeypatch):
    assert J.parse_judges("none") == [] and J.parse_judges(" ASR, dnsmos,asr") == ["asr", "dnsmos"]
    with pytest.raises(ValueError, match="unknown judge"):
        J.parse_judges("asr,utmos")
    with pytest.raises(ValueError, match="--spk_model"):
        J.build_judges(["spk"])
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # import pocketsphinx -> ImportError
    with pytest.raises(J.JudgeUnavailable, match=r"`pocketsphinx`.*--judges none"):
        J.build_judges(["asr"])
    assert J.is_english("en") and J.is_english("en-US") and J.is_english("eng") and not J.is_english("fr")
    assert not J.is_english(None)
