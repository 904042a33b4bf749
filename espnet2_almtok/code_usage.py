"""Do a set of clips' codes carry the input? Codes in use per codebook and repeated sequences.

A collapsed tokenizer gives itself away in its codes before any judge runs: few entries of each
codebook in use, and clips of different content (a tone, a sentence) coded as the same sequence.
:func:`code_usage` measures both on the codes of a set of clips; ``bin/compare`` prints it beside
the probe, the recipe's scoring (``recipe/score.py``) beside the scores.
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch


def same_first_sequence(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two clips' first-codebook sequences ``(N_a,)``, ``(N_b,)`` agree over their common
    length (the shorter clip's): a clip coded as another's beginning counts as the same."""
    n = min(a.numel(), b.numel())
    return bool(torch.equal(a[:n], b[:n]))


def first_sequence_repeats(firsts: Sequence[Sequence[int]]) -> Tuple[int, int]:
    """-> (the pairs of clips whose first-codebook sequences are the same by
    :func:`same_first_sequence`, the clips in at least one such pair).

    In sorted order a sequence comes before every sequence it begins, and all between begin with
    it too; so one pass with a stack of the sequences that begin the current one finds every pair
    in O(n log n) comparisons, not the O(n^2) of all pairs (test and train sets have thousands)."""
    order = sorted(tuple(int(x) for x in seq) for seq in firsts)
    repeated = [False] * len(order)
    stack: List[int] = []  # indices into order, each a beginning of the next
    pairs = 0
    for i, seq in enumerate(order):
        while stack and seq[: len(order[stack[-1]])] != order[stack[-1]]:
            stack.pop()
        pairs += len(stack)  # every sequence on the stack begins this one
        if stack:
            repeated[i] = True
            for j in reversed(stack):  # those under a marked one were marked with it
                if repeated[j]:
                    break
                repeated[j] = True
        stack.append(i)
    return pairs, sum(repeated)


def code_usage(codes: Sequence[torch.Tensor], codebook_size: int) -> Dict:
    """Usage of clips' codes, each ``(n_q, N)``.

    Returns ``positions`` (tokens counted), ``layers`` (per codebook: ``distinct`` codes used,
    ``in_use`` = distinct / codebook_size, ``perplexity`` = exp of the entropy of the code
    frequencies: 1 = one code everywhere, K = all K equally), ``joint_perplexity`` (their
    product: how many tokens' worth of choice a position carries), ``clips``, and
    ``same_first_pairs`` / ``clip_pairs``: the pairs of clips whose first-codebook sequences are
    the same (:func:`same_first_sequence`) out of all pairs (0 for a tokenizer whose clips differ).
    """
    codes = [torch.as_tensor(np.asarray(c)) if not torch.is_tensor(c) else c for c in codes]
    if not codes:
        raise ValueError("code_usage needs the codes of at least one clip")
    stacked = torch.cat([c.long() for c in codes], dim=1)
    layers = []
    for q in range(stacked.shape[0]):
        count = torch.bincount(stacked[q], minlength=codebook_size).double()
        share = count[count > 0] / count.sum()
        distinct = int((count > 0).sum())
        layers.append({"distinct": distinct, "in_use": distinct / codebook_size,
                       "perplexity": float(torch.exp(-(share * share.log()).sum()))})
    same, _ = first_sequence_repeats([c[0].tolist() for c in codes])
    return {"positions": int(stacked.shape[1]), "layers": layers,
            "joint_perplexity": float(np.prod([layer["perplexity"] for layer in layers])),
            "clips": len(codes), "same_first_pairs": int(same), "clip_pairs": len(codes) * (len(codes) - 1) // 2}


def describe(usage: Dict) -> str:
    """One line: codes in use per codebook (count and share) and the repeated first-codebook pairs."""
    layers = ", ".join(f"{layer['distinct']} ({100 * layer['in_use']:.0f} %)" for layer in usage["layers"])
    return (f"codes in use per codebook {layers} over {usage['positions']} tokens; "
            f"{usage['same_first_pairs']} of {usage['clip_pairs']} clip pairs share their first-codebook sequence")
