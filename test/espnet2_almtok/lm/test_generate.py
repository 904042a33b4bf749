import logging

import numpy as np
import pytest
import torch

from espnet2_almtok.lm.generate import DecodeConfig, LMDecoder
from espnet2_almtok.lm.layout import CodecLayout, SequenceBuilder
from espnet2_almtok.lm.model import ALMTokLM

from conftest import DEMO_SENTENCES


def decoder(vocab, layout, **config):
    torch.manual_seed(0)
    lay = CodecLayout(vocab, layout)
    model = ALMTokLM(len(vocab), lay.num_streams, dim=32, num_layers=2, num_heads=2, max_len=400)
    return LMDecoder(model, SequenceBuilder(lay, 400), DecodeConfig(**config), torch.Generator().manual_seed(0))


def asr_prompts(dec, n=3):
    rng = np.random.default_rng(1)
    return [dec.builder.build(f"u{i}", "asr", [], rng.integers(0, 64, (3, 5 + i)), with_target=False).seq
            for i in range(n)]


def tts_prompts(dec, text_tokenizer, n=3):
    return [dec.builder.build(f"u{i}", "tts", text_tokenizer.encode(DEMO_SENTENCES[i]), None, with_target=False).seq
            for i in range(n)]


@pytest.mark.parametrize("config", [dict(method="greedy"), dict(method="beam", beam_size=3),
                                    dict(method="sample", top_k=10, top_p=0.9, temperature=0.8)])
def test_asr_decoder_returns_text(vocab, text_tokenizer, config):
    dec = decoder(vocab, "flat", max_new_tokens=12, **config)
    outs = dec(asr_prompts(dec), "text")
    assert len(outs) == 3
    for o in outs:
        assert o.codes is None and 0 < len(o.text_ids) <= 12 and all(vocab.is_text(i) for i in o.text_ids)
        assert isinstance(text_tokenizer.decode(vocab.piece_ids(o.text_ids)), str)


@pytest.mark.parametrize("layout", ["flat", "delay"])
@pytest.mark.parametrize("method", ["greedy", "sample"])
def test_tts_codes_are_in_range_and_decode_to_audio(vocab, text_tokenizer, tokenizer, layout, method):
    assert (tokenizer.n_q, tokenizer.codebook_size) == (vocab.n_q, vocab.codebook_size)
    dec = decoder(vocab, layout, method=method, top_k=20, max_new_tokens=45)
    for o in dec(tts_prompts(dec, text_tokenizer), "audio"):
        assert o.codes.shape[0] == 3 and o.codes.shape[1] > 0
        assert o.codes.min() >= 0 and o.codes.max() < 64
        wav = tokenizer.decode(torch.as_tensor(o.codes), window=4)
        assert wav.shape == (1, o.codes.shape[1] * 4 * 320)


@pytest.mark.parametrize("layout", ["flat", "delay"])
def test_tts_does_not_end_before_min_frames(vocab, text_tokenizer, layout):
    dec = decoder(vocab, layout, method="sample", temperature=2.0, min_frames=6, max_new_tokens=200)
    for seed in range(3):
        dec.generator.manual_seed(seed)
        assert all(o.codes.shape[1] >= 6 for o in dec(tts_prompts(dec, text_tokenizer), "audio"))


@pytest.mark.parametrize("layout", ["flat", "delay"])
def test_batch_decoding_equals_one_by_one(vocab, text_tokenizer, layout):
    dec = decoder(vocab, layout, max_new_tokens=30)
    prompts = tts_prompts(dec, text_tokenizer) + asr_prompts(dec, 1)[:0]
    batch = dec(prompts, "audio")
    for prompt, b in zip(prompts, batch):
        np.testing.assert_array_equal(dec([prompt], "audio")[0].codes, b.codes)
    text_prompts = asr_prompts(dec)
    for prompt, b in zip(text_prompts, dec(text_prompts, "text")):
        assert dec([prompt], "text")[0].text_ids == b.text_ids


def test_length_limit_is_logged(vocab, text_tokenizer, caplog):
    dec = decoder(vocab, "flat", max_new_tokens=4)
    with caplog.at_level(logging.WARNING):
        dec(asr_prompts(dec, 2), "text")
    assert dec.num_hit_limit >= 1 and "length limit" in caplog.text


def test_beam_search_is_refused_for_audio(vocab, text_tokenizer):
    dec = decoder(vocab, "flat", method="beam")
    with pytest.raises(ValueError, match="beam search is for text"):
        dec(tts_prompts(dec, text_tokenizer, 1), "audio")
