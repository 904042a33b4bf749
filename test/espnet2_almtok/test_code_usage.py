"""espnet2_almtok.code_usage: codes in use per codebook and clips coded alike."""

import numpy as np
import pytest
import torch

from espnet2_almtok.code_usage import code_usage, describe, first_sequence_repeats, same_first_sequence


def test_code_usage_counts_distinct_codes_and_perplexity():
    constant = code_usage([torch.zeros(3, 50, dtype=torch.long), torch.zeros(3, 30, dtype=torch.long)], 16)
    assert constant["positions"] == 80 and [layer["distinct"] for layer in constant["layers"]] == [1, 1, 1]
    assert constant["layers"][0]["in_use"] == pytest.approx(1 / 16)
    assert constant["joint_perplexity"] == pytest.approx(1.0)
    uniform = code_usage([torch.arange(16).repeat(2, 4)], 16)  # 2 codebooks, all 16 codes equally often
    assert [layer["distinct"] for layer in uniform["layers"]] == [16, 16]
    assert uniform["layers"][1]["in_use"] == 1.0
    assert uniform["joint_perplexity"] == pytest.approx(256.0)


def test_clips_coded_alike_are_counted_over_their_common_length():
    a = torch.tensor([[1, 2, 3, 4], [0, 0, 0, 0]])
    prefix = torch.tensor([[1, 2, 3], [5, 5, 5]])  # a's start on the first codebook: the same sequence
    other = torch.tensor([[1, 2, 9, 4, 4], [0, 0, 0, 0, 0]])
    assert same_first_sequence(a[0], prefix[0]) and not same_first_sequence(a[0], other[0])
    usage = code_usage([a, prefix, other], 10)
    assert usage["clips"] == 3 and usage["clip_pairs"] == 3 and usage["same_first_pairs"] == 1
    assert "1 of 3 clip pairs share their first-codebook sequence" in describe(usage)
    assert code_usage([a.numpy()], 10)["same_first_pairs"] == 0  # numpy codes (read from an ark) work too
    with pytest.raises(ValueError, match="at least one clip"):
        code_usage([], 10)


def test_repeats_in_one_sorted_pass_equal_the_pairwise_definition():
    """first_sequence_repeats (sorted, with a stack) counts the same pairs and clips as comparing
    every pair with same_first_sequence, on random sets rich in shared beginnings and duplicates."""
    from itertools import combinations

    rng = np.random.default_rng(0)
    for _ in range(200):
        seqs = [rng.integers(0, 3, rng.integers(0, 5)).tolist() for _ in range(rng.integers(0, 12))]
        pairs = [(i, j) for i, j in combinations(range(len(seqs)), 2)
                 if same_first_sequence(torch.tensor(seqs[i], dtype=torch.long), torch.tensor(seqs[j], dtype=torch.long))]
        clips = len({k for pair in pairs for k in pair})
        assert first_sequence_repeats(seqs) == (len(pairs), clips), seqs
    assert first_sequence_repeats([[1, 2]] * 3000) == (3000 * 2999 // 2, 3000)  # one pass, not 4.5 M comparisons
