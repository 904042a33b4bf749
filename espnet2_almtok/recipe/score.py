"""Recipe stage 8: score resynthesised audio against the reference.

    python -m espnet2_almtok.recipe.score --ref_scp dump/raw/test/wav.scp \\
        --hyp_scp exp/codec/decode_w4/test/wav/wav.scp --codes_dir exp/codec/decode_w4/test/codes \\
        --out_dir exp/codec/decode_w4/test/scores

Per utterance: ``mel_distance`` (L1 of log-mel, 80 bands), ``stft_distance`` (multi-resolution
STFT: spectral convergence + log-magnitude L1), ``pesq_wb`` (16 kHz wide-band; NaN where PESQ
finds no speech, e.g. tones), ``stoi``, ``si_snr`` (dB). Writes ``utt_result.txt`` (TSV),
``avg_result.txt`` (means over finite values, with counts) and ``result.md`` (one table with
token rate and bitrate from the codes' ``meta.yaml``).
"""

import argparse
import logging
import math
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch
import torchaudio
from tqdm import tqdm

from espnet2_almtok.audio import read_audio, resample, to_mono_tensor
from espnet2_almtok.codec.stft_loss import MultiResolutionSTFTLoss
from espnet2_almtok.fileio import atomic_write_text
from espnet2_almtok.recipe.kaldi_dir import read_table

METRICS = ("mel_distance", "stft_distance", "pesq_wb", "stoi", "si_snr")


class LogMel:
    """Log-mel spectrogram ``(80, frames)`` (n_fft 1024, hop 256) of a waveform ``(T,)``. A clip
    shorter than one FFT window (e.g. a one-frame synthesis) is zero-padded to one window."""

    n_fft = 1024

    def __init__(self, fs: int = 16000):
        self.mel = torchaudio.transforms.MelSpectrogram(fs, n_fft=self.n_fft, hop_length=256, n_mels=80)

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.numel() < self.n_fft:
            wav = torch.nn.functional.pad(wav, (0, self.n_fft - wav.numel()))
        return self.mel(wav).clamp(min=1e-5).log()


class Scorer:
    def __init__(self, fs: int = 16000):
        self.fs = fs
        self.log_mel = LogMel(fs)
        self.stft = MultiResolutionSTFTLoss()

    def mel_distance(self, ref: torch.Tensor, hyp: torch.Tensor) -> float:
        return float((self.log_mel(ref) - self.log_mel(hyp)).abs().mean())

    @staticmethod
    def si_snr(ref: torch.Tensor, hyp: torch.Tensor) -> float:
        ref, hyp = ref - ref.mean(), hyp - hyp.mean()
        target = (hyp @ ref) / (ref @ ref + 1e-8) * ref
        noise = hyp - target
        return float(10 * torch.log10((target @ target + 1e-8) / (noise @ noise + 1e-8)))

    def pesq_wb(self, ref: np.ndarray, hyp: np.ndarray) -> float:
        from pesq import pesq

        try:
            return float(pesq(16000, ref, hyp, "wb"))
        except Exception:  # pesq raises on no detected speech / too short
            return math.nan

    def stoi(self, ref: np.ndarray, hyp: np.ndarray) -> float:
        from pystoi import stoi

        return float(stoi(ref, hyp, self.fs, extended=False))

    def __call__(self, ref: torch.Tensor, hyp: torch.Tensor) -> Dict[str, float]:
        n = min(ref.numel(), hyp.numel())
        ref, hyp = ref[:n], hyp[:n]
        r16 = resample(ref, self.fs, 16000).numpy() if self.fs != 16000 else ref.numpy()
        h16 = resample(hyp, self.fs, 16000).numpy() if self.fs != 16000 else hyp.numpy()
        return dict(
            mel_distance=self.mel_distance(ref, hyp),
            stft_distance=float(self.stft(hyp.view(1, -1), ref.view(1, -1))),
            pesq_wb=self.pesq_wb(r16, h16),
            stoi=self.stoi(ref.numpy(), hyp.numpy()),
            si_snr=self.si_snr(ref, hyp),
        )


def load(spec: str, utt: str, fs: int) -> torch.Tensor:
    wav, sr = read_audio(spec, utt)
    return resample(to_mono_tensor(wav, utt), sr, fs, utt)


def average(rows: List[Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    out = {}
    for m in METRICS:
        vals = [r[m] for r in rows if math.isfinite(r[m])]
        out[m] = {"mean": float(np.mean(vals)) if vals else math.nan, "n": len(vals)}
    return out


def main(argv: Sequence[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref_scp", type=Path, required=True)
    p.add_argument("--hyp_scp", type=Path, required=True)
    p.add_argument("--codes_dir", type=Path, default=None, help="dir with meta.yaml (token/bit rates)")
    p.add_argument("--fs", type=int, default=16000)
    p.add_argument("--out_dir", type=Path, required=True)
    p.add_argument("--title", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    ref, hyp = read_table(args.ref_scp), read_table(args.hyp_scp)
    missing = sorted(set(ref) - set(hyp))
    if missing:
        raise KeyError(f"{len(missing)} reference utterance(s) have no resynthesis in {args.hyp_scp}, "
                       f"e.g. {missing[:3]}; rerun decoding (stage 7)")
    scorer = Scorer(args.fs)
    rows = []
    for utt in tqdm(sorted(ref), desc="score", unit="utt"):
        row = scorer(load(ref[utt], utt, args.fs), load(hyp[utt], utt, args.fs))
        row["utt"] = utt
        rows.append(row)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["utt\t" + "\t".join(METRICS)]
    lines += [r["utt"] + "\t" + "\t".join(f"{r[m]:.4f}" for m in METRICS) for r in rows]
    atomic_write_text(args.out_dir / "utt_result.txt", "\n".join(lines) + "\n")
    avg = average(rows)
    meta = {}
    if args.codes_dir is not None:
        from espnet2_almtok.fileio import read_meta

        meta = read_meta(args.codes_dir)
    avg_lines = [f"{m}\t{v['mean']:.4f}\t(n={v['n']})" for m, v in avg.items()]
    if meta:
        avg_lines += [f"token_rate\t{meta['token_rate']:.4f}", f"bitrate\t{meta['bitrate']:.1f}",
                      f"window\t{meta['window']}", f"n_q\t{meta['n_q']}"]
    atomic_write_text(args.out_dir / "avg_result.txt", "\n".join(avg_lines) + "\n")
    header = ["set", "#utt"] + (["w", "tokens/s", "bps"] if meta else []) + list(METRICS)
    cells = [args.title or str(args.out_dir.parent), str(len(rows))]
    if meta:
        cells += [str(meta["window"]), f"{meta['token_rate']:.2f}", f"{meta['bitrate']:.1f}"]
    cells += [f"{avg[m]['mean']:.3f}" for m in METRICS]
    md = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n| " + " | ".join(cells) + " |\n"
    atomic_write_text(args.out_dir / "result.md", md)
    print(md)


if __name__ == "__main__":
    main()
