"""A semantic probe on frozen codec tokens: a small CTC character recogniser.

Each utterance's codes ``(n_q, N)`` at ``rate`` token positions per second are embedded (one
table per codebook, summed), repeated to ``upsample_to`` Hz (so CTC has room for ~15
characters/s even at 5-12.5 Hz tokens), then a context network and a linear layer give character
posteriors. The context network is ``"conv"`` (default: residual dilated 1-D convolutions, about
1.3 s of context at 50 Hz; parallel in time, so a CPU trains it in minutes) or ``"gru"`` (a 2-layer
BiGRU: whole-utterance context, but sequential and many times slower on a CPU). Trained with CTC on the train utterances' transcripts, scored by greedy decoding:
character error rate on held-out prompts. The codec stays frozen: the probe measures how much
of the words a few thousand tokens carry, which is what an LM over those tokens can use.
"""

import math
import random
import string
from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch
from torch import nn

from espnet2_almtok.lm.metrics import error_rates

ALPHABET = " '" + string.ascii_lowercase  # index 0 is the CTC blank; characters start at 1


def text_to_ids(text: str) -> List[int]:
    """Lower-cased characters of ``ALPHABET`` -> ids ``1..len(ALPHABET)``; others dropped."""
    return [ALPHABET.index(c) + 1 for c in text.lower() if c in ALPHABET]


def ids_to_text(ids: Sequence[int]) -> str:
    return "".join(ALPHABET[i - 1] for i in ids)


@dataclass
class ProbeExample:
    codes: torch.Tensor  # (n_q, N) LongTensor
    text: str


class ConvContext(nn.Module):
    """``(B, T, dim)`` -> ``(B, T, dim)``: residual blocks of a dilated 1-D convolution (kernel 5),
    GELU and layer norm; dilations 1, 2, 4, 8 see 61 frames (1.2 s at 50 Hz)."""

    def __init__(self, dim: int, dilations: Sequence[int] = (1, 2, 4, 8), kernel: int = 5):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(dim, dim, kernel, dilation=d, padding=d * (kernel // 2))
                                   for d in dilations)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = norm(x + nn.functional.gelu(conv(x.transpose(1, 2)).transpose(1, 2)))
        return x


class GRUContext(nn.Module):
    """``(B, T, dim)`` -> ``(B, T, 2 * dim)``: a 2-layer bidirectional GRU."""

    def __init__(self, dim: int):
        super().__init__()
        self.rnn = nn.GRU(dim, dim, num_layers=2, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


class CTCProbe(nn.Module):
    """codes ``(B, n_q, N)`` -> log-probabilities ``(B, N * repeat, 1 + len(ALPHABET))``."""

    def __init__(self, n_q: int, codebook_size: int, repeat: int, dim: int = 128, arch: str = "conv"):
        super().__init__()
        if arch not in ("conv", "gru"):
            raise ValueError(f"probe arch {arch!r}: conv or gru")
        self.embed = nn.ModuleList(nn.Embedding(codebook_size, dim) for _ in range(n_q))
        self.context = ConvContext(dim) if arch == "conv" else GRUContext(dim)
        self.out = nn.Linear(dim if arch == "conv" else 2 * dim, 1 + len(ALPHABET))
        self.repeat = repeat

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        x = sum(emb(codes[:, q]) for q, emb in enumerate(self.embed))  # (B, N, dim)
        x = x.repeat_interleave(self.repeat, dim=1)
        return self.out(self.context(x)).log_softmax(-1)


def _batch(examples: List[ProbeExample]):
    n_q = examples[0].codes.shape[0]
    n = max(e.codes.shape[1] for e in examples)
    codes = torch.zeros(len(examples), n_q, n, dtype=torch.long)
    for i, e in enumerate(examples):
        codes[i, :, : e.codes.shape[1]] = e.codes
    lengths = torch.tensor([e.codes.shape[1] for e in examples])
    return codes, lengths


def greedy(logp: torch.Tensor, length: int) -> str:
    """CTC greedy decoding of ``logp`` ``(T, C)`` over its first ``length`` frames."""
    best = logp[:length].argmax(-1).tolist()
    out, prev = [], 0
    for t in best:
        if t != prev and t != 0:
            out.append(t)
        prev = t
    return ids_to_text(out)


def train_probe(train: List[ProbeExample], test: List[ProbeExample], rate: float, codebook_size: int,
                upsample_to: float = 50.0, epochs: int = 30, batch_size: int = 16, lr: float = 2e-3,
                seed: int = 0, dim: int = 128, arch: str = "conv") -> Dict:
    """Train a :class:`CTCProbe` on ``train``; return CER/WER (%) on ``test`` (and CER on ``train``)."""
    if not train or not test:
        raise ValueError(f"the probe needs transcribed train and test utterances (got {len(train)} / {len(test)})")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    repeat = max(1, round(upsample_to / rate))
    model = CTCProbe(train[0].codes.shape[0], codebook_size, repeat, dim, arch)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    order = list(range(len(train)))
    losses = []
    for _ in range(epochs):
        rng.shuffle(order)
        model.train()
        for i in range(0, len(order), batch_size):
            chunk = [train[j] for j in order[i: i + batch_size]]
            codes, lengths = _batch(chunk)
            targets = [torch.tensor(text_to_ids(e.text)) for e in chunk]
            logp = model(codes)  # (B, T, C)
            loss = ctc(logp.transpose(0, 1), torch.cat(targets), lengths * repeat,
                       torch.tensor([len(t) for t in targets]))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            losses.append(loss.item())

    def evaluate(examples: List[ProbeExample]) -> Dict:
        model.eval()
        refs, hyps = [], []
        with torch.no_grad():
            for i in range(0, len(examples), batch_size):
                chunk = examples[i: i + batch_size]
                codes, lengths = _batch(chunk)
                logp = model(codes)
                hyps += [greedy(logp[b], int(lengths[b]) * repeat) for b in range(len(chunk))]
                refs += [ids_to_text(text_to_ids(e.text)) for e in chunk]
        rates, _ = error_rates(dict(enumerate(refs)), dict(enumerate(hyps)))  # corpus rates, %
        return {"cer": rates["cer"], "wer": rates["wer"],
                "examples": [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps))[:3]]}

    test_res, train_res = evaluate(test), evaluate(train)
    return {"cer": test_res["cer"], "wer": test_res["wer"], "train_cer": train_res["cer"],
            "examples": test_res["examples"], "n_train": len(train), "n_test": len(test),
            "token_rate": rate, "repeat": repeat, "epochs": epochs, "arch": arch, "dim": dim, "lr": lr,
            "final_loss": sum(losses[-10:]) / max(1, len(losses[-10:])) if losses else math.nan}
