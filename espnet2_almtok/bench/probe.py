"""A semantic probe on frozen codec tokens: a small CTC character recogniser.

Each utterance's codes ``(n_q, N)`` at ``rate`` token positions per second are embedded (one
table per codebook, summed), repeated to ``upsample_to`` Hz (so CTC has room for ~15
characters/s even at 5-12.5 Hz tokens), then a 2-layer BiGRU and a linear layer give character
posteriors. Trained with CTC on the train utterances' transcripts, scored by greedy decoding:
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


class CTCProbe(nn.Module):
    """codes ``(B, n_q, N)`` -> log-probabilities ``(B, N * repeat, 1 + len(ALPHABET))``."""

    def __init__(self, n_q: int, codebook_size: int, repeat: int, dim: int = 128):
        super().__init__()
        self.embed = nn.ModuleList(nn.Embedding(codebook_size, dim) for _ in range(n_q))
        self.rnn = nn.GRU(dim, dim, num_layers=2, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * dim, 1 + len(ALPHABET))
        self.repeat = repeat

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        x = sum(emb(codes[:, q]) for q, emb in enumerate(self.embed))  # (B, N, dim)
        x = x.repeat_interleave(self.repeat, dim=1)
        return self.out(self.rnn(x)[0]).log_softmax(-1)


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
                seed: int = 0, dim: int = 128) -> Dict:
    """Train a :class:`CTCProbe` on ``train``; return CER/WER (%) on ``test`` (and CER on ``train``)."""
    if not train or not test:
        raise ValueError(f"the probe needs transcribed train and test utterances (got {len(train)} / {len(test)})")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    repeat = max(1, round(upsample_to / rate))
    model = CTCProbe(train[0].codes.shape[0], codebook_size, repeat, dim)
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
            "token_rate": rate, "repeat": repeat, "epochs": epochs,
            "final_loss": sum(losses[-10:]) / max(1, len(losses[-10:])) if losses else math.nan}
