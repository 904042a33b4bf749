"""Scores for the LM tasks: WER/CER (ASR, TTS intelligibility), BLEU/CIDEr (captioning),
DTW-aligned log-mel distance (TTS against the reference recording)."""

import math
import re
from collections import Counter
from typing import Dict, List, Sequence, Tuple

import numpy as np


def normalize_text(text: str) -> str:
    """Lower case, punctuation removed (apostrophes kept), whitespace collapsed."""
    text = re.sub(r"[^\w\s']", " ", text.lower())
    return " ".join(text.split())


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def error_rates(refs: Dict[str, str], hyps: Dict[str, str]) -> Tuple[Dict[str, float], List[Dict]]:
    """Corpus WER/CER (%) over ``refs`` (a missing hypothesis counts as empty) and per-utt rows."""
    rows, tot = [], Counter()
    for utt in sorted(refs):
        r, h = normalize_text(refs[utt]), normalize_text(hyps.get(utt, ""))
        we, ce = edit_distance(r.split(), h.split()), edit_distance(r.replace(" ", ""), h.replace(" ", ""))
        rw, rc = len(r.split()), len(r.replace(" ", ""))
        tot.update(word_err=we, words=rw, char_err=ce, chars=rc)
        rows.append(dict(utt=utt, wer=100.0 * we / max(rw, 1), cer=100.0 * ce / max(rc, 1), ref=r, hyp=h))
    return dict(wer=100.0 * tot["word_err"] / max(tot["words"], 1),
                cer=100.0 * tot["char_err"] / max(tot["chars"], 1), n=len(rows)), rows


def _ngrams(words: List[str], n: int) -> Counter:
    return Counter(tuple(words[i: i + n]) for i in range(len(words) - n + 1))


def bleu(refs: Dict[str, List[str]], hyps: Dict[str, str], max_n: int = 4) -> Dict[str, float]:
    """Corpus BLEU-1..max_n (Papineni et al.; clipped counts over all references, brevity
    penalty against the closest reference length). ``refs``: utt -> list of references."""
    match, total = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for utt, rs in refs.items():
        h = normalize_text(hyps.get(utt, "")).split()
        rs = [normalize_text(r).split() for r in rs]
        hyp_len += len(h)
        ref_len += min((len(r) for r in rs), key=lambda n: (abs(n - len(h)), n))
        for n in range(1, max_n + 1):
            hc = _ngrams(h, n)
            best = Counter()
            for r in rs:
                best |= _ngrams(r, n)
            match[n - 1] += sum(min(c, best[g]) for g, c in hc.items())
            total[n - 1] += max(len(h) - n + 1, 0)
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / max(hyp_len, 1))
    out = {}
    for n in range(1, max_n + 1):
        if min(match[:n]) == 0:
            out[f"bleu{n}"] = 0.0
            continue
        log_p = sum(math.log(match[k] / total[k]) for k in range(n)) / n
        out[f"bleu{n}"] = 100.0 * bp * math.exp(log_p)
    return out


def cider(refs: Dict[str, List[str]], hyps: Dict[str, str], max_n: int = 4) -> float:
    """CIDEr (Vedantam et al. 2015): mean over n=1..4 of the TF-IDF cosine between hypothesis
    and references, IDF from the references of this set, x10. (No CIDEr-D length penalty.)"""
    utts = sorted(refs)
    ref_ng = {u: [[_ngrams(normalize_text(r).split(), n) for r in refs[u]] for n in range(1, max_n + 1)] for u in utts}
    df = [Counter() for _ in range(max_n)]
    for u in utts:
        for n in range(max_n):
            seen = set()
            for c in ref_ng[u][n]:
                seen |= set(c)
            df[n].update(seen)
    log_docs = math.log(max(len(utts), 1))

    def vec(c: Counter, n: int) -> Dict:
        return {g: tf * (log_docs - math.log(max(df[n][g], 1.0))) for g, tf in c.items()}

    def cos(a: Dict, b: Dict) -> float:
        num = sum(v * b.get(g, 0.0) for g, v in a.items())
        den = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
        return num / den if den > 0 else 0.0

    scores = []
    for u in utts:
        h = normalize_text(hyps.get(u, "")).split()
        per_n = []
        for n in range(max_n):
            hv = vec(_ngrams(h, n + 1), n)
            per_n.append(np.mean([cos(hv, vec(r, n)) for r in ref_ng[u][n]]))
        scores.append(np.mean(per_n))
    return 10.0 * float(np.mean(scores)) if scores else math.nan


def dtw_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean L1 frame distance along the DTW path between feature sequences ``(T_a, D)``, ``(T_b, D)``."""
    cost = np.abs(a[:, None, :] - b[None, :, :]).mean(-1)
    ta, tb = cost.shape
    acc = np.full((ta + 1, tb + 1), np.inf)
    steps = np.zeros((ta + 1, tb + 1))
    acc[0, 0] = 0.0
    for i in range(1, ta + 1):
        for j in range(1, tb + 1):
            choices = (acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
            k = int(np.argmin(choices))
            prev = [(i - 1, j - 1), (i - 1, j), (i, j - 1)][k]
            acc[i, j] = choices[k] + cost[i - 1, j - 1]
            steps[i, j] = steps[prev] + 1
    return float(acc[ta, tb] / steps[ta, tb])
