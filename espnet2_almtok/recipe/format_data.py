"""Recipe stage 2: format a data dir into ``dump/raw/<set>``: mono, the model's rate, PCM16 wav.

    python -m espnet2_almtok.recipe.format_data --in data/train --out dump/raw/train --fs 16000 \\
        --min_dur 0.2 --max_dur 30 --on_bad drop
    # in N parallel jobs (the recipe runs them with ${decode_cmd} JOB=1:N), then merged:
    python -m espnet2_almtok.recipe.format_data --in data/train --out dump/raw/train ... --nj N --job J
    python -m espnet2_almtok.recipe.format_data --in data/train --out dump/raw/train ... --merge N

The data dir is Kaldi's: ``wav.scp`` entries are files or commands ending in ``|`` whose output is
the audio (run in a shell, as Kaldi does); with a ``segments`` file (``utt recording start end``,
seconds, ``end`` -1 = to the end) the utterances are those segments of the ``wav.scp`` recordings.

Every utterance is checked: missing or unreadable file, a failing command, a segment outside its
recording (an end up to 0.5 s past it is cut at the end, as Kaldi's ``extract-segments`` does),
zero-length, all-zero or non-finite audio, shorter than ``--min_dur`` or longer than
``--max_dur``, a ``text`` line without audio or audio without its ``text`` line (when a ``text``
exists). ``--on_bad error`` stops at the first problem naming the utterance; ``--on_bad drop``
drops it, logs it in ``out/bad_utts`` (``<utt> <reason>``) and prints the count.

Reruns never trust stale state. The audio goes to ``out/data/<key>/<utt>.wav``, ``<key>`` a digest
of what decides the files (``--fs``, ``--min_dur``, ``--max_dur``, the contents of ``wav.scp`` and
``segments``): a rerun after a kill keeps the finished files of the same key, and other options or
inputs write a new key's files (the other keys' are removed once the set is complete). ``out/.done``
(and each job's ``split<nj>/<job>/.done``) records the signature: those digests, ``--on_bad`` and
the digests of ``text`` and the per-utterance tables. A rerun with the same signature does nothing;
with another it redoes the work.
"""

import argparse
import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile
from espnet2_almtok.progress import progress

from espnet2_almtok.audio import AudioError, resample, to_mono_tensor, validate_waveform
from espnet2_almtok.fileio import atomic_write_text, done_matches, done_signature, hold_lock, optional_file_sha256
from espnet2_almtok.recipe.kaldi_dir import (Segment, read_segments, read_table, read_wav_entry, utt_id_problem,
                                             write_table)


PER_UTT_TABLES = ("text", "text.orig", "utt2spk", "utt2category", "utt2lang")
MAX_SEGMENT_OVERSHOOT = 0.5  # seconds a segment may end past its recording (Kaldi's extract-segments default)


def format_signature(src: Path, fs: int, min_dur: float, max_dur: float, on_bad: str) -> Tuple[str, str]:
    """(the text of ``.done``, the audio key), each input file hashed once.

    The audio key names the ``out/data`` subdirectory of the files formatted under these options
    and inputs: 12 hex digits of the digest of what decides the files (the options and the
    recordings' listing). ``.done`` records those fields, ``on_bad`` and the digests of the tables
    copied or checked (``text`` and :data:`PER_UTT_TABLES`)."""
    audio = {"fs": int(fs), "min_dur": float(min_dur), "max_dur": float(max_dur),
             "wav.scp": optional_file_sha256(src / "wav.scp"), "segments": optional_file_sha256(src / "segments")}
    key = hashlib.sha256(done_signature(**audio).encode()).hexdigest()[:12]
    tables = {name: optional_file_sha256(src / name) for name in ("text",) + PER_UTT_TABLES}
    return done_signature(**audio, on_bad=on_bad, tables=tables), key


def _kept_count(dst: Path) -> int:
    return len(read_table(dst / "wav.scp"))


def _job_keys(keys: List[str], nj: int, job: int) -> List[str]:
    """Job ``job`` (1-based) of ``nj``: a contiguous share of the sorted ``keys`` (as utils/split_scp.sh)."""
    n = len(keys)
    return keys[(job - 1) * n // nj: job * n // nj]


class _Reader:
    """Reads utterances from ``wav.scp`` (+ ``segments``); keeps the last recording for the next segment."""

    def __init__(self, wav_scp: Dict[str, str], segments: Dict[str, Segment]):
        self.wav_scp, self.segments = wav_scp, segments
        self._cached: Tuple[Optional[str], object] = (None, None)

    def __call__(self, utt: str) -> Tuple[np.ndarray, int]:
        if not self.segments:
            return read_wav_entry(self.wav_scp[utt], utt)
        seg = self.segments[utt]
        if seg.recording not in self.wav_scp:
            raise AudioError(f"{utt}: segment of recording {seg.recording}, which has no wav.scp entry")
        if self._cached[0] != seg.recording:
            self._cached = (None, None)
            self._cached = (seg.recording, read_wav_entry(self.wav_scp[seg.recording],
                                                          f"{utt} (recording {seg.recording})"))
        wav, sr = self._cached[1]
        dur = len(wav) / sr
        where = f"segment {seg.start:g}-{seg.end:g} s of recording {seg.recording} ({dur:.2f} s)"
        end = dur if seg.end == -1 else seg.end
        if seg.start < 0 or end <= seg.start:
            raise AudioError(f"{utt}: {where}: start must be >= 0 and below the end (-1 = the end of the recording)")
        if seg.start >= dur or end > dur + MAX_SEGMENT_OVERSHOOT:
            raise AudioError(f"{utt}: {where} is out of range: the recording ends at {dur:.2f} s; fix segments")
        start_s, end_s = int(round(seg.start * sr)), min(len(wav), int(round(end * sr)))
        return wav[start_s:end_s], sr


def format_dir(src: Path, dst: Path, fs: int, min_dur: float, max_dur: float, on_bad: str,
               nj: int = 1, job: Optional[int] = None) -> int:
    """Format ``src`` into ``dst`` and return the number of kept utterances. With ``job`` (1..``nj``),
    only that job's share of the utterances: audio into ``dst/data``, its tables into
    ``dst/split<nj>/<job>`` for :func:`merge_jobs`."""
    src, dst = Path(src), Path(dst)
    wav_scp = read_table(src / "wav.scp")
    if not wav_scp:
        raise FileNotFoundError(f"{src}/wav.scp is missing or empty; run stage 1")
    if job is not None and not 1 <= job <= nj:
        raise ValueError(f"--job {job} is outside 1..--nj {nj}")
    signature, key = format_signature(src, fs, min_dur, max_dur, on_bad)
    if done_matches(dst / ".done", signature, str(dst)):
        return _kept_count(dst)
    segments = read_segments(src / "segments")
    utt_ids = set(segments) if segments else set(wav_scp)
    text = read_table(src / "text")
    keys = sorted(utt_ids | set(text))
    if job is not None:
        keys = _job_keys(keys, nj, job)
    audio_dir = dst / "data" / key
    audio_dir.mkdir(parents=True, exist_ok=True)
    bad: Dict[str, str] = {}
    audio_of = "segments line" if segments else "wav.scp entry"

    def reject(utt: str, reason: str) -> None:
        if on_bad == "error":
            raise AudioError(f"{src}: utterance {utt}: {reason} (or rerun with --on_bad drop to drop it)")
        bad[utt] = reason

    for utt in keys:
        if (why := utt_id_problem(utt)):  # ids name the formatted files
            reject(utt, f"the id cannot name a file: {why} (rename it in {src}; utterance ids are Kaldi ids)")
        elif text and utt not in utt_ids:
            reject(utt, f"has a text line but no {audio_of}")
        elif text and utt not in text:
            reject(utt, "has audio but no text line")
    read = _Reader(wav_scp, segments)
    out_scp, num_samples = {}, {}
    for utt in progress([k for k in keys if k not in bad], desc=f"format {src.name}", unit="utt"):
        out = (audio_dir / f"{utt}.wav").resolve()
        if out.exists():  # done on an earlier run of these options and inputs (written atomically)
            out_scp[utt], num_samples[utt] = str(out), str(soundfile.info(str(out)).frames)
            continue
        try:
            wav, sr = read(utt)
            wav = to_mono_tensor(wav, utt)
            validate_waveform(wav, utt)
            wav = resample(wav, sr, fs, utt)
        except AudioError as e:
            reject(utt, str(e).split(": ", 1)[-1])
            continue
        dur = wav.numel() / fs
        if dur < min_dur or dur > max_dur:
            reject(utt, f"duration {dur:.2f} s is outside [{min_dur:g}, {max_dur:g}] (--min_dur/--max_dur)")
            continue
        peak = float(wav.abs().max())
        if peak > 1.0:  # keep PCM16 from clipping
            wav = wav / peak
        tmp = out.with_name(f".{out.stem}.partial.wav")  # no id starts with '.': no id names a temp file
        soundfile.write(str(tmp), wav.numpy(), fs, "PCM_16")
        os.replace(tmp, out)
        out_scp[utt], num_samples[utt] = str(out), str(wav.numel())
    if job is not None:
        jdir = dst / f"split{nj}" / str(job)
        jdir.mkdir(parents=True, exist_ok=True)
        (jdir / ".done").unlink(missing_ok=True)
        write_table(jdir / "wav.scp", out_scp)
        write_table(jdir / "utt2num_samples", num_samples)
        write_table(jdir / "bad_utts", bad)
        atomic_write_text(jdir / "num_keys", f"{len(keys)}\n")
        atomic_write_text(jdir / ".done", signature)
        return len(out_scp)
    return _write_outputs(src, dst, out_scp, num_samples, bad, len(keys), signature, audio_dir)


def merge_jobs(src: Path, dst: Path, nj: int, fs: int, min_dur: float, max_dur: float, on_bad: str) -> int:
    """Join the tables of the ``nj`` jobs of :func:`format_dir` (run with the same options) into
    ``dst``; returns the kept count. A job that did not finish, or finished for other inputs or
    options, is an error naming it."""
    src, dst = Path(src), Path(dst)
    signature, key = format_signature(src, fs, min_dur, max_dur, on_bad)
    if done_matches(dst / ".done", signature, str(dst)):
        return _kept_count(dst)
    out_scp, num_samples, bad, n_keys = {}, {}, {}, 0
    for job in range(1, nj + 1):
        jdir = dst / f"split{nj}" / str(job)
        if not (jdir / ".done").is_file():
            raise FileNotFoundError(f"{jdir} is incomplete: format job {job} of {nj} did not finish; "
                                    f"rerun stage 2 (see its log in {dst}/logdir)")
        if (jdir / ".done").read_text() != signature:
            raise ValueError(f"{jdir} holds format job {job}'s outputs of other inputs or options than "
                             f"{src} with these options (its .done differs); rerun stage 2's jobs")
        n_keys += int((jdir / "num_keys").read_text())
        out_scp.update(read_table(jdir / "wav.scp"))
        num_samples.update(read_table(jdir / "utt2num_samples"))
        bad.update(read_table(jdir / "bad_utts"))
    return _write_outputs(src, dst, out_scp, num_samples, bad, n_keys, signature, dst / "data" / key)


def _remove_stale_audio(dst: Path, audio_dir: Path) -> None:
    """Once a set is complete: remove the audio of other options or inputs (other keys' dirs, and
    files of the layout before keys) and the temporary files a kill left in ``audio_dir``."""
    for item in (dst / "data").iterdir():
        if item.name == audio_dir.name:
            continue
        if item.is_dir():
            shutil.rmtree(item)
        else:
            item.unlink()
    for tmp in audio_dir.glob(".*.partial.wav"):
        tmp.unlink()


def _write_outputs(src: Path, dst: Path, out_scp, num_samples, bad, n_total: int, signature: str,
                   audio_dir: Path) -> int:
    """Write the set's tables, then ``.done`` (last: a kill before it leaves nothing finished)."""
    if not out_scp:
        write_table(dst / "bad_utts", bad)
        raise AudioError(f"{src}: no usable utterance left ({len(bad)} rejected; see {dst}/bad_utts)")
    write_table(dst / "wav.scp", out_scp)
    write_table(dst / "utt2num_samples", num_samples)
    for name in PER_UTT_TABLES:
        table = read_table(src / name)
        if table:
            write_table(dst / name, {u: v for u, v in table.items() if u in out_scp})
        else:  # not (or no longer) in the source: no stale copy
            (dst / name).unlink(missing_ok=True)
    write_table(dst / "bad_utts", bad)
    if bad:
        logging.warning(f"{src}: dropped {len(bad)} of {n_total} utterance(s); see {dst}/bad_utts")
    _remove_stale_audio(dst, audio_dir)
    atomic_write_text(dst / ".done", signature)
    return len(out_scp)


def main(argv: Sequence[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--in", dest="src", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--fs", type=int, default=16000)
    p.add_argument("--min_dur", type=float, default=0.1)
    p.add_argument("--max_dur", type=float, default=60.0)
    p.add_argument("--on_bad", choices=["drop", "error"], default="error")
    p.add_argument("--nj", type=int, default=1, help="number of parallel jobs (with --job or --merge)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--job", type=int, default=None, help="format job J's share (1..nj) into out/split<nj>/J")
    g.add_argument("--merge", type=int, default=None, metavar="NJ", help="join the NJ jobs' tables into out")
    args = p.parse_args(argv)
    if args.nj < 1:
        p.error(f"--nj must be >= 1, got {args.nj}")
    logging.basicConfig(level="INFO", format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    # one writer per directory (a job's share: its split dir); the recipe's stage 2 also holds a
    # lock on the whole dump dir, so two runs with other --nj do not overlap either
    if args.job is not None and not 1 <= args.job <= args.nj:
        p.error(f"--job {args.job} is outside 1..--nj {args.nj}")
    locked = args.out if args.job is None else args.out / f"split{args.nj}" / str(args.job)
    locked.mkdir(parents=True, exist_ok=True)
    lock = hold_lock(locked, "format job", "wait for it to finish, or format into another --out")  # noqa: F841
    if args.merge is not None:
        n = merge_jobs(args.src, args.out, args.merge, args.fs, args.min_dur, args.max_dur, args.on_bad)
    else:
        n = format_dir(args.src, args.out, args.fs, args.min_dur, args.max_dur, args.on_bad,
                       args.nj, args.job)
    print(f"{args.out}{'' if args.job is None else f' (job {args.job} of {args.nj})'}: {n} utterances")


if __name__ == "__main__":
    main()
