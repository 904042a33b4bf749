import pytest

from espnet2_almtok.lm.vocab import EOS, NUM_SPECIAL, SPECIALS, Vocabulary

from conftest import DEMO_SENTENCES


def test_bpe_round_trip(text_tokenizer):
    for s in DEMO_SENTENCES:
        assert text_tokenizer.decode(text_tokenizer.encode(s)) == s


def test_token_list_layout_and_round_trip(vocab):
    tokens = vocab.token_list()
    assert len(tokens) == len(vocab) == NUM_SPECIAL + len(vocab.text_pieces) + 3 * 64
    assert tuple(tokens[: len(SPECIALS)]) == SPECIALS and tokens[EOS] == "<eos>"
    assert tokens[vocab.audio_offset] == "<a0_0>" and tokens[-1] == "<a2_63>"
    assert tokens[vocab.audio_range(1).start] == "<a1_0>"
    again = Vocabulary.from_token_list(tokens)
    assert (again.n_q, again.codebook_size, again.text_pieces) == (3, 64, vocab.text_pieces)


def test_token_list_of_another_layout_is_rejected(vocab):
    with pytest.raises(ValueError, match="special tokens"):
        Vocabulary.from_token_list(["<unk>", "a", "b"])
    tokens = vocab.token_list()
    with pytest.raises(ValueError, match="layout"):
        Vocabulary.from_token_list(tokens[:-2] + [tokens[-1]])  # a code missing


def test_text_ids_are_offset_pieces(vocab):
    ids = vocab.text_ids([0, 5])
    assert ids == [NUM_SPECIAL, NUM_SPECIAL + 5] and all(vocab.is_text(i) for i in ids)
    assert vocab.piece_ids(ids + [EOS, vocab.audio_offset]) == [0, 5]
    with pytest.raises(ValueError, match="unknown task"):
        vocab.task_id("translation")
