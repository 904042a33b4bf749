"""The ESPnet entry points: --print_config round trip, a few trainer steps, checkpoint loading."""

from pathlib import Path

import pytest
import soundfile
import torch
import yaml

from conftest import run_python as run
from conftest import make_data_dir, speechlike


def test_print_config_round_trip(tmp_path, debug_config):
    proc = run(["-m", "espnet2_almtok.bin.codec_train", "--config", str(debug_config), "--print_config"],
               cwd=tmp_path)
    assert "nltk_data" not in proc.stderr  # no NLTK download attempts at start-up
    out = proc.stdout
    printed = yaml.safe_load(out)
    assert printed["codec"] == "almtok"
    gen = printed["codec_conf"]["generator_params"]
    assert gen["hidden_dim"] == 64 and gen["windows"] == list(range(2, 11))
    (tmp_path / "printed.yaml").write_text(out)
    again = yaml.safe_load(run(["-m", "espnet2_almtok.bin.codec_train", "--config", "printed.yaml",
                                "--print_config"], cwd=tmp_path).stdout)
    assert again == printed


def test_espnet_codecs_stay_available_in_the_task():
    from espnet2_almtok.tasks.codec import codec_choices

    assert {"almtok", "soundstream", "encodec", "dac"} <= set(codec_choices.choices())


def test_trainer_checkpoint_loads_through_from_pretrained(tmp_path, debug_config):
    from espnet2_almtok import ALMTokenizer

    data = make_data_dir(tmp_path)
    exp = tmp_path / "exp"
    run(["-m", "espnet2_almtok.bin.codec_train", "--config", str(debug_config),
         "--train_data_path_and_name_and_type", f"{data}/wav.scp,audio,sound",
         "--train_shape_file", f"{data}/audio_shape",
         "--valid_data_path_and_name_and_type", f"{data}/wav.scp,audio,sound",
         "--valid_shape_file", f"{data}/audio_shape",
         "--output_dir", str(exp), "--max_epoch", "1", "--num_iters_per_epoch", "3",
         "--ngpu", "0"], cwd=tmp_path)
    assert (exp / "config.yaml").is_file() and (exp / "checkpoint.pth").is_file()
    # the learning rates follow the config's per-step warm-up (warmuplr, warmup_steps 8): after
    # 3 G+D steps each optimizer runs the 4th at 4/8 of its lr (an epoch-step schedule: at lr)
    state = torch.load(exp / "checkpoint.pth", map_location="cpu", weights_only=False)
    conf = yaml.safe_load(debug_config.read_text())
    for i, suf in enumerate(("", "2")):
        assert conf[f"scheduler{suf}"] == "warmuplr" and conf[f"scheduler{suf}_conf"]["warmup_steps"] == 8
        assert state["schedulers"][i]["last_epoch"] == 3
        lr = conf[f"optim{suf}_conf"]["lr"]
        assert state["optimizers"][i]["param_groups"][0]["lr"] == pytest.approx(lr * 4 / 8)
    tok = ALMTokenizer.from_pretrained(exp)
    trained = torch.load(exp / "latest.pth", map_location="cpu")
    key = "codec.generator.query_token"
    assert torch.equal(tok.generator.state_dict()["query_token"], trained[key])
    codes = tok.encode(speechlike(0.5), 16000, window=4)
    assert codes.shape == (1, 3, 7)
    assert tok.decode(codes, window=4).shape == (1, 7 * 4 * 320)
    check_the_config_stamp(exp, tmp_path)


def check_the_config_stamp(exp, tmp_path):
    """The training stamped its config.yaml; an edit of it afterwards is refused by every loader
    (ours, ESPnet's build_model_from_file through our task, packing); deleting the stamp loads it."""
    from espnet2_almtok import ALMTokenizer
    from espnet2_almtok.config_stamp import STAMP_NAME
    from espnet2_almtok.inference.gan_codec_inference import ALMTokInferenceTask
    from espnet2_almtok.recipe.pack import pack

    assert (exp / STAMP_NAME).is_file()
    conf = yaml.safe_load((exp / "config.yaml").read_text())
    conf["crop_length"] = 48000  # the coding context of a longer crop: other codes, no shape error
    (exp / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    for load in (lambda: ALMTokenizer.from_pretrained(exp),
                 lambda: ALMTokInferenceTask.build_model_from_file(exp / "config.yaml", exp / "latest.pth"),
                 lambda: ALMTokInferenceTask.build_model_from_file(None, exp / "latest.pth"),  # config beside it
                 lambda: pack(exp, tmp_path / "packed.zip")):
        with pytest.raises(ValueError, match=r"is not the config its training wrote \(changed: 'crop_length'\)"):
            load()
    assert not (tmp_path / "packed.zip").exists()
    (exp / STAMP_NAME).unlink()
    assert ALMTokenizer.from_pretrained(exp).chunking.context_s == pytest.approx(3.0)


# ------------------------------------------------------------------ multi-process DDP (gloo, CPU)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_ddp(args, cwd: Path, log_dir: Path, world_size: int = 2, timeout: int = 600) -> None:
    """``codec_train ARGS`` as ``world_size`` DDP processes (gloo on CPU), launched as ESPnet's
    non-multiprocessing mode expects (one process per rank); fails with each rank's log."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for rank in range(world_size):
        log = open(log_dir / f"rank{rank}.log", "w")
        cmd = [sys.executable, "-m", "espnet2_almtok.bin.codec_train", *args, "--ngpu", "0",
               "--multiprocessing_distributed", "false", "--dist_backend", "gloo",
               "--dist_init_method", "env://", "--dist_world_size", str(world_size),
               "--dist_rank", str(rank), "--dist_master_addr", "127.0.0.1", "--dist_master_port", str(port)]
        procs.append((subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    failed = []
    for rank, (proc, log) in enumerate(procs):
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p, _ in procs:
                p.kill()
            rc = "timeout (deadlock?)"
        log.close()
        if rc != 0:
            failed.append(f"rank {rank}: {rc}\n" + (log_dir / f"rank{rank}.log").read_text()[-3000:])
    assert not failed, "\n".join(failed)


@pytest.mark.slow  # ~2-5 min on 2 cores: two ranks, two stages and a resume
def test_ddp_two_processes_train_both_stages_and_resume(tmp_path, debug_config):
    """The debug config with 2 DDP processes: stage 1, a resume, then stage 2 from stage 1 with the
    recipe's freeze list. Utterances of unequal lengths (some shorter than the training crop)."""
    from espnet2_almtok import ALMTokenizer
    from conftest import recipe_default

    data = make_data_dir(tmp_path, lengths=[0.35, 0.6, 0.9, 1.3, 0.45, 1.1])
    common = ["--config", str(debug_config),
              "--train_data_path_and_name_and_type", f"{data}/wav.scp,audio,sound",
              "--train_shape_file", f"{data}/audio_shape",
              "--valid_data_path_and_name_and_type", f"{data}/wav.scp,audio,sound",
              "--valid_shape_file", f"{data}/audio_shape", "--num_iters_per_epoch", "3"]
    exp1, exp2 = tmp_path / "exp1", tmp_path / "exp2"

    train_ddp([*common, "--output_dir", str(exp1), "--max_epoch", "1"], tmp_path, tmp_path / "log1")
    assert (exp1 / "checkpoint.pth").is_file() and (exp1 / "1epoch.pth").is_file()
    train_ddp([*common, "--output_dir", str(exp1), "--max_epoch", "2", "--resume", "true"], tmp_path,
              tmp_path / "log1b")
    assert "The training was resumed using" in (tmp_path / "log1b" / "rank0.log").read_text()
    assert (exp1 / "2epoch.pth").is_file()
    assert not (tmp_path / "log1b" / "rank0.log").read_text().count("1epoch results")  # epoch 1 not redone

    stage2 = [f"--codec_conf={kv}" for kv in recipe_default("stage2_codec_conf").split()]
    train_ddp([*common, "--output_dir", str(exp2), "--max_epoch", "1", *stage2,
               "--init_param", str(exp1 / "2epoch.pth"),
               "--freeze_param", *recipe_default("stage2_freeze_param").split()], tmp_path, tmp_path / "log2")
    tok1 = ALMTokenizer.from_pretrained(exp1, model_file=exp1 / "2epoch.pth")
    tok2 = ALMTokenizer.from_pretrained(exp2, model_file=exp2 / "1epoch.pth")
    clip = speechlike(0.8, seed=9)
    assert torch.equal(tok1.encode(clip, 16000, window=4), tok2.encode(clip, 16000, window=4))
    dec1, dec2 = tok1.generator.decoder.state_dict(), tok2.generator.decoder.state_dict()
    assert any(not torch.equal(dec1[k], dec2[k]) for k in dec1)  # the decoder side did train
