import numpy as np
import pytest
import soundfile

from conftest import speechlike
from espnet2_almtok.audio import AudioError
from espnet2_almtok.recipe.format_data import format_dir


def make_dir(tmp_path):
    src = tmp_path / "data"
    src.mkdir()
    wav = speechlike(1.0, sr=22050).numpy()
    soundfile.write(tmp_path / "good.wav", np.stack([wav, wav], 1), 22050)  # stereo, 22.05 kHz
    soundfile.write(tmp_path / "silent.wav", np.zeros(8000), 16000)
    soundfile.write(tmp_path / "short.wav", wav[:500], 22050)
    (tmp_path / "junk.wav").write_text("not audio")
    scp = {"a-good": "good.wav", "b-silent": "silent.wav", "c-short": "short.wav", "d-junk": "junk.wav",
           "e-missing": "missing.wav"}
    (src / "wav.scp").write_text("".join(f"{u} {tmp_path / p}\n" for u, p in scp.items()))
    (src / "text").write_text("a-good hello\nb-silent x\nc-short y\nd-junk z\ne-missing w\nf-orphan v\n")
    return src


def test_drop_policy_logs_every_bad_utterance_with_its_reason(tmp_path):
    src = make_dir(tmp_path)
    dst = tmp_path / "dump"
    assert format_dir(src, dst, 16000, 0.2, 30, "drop") == 1
    bad = dict(line.split(" ", 1) for line in (dst / "bad_utts").read_text().splitlines())
    assert set(bad) == {"b-silent", "c-short", "d-junk", "e-missing", "f-orphan"}
    assert "all zeros" in bad["b-silent"] and "duration" in bad["c-short"]
    assert "not readable" in bad["d-junk"] and "does not exist" in bad["e-missing"]
    assert "no wav.scp entry" in bad["f-orphan"]
    wav, sr = soundfile.read((dst / "wav.scp").read_text().split()[1])
    assert sr == 16000 and wav.ndim == 1 and abs(len(wav) - 16000) <= 1
    assert (dst / "text").read_text() == "a-good hello\n"
    assert (dst / "utt2num_samples").read_text() == f"a-good {len(wav)}\n"


def test_error_policy_names_the_utterance(tmp_path):
    src = make_dir(tmp_path)
    with pytest.raises(AudioError, match=r"utterance f-orphan: has a text line but no wav.scp entry"):
        format_dir(src, tmp_path / "dump", 16000, 0.2, 30, "error")


def test_rerun_keeps_finished_files(tmp_path):
    src = make_dir(tmp_path)
    dst = tmp_path / "dump"
    format_dir(src, dst, 16000, 0.2, 30, "drop")
    out = dst / "data" / "a-good.wav"
    mtime = out.stat().st_mtime_ns
    format_dir(src, dst, 16000, 0.2, 30, "drop")
    assert out.stat().st_mtime_ns == mtime


def test_per_utterance_tables_are_carried_over_for_kept_utterances(tmp_path):
    src = make_dir(tmp_path)
    (src / "utt2lang").write_text("a-good en\nb-silent es\n")
    (src / "text.orig").write_text("a-good Hello!\nb-silent X\n")
    (src / "utt2category").write_text("a-good speech\nb-silent sound\n")
    dst = tmp_path / "dump"
    format_dir(src, dst, 16000, 0.2, 30, "drop")
    assert (dst / "utt2lang").read_text() == "a-good en\n"
    assert (dst / "text.orig").read_text() == "a-good Hello!\n"
    assert (dst / "utt2category").read_text() == "a-good speech\n"
