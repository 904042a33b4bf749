"""The CTC character probe on frozen tokens."""

import random

import torch

from espnet2_almtok.bench.probe import ProbeExample, greedy, text_to_ids, ids_to_text, train_probe

WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "zero", "oh", "press"]


def spelled(text: str, rng: random.Random, informative: bool) -> ProbeExample:
    """Codes (2, N) at 12.5 tokens/s: each character as one token (plus a noise codebook), or
    random tokens of the same length when not ``informative``."""
    ids = text_to_ids(text)
    first = torch.tensor(ids) if informative else torch.tensor([rng.randrange(1, 29) for _ in ids])
    second = torch.tensor([rng.randrange(32) for _ in ids])
    return ProbeExample(torch.stack([first, second]), text)


def corpus(n: int, seed: int, informative: bool):
    rng = random.Random(seed)
    return [spelled(" ".join(rng.choice(WORDS) for _ in range(3)), rng, informative) for _ in range(n)]


def test_text_ids_round_trip_and_greedy_collapses_repeats():
    assert ids_to_text(text_to_ids("Press Seven!")) == "press seven"
    logp = torch.full((6, 29), -10.0)
    for t, c in enumerate([3, 3, 0, 3, 1, 0]):
        logp[t, c] = 0.0
    assert greedy(logp, 6) == ids_to_text([3, 3, 1])


def test_probe_reads_informative_tokens_and_not_random_ones(one_thread):
    kw = dict(rate=12.5, codebook_size=32, epochs=60, dim=64, lr=4e-3)
    good = train_probe(corpus(48, 0, True), corpus(16, 1, True), **kw)
    bad = train_probe(corpus(48, 0, False), corpus(16, 1, False), **kw)
    assert good["repeat"] == 4  # 12.5 Hz tokens repeated to 50 Hz for CTC
    assert good["cer"] < 20.0, good
    assert bad["cer"] > good["cer"] + 30.0, (good["cer"], bad["cer"])
