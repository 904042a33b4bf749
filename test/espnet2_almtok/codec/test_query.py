import pytest
import torch

from espnet2_almtok.codec.query import (
    expand_with_masks,
    interleave_queries,
    interleaved_padding_mask,
    retrieve_frames,
    retrieve_mask_frames,
    retrieve_queries,
)


@pytest.mark.parametrize("window", [1, 2, 4, 10])
def test_interleave_places_query_after_every_window(window):
    b, n, c = 2, 3, 5
    frames = torch.randn(b, n * window, c)
    query = torch.full((c,), 7.0)
    seq = interleave_queries(frames, query, window)
    assert seq.shape == (b, n * (window + 1), c)
    for g in range(n):
        assert torch.equal(seq[:, g * (window + 1) + window], query.expand(b, c))
        assert torch.equal(seq[:, g * (window + 1): g * (window + 1) + window],
                           frames[:, g * window:(g + 1) * window])
    assert torch.equal(retrieve_queries(seq, window), query.expand(b, n, c))
    assert torch.equal(retrieve_frames(seq, window), frames)


def test_interleave_rejects_partial_window():
    with pytest.raises(ValueError, match="multiple of the window"):
        interleave_queries(torch.randn(1, 7, 4), torch.zeros(4), 4)


@pytest.mark.parametrize("window", [2, 5])
def test_decoder_expansion_puts_query_first_then_masks(window):
    q = torch.randn(2, 3, 4)
    mask = torch.full((4,), -1.0)
    seq = expand_with_masks(q, mask, window)
    assert seq.shape == (2, 3 * (window + 1), 4)
    assert torch.equal(seq[:, :: window + 1], q)
    frames = retrieve_mask_frames(seq, window)
    assert frames.shape == (2, 3 * window, 4)
    assert torch.equal(frames, mask.expand_as(frames))


def test_padding_mask_covers_whole_groups():
    m = interleaved_padding_mask(torch.tensor([8, 3]), n_queries=2, window=4)
    assert m.shape == (2, 10)
    assert not m[0].any()
    assert not m[1, :5].any() and m[1, 5:].all()  # 3 frames -> 1 group valid


@pytest.mark.parametrize("window", [1, 3])
def test_shortcut_adds_each_groups_frame_mean_to_its_query_and_each_query_to_its_masks(window):
    b, n, c = 2, 4, 5
    frames, query = torch.randn(b, n * window, c), torch.randn(c)
    seq = interleave_queries(frames, query, window, shortcut=True)
    group_mean = frames.reshape(b, n, window, c).mean(2)
    assert torch.allclose(retrieve_queries(seq, window), query + group_mean)
    assert torch.equal(retrieve_frames(seq, window), frames)  # the frames themselves untouched

    q, mask = torch.randn(b, n, c), torch.randn(c)
    seq = expand_with_masks(q, mask, window, shortcut=True)
    assert torch.equal(seq[:, :: window + 1], q)
    expected = (mask + q.unsqueeze(2)).expand(b, n, window, c).reshape(b, n * window, c)
    assert torch.allclose(retrieve_mask_frames(seq, window), expected)
