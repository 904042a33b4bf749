#!/usr/bin/env python3
"""Codec tokens as ESPnet's discrete units, for its asr2 / tts2 recipes.

    python -m espnet2_almtok.recipe.units --codes_dir <exp>/decode_w4/<set>/codes --stream q1 --out_dir <dir>

Reads a decode dir's ``codes/`` (``codes.scp`` + ``meta.yaml``, recipe stage 7 or
``bin/codec_inference``) and writes to ``--out_dir``:

- ``units``: ``utt u1 u2 ...``, one line per utterance: ESPnet's discrete-unit text (what asr2's
  ``espnet2.bin.mt_train`` reads as its source text, and tts2's ``discrete_speech`` target);
- ``token_list``: ESPnet's token list for them (``<blank>``, ``<unk>``, the units, ``<sos/eos>``);
- ``units.yaml``: the stream, the codebook size, the token rate, the codec's ``meta.yaml``.

Streams: ``q1``: the first codebook only, the one initialised from k-means of SSL features (the
kind of unit asr2 is built for), ``K`` units at the token rate (12.5 Hz at w = 4); ``all``: every
codebook, frame-major (``t0q1 t0q2 t0q3 t1q1 ...``), codebook ``k``'s code ``c`` as unit
``k * K + c``: ``n_q * K`` units at ``n_q`` x the token rate, from which the codec's decoder
resynthesises (``ALMTokenizer.decode`` of the units reshaped to ``(n_q, N)``; ``q1`` alone
decodes too, at the quality of one codebook).

It warns, naming the share, when most utterances of the set share their first-codebook sequence
with another utterance (a tokenizer that codes its input poorly: such units say little).
"""

import argparse
import logging
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import yaml

from espnet2_almtok.code_usage import first_sequence_repeats
from espnet2_almtok.fileio import atomic_write_text, read_codes_scp, read_meta

STREAMS = ("q1", "all")
SPECIAL = ("<blank>", "<unk>")
EOS = "<sos/eos>"


def to_units(codes: np.ndarray, stream: str, codebook_size: int) -> List[int]:
    """``codes`` ``(n_q, N)`` -> the unit sequence of ``stream`` (see the module docstring)."""
    if stream == "q1":
        return codes[0].tolist()
    if stream == "all":
        offsets = (np.arange(codes.shape[0]) * codebook_size)[:, None]
        return (codes + offsets).T.reshape(-1).tolist()
    raise ValueError(f"stream {stream!r}: choose one of {STREAMS}")


def from_units(units: Sequence[int], stream: str, codebook_size: int, n_q: int) -> torch.Tensor:
    """The inverse of :func:`to_units` for the decoder: units -> codes ``(1, n_q', N)``."""
    u = torch.as_tensor(list(units), dtype=torch.long)
    if stream == "q1":
        return u.view(1, 1, -1)
    if u.numel() % n_q:
        raise ValueError(f"{u.numel()} units are not a whole number of frames of {n_q} codebooks")
    frames = u.view(-1, n_q).T  # (n_q, N)
    return (frames - (torch.arange(n_q) * codebook_size).unsqueeze(1)).unsqueeze(0)


def repeated_share(sequences: Dict[str, List[int]]) -> Tuple[float, int]:
    """The share of utterances whose first-codebook sequence another utterance shares (one
    coded as another's beginning counts: :func:`~espnet2_almtok.code_usage.first_sequence_repeats`),
    and how many utterances that is."""
    _, n = first_sequence_repeats(list(sequences.values()))
    return (n / len(sequences) if sequences else 0.0), n


def write_units(codes_dir: Path, stream: str, out_dir: Path, warn_share: float = 0.5) -> Dict:
    meta = read_meta(codes_dir)
    size, n_q = int(meta["codebook_size"]), int(meta["n_q"])
    codes = dict(read_codes_scp(codes_dir / "codes.scp", n_q))
    if not codes:
        raise ValueError(f"{codes_dir}/codes.scp lists no utterance: decode the set first (run.sh --stage 7)")
    share, n = repeated_share({k: c[0].tolist() for k, c in codes.items()})
    if share > warn_share:
        logging.warning(f"{codes_dir}: {n} of {len(codes)} utterances ({100 * share:.0f} %) share their "
                        "first-codebook sequence with another utterance: these units say little about the audio")
    vocab = size if stream == "q1" else n_q * size
    lines = [f"{utt} {' '.join(map(str, to_units(c, stream, size)))}" for utt, c in sorted(codes.items())]
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "units", "\n".join(lines) + "\n")
    atomic_write_text(out_dir / "token_list", "\n".join([*SPECIAL, *map(str, range(vocab)), EOS]) + "\n")
    info = {"stream": stream, "units": vocab, "codebook_size": size, "n_q": n_q,
            "unit_rate": float(meta["token_rate"]) * (1 if stream == "q1" else n_q),
            "repeated_first_sequence_share": share, "codec": dict(meta)}
    atomic_write_text(out_dir / "units.yaml", yaml.safe_dump(info, sort_keys=False))
    return info


def tts2_inputs(units_dir: Path, text: Path, wav_scp: Path, out_dir: Path) -> Dict[str, Path]:
    """What ESPnet's tts2 trainer (``espnet2.bin.tts2_train``, FastSpeech2 over discrete targets)
    reads besides ``text`` and ``speech``, made from :func:`write_units`'s ``q1`` output:

    - ``discrete_speech`` (``text_int``): the units as ids of ``token_list`` (unit ``u`` -> ``u + 2``,
      after ``<blank>`` and ``<unk>``; the decoder takes ``id - 2`` back);
    - ``durations`` (``text_int``): units per character (plus one for the end), spread evenly over
      the characters: a stand-in where a real recipe uses an aligner's durations;
    - ``pitch.scp`` / ``energy.scp`` (``npy``): ESPnet's Dio F0 and energy at the unit rate,
      averaged per character by those durations (FastSpeech2's token-averaged targets);
    - ``char_list`` (the text's characters, ESPnet's form) and ``text_shape`` for the sampler.
    """
    import soundfile
    from espnet2.tts.feats_extract.dio import Dio
    from espnet2.tts.feats_extract.energy import Energy

    from espnet2_almtok.recipe.kaldi_dir import read_table

    info = yaml.safe_load((units_dir / "units.yaml").read_text())
    if info["stream"] != "q1":
        raise ValueError(f"{units_dir}: tts2 inputs are made from q1 units (one unit per token), not {info['stream']!r}")
    units = {k: [int(u) for u in v.split()] for k, v in read_table(units_dir / "units").items()}
    texts, wavs = read_table(text), read_table(wav_scp)
    missing = sorted(u for u in units if u not in texts or u not in wavs)[:5]
    if missing:
        raise ValueError(f"utterances without text ({text}) or audio ({wav_scp}): {missing}")
    fs = int(info["codec"]["sample_rate"])
    hop = int(round(fs / float(info["unit_rate"])))
    dio = Dio(fs=fs, n_fft=1024, hop_length=hop, f0max=400, f0min=80, use_token_averaged_f0=True, reduction_factor=1)
    energy = Energy(fs=fs, n_fft=2048, hop_length=hop, win_length=2048, use_token_averaged_energy=True,
                    reduction_factor=1)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "feats").mkdir(exist_ok=True)
    rows = {name: [] for name in ("discrete_speech", "durations", "pitch.scp", "energy.scp", "text_shape")}
    for utt in sorted(units):
        n, chars = len(units[utt]), len(texts[utt]) + 1
        dur = [n // chars + (i < n % chars) for i in range(chars)]
        wav, rate = soundfile.read(wavs[utt], dtype="float32", always_2d=True)
        if rate != fs:
            raise ValueError(f"{wavs[utt]} ({utt}) is {rate} Hz, the units' codec {fs} Hz: give the formatted audio")
        x = torch.from_numpy(wav.mean(1)).view(1, -1)
        d = torch.tensor([dur])
        args = dict(feats_lengths=torch.tensor([n]), durations=d, durations_lengths=torch.tensor([chars]))
        for name, extract in (("pitch", dio), ("energy", energy)):
            value = extract(x, torch.tensor([x.shape[1]]), **args)[0][0].numpy()
            np.save(out_dir / "feats" / f"{utt}.{name}.npy", value)
            rows[f"{name}.scp"].append(f"{utt} {(out_dir / 'feats' / f'{utt}.{name}.npy').resolve()}")
        rows["discrete_speech"].append(f"{utt} {' '.join(str(u + len(SPECIAL)) for u in units[utt])}")
        rows["durations"].append(f"{utt} {' '.join(map(str, dur))}")
        rows["text_shape"].append(f"{utt} {len(texts[utt])}")
    chars = sorted({c.replace(" ", "<space>") for t in texts.values() for c in t})
    rows["char_list"] = [*SPECIAL, *chars, EOS]
    out = {}
    for name, lines in rows.items():
        atomic_write_text(out_dir / name, "\n".join(lines) + "\n")
        out[name] = out_dir / name
    return out


def main(argv: Sequence[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codes_dir", type=Path, required=True, help="a decode dir's codes/ (codes.scp, meta.yaml)")
    p.add_argument("--stream", choices=STREAMS, default="q1")
    p.add_argument("--out_dir", type=Path, required=True)
    p.add_argument("--warn_share", type=float, default=0.5,
                   help="warn when more than this share of utterances repeat another's first-codebook sequence")
    p.add_argument("--tts2_text", type=Path, default=None,
                   help="with --tts2_wav_scp (q1 only): also write tts2_train's inputs (tts2_inputs) to <out_dir>/tts2")
    p.add_argument("--tts2_wav_scp", type=Path, default=None, help="the set's formatted audio (dump/raw/<set>/wav.scp)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s units: %(message)s")
    if (args.tts2_text is None) != (args.tts2_wav_scp is None):
        p.error("--tts2_text and --tts2_wav_scp go together")
    info = write_units(args.codes_dir, args.stream, args.out_dir, args.warn_share)
    if args.tts2_text is not None:
        tts2_inputs(args.out_dir, args.tts2_text, args.tts2_wav_scp, args.out_dir / "tts2")
    print(f"{args.out_dir}/units: {info['units']} units ({args.stream}) at {info['unit_rate']:g} per second")


if __name__ == "__main__":
    main()
