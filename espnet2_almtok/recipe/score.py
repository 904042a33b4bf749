"""Recipe stage 8: score resynthesised audio against the reference.

    python -m espnet2_almtok.recipe.score --ref_scp dump/raw/test/wav.scp \\
        --hyp_scp exp/codec/decode_w4/test/wav/wav.scp --codes_dir exp/codec/decode_w4/test/codes \\
        --text dump/raw/test/text [--utt2category dump/raw/test/utt2category] [--utt2lang ...] \\
        [--judges asr,dnsmos,spk --spk_model DIR] --out_dir exp/codec/decode_w4/test/scores

Per utterance: ``mel_distance`` (L1 of log-mel, 80 bands), ``stft_distance`` (multi-resolution
STFT: spectral convergence + log-magnitude L1), ``pesq_wb`` (16 kHz wide-band; NaN where PESQ
finds no speech, e.g. tones), ``stoi``, ``si_snr`` (dB).

Independent judges (``--judges``, default ``asr,dnsmos``; ``none`` turns them off; see
:mod:`espnet2_almtok.recipe.judges`):

- ``asr``: pocketsphinx (English) on the resynthesis -> ``asr_wer``/``asr_cer`` (%) against
  ``--text``, and on the original audio -> ``asr_wer_ref``/``asr_cer_ref`` (the ceiling). Only
  English speech with a transcript: utt2lang ``en`` (when ``--utt2lang`` is given), utt2category
  ``speech`` (when ``--utt2category`` is given); other utterances have no ASR entry ("-").
  The averages hold corpus figures: total errors / total reference words (characters).
- ``dnsmos``: DNSMOS ``dnsmos_{ovrl,sig,bak,p808}`` of the resynthesis and ``dnsmos_*_ref`` of the
  original, for speech utterances (all utterances without ``--utt2category``).
- ``spk``: ``spk_sim``, cosine similarity of x-vectors of resynthesis and original (speech
  utterances) from a local HuggingFace ``*ForXVector`` model, ``--spk_model DIR``.

In parallel (recipe stage 8, ``JOB=1:N`` through ``cmd.sh``): each job scores its share
(``--key_file``) into its own ``--out_dir``; then ``--merge_dirs DIR...`` (no judge is loaded)
joins the jobs' per-utterance rows and transcripts and writes the outputs below for the whole
set, the same as one job over all utterances would (corpus WER from all transcripts at once).

Writes ``utt_result.txt`` (TSV; "-" where a judge does not apply; ``utt_result.json``: the same
rows at full precision), ``avg_result.txt`` (ESPnet
style ``key: value`` lines: means over finite values with their counts ``<key>_n``, corpus WER/CER,
token rate and bitrate from the codes' ``meta.yaml``; with ``--codes_dir`` also the codes in use per
codebook and the clip pairs coded alike, :mod:`espnet2_almtok.code_usage`), ``result.md`` (one table
and that token line), and with
``asr`` the transcripts ``asr_text`` (resynthesis) and ``asr_text_ref`` (original) as Kaldi tables.
"""

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torchaudio
from espnet2_almtok.progress import progress

from espnet2_almtok.audio import read_audio, resample, to_mono_tensor
from espnet2_almtok.code_usage import code_usage
from espnet2_almtok.code_usage import describe as describe_usage
from espnet2_almtok.codec.stft_loss import MultiResolutionSTFTLoss
from espnet2_almtok.fileio import atomic_write_text
from espnet2_almtok.lm.metrics import normalize_text
from espnet2_almtok.recipe.judges import (DNSMOS, JudgeUnavailable, asr_error_rates, build_judges, is_english,
                                          parse_judges)
from espnet2_almtok.recipe.kaldi_dir import read_table, write_table

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


def average(rows: List[Dict[str, float]], columns: Sequence[str] = METRICS) -> Dict[str, Dict[str, float]]:
    """Mean and count of the finite values of each column (rows without the column are skipped)."""
    out = {}
    for m in columns:
        vals = [r[m] for r in rows if m in r and math.isfinite(r[m])]
        out[m] = {"mean": float(np.mean(vals)) if vals else math.nan, "n": len(vals)}
    return out


def judge_columns(names: Sequence[str]) -> List[str]:
    """Per-utterance columns the judges ``names`` add, in a fixed order."""
    cols = {"asr": ["asr_wer", "asr_cer", "asr_wer_ref", "asr_cer_ref"],
            "dnsmos": list(DNSMOS.keys) + [k + "_ref" for k in DNSMOS.keys], "spk": ["spk_sim"]}
    return [c for n in ("asr", "dnsmos", "spk") if n in names for c in cols[n]]


def read_optional_table(path: Optional[Path], flag: str) -> Dict[str, str]:
    """A Kaldi table given by ``flag``; ``{}`` when the flag was not given."""
    if path is None:
        return {}
    if not Path(path).is_file():
        raise FileNotFoundError(f"{flag} {path} does not exist; give an existing Kaldi table or leave {flag} out")
    return read_table(path)


class Selection:
    """Which utterances the judges score: DNSMOS / speaker similarity take speech (every
    utterance when there is no utt2category), ASR English speech with a non-empty transcript
    (every utterance counts as English when there is no utt2lang)."""

    def __init__(self, text: Dict[str, str], utt2lang: Dict[str, str], utt2category: Dict[str, str]):
        self.text, self.utt2lang, self.utt2category = text, utt2lang, utt2category

    def is_speech(self, utt: str) -> bool:
        return not self.utt2category or self.utt2category.get(utt, "").strip().lower() == "speech"

    def is_english(self, utt: str) -> bool:
        return not self.utt2lang or is_english(self.utt2lang.get(utt))

    def asr_refs(self, utts: Sequence[str]) -> Dict[str, str]:
        """``{utt: transcript}`` of the utterances the ASR judge scores."""
        return {u: self.text[u] for u in utts
                if self.is_speech(u) and self.is_english(u) and normalize_text(self.text.get(u, ""))}


class JudgePanel:
    """Runs the loaded judges on one utterance (reference and resynthesis, ``(T,)`` at ``fs``)
    and, after the last one, turns the collected transcripts into WER/CER columns."""

    def __init__(self, judges: Dict[str, object], selection: Selection, asr_refs: Dict[str, str], fs: int):
        self.judges, self.selection, self.asr_refs, self.fs = judges, selection, asr_refs, fs
        self.asr_hyp: Dict[str, str] = {}
        self.asr_hyp_ref: Dict[str, str] = {}
        self.corpus: Dict[str, float] = dict(asr_wer=math.nan, asr_cer=math.nan, asr_wer_ref=math.nan,
                                             asr_cer_ref=math.nan, asr_n=0, asr_words=0)

    def __call__(self, utt: str, ref: torch.Tensor, hyp: torch.Tensor) -> Dict[str, float]:
        row = {}
        if "asr" in self.judges and utt in self.asr_refs:
            self.asr_hyp[utt] = self.judges["asr"](hyp, self.fs, utt)
            self.asr_hyp_ref[utt] = self.judges["asr"](ref, self.fs, utt)
        if self.selection.is_speech(utt):
            if "dnsmos" in self.judges:
                row.update(self.judges["dnsmos"](hyp, self.fs, utt))
                row.update({k + "_ref": v for k, v in self.judges["dnsmos"](ref, self.fs, utt).items()})
            if "spk" in self.judges:
                row["spk_sim"] = self.judges["spk"](ref, hyp, self.fs, utt)
        return row

    def finish(self, rows: List[Dict]) -> None:
        """Add ``asr_{wer,cer}[_ref]`` (%) to the rows and put the corpus figures in ``self.corpus``."""
        if "asr" not in self.judges or not self.asr_refs:
            return
        hyp_corpus, hyp_rows = asr_error_rates(self.asr_refs, self.asr_hyp)
        ref_corpus, ref_rows = asr_error_rates(self.asr_refs, self.asr_hyp_ref)
        for row in rows:
            if row["utt"] in hyp_rows:
                h, r = hyp_rows[row["utt"]], ref_rows[row["utt"]]
                row.update(asr_wer=h["wer"], asr_cer=h["cer"], asr_wer_ref=r["wer"], asr_cer_ref=r["cer"])
        self.corpus = dict(asr_wer=hyp_corpus["wer"], asr_cer=hyp_corpus["cer"], asr_wer_ref=ref_corpus["wer"],
                           asr_cer_ref=ref_corpus["cer"], asr_n=hyp_corpus["n"],
                           asr_words=sum(len(normalize_text(t).split()) for t in self.asr_refs.values()))


def _cell(row: Dict, col: str) -> str:
    return f"{row[col]:.4f}" if col in row else "-"


def write_outputs(args, rows: List[Dict], columns: List[str], panel: JudgePanel) -> str:
    """``utt_result.txt``, ``avg_result.txt`` (``key: value``), ``result.md`` (+ ASR transcripts);
    returns the markdown table."""
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    lines = ["utt\t" + "\t".join(columns)] + [r["utt"] + "\t" + "\t".join(_cell(r, c) for c in columns) for r in rows]
    atomic_write_text(out / "utt_result.txt", "\n".join(lines) + "\n")
    # full precision, for --merge_dirs (a merged set averages the values a single job would)
    atomic_write_text(out / "utt_result.json", json.dumps({"columns": list(columns), "rows": rows}))
    if panel.asr_hyp:
        write_table(out / "asr_text", panel.asr_hyp)
        write_table(out / "asr_text_ref", panel.asr_hyp_ref)
    corpus_keys = [c for c in columns if c.startswith("asr_")]
    avg = average(rows, [c for c in columns if c not in corpus_keys])
    meta, usage = {}, None
    if args.codes_dir is not None:
        from espnet2_almtok.fileio import read_meta

        meta = read_meta(args.codes_dir)
        usage = set_code_usage(args.codes_dir, [r["utt"] for r in rows], meta)
    avg_lines = [f"n_utt: {len(rows)}"]
    for m, v in avg.items():
        avg_lines += [f"{m}: {v['mean']:.4f}", f"{m}_n: {v['n']}"]
    if corpus_keys:  # corpus WER/CER: total errors / total reference words (characters)
        c = panel.corpus
        avg_lines += [f"{k}: {c[k]:.2f}" for k in corpus_keys]
        avg_lines += [f"asr_n: {c['asr_n']}", f"asr_words: {c['asr_words']}"]
    if meta:
        avg_lines += [f"token_rate: {meta['token_rate']:.4f}", f"bitrate: {meta['bitrate']:.1f}",
                      f"window: {meta['window']}", f"n_q: {meta['n_q']}"]
    if usage is not None:
        avg_lines += [f"codes_in_use_q{q + 1}: {layer['distinct']}" for q, layer in enumerate(usage["layers"])]
        avg_lines += [f"same_first_pairs: {usage['same_first_pairs']}", f"clip_pairs: {usage['clip_pairs']}"]
    atomic_write_text(out / "avg_result.txt", "\n".join(avg_lines) + "\n")

    shown = list(METRICS) + [c for c in ("asr_wer", "asr_wer_ref", "dnsmos_ovrl", "dnsmos_ovrl_ref", "spk_sim")
                             if c in columns]
    header = ["set", "#utt"] + (["w", "tokens/s", "bps"] if meta else []) + shown
    cells = [args.title or str(out.parent), str(len(rows))]
    if meta:
        cells += [str(meta["window"]), f"{meta['token_rate']:.2f}", f"{meta['bitrate']:.1f}"]
    cells += [f"{panel.corpus[m]:.2f}" if m in corpus_keys else f"{avg[m]['mean']:.3f}" for m in shown]
    md = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n| " + " | ".join(cells) + " |\n"
    if usage is not None:
        md += f"\nTokens: {describe_usage(usage)}.\n"
    atomic_write_text(out / "result.md", md)
    return md


def set_code_usage(codes_dir: Path, utts: Sequence[str], meta: Dict) -> Dict:
    """:func:`~espnet2_almtok.code_usage.code_usage` of the scored utterances' codes in
    ``codes_dir/codes.scp``; an utterance without codes there is an error naming it."""
    from espnet2_almtok.fileio import read_codes_scp

    wanted = set(utts)
    codes = {utt: c for utt, c in read_codes_scp(Path(codes_dir) / "codes.scp", meta["n_q"]) if utt in wanted}
    missing = sorted(wanted - set(codes))
    if missing:
        raise KeyError(f"{len(missing)} scored utterance(s) have no codes in {codes_dir}/codes.scp, e.g. "
                       f"{missing[:3]}; rerun decoding (stage 7)")
    return code_usage([codes[u] for u in sorted(codes)], int(meta["codebook_size"]))


def read_job_outputs(dirs: Sequence[Path]):
    """The per-utterance rows ``[{col: value, "utt": utt}]``, the columns and the ASR transcripts
    (resynthesis, original) that the scoring jobs wrote into ``dirs``; an utterance scored by two
    jobs, or a job without its ``utt_result.json``, is an error naming the job."""
    rows, columns, asr_hyp, asr_hyp_ref = [], None, {}, {}
    seen: Dict[str, Path] = {}
    for d in dirs:
        path = Path(d) / "utt_result.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the scoring job writing {d} did not finish; see its log")
        saved = json.loads(path.read_text())
        if columns is None:
            columns = saved["columns"]
        elif saved["columns"] != columns:
            raise ValueError(f"{path} has columns {saved['columns']}, another job {columns}: jobs ran with other --judges")
        for row in saved["rows"]:
            if row["utt"] in seen:
                raise ValueError(f"utterance {row['utt']} is scored by two jobs ({seen[row['utt']]} and {d}): "
                                 "overlapping --key_file")
            seen[row["utt"]] = Path(d)
            rows.append(row)
        for name, table in (("asr_text", asr_hyp), ("asr_text_ref", asr_hyp_ref)):
            if (Path(d) / name).is_file():
                table.update(read_table(Path(d) / name))
    return sorted(rows, key=lambda r: r["utt"]), columns or list(METRICS), asr_hyp, asr_hyp_ref


def merge(args, utts: List[str], selection: "Selection") -> str:
    """``--merge_dirs``: the whole set's outputs in ``--out_dir`` from the jobs' outputs."""
    rows, columns, asr_hyp, asr_hyp_ref = read_job_outputs(args.merge_dirs)
    scored = {r["utt"] for r in rows}
    missing, extra = sorted(set(utts) - scored), sorted(scored - set(utts))
    if missing or extra:
        raise ValueError(f"the scoring jobs in {[str(d) for d in args.merge_dirs]} cover {len(scored)} utterances, "
                         f"{args.ref_scp} lists {len(utts)}: missing {missing[:3]}, not in the set {extra[:3]}; "
                         "rerun stage 8")
    names = [n for n, col in (("asr", "asr_wer"), ("dnsmos", "dnsmos_ovrl"), ("spk", "spk_sim")) if col in columns]
    panel = JudgePanel({n: None for n in names}, selection, selection.asr_refs(utts), args.fs)
    panel.asr_hyp, panel.asr_hyp_ref = asr_hyp, asr_hyp_ref
    panel.finish(rows)
    return write_outputs(args, rows, columns, panel)


def read_keys(path: Path) -> List[str]:
    """The utterance ids of a key file (first field per line, as ESPnet's ``--key_file``)."""
    return [line.split()[0] for line in Path(path).read_text().splitlines() if line.strip()]


def main(argv: Sequence[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref_scp", type=Path, required=True)
    p.add_argument("--hyp_scp", type=Path, required=True)
    p.add_argument("--codes_dir", type=Path, default=None,
                   help="codec_inference's codes dir (meta.yaml, codes.scp): token/bit rates and code usage")
    p.add_argument("--fs", type=int, default=16000)
    p.add_argument("--out_dir", type=Path, required=True)
    p.add_argument("--title", default=None)
    p.add_argument("--text", type=Path, default=None, help="reference transcripts (Kaldi 'utt text') for the asr judge")
    p.add_argument("--utt2lang", type=Path, default=None, help="Kaldi 'utt lang'; ASR only where lang is en")
    p.add_argument("--utt2category", type=Path, default=None,
                   help="Kaldi 'utt category'; the judges score only 'speech' utterances")
    p.add_argument("--judges", default="asr,dnsmos", help="comma list of asr,dnsmos,spk, or none")
    p.add_argument("--spk_model", type=Path, default=None, help="local HuggingFace *ForXVector dir (spk judge)")
    p.add_argument("--key_file", type=Path, default=None,
                   help="score only these utterances (one job's share; first field per line)")
    p.add_argument("--merge_dirs", type=Path, nargs="+", default=None,
                   help="instead of scoring: join these jobs' --out_dir outputs into --out_dir for the whole set")
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    ref, hyp = read_table(args.ref_scp), read_table(args.hyp_scp)
    selection = Selection(read_optional_table(args.text, "--text"), read_optional_table(args.utt2lang, "--utt2lang"),
                          read_optional_table(args.utt2category, "--utt2category"))
    if args.merge_dirs:
        print(merge(args, sorted(ref), selection))
        return
    if args.key_file is not None:
        keys = read_keys(args.key_file)
        unknown = sorted(set(keys) - set(ref))
        if unknown:
            raise KeyError(f"{args.key_file} names {len(unknown)} utterance(s) not in {args.ref_scp}, e.g. {unknown[:3]}")
        ref = {k: ref[k] for k in keys}
    missing = sorted(set(ref) - set(hyp))
    if missing:
        raise KeyError(f"{len(missing)} reference utterance(s) have no resynthesis in {args.hyp_scp}, "
                       f"e.g. {missing[:3]}; rerun decoding (stage 7)")
    try:
        names = parse_judges(args.judges)
        judges = build_judges(names, args.spk_model)
    except (ValueError, JudgeUnavailable) as e:
        p.error(str(e))
    utts = sorted(ref)
    asr_refs = selection.asr_refs(utts)
    if "asr" in judges:
        if args.text is None:
            logging.warning("asr judge: no --text (reference transcripts), so no WER; "
                            "give --text or drop asr from --judges")
        logging.info(f"asr judge: {len(asr_refs)} of {len(utts)} utterances (English speech with a transcript)")
    panel = JudgePanel(judges, selection, asr_refs, args.fs)
    scorer = Scorer(args.fs)
    rows = []
    for utt in progress(utts, desc="score", unit="utt"):
        r, h = load(ref[utt], utt, args.fs), load(hyp[utt], utt, args.fs)
        row = scorer(r, h)
        row.update(panel(utt, r, h))
        row["utt"] = utt
        rows.append(row)
    panel.finish(rows)
    md = write_outputs(args, rows, list(METRICS) + judge_columns(names), panel)
    print(md)


if __name__ == "__main__":
    main()
