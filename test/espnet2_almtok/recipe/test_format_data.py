from pathlib import Path

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


def formatted(dst, utt):
    """The formatted file of ``utt``, as ``dst/wav.scp`` lists it."""
    return Path(dict(line.split(" ", 1) for line in (dst / "wav.scp").read_text().splitlines())[utt])


def test_rerun_keeps_finished_files(tmp_path, caplog):
    src = make_dir(tmp_path)
    dst = tmp_path / "dump"
    format_dir(src, dst, 16000, 0.2, 30, "drop")
    out = formatted(dst, "a-good")
    mtime = out.stat().st_mtime_ns
    with caplog.at_level("INFO"):
        assert format_dir(src, dst, 16000, 0.2, 30, "drop") == 1
    assert "complete for these inputs" in caplog.text
    (dst / ".done").unlink()  # killed before the end: the finished files are kept
    assert format_dir(src, dst, 16000, 0.2, 30, "drop") == 1
    assert out.stat().st_mtime_ns == mtime and (dst / ".done").is_file()


@pytest.mark.parametrize("change", ["fs", "min_dur", "max_dur", "wav.scp", "segments"])
def test_other_options_or_inputs_redo_the_work_and_leave_no_stale_file(tmp_path, change, caplog):
    """Stage 2 must not reuse files formatted under other --fs/--min_dur/--max_dur or another
    wav.scp/segments (issue 13): each rerun's outputs equal a fresh run's."""
    src = make_dir(tmp_path)
    dst = tmp_path / "dump"
    format_dir(src, dst, 16000, 0.2, 30, "drop")
    old_file = formatted(dst, "a-good")
    opts = dict(fs=16000, min_dur=0.2, max_dur=30)
    if change == "fs":
        opts["fs"] = 8000
    elif change == "min_dur":
        opts["min_dur"] = 2.0  # drops a-good (1 s), kept before: no usable utterance left
    elif change == "max_dur":
        opts["max_dur"] = 0.5
    elif change == "wav.scp":  # same ids and paths count, other audio behind a-good
        soundfile.write(tmp_path / "other.wav", speechlike(0.7, seed=9).numpy(), 16000)
        (src / "wav.scp").write_text((src / "wav.scp").read_text().replace(f"{tmp_path}/good.wav",
                                                                           f"{tmp_path}/other.wav"))
    else:  # segments: a-good becomes its first half
        (src / "segments").write_text("a-good a-good 0 0.5\n")
    fresh = tmp_path / "fresh"
    with caplog.at_level("WARNING"):
        try:
            n_fresh = format_dir(src, fresh, opts["fs"], opts["min_dur"], opts["max_dur"], "drop")
        except AudioError:
            n_fresh = None
        try:
            n = format_dir(src, dst, opts["fs"], opts["min_dur"], opts["max_dur"], "drop")
        except AudioError:
            n = None
    assert n == n_fresh and "(.done differs); redoing the job" in caplog.text
    assert not (dst / ".done").is_file() if n is None else (dst / ".done").is_file()
    for name in ("bad_utts",) + (("utt2num_samples", "text") if n else ()):
        assert (dst / name).read_text() == (fresh / name).read_text(), name
    if n:
        new_file = formatted(dst, "a-good")
        assert new_file != old_file and not old_file.exists()  # the stale file is gone
        assert new_file.read_bytes() == formatted(fresh, "a-good").read_bytes()


def test_merge_refuses_a_job_of_other_options(tmp_path):
    from espnet2_almtok.recipe.format_data import merge_jobs

    src = make_dir(tmp_path)
    dst = tmp_path / "dump"
    for job in (1, 2):
        format_dir(src, dst, 16000, 0.2, 30, "drop", nj=2, job=job)
    format_dir(src, dst, 8000, 0.2, 30, "drop", nj=2, job=2)  # job 2 rerun alone under --fs 8000
    with pytest.raises(ValueError, match=r"split2/1 holds format job 1's outputs of other inputs or options"):
        merge_jobs(src, dst, 2, 8000, 0.2, 30, "drop")
    with pytest.raises(ValueError, match=r"split2/2 holds format job 2's outputs of other inputs or options"):
        merge_jobs(src, dst, 2, 16000, 0.2, 30, "drop")
    assert not (dst / ".done").exists()
    format_dir(src, dst, 8000, 0.2, 30, "drop", nj=2, job=1)
    assert merge_jobs(src, dst, 2, 8000, 0.2, 30, "drop") == 1 and (dst / ".done").is_file()
    assert soundfile.info(str(formatted(dst, "a-good"))).samplerate == 8000


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


# ---------------------------------------------------------------- Kaldi segments and piped wav.scp


def make_recordings(tmp_path):
    """``data`` with two recordings (2 s at 16 kHz, 1 s at 22.05 kHz stereo) and a ``segments`` file."""
    src = tmp_path / "data"
    src.mkdir()
    rec1 = speechlike(2.0, seed=1).numpy()
    rec2 = speechlike(1.0, sr=22050, seed=2).numpy()
    soundfile.write(tmp_path / "rec1.wav", rec1, 16000)
    soundfile.write(tmp_path / "rec2.wav", np.stack([rec2, rec2], 1), 22050)
    (src / "wav.scp").write_text(f"rec1 {tmp_path}/rec1.wav\nrec2 {tmp_path}/rec2.wav\n")
    (src / "segments").write_text("rec1-a rec1 0.00 0.50\nrec1-b rec1 0.50 1.75\nrec2-a rec2 0.25 -1\n")
    (src / "text").write_text("rec1-a one\nrec1-b two\nrec2-a three\n")
    return src, rec1


def test_segments_cut_the_recordings(tmp_path):
    src, rec1 = make_recordings(tmp_path)
    dst = tmp_path / "dump"
    assert format_dir(src, dst, 16000, 0.2, 30, "error") == 3
    scp = dict(line.split() for line in (dst / "wav.scp").read_text().splitlines())
    assert sorted(scp) == ["rec1-a", "rec1-b", "rec2-a"]
    a, sr = soundfile.read(scp["rec1-a"])
    b, _ = soundfile.read(scp["rec1-b"])
    assert sr == 16000 and len(a) == 8000 and len(b) == 20000
    np.testing.assert_allclose(b, rec1[8000:28000], atol=1e-4)  # PCM16 rounding only
    c, _ = soundfile.read(scp["rec2-a"])
    assert abs(len(c) - 12000) <= 1  # 0.25 s .. the end (-1) of a 1 s recording, resampled
    assert (dst / "utt2num_samples").read_text().startswith("rec1-a 8000\nrec1-b 20000\n")
    assert (dst / "text").read_text() == "rec1-a one\nrec1-b two\nrec2-a three\n"


@pytest.mark.parametrize("line, reason", [
    ("rec1 1.50 2.60", "out of range: the recording ends at 2.00 s"),   # ends 0.6 s past the end
    ("rec1 2.10 2.30", "out of range"),                                   # starts after the end
    ("rec1 1.00 0.80", "start must be >= 0 and below the end"),
    ("rec9 0.00 1.00", "recording rec9, which has no wav.scp entry"),
])
def test_bad_segment_is_named(tmp_path, line, reason):
    src, _ = make_recordings(tmp_path)
    with open(src / "segments", "a") as f:
        f.write(f"rec1-z {line}\n")
    (src / "text").write_text((src / "text").read_text() + "rec1-z four\n")
    with pytest.raises(AudioError, match=rf"utterance rec1-z: .*{reason}"):
        format_dir(src, tmp_path / "dump", 16000, 0.1, 30, "error")
    assert format_dir(src, tmp_path / "dump2", 16000, 0.1, 30, "drop") == 3
    assert reason in (tmp_path / "dump2" / "bad_utts").read_text()


def test_segment_ending_slightly_past_the_recording_is_cut_at_its_end(tmp_path):
    src, rec1 = make_recordings(tmp_path)
    (src / "segments").write_text("rec1-a rec1 1.50 2.30\n")  # 0.3 s past: Kaldi's tolerance is 0.5 s
    (src / "text").write_text("rec1-a one\n")
    format_dir(src, tmp_path / "dump", 16000, 0.1, 30, "error")
    assert (tmp_path / "dump" / "utt2num_samples").read_text() == "rec1-a 8000\n"


def test_malformed_segments_line_names_the_line(tmp_path):
    src, _ = make_recordings(tmp_path)
    (src / "segments").write_text("rec1-a rec1 0.0 0.5\nrec1-b rec1 zero 0.5\n")
    with pytest.raises(ValueError, match=r"segments:2: expected 'utt recording start end'"):
        format_dir(src, tmp_path / "dump", 16000, 0.1, 30, "drop")


def test_piped_wav_scp_entries_run_as_commands(tmp_path):
    src = tmp_path / "data"
    src.mkdir()
    wav = speechlike(1.0, seed=3).numpy()
    soundfile.write(tmp_path / "a b.wav", wav, 16000)  # a space in the name: the command quotes it
    (src / "wav.scp").write_text(f"u1 cat '{tmp_path}/a b.wav' |\n"
                                 f"u2 cat {tmp_path}/missing.wav |\n"
                                 f"u3 echo not audio |\n"
                                 f"u4 true |\n")
    dst = tmp_path / "dump"
    assert format_dir(src, dst, 16000, 0.1, 30, "drop") == 1
    out, sr = soundfile.read(formatted(dst, "u1"))
    np.testing.assert_allclose(out, wav, atol=1e-4)
    bad = dict(line.split(" ", 1) for line in (dst / "bad_utts").read_text().splitlines())
    assert "wav.scp command `cat" in bad["u2"] and "failed (exit code 1)" in bad["u2"] and "missing.wav" in bad["u2"]
    assert "is not readable audio" in bad["u3"] and "no audio" in bad["u4"]
    with pytest.raises(AudioError, match=r"utterance u2: wav.scp command .* failed"):
        format_dir(src, tmp_path / "dump_err", 16000, 0.1, 30, "error")


def test_piped_recording_with_segments(tmp_path):
    src, rec1 = make_recordings(tmp_path)
    (src / "wav.scp").write_text(f"rec1 cat {tmp_path}/rec1.wav |\nrec2 {tmp_path}/rec2.wav\n")
    assert format_dir(src, tmp_path / "dump", 16000, 0.2, 30, "error") == 3
    assert (tmp_path / "dump" / "utt2num_samples").read_text().startswith("rec1-a 8000\nrec1-b 20000\n")


def test_parallel_jobs_and_merge_equal_one_run(tmp_path):
    from espnet2_almtok.recipe.format_data import main, merge_jobs

    src = make_dir(tmp_path)
    one, par = tmp_path / "one", tmp_path / "par"
    format_dir(src, one, 16000, 0.2, 30, "drop")
    for job in (1, 2, 3):
        main(["--in", str(src), "--out", str(par), "--fs", "16000", "--min_dur", "0.2", "--max_dur", "30",
              "--on_bad", "drop", "--nj", "3", "--job", str(job)])
    assert merge_jobs(src, par, 3, 16000, 0.2, 30, "drop") == 1
    for name in ("text", "utt2num_samples", "bad_utts"):
        assert (par / name).read_text() == (one / name).read_text(), name
    assert (par / "wav.scp").read_text() == (one / "wav.scp").read_text().replace(str(one), str(par))
    (par / ".done").unlink()  # the set not complete, and job 2 killed
    (par / "split3" / "2" / ".done").unlink()
    with pytest.raises(FileNotFoundError, match="format job 2 of 3 did not finish"):
        merge_jobs(src, par, 3, 16000, 0.2, 30, "drop")


def test_ids_that_cannot_name_files_are_refused_and_no_id_names_a_temp_file(tmp_path):
    """An id ending in '.tmp' keeps its formatted file (temp files are '.<id>.partial.wav', and no id
    starts with '.'); ids with '/', '..' or too many bytes never become paths outside the dump."""
    src = tmp_path / "data"
    src.mkdir()
    soundfile.write(tmp_path / "a.wav", speechlike(0.5).numpy(), 16000)
    ids = ["u1.tmp", "u2", "../../escape", ".hidden", "x" * 300]
    (src / "wav.scp").write_text("".join(f"{u} {tmp_path / 'a.wav'}\n" for u in ids))
    dst = tmp_path / "dump"
    assert format_dir(src, dst, 16000, 0.2, 30, "drop") == 2
    assert formatted(dst, "u1.tmp").is_file() and formatted(dst, "u2").is_file()
    bad = dict(line.split(" ", 1) for line in (dst / "bad_utts").read_text().splitlines())
    assert set(bad) == {"../../escape", ".hidden", "x" * 300} and all("cannot name a file" in r for r in bad.values())
    assert not (tmp_path / "escape.wav").exists() and not list(tmp_path.rglob("*escape*"))
    with pytest.raises(AudioError, match=r"utterance \.\./\.\./escape: the id cannot name a file: it contains a path"):
        format_dir(src, tmp_path / "dump2", 16000, 0.2, 30, "error")


def test_a_second_format_job_on_the_same_dir_is_refused(tmp_path):
    from conftest import make_data_dir
    from espnet2_almtok.fileio import hold_lock
    from espnet2_almtok.recipe import format_data

    src = make_data_dir(tmp_path / "data", n=2)
    out = tmp_path / "dump"
    out.mkdir()
    held = hold_lock(out, "format job", "")
    try:
        with pytest.raises(RuntimeError, match=rf"{out} is in use by another format job .*format into another --out"):
            format_data.main(["--in", str(src), "--out", str(out)])
        assert not (out / ".done").exists()
    finally:
        held.close()
    format_data.main(["--in", str(src), "--out", str(out)])
    assert (out / ".done").is_file()
