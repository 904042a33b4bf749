import logging

import numpy as np
import pytest

from espnet2_almtok.lm.layout import CodecLayout, ContextError, SequenceBuilder
from espnet2_almtok.lm.vocab import EMPTY, EOS


def random_codes(n_frames, seed=0):
    return np.random.default_rng(seed).integers(0, 64, (3, n_frames))


@pytest.mark.parametrize("layout,length", [("flat", 7 * 3), ("delay", 7 + 2)])
def test_codes_round_trip(vocab, layout, length):
    lay = CodecLayout(vocab, layout)
    codes = random_codes(7)
    rows = lay.audio_rows(codes)
    assert rows.shape == (length, lay.num_streams)
    np.testing.assert_array_equal(lay.codes_from_rows(rows), codes)


def test_flat_is_frame_major_with_per_codebook_ids(vocab):
    rows = CodecLayout(vocab, "flat").audio_rows(np.array([[1, 2], [3, 4], [5, 6]]))[:, 0]
    a, k = vocab.audio_offset, 64
    assert rows.tolist() == [a + 1, a + k + 3, a + 2 * k + 5, a + 2, a + k + 4, a + 2 * k + 6]


def test_delay_pattern(vocab):
    rows = CodecLayout(vocab, "delay").audio_rows(random_codes(4))
    assert rows[0, 1] == EMPTY and rows[0, 2] == EMPTY and rows[1, 2] == EMPTY
    assert rows[-1, 0] == EMPTY and rows[-2, 0] == EMPTY and rows[-1, 2] != EMPTY


def test_codes_outside_the_codebook_are_rejected(vocab):
    with pytest.raises(ValueError, match="outside 0..63"):
        CodecLayout(vocab, "flat").audio_rows(np.full((3, 2), 64))
    with pytest.raises(ValueError, match="n_q=3"):
        CodecLayout(vocab, "flat").audio_rows(np.zeros((2, 5), int))


@pytest.mark.parametrize("layout", ["flat", "delay"])
def test_task_templates(vocab, text_tokenizer, layout):
    b = SequenceBuilder(CodecLayout(vocab, layout), max_len=512)
    text = text_tokenizer.encode("the quick brown fox")
    codes = random_codes(5)
    audio_len = len(CodecLayout(vocab, layout).audio_rows(codes))
    asr = b.build("u1", "asr", text, codes)
    assert asr.seq[0, 0] == vocab.task_id("asr") and asr.seq[1, 0] == vocab.modality_id("audio")
    assert asr.prefix_len == 2 + audio_len + 1 and asr.seq[asr.prefix_len - 1, 0] == vocab.modality_id("text")
    assert asr.seq[asr.prefix_len:-1, 0].tolist() == vocab.text_ids(text) and asr.seq[-1, 0] == EOS
    tts = b.build("u1", "tts", text, codes)
    assert tts.prefix_len == 2 + len(text) + 1
    np.testing.assert_array_equal(b.layout.codes_from_rows(tts.seq[tts.prefix_len:-1]), codes)
    assert len(tts.seq) == b.length("tts", len(text), 5)
    prompt = b.build("u1", "tts", text, codes, with_target=False)
    np.testing.assert_array_equal(prompt.seq, tts.seq[: tts.prefix_len])


def test_context_policy_error_names_the_utterance(vocab, text_tokenizer):
    b = SequenceBuilder(CodecLayout(vocab, "flat"), max_len=40, context_policy="error")
    with pytest.raises(ContextError, match=r"spk1-utt7: \d+ positions .* max_len=40"):
        b.build("spk1-utt7", "asr", text_tokenizer.encode("the quick brown fox"), random_codes(20))


@pytest.mark.parametrize("task", ["asr", "tts"])
def test_context_policy_truncate_fits_and_counts(vocab, text_tokenizer, task, caplog):
    b = SequenceBuilder(CodecLayout(vocab, "flat"), max_len=40, context_policy="truncate")
    text = text_tokenizer.encode("please call stella and ask her to bring these things")
    with caplog.at_level(logging.WARNING):
        ex = b.build("u", task, text, random_codes(30))
        prompt = b.build("u", task, text, random_codes(30), with_target=False)
    assert len(ex.seq) == 40 and ex.truncated and 0 < ex.prefix_len < 40
    assert ex.seq[ex.prefix_len - 1, 0] == vocab.modality_id("text" if task == "asr" else "audio")
    assert len(prompt.seq) <= 40 - 40 // 4  # room left to generate
    assert b.num_truncated == 2 and "truncated" in caplog.text
