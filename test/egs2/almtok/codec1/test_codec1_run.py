"""The codec recipe end to end (tiny config): demo corpus (stages 1-9; stage 10 in the slow suite)
and mini_an4 (1-8)."""

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

from conftest import MINI_AN4, copy_recipe, run_recipe, speechlike


def check_decoding(recipe: Path, test_set: str, window: int = 4):
    from espnet2_almtok.fileio import read_codes_scp, read_meta

    exp = recipe / "exp" / "codec_train_almtok_debug_stage2"
    dec = exp / f"decode_w{window}" / test_set
    meta = read_meta(dec / "codes")
    assert meta["n_q"] == 3 and meta["window"] == window and meta["token_rate"] == 50 / window
    n_samples = dict(line.split() for line in (recipe / "dump/raw" / test_set / "utt2num_samples").read_text().splitlines())
    codes = dict(read_codes_scp(dec / "codes" / "codes.scp"))
    assert set(codes) == set(n_samples)
    for utt, c in codes.items():
        assert c.shape == (3, math.ceil(int(n_samples[utt]) / (320 * window))), utt
        assert c.min() >= 0 and c.max() < 64
    wavs = dict(line.split() for line in (dec / "wav" / "wav.scp").read_text().splitlines())
    assert set(wavs) == set(n_samples)
    for utt, path in wavs.items():
        info = soundfile.info(path)
        assert info.samplerate == 16000 and info.frames == int(n_samples[utt]), utt
    avg = dict(line.split(": ", 1) for line in (dec / "scores" / "avg_result.txt").read_text().splitlines())
    for metric in ("mel_distance", "stft_distance", "stoi", "si_snr"):
        assert np.isfinite(float(avg[metric])), metric
    assert float(avg["token_rate"]) == 12.5 and float(avg["bitrate"]) == 12.5 * 3 * 6
    utt_rows = (dec / "scores" / "utt_result.txt").read_text().splitlines()
    assert utt_rows[0].split("\t")[0] == "utt" and len(utt_rows) == len(n_samples) + 1
    return exp


def test_demo_recipe_end_to_end(demo_codec_recipe):
    from espnet2_almtok import ALMTokenizer

    recipe = demo_codec_recipe
    assert len((recipe / "data/train/text").read_text().splitlines()) == 46
    for i in (1, 2, 3):  # the default priors: k-means of 39-d MFCCs
        assert np.load(recipe / f"exp/semantic_prior/codebook_{i}.npy").shape == (64, 39)
    exp = check_decoding(recipe, "test")
    trained = yaml.safe_load((exp / "config.yaml").read_text())["codec_conf"]
    assert trained["generator_params"]["codebook_dim"] == 39  # the codebook space follows the priors
    assert trained["use_mae_loss"] is False and trained["use_ar_loss"] is False  # stage 2: clean fine-tune
    assert "codec.generator.encoder" in yaml.safe_load((exp / "config.yaml").read_text())["freeze_param"]
    tok = ALMTokenizer.from_pretrained(exp / "almtok_packed.zip")
    assert tok.encode(speechlike(1.0), 16000, window=4).shape == (1, 3, 13)

    # the codes carry the input: a tone and a spoken sentence are not coded alike, and the
    # scores report the codes in use
    from espnet2_almtok.code_usage import same_first_sequence
    from espnet2_almtok.fileio import read_codes_scp

    codes = dict(read_codes_scp(exp / "decode_w4/test/codes/codes.scp"))
    category = dict(line.split() for line in (recipe / "dump/raw/test/utt2category").read_text().splitlines())
    tone = next(u for u in codes if "tone440" in u)
    speech = [u for u in codes if category[u] == "speech"]
    assert speech and not any(same_first_sequence(torch.as_tensor(codes[tone][0]), torch.as_tensor(codes[u][0]))
                              for u in speech), {u: codes[u][0].tolist() for u in [tone, *speech]}
    avg = dict(line.split(": ", 1) for line in (exp / "decode_w4/test/scores/avg_result.txt").read_text().splitlines())
    assert 1 < int(avg["codes_in_use_q1"]) <= 64 and int(avg["clip_pairs"]) == len(codes) * (len(codes) - 1) // 2

    # rerunning decoding + scoring reuses the finished jobs
    codes_scp = exp / "decode_w4/test/codes/codes.scp"
    before = codes_scp.stat().st_mtime_ns
    again = run_recipe(recipe, "--stage", "7", "--stop_stage", "8")
    assert "is complete; skipping" in again.stdout
    assert codes_scp.stat().st_mtime_ns == before

    # a failed stage stops the recipe naming its log (an option only the decoding job checks)
    bad = run_recipe(recipe, "--stage", "7", "--stop_stage", "7", "--inference_tag", "failing",
                     "--inference_args", "--chunk_batch 0", check=False)
    assert bad.returncode != 0 and "decode.1.log" in bad.stderr, bad.stderr[-1000:]


def test_stage2_with_another_generator_than_stage1_is_refused_before_training(demo_codec_recipe):
    import shutil

    recipe = demo_codec_recipe
    other = recipe / "exp_other_stage2"  # stage 1 and the priors of the demo run; no stage 2 yet
    for d in ("codec_train_almtok_debug_stage1", "semantic_prior"):
        shutil.copytree(recipe / "exp" / d, other / d)
    bad = run_recipe(recipe, "--stage", "6", "--stop_stage", "6", "--expdir", other.name,
                     "--stage2_args", "--codec_conf generator_params.query_shortcut=false", check=False)
    assert bad.returncode != 0
    assert "stage 2's generator is not stage 1's" in bad.stderr and "query_shortcut: True -> False" in bad.stderr
    assert not (other / "codec_train_almtok_debug_stage2" / "train.log").exists()  # nothing trained


@pytest.mark.slow
def test_demo_recipe_benchmark_stage(demo_codec_recipe):
    """Stage 10: the benchmark on the recipe's own data (smoke settings)."""
    import json

    run_recipe(demo_codec_recipe, "--stage", "10", "--stop_stage", "10", "--benchmark_args",
               "--quick --codecs almtok dac")
    res = json.loads((demo_codec_recipe / "exp/benchmark/results.json").read_text())
    assert set(res["codecs"]) == {"almtok", "dac"} and "dump/raw/train/wav.scp" in res["data"]


@pytest.mark.slow
@pytest.mark.skipif(not MINI_AN4.is_file(), reason=f"mini_an4 tarball not found at {MINI_AN4} (../shared absent)")
def test_mini_an4_recipe_stages_1_to_8(tmp_path):
    recipe = copy_recipe(tmp_path, "codec1")
    run_recipe(recipe, "--corpus", "mini_an4", "--stop_stage", "8", "--test_sets", "test")
    assert (recipe / "data/test/text").read_text().startswith("fcaw-cen8-fcaw-b ELEVEN TWENTY SEVEN")
    check_decoding(recipe, "test")


ESPNET_OPTIONS = ("nj", "inference_nj", "gpu_inference", "ngpu", "num_nodes", "expdir", "dumpdir", "inference_model",
                  "inference_config", "skip_data_prep", "skip_train", "skip_eval", "skip_upload_hf", "cmd_backend")


@pytest.mark.parametrize("name", ["codec1", "lm1"])
def test_espnet_option_names_are_listed_and_unknown_ones_fail(tmp_path, name):
    recipe = copy_recipe(tmp_path, name)
    helptext = run_recipe(recipe, "--help").stdout
    for option in ESPNET_OPTIONS:
        assert f"--{option} (" in helptext, option
    bad = run_recipe(recipe, "--decode_nj", "3", check=False)
    assert bad.returncode != 0 and "invalid option --decode_nj" in bad.stderr


def test_skip_flags_and_backend_checks(tmp_path):
    recipe = copy_recipe(tmp_path, "codec1")
    out = run_recipe(recipe, "--skip_data_prep", "true", "--skip_train", "true", "--skip_eval", "true",
                     "--stop_stage", "8")
    assert "Stage " not in out.stdout and "Successfully finished. [stages 1-8]" in out.stdout
    assert not (recipe / "data").exists() and not (recipe / "dump").exists()
    (tmp_path / "inf.yaml").write_text("batch_size: 2\nwindow: 8\n")
    (recipe / "exp/codec_train_almtok_debug_stage2").mkdir(parents=True)
    (recipe / "exp/semantic_prior").mkdir(parents=True)
    (recipe / "exp/semantic_prior/codebook_1.npy").write_bytes(b"")  # a stage 3 killed before its .done
    (recipe / "dump/raw/empty").mkdir(parents=True)
    (recipe / "dump/raw/empty/wav.scp").write_text("\n")  # a test set whose every utterance was dropped
    (recipe / "dump/raw/test").mkdir(parents=True)
    (recipe / "dump/raw/test/wav.scp").write_text("u1 u1.wav\n")  # stage 7's other checks come next
    for args, message in [(("--skip_train", "maybe"), "--skip_train must be true or false"),
                          (("--num_nodes", "2"), "--num_nodes 2 needs a cluster: add --cmd_backend slurm"),
                          (("--cmd_backend", "pbs"), "unknown cmd_backend 'pbs'"),
                          (("--skip_upload_hf", "false"), "no Hugging Face upload stage"),
                          (("--stage", "7", "--inference_config", str(tmp_path / "inf.yaml")), "'window' is set by run.sh"),
                          (("--stage", "7", "--inference_model", "1epoch.pth"), "--inference_model 1epoch.pth: exp/"),
                          (("--stage", "5", "--stop_stage", "5"), "stage 3 did not finish; rerun it (--stage 3)"),
                          (("--stage", "7", "--stop_stage", "7", "--test_sets", "empty"),
                           "dump/raw/empty/wav.scp is missing or lists no utterances")]:
        bad = run_recipe(recipe, *args, check=False)
        assert bad.returncode != 0 and message in bad.stderr, (args, bad.stderr[-500:])


def test_stage_numbers_options_and_arguments_are_checked_before_anything_runs(tmp_path):
    """Bad stage ranges, shell variables posing as options, stray arguments and ESPnet options
    that make no sense here fail at once (before the venv is even needed), naming the fix."""
    recipe = copy_recipe(tmp_path, "codec1")
    for args, message in [(("--stage", "12"), "--stage must be a stage number from 1 to 11"),
                          (("--stage", "abc"), "--stage must be a stage number"),
                          (("--stage", "5", "--stop_stage", "3"), "--stage 5 is after --stop_stage 3"),
                          (("--skip_stages", "3 x"), "--skip_stages: 'x' is not a stage number"),
                          (("--PATH", "/tmp"), "invalid option --PATH"),
                          (("--IFS", "x"), "invalid option --IFS"),
                          (("--stage", "2", "max_epoch=3"), "unexpected argument 'max_epoch=3'"),
                          (("--download_model", "espnet/x"), "nothing is downloaded by this recipe"),
                          (("--num_splits", "4"), "only 1 is supported"),
                          (("--skip_upload", "false"), "there is no Zenodo upload here"),
                          (("--audio_format", "flac"), "only wav"),
                          (("--skip_packing", "maybe"), "--skip_packing must be true or false")]:
        bad = run_recipe(recipe, *args, check=False)
        assert bad.returncode != 0 and message in bad.stderr, (args, bad.stderr[-500:])
        assert "Successfully finished" not in bad.stdout


def test_help_works_before_the_venv_exists(tmp_path):
    import os
    import subprocess

    recipe = copy_recipe(tmp_path, "codec1")
    venv = tmp_path / "no_venv_yet"
    proc = subprocess.run(["./run.sh", "--help"], cwd=recipe, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "ALMTOK_VENV": str(venv)})
    assert proc.returncode == 0 and "--skip_stages" in proc.stdout and "codec.sh stages" in proc.stdout
    assert not venv.exists()


def test_reruns_honour_changed_arguments(demo_codec_recipe, tmp_path):
    """A training rerun with other arguments is refused (naming --resume and --tag), an unchanged
    one skips."""
    import shutil

    demo_codec_recipe = Path(shutil.copytree(demo_codec_recipe, tmp_path / "codec1", symlinks=True))  # ours to change
    exp1 = demo_codec_recipe / "exp/codec_train_almtok_debug_stage1"
    bad = run_recipe(demo_codec_recipe, "--stage", "5", "--stop_stage", "5", "--stage1_args", "--max_epoch 3", check=False)
    assert bad.returncode != 0 and "trained with other arguments" in bad.stderr
    assert "--resume true" in bad.stderr and "--tag NAME" in bad.stderr and "--max_epoch" in bad.stderr
    assert "arg --max_epoch" not in (exp1 / ".done").read_text()  # nothing was overwritten
    same = run_recipe(demo_codec_recipe, "--stage", "5", "--stop_stage", "6")
    assert same.stdout.count("with these arguments; skipping") == 2


@pytest.mark.slow  # decodes and scores the demo test set again (~2 min)
def test_a_decoding_with_another_model_or_config_has_its_own_dir_and_is_what_stage_9_packs(demo_codec_recipe, tmp_path):
    import shutil

    demo_codec_recipe = Path(shutil.copytree(demo_codec_recipe, tmp_path / "codec1", symlinks=True))  # ours to change
    (tmp_path / "bs2.yaml").write_text("batch_size: 2\n")
    out = run_recipe(demo_codec_recipe, "--stage", "7", "--stop_stage", "9", "--inference_model", "latest.pth",
                     "--inference_config", str(tmp_path / "bs2.yaml"), "--score_judges", "none")
    exp2 = demo_codec_recipe / "exp/codec_train_almtok_debug_stage2"
    dec = exp2 / "decode_w4_latest_bs2/test"
    assert "skipping" not in out.stdout and (dec / "scores/result.md").is_file()
    assert (dec / ".done").read_text().startswith(f"model exp/codec_train_almtok_debug_stage2/latest.pth ")
    assert "Stage 9: packing exp/codec_train_almtok_debug_stage2 (exp/codec_train_almtok_debug_stage2/latest.pth)" in out.stdout
    again = run_recipe(demo_codec_recipe, "--stage", "7", "--stop_stage", "7", "--inference_model", "latest.pth",
                       "--inference_config", str(tmp_path / "bs2.yaml"))
    assert "decode_w4_latest_bs2/test is complete; skipping" in again.stdout


def test_a_second_stage_2_on_the_same_dump_dir_waits_for_the_first(demo_codec_recipe, tmp_path):
    """Two stage-2 runs on one dump dir would write the same files: the second waits for the
    first's lock (saying so), then finds its sets done; nothing is formatted twice at once."""
    import fcntl
    import shutil
    import subprocess
    import time

    recipe = Path(shutil.copytree(demo_codec_recipe, tmp_path / "codec1", symlinks=True))
    done = {p: p.stat().st_mtime_ns for p in (recipe / "dump/raw").glob("*/.done")}
    log = tmp_path / "second.log"
    waiting = "another run's stage 2 is formatting dump/raw (lock dump/raw/.stage2.lock): waiting"
    with open(recipe / "dump/raw/.stage2.lock", "w") as held, open(log, "w") as log_file:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the first run's lock (flock(1) is flock(2))
        second = subprocess.Popen(["./run.sh", "--stage", "2", "--stop_stage", "2"], cwd=recipe, text=True,
                                  stdout=log_file, stderr=subprocess.STDOUT)
        for _ in range(240):
            if waiting in log.read_text() or second.poll() is not None:
                break
            time.sleep(0.5)
        time.sleep(2)
        assert second.poll() is None, log.read_text()[-2000:]  # still waiting
    assert second.wait(timeout=300) == 0, log.read_text()[-2000:]
    out = log.read_text()
    assert waiting in out and "Successfully finished" in out
    assert done and {p: p.stat().st_mtime_ns for p in done} == done  # found done, not redone


def test_decoding_checks_the_window_first_and_says_when_it_uses_the_stage_1_model(demo_codec_recipe, tmp_path):
    """An untrained --window is refused before any decoding job starts (no job tracebacks, no
    decode dir); without a stage-2 model the stages from 7 on say they use stage 1's."""
    import shutil

    recipe = Path(shutil.copytree(demo_codec_recipe, tmp_path / "codec1", symlinks=True))
    exp2 = recipe / "exp/codec_train_almtok_debug_stage2"
    shutil.move(exp2, tmp_path / "stage2_elsewhere")
    bad = run_recipe(recipe, "--stage", "7", "--stop_stage", "7", "--window", "16", check=False)
    assert bad.returncode != 0, bad.stdout[-1000:]
    assert "WARNING: no stage-2 model (exp/codec_train_almtok_debug_stage2): the stages from 7 on use stage 1's" \
        in bad.stdout
    assert "ERROR: --window 16 was not trained: exp/codec_train_almtok_debug_stage1/config.yaml has windows " \
           "[2, 3" in bad.stderr and "Traceback" not in bad.stderr
    assert not (recipe / "exp/codec_train_almtok_debug_stage1/decode_w16").exists()
