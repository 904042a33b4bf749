import pytest

from espnet2_almtok.codec.chunking import ChunkingConfig, plan_chunks


@pytest.mark.parametrize("n, context, overlap", [(1, 5, 1), (5, 5, 1), (6, 5, 1), (38, 9, 2), (100, 38, 7),
                                                 (1000, 13, 3), (77, 3, 1)])
def test_windows_tile_the_tokens_with_context_on_both_sides(n, context, overlap):
    chunks = plan_chunks(n, context, overlap)
    kept = [t for c in chunks for t in range(c.keep_start, c.keep_stop)]
    assert kept == list(range(n))  # every token kept once, in order
    for c in chunks:
        assert 0 <= c.start <= c.keep_start < c.keep_stop <= c.stop <= n
        assert c.stop - c.start == min(n, context)  # every window is as long as the context
        assert c.keep_start - c.start >= min(overlap, c.keep_start)  # left context, unless at the start
        assert c.stop - c.keep_stop >= min(overlap, n - c.keep_stop)  # right context, unless at the end
    if n <= context:
        assert len(chunks) == 1


def test_context_and_overlap_in_query_groups():
    # 3 s at 50 Hz, w = 4: 150 frames -> 38 groups (a 3 s training crop is padded to 38 tokens too)
    assert ChunkingConfig(context_s=3.0).groups(50.0, 4) == (38, 7)  # overlap 0.5 s -> 25 frames -> 7 groups
    assert ChunkingConfig(context_s=3.0, overlap_s=0.2).groups(50.0, 10) == (15, 1)
    # a context too short for the overlap grows to keep one token per window
    assert ChunkingConfig(context_s=0.5).groups(50.0, 10) == (3, 1)


@pytest.mark.parametrize("kw, match", [(dict(context_s=0), "context"), (dict(overlap_s=-1), "overlap"),
                                      (dict(chunk_batch=0), "chunk_batch"), (dict(crossfade=2), "crossfade")])
def test_bad_settings_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        ChunkingConfig(**kw)


def test_a_plan_without_kept_tokens_is_refused():
    with pytest.raises(ValueError, match="leaves no kept token"):
        plan_chunks(100, 4, 2)
