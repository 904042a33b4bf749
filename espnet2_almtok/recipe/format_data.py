"""Recipe stage 2: format a data dir into ``dump/raw/<set>``: mono, the model's rate, PCM16 wav.

    python -m espnet2_almtok.recipe.format_data --in data/train --out dump/raw/train --fs 16000 \\
        --min_dur 0.2 --max_dur 30 --on_bad drop

Every utterance is checked: missing or unreadable file, zero-length, all-zero or non-finite
audio, shorter than ``--min_dur`` or longer than ``--max_dur``, a ``text`` line without audio
or audio without its ``text`` line (when a ``text`` exists). ``--on_bad error`` stops at the
first problem naming the utterance; ``--on_bad drop`` drops it, logs it in ``out/bad_utts``
(``<utt> <reason>``) and prints the count. Finished files are kept on a rerun.
"""

import argparse
import logging
import os
from pathlib import Path
from typing import Dict, Sequence

import soundfile
from tqdm import tqdm

from espnet2_almtok.audio import AudioError, read_audio, resample, to_mono_tensor, validate_waveform
from espnet2_almtok.recipe.kaldi_dir import read_table, write_table


PER_UTT_TABLES = ("text", "text.orig", "utt2spk", "utt2category", "utt2lang")


def format_dir(src: Path, dst: Path, fs: int, min_dur: float, max_dur: float, on_bad: str) -> int:
    wav_scp = read_table(src / "wav.scp")
    if not wav_scp:
        raise FileNotFoundError(f"{src}/wav.scp is missing or empty; run stage 1")
    text = read_table(src / "text")
    # per-utterance tables carried over to the formatted dir (for the kept utterances)
    tables = {name: read_table(src / name) for name in PER_UTT_TABLES}
    (dst / "data").mkdir(parents=True, exist_ok=True)
    bad: Dict[str, str] = {}

    def reject(utt: str, reason: str) -> None:
        if on_bad == "error":
            raise AudioError(f"{src}: utterance {utt}: {reason} (or rerun with --on_bad drop to drop it)")
        bad[utt] = reason

    if text:
        for utt in sorted(set(text) - set(wav_scp)):
            reject(utt, "has a text line but no wav.scp entry")
        for utt in sorted(set(wav_scp) - set(text)):
            reject(utt, "has audio but no text line")
    out_scp, num_samples = {}, {}
    for utt, spec in tqdm(sorted(wav_scp.items()), desc=f"format {src.name}", unit="utt"):
        if utt in bad:
            continue
        out = (dst / "data" / f"{utt}.wav").resolve()
        if out.exists():  # done on an earlier run (written atomically)
            out_scp[utt], num_samples[utt] = str(out), str(soundfile.info(str(out)).frames)
            continue
        try:
            wav, sr = read_audio(spec.strip(), utt)
            wav = to_mono_tensor(wav, utt)
            validate_waveform(wav, utt)
            wav = resample(wav, sr, fs, utt)
        except AudioError as e:
            reject(utt, str(e).split(": ", 1)[-1])
            continue
        dur = wav.numel() / fs
        if dur < min_dur or dur > max_dur:
            reject(utt, f"duration {dur:.2f} s is outside [{min_dur}, {max_dur}] (--min_dur/--max_dur)")
            continue
        peak = float(wav.abs().max())
        if peak > 1.0:  # keep PCM16 from clipping
            wav = wav / peak
        tmp = out.with_name(out.stem + ".tmp.wav")
        soundfile.write(str(tmp), wav.numpy(), fs, "PCM_16")
        os.replace(tmp, out)
        out_scp[utt], num_samples[utt] = str(out), str(wav.numel())
    if not out_scp:
        raise AudioError(f"{src}: no usable utterance left ({len(bad)} rejected; see {dst}/bad_utts)")
    write_table(dst / "wav.scp", out_scp)
    write_table(dst / "utt2num_samples", num_samples)
    for name, table in tables.items():
        if table:
            write_table(dst / name, {u: v for u, v in table.items() if u in out_scp})
    write_table(dst / "bad_utts", bad)
    if bad:
        logging.warning(f"{src}: dropped {len(bad)} of {len(wav_scp)} utterance(s); see {dst}/bad_utts")
    return len(out_scp)


def main(argv: Sequence[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--in", dest="src", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--fs", type=int, default=16000)
    p.add_argument("--min_dur", type=float, default=0.1)
    p.add_argument("--max_dur", type=float, default=60.0)
    p.add_argument("--on_bad", choices=["drop", "error"], default="error")
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    n = format_dir(args.src, args.out, args.fs, args.min_dur, args.max_dur, args.on_bad)
    print(f"{args.out}: {n} utterances")


if __name__ == "__main__":
    main()
