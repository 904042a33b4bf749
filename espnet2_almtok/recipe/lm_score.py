"""LM recipe scoring: ASR (WER/CER), captioning (BLEU/CIDEr), TTS (mel distance, round-trip WER,
independent judges).

    python -m espnet2_almtok.recipe.lm_score asr --ref ref --hyp text --out_dir scores
    python -m espnet2_almtok.recipe.lm_score caption --ref ref --hyp text --out_dir scores
    python -m espnet2_almtok.recipe.lm_score tts --ref_scp dump/raw/test/wav.scp --hyp_scp wav/wav.scp \\
        --text ref [--asr_ref ref --asr_hyp roundtrip/text] [--judges asr,dnsmos] --out_dir scores

Text is compared after :func:`~espnet2_almtok.lm.metrics.normalize_text` (lower case, no
punctuation). TTS: ``mel_dtw`` is the mean L1 distance of 80-band log-mel frames along the
DTW path between synthesis and reference recording (the lengths differ, so frames are aligned
first), ``dur_ratio`` is synthesis length / reference length; ``--asr_hyp``: WER/CER of an
ASR system on the synthesis (the recipe re-tokenizes it and runs the LM's own ASR task).
Independent judges (``--judges``, default ``asr,dnsmos``; :mod:`espnet2_almtok.recipe.judges`):
``asr``: pocketsphinx on the synthesis -> ``sphinx_wer``/``sphinx_cer`` (%, corpus: total errors /
total words) against ``--text`` (the transcripts the synthesis was asked to say), and on the
reference recordings -> ``sphinx_wer_ref``/``sphinx_cer_ref`` (the ceiling); ``dnsmos``: DNSMOS
``dnsmos_{ovrl,sig,bak,p808}`` of the synthesis (NaN for clips under 0.5 s; means skip NaN).
Writes ``result.md``, ``avg_result.txt`` (ESPnet's ``key: value`` lines) and ``utt_result.txt`` in ``--out_dir``.
"""

import argparse
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from espnet2_almtok.progress import progress

from espnet2_almtok.fileio import atomic_write_text
from espnet2_almtok.lm.metrics import bleu, cider, dtw_distance, error_rates
from espnet2_almtok.recipe.judges import DNSMOS, JudgeUnavailable, asr_error_rates, build_judges, parse_judges
from espnet2_almtok.recipe.kaldi_dir import read_table
from espnet2_almtok.recipe.score import LogMel, load


def write_results(out_dir: Path, title: str, avg: Dict[str, float], rows: List[Dict]) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "avg_result.txt", "".join(f"{k}: {_fmt(v)}\n" for k, v in avg.items()))
    if rows:
        cols = list(dict.fromkeys(c for r in rows for c in r))  # "-" where a judge did not apply
        lines = ["\t".join(cols)] + ["\t".join(_fmt(r[c]) if c in r else "-" for c in cols) for r in rows]
        atomic_write_text(out_dir / "utt_result.txt", "\n".join(lines) + "\n")
    md = f"| {' | '.join(['set'] + list(avg))} |\n|{'---|' * (len(avg) + 1)}\n"
    md += f"| {' | '.join([title] + [_fmt(v) for v in avg.values()])} |\n"
    atomic_write_text(out_dir / "result.md", md)
    return md


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def score_asr(ref: Path, hyp: Path) -> (Dict, List[Dict]):
    refs, hyps = read_table(ref), read_table(hyp)
    missing = sorted(set(refs) - set(hyps))
    if missing:
        raise KeyError(f"{len(missing)} utterance(s) of {ref} have no hypothesis in {hyp}, e.g. {missing[:3]}")
    return error_rates(refs, hyps)


def score_caption(ref: Path, hyp: Path) -> (Dict, List[Dict]):
    refs = {u: [t] for u, t in read_table(ref).items()}
    hyps = read_table(hyp)
    avg = {**bleu(refs, hyps), "cider": cider(refs, hyps), "n": len(refs)}
    rows = [dict(utt=u, ref=refs[u][0], hyp=hyps.get(u, "")) for u in sorted(refs)]
    return avg, rows


def score_tts(ref_scp: Path, hyp_scp: Path, fs: int, asr_ref: Path = None, asr_hyp: Path = None,
              text: Optional[Path] = None, judges: Optional[Dict[str, object]] = None,
              utt2lang: Optional[Path] = None):
    """Synthesis vs reference recordings -> (averages, per-utterance rows). ``judges``:
    ``{"asr": SphinxASR, "dnsmos": DNSMOS}`` (either may be absent); ``asr`` needs ``text`` and
    judges English only: the utterances whose ``utt2lang`` is ``en`` (all without ``utt2lang``)."""
    judges = judges or {}
    langs = read_table(utt2lang) if utt2lang is not None else {}
    english = {u for u in read_table(hyp_scp) if langs.get(u, "en") == "en"}
    refs, hyps = read_table(ref_scp), read_table(hyp_scp)
    missing = sorted(set(hyps) - set(refs))
    if missing:
        raise KeyError(f"{len(missing)} synthesized utterance(s) have no reference in {ref_scp}, e.g. {missing[:3]}")
    transcripts = read_table(text) if text is not None else {}
    if "asr" in judges:
        untranscribed = sorted(english - set(transcripts))
        if untranscribed:
            raise KeyError(f"{len(untranscribed)} synthesized utterance(s) have no transcript in {text}, "
                           f"e.g. {untranscribed[:3]}; give the TTS input text as --text")
    log_mel = LogMel(fs)
    rows, sphinx_hyp, sphinx_ref = [], {}, {}
    for utt in progress(sorted(hyps), desc="tts score", unit="utt"):
        ref, hyp = load(refs[utt], utt, fs), load(hyps[utt], utt, fs)
        frames = [log_mel(w).T.numpy() for w in (hyp, ref)]  # (T, 80) each
        row = dict(utt=utt, mel_dtw=dtw_distance(*frames), dur_ratio=hyp.numel() / ref.numel())
        if "asr" in judges and utt in english:
            sphinx_hyp[utt], sphinx_ref[utt] = judges["asr"](hyp, fs, utt), judges["asr"](ref, fs, utt)
        if "dnsmos" in judges:
            row.update(judges["dnsmos"](hyp, fs, utt))
        rows.append(row)
    avg = {m: float(np.mean([row[m] for row in rows])) for m in ("mel_dtw", "dur_ratio")}
    if asr_hyp is not None:
        rates, asr_rows = score_asr(asr_ref, asr_hyp)
        avg.update(asr_wer=rates["wer"], asr_cer=rates["cer"])
        by_utt = {row["utt"]: row for row in asr_rows}
        for row in rows:
            row.update(asr_wer=by_utt[row["utt"]]["wer"], asr_hyp=by_utt[row["utt"]]["hyp"])
    if "asr" in judges and english:
        refs_text = {u: transcripts[u] for u in sorted(english)}
        (hyp_rates, hyp_rows), (ref_rates, ref_rows) = (asr_error_rates(refs_text, sphinx_hyp),
                                                        asr_error_rates(refs_text, sphinx_ref))
        avg.update(sphinx_wer=hyp_rates["wer"], sphinx_cer=hyp_rates["cer"],
                   sphinx_wer_ref=ref_rates["wer"], sphinx_cer_ref=ref_rates["cer"])
        avg["sphinx_n"] = len(english)
        for row in rows:
            if row["utt"] not in english:
                continue
            h, r = hyp_rows[row["utt"]], ref_rows[row["utt"]]
            row.update(sphinx_wer=h["wer"], sphinx_wer_ref=r["wer"], sphinx_hyp=h["hyp"] or "-")
    if "dnsmos" in judges:
        for k in DNSMOS.keys:
            vals = [row[k] for row in rows if np.isfinite(row[k])]
            avg[k] = float(np.mean(vals)) if vals else float("nan")
    avg["n"] = len(rows)
    return avg, rows


def main(argv: Sequence[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="task", required=True)
    for name in ("asr", "caption"):
        s = sub.add_parser(name)
        s.add_argument("--ref", type=Path, required=True)
        s.add_argument("--hyp", type=Path, required=True)
    s = sub.add_parser("tts")
    s.add_argument("--ref_scp", type=Path, required=True, help="reference recordings")
    s.add_argument("--hyp_scp", type=Path, required=True, help="synthesized audio")
    s.add_argument("--fs", type=int, default=16000)
    s.add_argument("--asr_ref", type=Path, default=None, help="transcripts of the synthesized utterances")
    s.add_argument("--asr_hyp", type=Path, default=None, help="an ASR system's output on the synthesis")
    s.add_argument("--text", type=Path, default=None,
                   help="transcripts the synthesis should say (Kaldi 'utt text'), for the asr judge")
    s.add_argument("--judges", default="asr,dnsmos", help="independent judges: comma list of asr,dnsmos, or none")
    s.add_argument("--utt2lang", type=Path, default=None,
                   help="Kaldi utt2lang: the (English) asr judge scores utterances whose language is en only")
    for s in sub.choices.values():
        s.add_argument("--out_dir", type=Path, required=True)
        s.add_argument("--title", default="")
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    if args.task == "asr":
        avg, rows = score_asr(args.ref, args.hyp)
    elif args.task == "caption":
        avg, rows = score_caption(args.ref, args.hyp)
    else:
        if (args.asr_hyp is None) != (args.asr_ref is None):
            p.error("give both --asr_ref and --asr_hyp, or neither")
        try:
            names = parse_judges(args.judges)
            if "spk" in names:
                raise ValueError("--judges spk: TTS scoring has no speaker judge; use asr,dnsmos")
            if "asr" in names and args.text is None:
                raise ValueError("the asr judge needs --text (the transcripts the synthesis should say); "
                                 "give it, or use --judges dnsmos / --judges none")
            judges = build_judges(names)
        except (ValueError, JudgeUnavailable) as e:
            p.error(str(e))
        avg, rows = score_tts(args.ref_scp, args.hyp_scp, args.fs, args.asr_ref, args.asr_hyp, args.text, judges,
                              args.utt2lang)
    print(write_results(args.out_dir, args.title or args.task, avg, rows))


if __name__ == "__main__":
    main()
