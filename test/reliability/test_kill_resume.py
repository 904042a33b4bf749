"""Kill -9, then rerun: the outputs are byte-identical to an uninterrupted run (issue 13).

Decoding (``codec_inference``, recipe stage 7) and data formatting (``format_data``, stage 2)
are run in a subprocess that is sent SIGKILL at a chosen point: the Nth call of a function
(:data:`DRIVER` wraps it: before the call, after it, or after it with the file it wrote cut in
half, a torn write), or from outside while it works. Then the same command is rerun to the
end and every output file is compared with those of a run that was never interrupted. Each
entry of :data:`DECODE_KILLS` / :data:`FORMAT_KILLS` / :data:`PRIOR_KILLS` is one kill point (the
README quotes the count). Codec training (stage 5) is killed from outside, its whole process group,
in epoch 2, and its rerun must end with the uninterrupted run's weights, tensor for tensor.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from conftest import DEBUG_CONFIG, ROOT, speechlike

pytestmark = pytest.mark.slow

# python -c DRIVER MODULE ATTR NTH WHEN MAIN_MODULE ARGS...: run MAIN_MODULE.main(ARGS) with
# MODULE.ATTR (ATTR may be Class.method) wrapped to SIGKILL this process at its NTH call. WHEN:
# "before" the call, "after" it, "torn" (after it, with the file named by its first argument cut
# to half its size), or "sleep" (never kill; sleep 0.3 s after each call: the test kills from outside).
DRIVER = r"""
import importlib, os, signal, sys, time
module, attr, nth, when, main_module = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
args = sys.argv[6:]
owner = importlib.import_module(module)
*path, name = attr.split(".")
for part in path:
    owner = getattr(owner, part)
original = getattr(owner, name)
calls = [0]

def die():
    sys.stdout.flush(); sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

def wrapped(*a, **k):
    calls[0] += 1
    if when == "before" and calls[0] == nth:
        die()
    result = original(*a, **k)
    if when == "sleep":
        time.sleep(0.3)
    elif calls[0] == nth:
        if when == "torn":
            with open(a[0], "r+b") as f:
                f.truncate(os.path.getsize(a[0]) // 2)
        die()
    return result

setattr(owner, name, wrapped)
importlib.import_module(main_module).main(args)
"""


def run_killed(module: str, attr: str, nth: int, when: str, main_module: str, args, watch=None) -> None:
    """Run ``main_module`` with :data:`DRIVER`; it must die by SIGKILL. ``watch``: a callable that
    says when to send SIGKILL from here (with ``when="sleep"``)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'test'}"}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, module, attr, str(nth), when, main_module,
                             *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if watch is not None:
        deadline = time.time() + 120
        while proc.poll() is None and not watch() and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"not killed (rc {proc.returncode}): {err[-2000:]}"


def snapshot(out: Path) -> dict:
    """Every file under ``out`` (but the lock file) -> its bytes, with ``out``'s path replaced."""
    files = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != ".lock"):
        data = path.read_bytes()
        if path.suffix in ("", ".scp", ".yaml") or path.name in ("text", "utt2num_samples", "bad_utts", ".done"):
            data = data.replace(str(out.resolve()).encode(), b"OUT")
        files[str(path.relative_to(out))] = data
    return files


def assert_same(resumed: Path, reference: Path) -> None:
    got, want = snapshot(resumed), snapshot(reference)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], f"{name} differs after the kill and rerun"


# ---------------------------------------------------------------------------- decoding (stage 7)
@pytest.fixture(scope="module")
def decode_setup(tmp_path_factory):
    """An exp dir (debug config, untrained generator), a wav.scp of 6 clips, the reference
    outputs of one uninterrupted run, and the codec_inference arguments (without --output_dir)."""
    from espnet2_almtok import ALMTokenizer
    from espnet2_almtok.inference import codec_inference

    root = tmp_path_factory.mktemp("kill_decode")
    exp = root / "exp"
    exp.mkdir()
    shutil.copy(DEBUG_CONFIG, exp / "config.yaml")
    tok = ALMTokenizer.from_config(DEBUG_CONFIG, use_priors=False)
    torch.save({f"codec.generator.{k}": v for k, v in tok.generator.state_dict().items()}, exp / "model.pth")
    lines = []
    for i in range(6):
        soundfile.write(root / f"u{i}.wav", speechlike(0.4 + 0.1 * i, seed=i).numpy(), 16000, "PCM_16")
        lines.append(f"u{i} {root / f'u{i}.wav'}\n")
    (root / "wav.scp").write_text("".join(lines))
    args = ["--model_dir", str(exp), "--data_path_and_name_and_type", f"{root / 'wav.scp'},audio,sound",
            "--window", "4"]
    reference = root / "reference"
    codec_inference.main([*args, "--output_dir", str(reference)])
    return args, reference


M = "espnet2_almtok.inference.codec_inference"
DECODE_KILLS = {  # id -> [(module, attr, nth, when), ...]: the kills before the final rerun
    "mid-run-after-2-utterances": [(M, "DecodeJob.batch", 3, "before")],
    "all-coded-nothing-moved": [(M, "write_meta", 1, "before")],
    "outputs-moved-no-done-marker": [(M, "atomic_write_text", 1, "before")],
    "twice-mid-run-then-before-the-move": [(M, "DecodeJob.batch", 2, "after"), (M, "write_meta", 1, "before")],
    "from-outside-while-decoding": [(M, "DecodeJob.batch", 0, "sleep")],
}


@pytest.mark.parametrize("kills", DECODE_KILLS.values(), ids=DECODE_KILLS.keys())
def test_decoding_killed_and_rerun_gives_the_uninterrupted_outputs(decode_setup, tmp_path, kills):
    from espnet2_almtok.inference import codec_inference

    args, reference = decode_setup
    out = tmp_path / "out"
    for module, attr, nth, when in kills:
        watch = (lambda: len(list((out / "tmp" / "wav").glob("*.wav"))) >= 2) if when == "sleep" else None
        run_killed(module, attr, nth, when, M, [*args, "--output_dir", str(out)], watch=watch)
        assert not (out / ".done").exists()
    codec_inference.main([*args, "--output_dir", str(out)])
    assert not (out / "tmp").exists()
    assert_same(out, reference)


# ---------------------------------------------------------------------------- formatting (stage 2)
@pytest.fixture(scope="module")
def format_setup(tmp_path_factory):
    """A data dir of 6 stereo 22.05 kHz clips and one unreadable file, and the reference outputs
    of uninterrupted runs in one job and in two jobs + merge."""
    from espnet2_almtok.recipe import format_data

    root = tmp_path_factory.mktemp("kill_format")
    src = root / "data"
    src.mkdir()
    scp, text = [], []
    for i in range(6):
        wav = speechlike(0.5 + 0.1 * i, sr=22050, seed=i).numpy()
        soundfile.write(root / f"u{i}.wav", np.stack([wav, 0.5 * wav], 1), 22050)
        scp.append(f"u{i} {root / f'u{i}.wav'}\n")
        text.append(f"u{i} sentence {i}\n")
    (root / "bad.wav").write_text("not audio")
    scp.append(f"u9 {root / 'bad.wav'}\n")
    text.append("u9 bad\n")
    (src / "wav.scp").write_text("".join(scp))
    (src / "text").write_text("".join(text))
    opts = ["--in", str(src), "--fs", "16000", "--min_dur", "0.2", "--max_dur", "30", "--on_bad", "drop"]
    one, two = root / "one", root / "two"
    format_data.main([*opts, "--out", str(one)])
    for job in (1, 2):
        format_data.main([*opts, "--out", str(two), "--nj", "2", "--job", str(job)])
    format_data.main([*opts, "--out", str(two), "--merge", "2"])
    return opts, one, two


F = "espnet2_almtok.recipe.format_data"
FORMAT_KILLS = {  # id -> (--nj, [(module, attr, nth, when, job or None), ...])
    "after-2-files": (1, [("os", "replace", 2, "after", None)]),
    "torn-write-of-the-3rd-file": (1, [("soundfile", "write", 3, "torn", None)]),
    "tables-written-no-done-marker": (1, [(F, "atomic_write_text", 1, "before", None)]),
    "job-2-of-2-mid-run": (2, [("os", "replace", 1, "after", 2)]),
}


@pytest.mark.parametrize("nj, kills", FORMAT_KILLS.values(), ids=FORMAT_KILLS.keys())
def test_formatting_killed_and_rerun_gives_the_uninterrupted_outputs(format_setup, tmp_path, nj, kills):
    from espnet2_almtok.recipe import format_data

    opts, one, two = format_setup
    out = tmp_path / "out"
    for module, attr, nth, when, job in kills:
        if job is None:
            run_killed(module, attr, nth, when, F, [*opts, "--out", out])
        else:
            for j in range(1, job):  # the jobs before it finished
                format_data.main([*opts, "--out", str(out), "--nj", str(nj), "--job", str(j)])
            run_killed(module, attr, nth, when, F, [*opts, "--out", out, "--nj", nj, "--job", job])
        assert not (out / ".done").exists()
    if nj == 1:
        format_data.main([*opts, "--out", str(out)])
    else:  # the recipe reruns every job, then merges
        for j in range(1, nj + 1):
            format_data.main([*opts, "--out", str(out), "--nj", str(nj), "--job", str(j)])
        format_data.main([*opts, "--out", str(out), "--merge", str(nj)])
    assert_same(out, one if nj == 1 else two)


# ---------------------------------------------------------------------------- semantic priors (stage 3)
@pytest.fixture(scope="module")
def prior_setup(tmp_path_factory):
    """A wav.scp of 4 short clips, the stage-3 arguments (s3prl's mfcc upstream: no weights, no
    download; 3 residual codebooks of 8) and the outputs of one uninterrupted run."""
    from espnet2_almtok.recipe import semantic_prior

    root = tmp_path_factory.mktemp("kill_prior")
    lines = []
    for i in range(4):
        soundfile.write(root / f"u{i}.wav", speechlike(0.4 + 0.1 * i, seed=i).numpy(), 16000, "PCM_16")
        lines.append(f"u{i} {root / f'u{i}.wav'}\n")
    (root / "wav.scp").write_text("".join(lines))
    args = ["--wav_scp", str(root / "wav.scp"), "--upstream", "mfcc", "--layer", "0", "--codebook_size", "8",
            "--n_q", "3", "--kmeans_iters", "5"]
    reference = root / "reference"
    semantic_prior.main([*args, "--out_dir", str(reference)])
    return args, reference


S = "espnet2_almtok.recipe.semantic_prior"
# atomic_write_text's calls: 1 feats/.source, 2 .work/.signature, 3 prior_info.yaml, 4 .done.
# Each kill starts a process that imports s3prl (~15 s here), so the points share few runs.
PRIOR_KILLS = {  # id -> [(module, attr, nth, when, what must be there after the kill), ...]
    "after-2-of-4-features-then-in-k-means-of-layer-2": [
        (S, "save_npy", 2, "after", {"features": 2, "work": 0}),
        (S, "kmeans", 2, "before", {"features": 4, "work": 1})],
    "all-published-no-done-marker": [(S, "atomic_write_text", 4, "before", {"features": 4, "published": True})],
}


@pytest.mark.parametrize("kills", PRIOR_KILLS.values(), ids=PRIOR_KILLS.keys())
def test_semantic_priors_killed_and_rerun_give_the_uninterrupted_outputs(prior_setup, tmp_path, kills):
    """Stage 3 killed while it extracts features, while it clusters layer 2 (layer 1 written), and
    with everything written but .done: each rerun resumes (features and layers already written are
    not redone) and ends with the uninterrupted run's files; until then nothing looks finished."""
    from espnet2_almtok.recipe import semantic_prior

    args, reference = prior_setup
    out = tmp_path / "out"
    kept = {}
    for module, attr, nth, when, expect in kills:
        run_killed(module, attr, nth, when, S, [*args, "--out_dir", out])
        assert not (out / ".done").exists()
        feats = {p.name: p.stat().st_mtime_ns for p in (out / "feats").glob("*.npy")}
        assert len(feats) == expect["features"] and not list((out / "feats").glob("*.tmp*"))
        assert all(feats[name] == t for name, t in kept.items()), "a kept feature was extracted again"
        kept = feats
        if "work" in expect:
            assert len(list((out / ".work").glob("codebook_*.npy"))) == expect["work"]
        if not expect.get("published"):  # nothing that stage 5 would take for finished priors
            assert not list(out.glob("codebook_*.npy")) and not (out / "prior_info.yaml").exists()
    semantic_prior.main([*args, "--out_dir", str(out)])
    assert all((out / "feats" / name).stat().st_mtime_ns == t for name, t in kept.items())
    assert_same(out, reference)


# ---------------------------------------------------------------------------- codec training (stage 5)
def codec_train_command(data: Path, out: Path) -> list:
    """Stage 5's command line as ``run.sh`` builds it (``launch_train`` through ``utils/run_jobs.sh``,
    ``--resume true``, ``--ngpu 0``), on the debug config shrunk to 2 epochs of 3 steps."""
    return [str(ROOT / "utils" / "run_jobs.sh"), str(out / "train.log"),
            sys.executable, "-m", "espnet2_almtok.bin.codec_train", "--config", str(DEBUG_CONFIG),
            "--train_data_path_and_name_and_type", f"{data}/wav.scp,audio,sound",
            "--train_shape_file", f"{data}/audio_shape",
            "--valid_data_path_and_name_and_type", f"{data}/wav.scp,audio,sound",
            "--valid_shape_file", f"{data}/audio_shape",
            "--max_epoch", "2", "--num_iters_per_epoch", "3", "--batch_size", "4",
            "--resume", "true", "--output_dir", str(out), "--ngpu", "0"]


def start_training(data: Path, out: Path) -> subprocess.Popen:
    # one thread: the same reductions in every run (and no oversubscription of a busy machine)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(codec_train_command(data, out), cwd=out.parent, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_training(proc: subprocess.Popen, out: Path) -> None:
    try:
        output, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    log = (out / "train.log").read_text() if (out / "train.log").exists() else ""
    assert proc.returncode == 0, f"training failed (rc {proc.returncode}):\n{output[-2000:]}\n{log[-4000:]}"


def model_files(out: Path) -> dict:
    """Each ``*.pth`` but ``checkpoint.pth`` -> (the file it links to, its tensors)."""
    return {p.name: (p.resolve().name, torch.load(p, map_location="cpu", weights_only=True))
            for p in sorted(out.glob("*.pth")) if p.name != "checkpoint.pth"}


def assert_same_tensors(got, want, what: str) -> None:
    """Nested dicts/lists of tensors and plain values, equal tensor for tensor."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.dtype == want.dtype and got.shape == want.shape, what
        assert torch.equal(got, want), f"{what} differs from the uninterrupted run's"
    elif isinstance(want, dict):
        assert sorted(got, key=str) == sorted(want, key=str), f"{what}: keys differ"
        for k in want:
            assert_same_tensors(got[k], want[k], f"{what}[{k!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), f"{what}: lengths differ"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_tensors(g, w, f"{what}[{i}]")
    else:
        assert got == want, f"{what}: {got!r} != {want!r}"


def test_codec_training_killed_in_epoch_2_resumes_to_the_uninterrupted_weights(tmp_path):
    """Stage 5 as the recipe launches it (``utils/run_jobs.sh``, ``--resume true``): the whole
    process group is sent SIGKILL in epoch 2 (``checkpoint.pth`` and ``1epoch.pth`` of epoch 1
    written), then the same command is rerun. It resumes from epoch 1's checkpoint (epoch 1 is
    not trained again), and its model files (``2epoch.pth``, ``latest.pth``, the ``*.best.pth``
    links) and the model and optimizer states of ``checkpoint.pth`` equal those of a run that
    was never interrupted, tensor for tensor: ESPnet reseeds ``random``, numpy and torch with
    ``seed + epoch`` at the start of each epoch, and every draw of ours (``RandomCrop``'s crop,
    the window choice, the MAE masks) comes from those generators, on CPU with one thread.
    ``train.log`` keeps the killed run's lines above a ``# ---- restarted at`` line."""
    from conftest import make_data_dir

    data = make_data_dir(tmp_path)  # 4 clips of 0.8 s: one batch of 4 crops of 0.5 s
    reference, out = tmp_path / "reference", tmp_path / "resumed"
    reference.mkdir()
    out.mkdir()

    finish_training(start_training(data, reference), reference)

    proc = start_training(data, out)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        log = (out / "train.log").read_text() if (out / "train.log").exists() else ""
        if "2/2epoch started" in log:  # logged after epoch 1's checkpoint.pth and 1epoch.pth are saved
            break
        time.sleep(0.05)
    time.sleep(0.5)  # into epoch 2's steps
    assert proc.poll() is None, f"training ended before the kill (rc {proc.returncode})"
    os.killpg(proc.pid, signal.SIGKILL)  # run_jobs.sh, its subshell and python
    proc.communicate(timeout=60)
    assert (out / "checkpoint.pth").is_file() and (out / "1epoch.pth").is_file()
    assert not (out / "2epoch.pth").exists(), "epoch 2 finished before the kill"
    killed_log = (out / "train.log").read_text()
    epoch1_mtime = (out / "1epoch.pth").stat().st_mtime_ns

    finish_training(start_training(data, out), out)

    log = (out / "train.log").read_text()
    assert log.startswith(killed_log), "train.log lost the killed run's lines"
    rerun_log = log[len(killed_log):]
    assert rerun_log.startswith("# ---- restarted at")
    assert f"The training was resumed using {out / 'checkpoint.pth'}" in rerun_log
    assert "1epoch results" not in rerun_log and "2epoch results" in rerun_log  # epoch 1 not redone
    if (out / "1epoch.pth").exists():
        assert (out / "1epoch.pth").stat().st_mtime_ns == epoch1_mtime

    got, want = model_files(out), model_files(reference)
    assert "2epoch.pth" in want and want["latest.pth"][0] == "2epoch.pth" and "2epoch.pth" in got
    assert_same_tensors(got["2epoch.pth"][1], want["2epoch.pth"][1], "2epoch.pth")
    assert {k: v[0] for k, v in got.items()} == {k: v[0] for k, v in want.items()}  # same files and links
    for name in want:
        assert_same_tensors(got[name][1], want[name][1], name)
    got_ckpt, want_ckpt = (torch.load(d / "checkpoint.pth", map_location="cpu", weights_only=False)
                           for d in (out, reference))
    assert_same_tensors(got_ckpt["model"], want_ckpt["model"], "checkpoint.pth model")
    assert_same_tensors(got_ckpt["optimizers"], want_ckpt["optimizers"], "checkpoint.pth optimizers")
