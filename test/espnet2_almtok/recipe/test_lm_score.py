"""LM recipe scoring: tables in, result files out; very short syntheses still score; the
independent judges (pocketsphinx, DNSMOS) beside the LM's own ASR."""

import math
import shutil
import subprocess

import pytest
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
                   "--asr_ref", str(tmp_path / "ref"), "--asr_hyp", str(tmp_path / "asr"), "--judges", "none",
                   "--out_dir", str(tmp_path / "s")])
    avg = dict(line.split(": ", 1) for line in (tmp_path / "s/avg_result.txt").read_text().splitlines())
    assert math.isfinite(float(avg["mel_dtw"])) and float(avg["dur_ratio"]) == 0.02
    assert float(avg["asr_wer"]) == 50.0 and avg["n"] == "1"
    assert "| mel_dtw | dur_ratio | asr_wer | asr_cer | n |" in (tmp_path / "s/result.md").read_text()


def test_asr_refuses_missing_hypotheses(tmp_path):
    import pytest

    (tmp_path / "ref").write_text("u1 a b\nu2 c d\n")
    (tmp_path / "hyp").write_text("u1 a b\n")
    with pytest.raises(KeyError, match="u2"):
        lm_score.main(["asr", "--ref", str(tmp_path / "ref"), "--hyp", str(tmp_path / "hyp"), "--out_dir", str(tmp_path / "s")])


def test_tts_independent_judges_beside_the_lms_asr(tmp_path, capsys):
    """u1: a perfect synthesis (the recording itself), u2: a one-frame synthesis of the same text."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    fox = "the quick brown fox jumps over the lazy dog"
    subprocess.run(["espeak-ng", "-v", "en-us+f2", "-s", "140", "-w", str(tmp_path / "fox.wav"), fox], check=True)
    soundfile.write(tmp_path / "short.wav", speechlike(0.02).numpy(), 16000)
    (tmp_path / "ref.scp").write_text(f"u1 {tmp_path / 'fox.wav'}\nu2 {tmp_path / 'fox.wav'}\n")
    (tmp_path / "hyp.scp").write_text(f"u1 {tmp_path / 'fox.wav'}\nu2 {tmp_path / 'short.wav'}\n")
    (tmp_path / "text").write_text(f"u1 {fox.upper()}\nu2 {fox}\n")
    args = ["tts", "--ref_scp", str(tmp_path / "ref.scp"), "--hyp_scp", str(tmp_path / "hyp.scp"),
            "--out_dir", str(tmp_path / "s")]
    with pytest.raises(SystemExit):
        lm_score.main(args)
    assert "the asr judge needs --text" in capsys.readouterr().err
    lm_score.main(args + ["--text", str(tmp_path / "text")])
    avg_lines = (tmp_path / "s/avg_result.txt").read_text().splitlines()
    avg = {k: float(v) for k, v in (line.split(": ", 1) for line in avg_lines)}
    utt = [line.split("\t") for line in (tmp_path / "s/utt_result.txt").read_text().splitlines()]
    rows = {r[0]: dict(zip(utt[0], r)) for r in utt[1:]}
    # the same audio as the reference: the same transcript; one frame: nothing recognised, no DNSMOS
    assert rows["u1"]["sphinx_wer"] == rows["u1"]["sphinx_wer_ref"] and float(rows["u1"]["sphinx_wer"]) <= 60
    assert float(rows["u2"]["sphinx_wer"]) == 100.0 and rows["u2"]["dnsmos_ovrl"] == "nan"
    assert avg["sphinx_wer"] == pytest.approx((float(rows["u1"]["sphinx_wer"]) + 100) / 2)
    assert avg["sphinx_wer_ref"] == float(rows["u1"]["sphinx_wer_ref"]) and avg["n"] == 2
    assert avg["dnsmos_ovrl"] == float(rows["u1"]["dnsmos_ovrl"]) > 2.0  # u2's NaN is skipped
    md = (tmp_path / "s/result.md").read_text()
    assert "| sphinx_wer | sphinx_cer | sphinx_wer_ref | sphinx_cer_ref | sphinx_n | dnsmos_ovrl |" in md


def test_tts_asr_judge_scores_english_utterances_only(tmp_path):
    """pocketsphinx is an English ASR: with utt2lang, other languages get no WER (shown as "-")."""
    from espnet2_almtok.recipe import lm_score

    class FakeASR:  # the judge's interface; records what it was asked to transcribe
        def __init__(self):
            self.seen = set()

        def __call__(self, wav, fs, utt):
            self.seen.add(utt)
            return "hello world"

    for u in ("en1", "es1"):
        soundfile.write(tmp_path / f"{u}.wav", speechlike(0.5).numpy(), 16000)
    scp = "".join(f"{u} {tmp_path / (u + '.wav')}\n" for u in ("en1", "es1"))
    (tmp_path / "ref.scp").write_text(scp)
    (tmp_path / "hyp.scp").write_text(scp)
    (tmp_path / "text").write_text("en1 hello world\nes1 hola mundo\n")
    (tmp_path / "utt2lang").write_text("en1 en\nes1 es\n")
    asr = FakeASR()
    avg, rows = lm_score.score_tts(tmp_path / "ref.scp", tmp_path / "hyp.scp", 16000, text=tmp_path / "text",
                                   judges={"asr": asr}, utt2lang=tmp_path / "utt2lang")
    assert asr.seen == {"en1"} and avg["sphinx_wer"] == 0.0 and avg["sphinx_n"] == 1
    lm_score.write_results(tmp_path / "s", "t", avg, rows)
    lines = (tmp_path / "s/utt_result.txt").read_text().splitlines()
    header = lines[0].split("\t")
    es = dict(zip(header, lines[2].split("\t")))
    assert es["utt"] == "es1" and es["sphinx_wer"] == "-"
