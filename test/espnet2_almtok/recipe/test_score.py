"""Stage-8 scoring with the independent judges on three tiny utterances: English speech with a
transcript, the same speech labelled French, and a sound with a caption."""

import math
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from espnet2_almtok.recipe import score

FOX = "the quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """ref/hyp wav.scp (hyp: the reference plus faint noise, a stand-in resynthesis), text,
    utt2lang, utt2category."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    d = tmp_path_factory.mktemp("score")
    subprocess.run(["espeak-ng", "-v", "en-us+f2", "-s", "140", "-w", str(d / "fox22k.wav"), FOX], check=True)
    fox, sr = soundfile.read(str(d / "fox22k.wav"), dtype="float32")
    rng = np.random.default_rng(0)
    t = np.arange(int(1.5 * sr)) / sr
    audio = {"en_speech": fox, "fr_speech": fox, "sound": (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)}
    ref_scp, hyp_scp = [], []
    for utt, wav in audio.items():
        soundfile.write(d / f"{utt}.ref.wav", wav, sr)
        soundfile.write(d / f"{utt}.hyp.wav", np.clip(wav + 0.003 * rng.standard_normal(wav.size), -1, 1), sr)
        ref_scp.append(f"{utt} {d / f'{utt}.ref.wav'}\n")
        hyp_scp.append(f"{utt} {d / f'{utt}.hyp.wav'}\n")
    (d / "ref.scp").write_text("".join(ref_scp))
    (d / "hyp.scp").write_text("".join(hyp_scp))
    (d / "text").write_text(f"en_speech {FOX.upper()}.\nfr_speech {FOX}\nsound a steady high tone\n")
    (d / "utt2lang").write_text("en_speech en\nfr_speech fr\nsound en\n")
    (d / "utt2category").write_text("en_speech speech\nfr_speech speech\nsound sound\n")
    return d


def run(d, out, *extra):
    score.main(["--ref_scp", str(d / "ref.scp"), "--hyp_scp", str(d / "hyp.scp"), "--fs", "16000",
                "--out_dir", str(d / out), *extra])
    return d / out


def read_avg(path) -> dict:
    lines = path.read_text().splitlines()
    assert all(re.fullmatch(r"\w+: \S+", line) for line in lines), lines  # ESPnet style
    return dict(line.split(": ") for line in lines)


def read_utt(path) -> dict:
    header, *rows = [line.split("\t") for line in path.read_text().splitlines()]
    return {row[0]: dict(zip(header[1:], row[1:])) for row in rows}


def test_judges_add_columns_only_where_they_apply(data):
    out = run(data, "s", "--text", str(data / "text"), "--utt2lang", str(data / "utt2lang"),
              "--utt2category", str(data / "utt2category"))
    utt = read_utt(out / "utt_result.txt")
    cols = set(utt["en_speech"])
    assert set(score.METRICS) | {"asr_wer", "asr_cer", "asr_wer_ref", "asr_cer_ref", "dnsmos_ovrl", "dnsmos_sig",
                                 "dnsmos_bak", "dnsmos_p808", "dnsmos_ovrl_ref", "dnsmos_p808_ref"} <= cols
    # English speech: every judge; French speech: no ASR, DNSMOS; the sound: neither
    assert float(utt["en_speech"]["asr_wer"]) <= 60.0 and float(utt["en_speech"]["asr_wer_ref"]) <= 60.0
    assert utt["fr_speech"]["asr_wer"] == "-" and float(utt["fr_speech"]["dnsmos_ovrl"]) > 1.0
    assert utt["sound"]["asr_wer"] == "-" and utt["sound"]["dnsmos_ovrl"] == "-"
    assert math.isfinite(float(utt["sound"]["mel_distance"]))
    avg = read_avg(out / "avg_result.txt")
    assert avg["n_utt"] == "3" and avg["asr_n"] == "1" and avg["asr_words"] == "9" and avg["dnsmos_ovrl_n"] == "2"
    # one utterance: the corpus WER is its WER
    assert float(avg["asr_wer"]) == pytest.approx(float(utt["en_speech"]["asr_wer"]), abs=0.01)
    assert abs(float(avg["dnsmos_ovrl"]) - float(avg["dnsmos_ovrl_ref"])) < 0.5  # faint noise only
    transcripts = (out / "asr_text").read_text().splitlines()
    assert len(transcripts) == 1 and transcripts[0].startswith("en_speech ")
    md = (out / "result.md").read_text()
    assert "| asr_wer | asr_wer_ref | dnsmos_ovrl | dnsmos_ovrl_ref |" in md


def test_without_judges_the_classic_scores_remain(data):
    out = run(data, "none", "--judges", "none", "--text", str(data / "text"))
    utt = read_utt(out / "utt_result.txt")
    assert list(utt["sound"]) == list(score.METRICS)
    avg = read_avg(out / "avg_result.txt")
    assert set(avg) == {"n_utt"} | set(score.METRICS) | {f"{m}_n" for m in score.METRICS}
    assert not (out / "asr_text").exists()


def test_a_missing_judge_package_names_it_and_the_way_out(data, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "speechmos.dnsmos", None)
    with pytest.raises(SystemExit):
        run(data, "x", "--judges", "dnsmos")
    err = capsys.readouterr().err
    assert "`speechmos`" in err and "--judges none" in err
    with pytest.raises(FileNotFoundError, match="--utt2lang"):
        run(data, "x", "--judges", "none", "--utt2lang", str(data / "absent"))


def test_scoring_split_in_jobs_and_merged_equals_one_job(data):
    """Stage 8 with JOB=1:N: each job scores its --key_file share; --merge_dirs writes the same
    files as one job over the whole set (corpus WER from all the jobs' transcripts)."""
    tables = ["--text", str(data / "text"), "--utt2lang", str(data / "utt2lang"),
              "--utt2category", str(data / "utt2category")]
    whole = run(data, "whole", *tables)
    (data / "keys.1").write_text("en_speech\nsound\n")
    (data / "keys.2").write_text("fr_speech\n")
    jobs = [run(data, f"job.{j}", *tables, "--key_file", str(data / f"keys.{j}")) for j in (1, 2)]
    merged = run(data, "merged", *tables, "--merge_dirs", *map(str, jobs))
    for name in ("utt_result.txt", "avg_result.txt", "result.md", "asr_text", "asr_text_ref"):
        assert (merged / name).read_text() == (whole / name).read_text(), name
    with pytest.raises(ValueError, match="scored by two jobs"):
        run(data, "bad", *tables, "--merge_dirs", str(jobs[0]), str(jobs[0]), str(jobs[1]))
    with pytest.raises(ValueError, match=r"missing \['fr_speech'\]"):
        run(data, "bad", *tables, "--merge_dirs", str(jobs[0]))
    with pytest.raises(FileNotFoundError, match="did not finish"):
        run(data, "bad", *tables, "--merge_dirs", str(jobs[0]), str(data / "job.3"))
    (data / "keys.bad").write_text("en_speech\nnot_an_utt\n")
    with pytest.raises(KeyError, match=r"keys.bad names 1 utterance\(s\) not in .*ref.scp"):
        run(data, "bad", *tables, "--key_file", str(data / "keys.bad"))


def write_codes(d, codes: dict, n_q: int = 2, codebook_size: int = 8):
    """A codec_inference-style codes dir (codes.ark/scp, meta.yaml) holding ``codes``."""
    import kaldiio

    from espnet2_almtok.fileio import flatten_codes, write_meta

    out = d / "codes"
    out.mkdir(exist_ok=True)
    with kaldiio.WriteHelper(f"ark,scp:{out / 'codes.ark'},{out / 'codes.scp'}") as writer:
        for utt, c in codes.items():
            writer[utt] = flatten_codes(np.asarray(c))
    write_meta(out, dict(n_q=n_q, window=4, codebook_size=codebook_size, sample_rate=16000,
                         token_rate=12.5, bitrate=75.0))
    return out


def test_codes_in_use_and_clips_coded_alike_are_reported_with_the_scores(data, tmp_path):
    collapsed = {"en_speech": [[1, 2, 1, 2, 1], [0, 0, 0, 0, 0]], "fr_speech": [[1, 2, 1, 2], [3, 3, 3, 3]],
                 "sound": [[1, 2, 1], [0, 1, 0]]}  # one periodic first-codebook sequence for every clip
    codes = write_codes(tmp_path, collapsed)
    out = run(data, "codes", "--judges", "none", "--codes_dir", str(codes))
    avg = read_avg(out / "avg_result.txt")
    assert (avg["codes_in_use_q1"], avg["codes_in_use_q2"]) == ("2", "3")
    assert (avg["same_first_pairs"], avg["clip_pairs"]) == ("3", "3")
    md = (out / "result.md").read_text()
    assert "codes in use per codebook 2 (25 %), 3 (38 %)" in md and "3 of 3 clip pairs share" in md
    del collapsed["sound"]
    (tmp_path / "other").mkdir()
    missing = write_codes(tmp_path / "other", collapsed)
    with pytest.raises(KeyError, match=r"1 scored utterance\(s\) have no codes in .*\['sound'\]"):
        run(data, "codes2", "--judges", "none", "--codes_dir", str(missing))
