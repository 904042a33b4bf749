import numpy as np
import pytest
import torch
import torch.nn.functional as F

from espnet2_almtok.lm.layout import CodecLayout, SequenceBuilder
from espnet2_almtok.lm.model import ALMTokLM

from conftest import DEMO_SENTENCES


def make_batch(vocab, text_tokenizer, layout, tasks=("asr", "tts", "caption", "tts")):
    b = SequenceBuilder(CodecLayout(vocab, layout), max_len=256)
    rng = np.random.default_rng(0)
    exs = [b.build(f"u{i}", t, text_tokenizer.encode(DEMO_SENTENCES[i]), rng.integers(0, 64, (3, 4 + 2 * i)))
           for i, t in enumerate(tasks)]
    length = max(len(e.seq) for e in exs)
    seq = torch.zeros(len(exs), length, b.layout.num_streams, dtype=torch.long)
    for i, e in enumerate(exs):
        seq[i, : len(e.seq)] = torch.as_tensor(e.seq)
    lengths = torch.tensor([len(e.seq) for e in exs])
    prefix = torch.tensor([[e.prefix_len] for e in exs])
    return seq, lengths, prefix


def tiny_lm(vocab, streams):
    return ALMTokLM(len(vocab), streams, dim=32, num_layers=2, num_heads=2, ff_mult=2, dropout=0.0, max_len=256)


@pytest.mark.parametrize("layout,streams", [("flat", 1), ("delay", 3)])
def test_loss_falls(vocab, text_tokenizer, layout, streams):
    seq, lengths, prefix = make_batch(vocab, text_tokenizer, layout)
    model = tiny_lm(vocab, streams)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    losses = []
    for _ in range(40):
        loss, stats, weight = model(seq, lengths, prefix)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert set(stats) == {"loss", "acc", "ppl"} and float(weight) == 4


def test_only_the_target_is_scored(vocab, text_tokenizer):
    seq, lengths, prefix = make_batch(vocab, text_tokenizer, "flat", tasks=("asr",))
    model = tiny_lm(vocab, 1).eval()
    loss, _, _ = model(seq, lengths, prefix)
    logits = model.logits(seq[:, :-1], torch.ones(1, seq.shape[1] - 1, dtype=torch.bool))[0, :, 0]
    p = int(prefix)
    expected = F.cross_entropy(logits[p - 1:], seq[0, p:, 0])  # targets p .. L-1 (text + <eos>)
    torch.testing.assert_close(loss.reshape(()), expected)


def test_padding_does_not_change_the_loss(vocab, text_tokenizer):
    seq, lengths, prefix = make_batch(vocab, text_tokenizer, "flat", tasks=("tts",))
    model = tiny_lm(vocab, 1).eval()
    padded = torch.cat([seq, torch.zeros(1, 7, 1, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model(seq, lengths, prefix)[0], model(padded, lengths, prefix)[0])


def test_cache_and_left_padding_match_the_full_forward(vocab, text_tokenizer):
    seq, lengths, prefix = make_batch(vocab, text_tokenizer, "delay", tasks=("tts",))
    model = tiny_lm(vocab, 3).eval()
    n = int(lengths[0])
    with torch.no_grad():
        full = model.logits(seq[:, :n], torch.ones(1, n, dtype=torch.bool))
        # left-padded prefill of the first half, then one position at a time from the cache
        half = n // 2
        pad = torch.zeros(1, 5, 3, dtype=torch.long)
        valid = torch.cat([torch.zeros(1, 5, dtype=torch.bool), torch.ones(1, half, dtype=torch.bool)], 1)
        cache = model.decoder.new_cache()
        out = [model.logits(torch.cat([pad, seq[:, :half]], 1), valid, cache)[:, 5:]]
        for t in range(half, n):
            one = torch.ones(1, 1, dtype=torch.bool)
            out.append(model.logits(seq[:, t: t + 1], one, cache, valid))
            valid = torch.cat([valid, one], 1)
    torch.testing.assert_close(torch.cat(out, 1), full, atol=1e-5, rtol=1e-4)


def test_sequences_over_the_context_are_refused_clearly(vocab, text_tokenizer):
    seq, lengths, prefix = make_batch(vocab, text_tokenizer, "flat", tasks=("tts",))
    model = ALMTokLM(len(vocab), 1, dim=32, num_layers=1, num_heads=2, max_len=8)
    with pytest.raises(ValueError, match="max_len=8"):
        model(seq, lengths, prefix)
