"""The LM recipe end to end on the codec recipe's demo outputs (tiny configs), and on mini_an4."""

import re
from pathlib import Path

import pytest
import soundfile

from conftest import MINI_AN4, copy_recipe, run_recipe

EXP = "exp/lm_train_lm_debug_codec_train_almtok_debug_stage2_w4"


def table(path: Path) -> dict:
    return dict((line.split(maxsplit=1) + [""])[:2] for line in path.read_text().splitlines())


def avg(path: Path) -> dict:
    return {k: float(v) for k, v in (line.split(": ", 1) for line in path.read_text().splitlines())}


def lm_recipe_beside(codec_recipe: Path) -> Path:
    """``lm1`` next to the (shared) codec recipe run, so its defaults read ``../codec1``."""
    recipe = codec_recipe.parent / "lm1"
    return recipe if recipe.exists() else copy_recipe(codec_recipe.parent, "lm1")


def test_demo_lm_recipe_end_to_end(demo_codec_recipe):
    recipe = lm_recipe_beside(demo_codec_recipe)
    out = run_recipe(recipe)
    assert "Successfully finished. [stages 1-7]" in out.stdout
    exp = recipe / EXP
    assert (exp / "valid.loss.best.pth").exists() and (exp / ".done").exists()

    asr = exp / "decode_asr_test"
    refs, hyps = table(asr / "ref"), table(asr / "text")
    assert len(refs) == 12 and set(hyps) == set(refs)
    assert refs["spkenus-s08"] == "open the window and let the morning light in"
    scores = avg(asr / "scores/avg_result.txt")
    assert 0 <= scores["wer"] and 0 <= scores["cer"] and scores["n"] == 12

    tts = exp / "decode_tts_test"
    wavs = table(tts / "wav/wav.scp")
    assert len(wavs) == 12 and all(soundfile.info(p).samplerate == 16000 for p in wavs.values())
    tts_scores = avg(tts / "scores/avg_result.txt")
    assert tts_scores["mel_dtw"] > 0 and tts_scores["dur_ratio"] > 0 and "asr_wer" in tts_scores
    assert len(table(tts / "roundtrip/decode_asr/text")) == 12

    caption = exp / "decode_caption_test"
    assert table(caption / "ref") == {"sounds-tone440": "a steady high tone"}
    assert {"bleu1", "bleu4", "cider"} <= set(avg(caption / "scores/avg_result.txt"))

    results = (exp / "RESULTS.md").read_text()
    for section in ("## asr (test)", "## tts (test)", "## caption (test)"):
        assert section in results
    assert re.search(r"\| test \| [\d.]+ \| [\d.]+ \| 12 \|", results)  # the ASR row: wer, cer, n

    # reruns skip finished work; a missing codec is named with the fix
    again = run_recipe(recipe, "--stage", "5", "--stop_stage", "5")
    assert again.stdout.count("is complete; skipping") == 3
    bad = run_recipe(recipe, "--codec_model", "../codec1/exp/nothing", check=False)
    assert bad.returncode != 0 and "run ../codec1/run.sh first" in bad.stderr
    # decoding before training: one line naming the stage, no job tracebacks
    untrained = run_recipe(recipe, "--stage", "5", "--stop_stage", "5", "--tag", "untrained", check=False)
    assert untrained.returncode != 0 and "no LM in exp/lm_untrained (no config.yaml); run the training stage (4) first" \
        in untrained.stderr and "Traceback" not in untrained.stderr + untrained.stdout


@pytest.mark.slow
@pytest.mark.skipif(not MINI_AN4.is_file(), reason=f"mini_an4 tarball not found at {MINI_AN4} (../shared absent)")
def test_mini_an4_lm_recipe(tmp_path):
    codec = copy_recipe(tmp_path, "codec1")
    run_recipe(codec, "--corpus", "mini_an4", "--stop_stage", "6")
    recipe = copy_recipe(tmp_path, "lm1")
    out = run_recipe(recipe, "--tasks", "asr tts")
    assert "Successfully finished" in out.stdout
    results = (recipe / EXP / "RESULTS.md").read_text()
    assert "## asr (test)" in results and "## tts (test)" in results and "caption" not in results


@pytest.mark.slow
def test_lm_recipe_on_espnet_dac_tokens(demo_codec_recipe):
    """The tokenizer choice: train an ESPnet DAC in the codec recipe, then the same LM recipe on
    its tokens (delay layout: 8 codebooks at 50 Hz)."""
    out = run_recipe(demo_codec_recipe, "--train_config", "conf/tuning/train_dac_debug.yaml", "--stage", "5",
                     "--stop_stage", "9")
    assert "no semantic priors and one training stage" in out.stdout
    assert (demo_codec_recipe / "exp/codec_train_dac_debug_stage1/decode_w4/test/scores/result.md").is_file()
    recipe = lm_recipe_beside(demo_codec_recipe)
    # one epoch: 8 heads over a 8.4 k vocabulary make each CPU step ~10x the ALMTokenizer LM's
    run_recipe(recipe, "--codec_model", "../codec1/exp/codec_train_dac_debug_stage1", "--layout", "delay",
               "--lm_args", "--max_epoch 1")
    exp = recipe / "exp/lm_train_lm_debug_codec_train_dac_debug_stage1_delay"
    meta = (recipe / "dump/codes/codec_train_dac_debug_stage1/test/codes/meta.yaml").read_text()
    assert "n_q: 8" in meta and "codebook_size: 1024" in meta
    results = (exp / "RESULTS.md").read_text()
    assert "(dac)" in results and "layout delay" in results and "## tts (test)" in results
    assert len(table(exp / "decode_asr_test/text")) == 12


def test_stage_numbers_stray_arguments_and_espnet_options_are_checked(tmp_path):
    recipe = copy_recipe(tmp_path, "lm1")
    for args, message in [(("--stage", "8"), "--stage must be a stage number from 1 to 7"),
                          (("--stage", "4", "--stop_stage", "2"), "--stage 4 is after --stop_stage 2"),
                          (("--stage", "1", "extra"), "unexpected argument 'extra'"),
                          (("--HOME", "/tmp"), "invalid option --HOME"),
                          (("--fs", "16000"), "the audio rate is the codec model's"),
                          (("--hf_repo", "u/x"), "no Hugging Face upload stage"),
                          (("--lang", "en"), "one BPE model per corpus"),
                          (("--token_type", "word"), "--token_type word: bpe or char"),
                          (("--bpemode", "wordpiece"), "--bpemode wordpiece: bpe or unigram")]:
        bad = run_recipe(recipe, *args, check=False)
        assert bad.returncode != 0 and message in bad.stderr, (args, bad.stderr[-500:])
    helptext = run_recipe(recipe, "--help").stdout
    for option in ("--train_config", "--token_type", "--bpemode", "--bpe_train_text", "--skip_stages", "--python"):
        assert option in helptext, option
