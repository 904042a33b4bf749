import numpy as np
import pytest
import soundfile

from conftest import speechlike
from espnet2_almtok.recipe import data_prep
from espnet2_almtok.recipe.kaldi_dir import Utterance, write_data_dir


def test_librispeech_and_libritts_layouts(tmp_path):
    ls = tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121123"
    ls.mkdir(parents=True)
    soundfile.write(ls / "84-121123-0000.flac", speechlike(0.5).numpy(), 16000)
    (ls / "84-121123.trans.txt").write_text("84-121123-0000 GO DO YOU HEAR\n")
    tts = tmp_path / "LibriSpeech" / "dev-clean" / "1272" / "128104"
    tts.mkdir(parents=True)
    soundfile.write(tts / "1272_128104_000001_000000.wav", speechlike(0.5).numpy(), 24000)
    (tts / "1272_128104_000001_000000.normalized.txt").write_text("Mister Quilter is the apostle.\n")
    utts = data_prep.read_libri_subset(tmp_path / "LibriSpeech", "dev-clean")
    by_id = {u.utt_id: u for u in utts}
    assert by_id["84-121123-0000"].text == "GO DO YOU HEAR" and by_id["84-121123-0000"].speaker == "84"
    assert by_id["1272_128104_000001_000000"].speaker == "1272"
    with pytest.raises(FileNotFoundError, match="set LIBRISPEECH"):
        data_prep.read_libri_subset(tmp_path / "LibriSpeech", "test-other")


def test_audio_dir_takes_every_format_and_fills_each_set(tmp_path):
    root = tmp_path / "audio"
    (root / "birds").mkdir(parents=True)
    for i, ext in enumerate(["wav", "flac", "ogg"] * 2):
        soundfile.write(root / "birds" / f"clip {i}.{ext}", speechlike(0.3, seed=i).numpy(), 16000)
    (root / "birds" / "notes.txt").write_text("ignored")
    sets = data_prep.read_audio_dir(root)
    assert sum(len(v) for v in sets.values()) == 6 and all(sets.values())
    ids = [u.utt_id for v in sets.values() for u in v]
    assert all(" " not in i and i.startswith("birds-") for i in ids)
    data_prep.write_sets(sets, tmp_path / "data")
    assert (tmp_path / "data" / "train" / "utt2dur").read_text().split()[1] == "0.300"


def test_duplicate_ids_are_an_error(tmp_path):
    f = tmp_path / "a.wav"
    soundfile.write(f, np.ones(100) * 0.1, 16000)
    with pytest.raises(ValueError, match="utterance id x occurs twice"):
        write_data_dir(tmp_path / "d", [Utterance("x", str(f), "s"), Utterance("x", str(f), "s")])
