"""LM recipe scoring: tables in, result files out; very short syntheses still score."""

import math

import soundfile

from conftest import speechlike
from espnet2_almtok.recipe import lm_score


def test_tts_scores_a_one_frame_synthesis(tmp_path):
    soundfile.write(tmp_path / "ref.wav", speechlike(1.0).numpy(), 16000)
    soundfile.write(tmp_path / "hyp.wav", speechlike(0.02).numpy(), 16000)  # 320 samples: one 50 Hz frame
    (tmp_path / "ref.scp").write_text(f"u1 {tmp_path / 'ref.wav'}\n")
    (tmp_path / "hyp.scp").write_text(f"u1 {tmp_path / 'hyp.wav'}\n")
    (tmp_path / "ref").write_text("u1 hello world\n")
    (tmp_path / "asr").write_text("u1 hello\n")
    lm_score.main(["tts", "--ref_scp", str(tmp_path / "ref.scp"), "--hyp_scp", str(tmp_path / "hyp.scp"),
                   "--asr_ref", str(tmp_path / "ref"), "--asr_hyp", str(tmp_path / "asr"), "--out_dir", str(tmp_path / "s")])
    avg = dict(line.split("\t") for line in (tmp_path / "s/avg_result.txt").read_text().splitlines())
    assert math.isfinite(float(avg["mel_dtw"])) and float(avg["dur_ratio"]) == 0.02
    assert float(avg["asr_wer"]) == 50.0 and avg["n"] == "1"
    assert "| mel_dtw | dur_ratio | asr_wer | asr_cer | n |" in (tmp_path / "s/result.md").read_text()


def test_asr_refuses_missing_hypotheses(tmp_path):
    import pytest

    (tmp_path / "ref").write_text("u1 a b\nu2 c d\n")
    (tmp_path / "hyp").write_text("u1 a b\n")
    with pytest.raises(KeyError, match="u2"):
        lm_score.main(["asr", "--ref", str(tmp_path / "ref"), "--hyp", str(tmp_path / "hyp"), "--out_dir", str(tmp_path / "s")])
