"""The codec recipe through a real SLURM (slow suite; a one-node cluster started on this machine by
test/slurm_cluster.py, skipped where it cannot start): ``--cmd_backend slurm`` gives the local run's
outputs, and a 2-task DDP training through srun trains and resumes."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from conftest import copy_recipe, run_recipe
from slurm_cluster import SlurmCluster, unavailable_reason

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"no local SLURM: {reason}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except RuntimeError as e:
        cluster.stop()
        pytest.skip(f"SLURM could not start on this machine: {e}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)  # run_recipe's run.sh and its jobs find the cluster
    try:
        yield cluster
    finally:
        cluster.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


def table(path: Path) -> dict:
    return dict((line.split(maxsplit=1) + [""])[:2] for line in path.read_text().splitlines())


def ran_under_slurm(log: Path) -> bool:
    return "(SLURM job " in log.read_text()


def test_whole_demo_through_slurm_equals_the_local_run(demo_codec_recipe, slurm, tmp_path):
    """``./run.sh --cmd_backend slurm``: stages 1-9 of the demo, every parallel stage and both
    trainings submitted to SLURM; data, priors, and the decoding of the same models equal the
    local run's."""
    from espnet2_almtok.fileio import read_codes_scp

    local = demo_codec_recipe
    recipe = copy_recipe(tmp_path, "codec1")
    # 3 jobs where the local run had 2: the split does not change the outputs
    out = run_recipe(recipe, "--cmd_backend", "slurm", "--nj", "3", "--inference_nj", "3", "--score_judges", "none")
    assert "Successfully finished. [stages 1-11]" in out.stdout
    assert all(ran_under_slurm(recipe / f"dump/raw/train/logdir/format.{j}.log") for j in (1, 2, 3))
    assert all(ran_under_slurm(recipe / f"exp/semantic_prior/logdir/extract.{j}.log") for j in (1, 2, 3))
    assert ran_under_slurm(recipe / "exp/semantic_prior/extract.log")
    for stage in (1, 2):
        assert ran_under_slurm(recipe / f"exp/codec_train_almtok_debug_stage{stage}/train.log")
    for s in ("train", "dev", "test"):
        mine, theirs = recipe / "dump/raw" / s, local / "dump/raw" / s
        for name in ("utt2num_samples", "audio_shape", "text", "bad_utts", "utt2category"):
            assert (mine / name).read_text() == (theirs / name).read_text(), (s, name)
        wavs, local_wavs = table(mine / "wav.scp"), table(theirs / "wav.scp")
        assert set(wavs) == set(local_wavs) and all(str(mine) in p for p in wavs.values())
        for utt in wavs:
            assert Path(wavs[utt]).read_bytes() == Path(local_wavs[utt]).read_bytes(), (s, utt)
    for i in (1, 2, 3):
        np.testing.assert_array_equal(np.load(recipe / f"exp/semantic_prior/codebook_{i}.npy"),
                                      np.load(local / f"exp/semantic_prior/codebook_{i}.npy"))
    rel = "exp/codec_train_almtok_debug_stage2/decode_w4/test"
    assert all(ran_under_slurm(recipe / rel / f"logdir/decode.{j}.log") for j in (1, 2, 3))
    assert all(ran_under_slurm(recipe / rel / f"scores_split3/score.{j}.log") for j in (1, 2, 3))
    assert len(dict(read_codes_scp(recipe / rel / "codes/codes.scp"))) == 13

    # decoding and scoring through SLURM of the local run's trained models give the local outputs
    for exp in (local / "exp").glob("codec_*"):
        shutil.rmtree(recipe / "exp" / exp.name)
        shutil.copytree(exp, recipe / "exp" / exp.name, ignore=shutil.ignore_patterns("decode_*"))
    run_recipe(recipe, "--cmd_backend", "slurm", "--stage", "7", "--stop_stage", "8", "--inference_nj", "3",
               "--score_judges", "none")
    assert all(ran_under_slurm(recipe / rel / f"logdir/decode.{j}.log") for j in (1, 2, 3))
    codes, local_codes = dict(read_codes_scp(recipe / rel / "codes/codes.scp")), \
        dict(read_codes_scp(local / rel / "codes/codes.scp"))
    assert set(codes) == set(local_codes) and len(codes) == 13
    for utt in codes:
        np.testing.assert_array_equal(codes[utt], local_codes[utt])
    wavs, local_wavs = table(recipe / rel / "wav/wav.scp"), table(local / rel / "wav/wav.scp")
    for utt in wavs:
        np.testing.assert_array_equal(soundfile.read(wavs[utt])[0], soundfile.read(local_wavs[utt])[0])
    avg, local_avg = table(recipe / rel / "scores/avg_result.txt"), table(local / rel / "scores/avg_result.txt")
    for key in ("n_utt:", "mel_distance:", "stft_distance:", "stoi:", "si_snr:", "token_rate:", "bitrate:"):
        assert avg[key] == local_avg[key], key


def make_dump(root: Path) -> Path:
    """``root/dump/raw/{train,dev}`` as stage 4 leaves them: speech-like clips of unequal lengths."""
    from conftest import speechlike

    for s, lengths in (("train", [0.35, 0.6, 0.9, 1.3, 0.45, 1.1]), ("dev", [0.5, 0.8])):
        d = root / "dump/raw" / s
        (d / "data").mkdir(parents=True)
        scp, shape = [], []
        for i, sec in enumerate(lengths):
            wav = speechlike(sec, seed=i).numpy()
            soundfile.write(d / "data" / f"{s}{i}.wav", wav, 16000)
            scp.append(f"{s}{i} {d / 'data' / f'{s}{i}.wav'}\n")
            shape.append(f"{s}{i} {len(wav)}\n")
        (d / "wav.scp").write_text("".join(scp))
        (d / "audio_shape").write_text("".join(shape))
    return root / "dump"


def test_ddp_training_with_two_slurm_tasks_trains_and_resumes(slurm, tmp_path):
    """Stage 5 with 2 DDP ranks started by srun as 2 SLURM tasks (gloo on CPU), then resumed."""
    recipe = copy_recipe(tmp_path, "codec1")
    dump = make_dump(tmp_path)  # no priors: random codebooks (codebook_init null), as run.sh gives without stage 3
    common = ["--cmd_backend", "slurm", "--dumpdir", str(dump), "--stage", "5", "--stop_stage", "5",
              "--train_tasks_per_node", "2"]
    out = run_recipe(recipe, *common, "--stage1_args", "--max_epoch 1 --num_iters_per_epoch 3")
    assert "DDP through SLURM: 1 node(s) x 2 rank(s), 0 GPU(s) per node, gloo" in out.stdout
    exp = recipe / "exp/codec_train_almtok_debug_stage1"
    log = (exp / "train.log").read_text()
    assert ran_under_slurm(exp / "train.log") and "rank 0 of 2" in log and "rank 1 of 2" in log
    config = yaml.safe_load((exp / "config.yaml").read_text())
    assert config["distributed"] is True and config["dist_backend"] == "gloo"
    assert config["multiprocessing_distributed"] is False and (exp / "1epoch.pth").is_file()

    (exp / ".done").unlink()
    run_recipe(recipe, *common, "--stage1_args", "--max_epoch 2 --num_iters_per_epoch 3")
    first_run = log
    log = (exp / "train.log").read_text()
    # the log is appended to: the first run's text, a restart line, then the resumed run's
    assert log.startswith(first_run)
    resumed = log[len(first_run):]
    assert resumed.startswith("# ---- restarted at"), resumed[:200]
    assert "The training was resumed using" in resumed and "1epoch results" not in resumed and "rank 1 of 2" in resumed
    assert (exp / "2epoch.pth").is_file() and (exp / ".done").is_file()
