import numpy as np
import pytest

from espnet2_almtok.lm.metrics import bleu, cider, dtw_distance, edit_distance, error_rates, normalize_text


def test_edit_distance_and_wer():
    assert edit_distance("kitten", "sitting") == 3
    rates, rows = error_rates({"a": "the cat sat", "b": "Hello, world!"}, {"a": "the cat sat down", "b": "hello word"})
    assert rates["wer"] == pytest.approx(100 * 2 / 5)  # one insertion + one substitution over 5 words
    assert rows[1]["ref"] == "hello world" and rates["n"] == 2
    assert error_rates({"a": "x y"}, {})[0]["wer"] == 100.0  # missing hypothesis = all deleted


def test_bleu_and_cider_rank_captions():
    refs = {"a": ["a dog barks twice in the yard"], "b": ["rain falls on a tin roof"]}
    perfect = {"a": "a dog barks twice in the yard", "b": "rain falls on a tin roof"}
    close = {"a": "a dog barks in the yard", "b": "rain falls on the roof"}
    wrong = {"a": "music plays", "b": "a car passes"}
    assert bleu(refs, perfect)["bleu4"] == pytest.approx(100.0)
    assert 0 < bleu(refs, close)["bleu2"] < 100 and bleu(refs, wrong)["bleu4"] == 0.0
    assert cider(refs, perfect) > cider(refs, close) > cider(refs, wrong)
    assert normalize_text("It's  a DOG!") == "it's a dog"


def test_dtw_distance_aligns_time_warps():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 4))
    slow = np.repeat(a, 2, axis=0)  # same content, twice as long
    assert dtw_distance(a, a) == 0.0 and dtw_distance(a, slow) == 0.0
    assert dtw_distance(a, rng.normal(size=(30, 4))) > 0.5
