"""The codec task's GAN trainer: bf16 autocast in both turns, clipping per stepping optimizer,
the same codes in training and inference under bf16, and ESPnet's trainer running it."""

import pytest
import torch
import yaml

from conftest import run_python as run
from conftest import speechlike
from espnet2_almtok.codec.almtok import ALMTokenizerCodec
from espnet2_almtok.train.gan_trainer import autocast_dtype, gan_turn, optimizer_parameters


def debug_codec(debug_config, seed: int = 0) -> ALMTokenizerCodec:
    conf = yaml.safe_load(open(debug_config))["codec_conf"]
    conf["generator_params"] = {**conf["generator_params"], "windows": [4]}
    torch.manual_seed(seed)
    return ALMTokenizerCodec(**conf).train()


def audio_batch() -> torch.Tensor:
    return torch.stack([speechlike(0.5, seed=s) for s in range(2)])


def sgd_pair(codec, lr: float = 0.0):
    return [torch.optim.SGD(codec.generator.parameters(), lr), torch.optim.SGD(codec.discriminator.parameters(), lr)]


def snapshot(module: torch.nn.Module):
    return [p.detach().clone() for p in module.parameters()]


def moved(before, module: torch.nn.Module) -> float:
    return float(torch.sqrt(sum(((p.detach() - b) ** 2).sum() for b, p in zip(before, module.parameters()))))


@pytest.mark.parametrize("turn", ["generator", "discriminator"])
def test_bf16_autocast_trains_each_turn_and_steps_only_its_network(debug_config, turn):
    codec = debug_codec(debug_config)
    own, other = (codec.generator, codec.discriminator) if turn == "generator" else (codec.discriminator, codec.generator)
    own_before, other_before = snapshot(own), snapshot(other)
    out = gan_turn(codec, {"audio": audio_batch()}, turn, sgd_pair(codec, 1e-3), [None, None], torch.bfloat16,
                   grad_clip=1e9)
    assert out["stepped"] and torch.isfinite(out["grad_norm"])
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in out["stats"].values())
    assert moved(own_before, own) > 0 and moved(other_before, other) == 0
    assert all(p.grad is None or not p.grad.any() for p in codec.parameters())  # cleared for the next turn


def test_bf16_gradient_is_close_to_float32(debug_config):
    norms = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        codec = debug_codec(debug_config)
        torch.manual_seed(1)  # the MAE masks
        norms[name] = float(gan_turn(codec, {"audio": audio_batch()}, "generator", sgd_pair(codec), [None, None],
                                     dtype, grad_clip=1e9)["grad_norm"])
    assert norms["bf16"] == pytest.approx(norms["fp32"], rel=0.05), norms


def test_clipping_acts_on_the_stepping_optimizers_parameters_only(debug_config):
    """The generator turn also leaves gradients on the discriminator (its adversarial loss runs
    through it); the norm clipped and reported is the generator's alone, and the step it takes
    has exactly the clipped size (SGD, lr 1: the update is minus the clipped gradient)."""
    codec = debug_codec(debug_config)
    torch.manual_seed(1)
    out = codec(audio_batch(), forward_generator=True)
    out["loss"].backward()
    gen_norm = torch.norm(torch.stack([p.grad.norm() for p in codec.generator.parameters() if p.grad is not None]))
    all_norm = torch.norm(torch.stack([p.grad.norm() for p in codec.parameters() if p.grad is not None]))
    assert all_norm > 1.00005 * gen_norm  # the discriminator has gradient here: what ESPnet's clipping counted

    codec = debug_codec(debug_config)
    before = snapshot(codec.generator)
    torch.manual_seed(1)
    out = gan_turn(codec, {"audio": audio_batch()}, "generator", sgd_pair(codec, 1.0), [None, None], None,
                   grad_clip=0.5)
    assert float(out["grad_norm"]) == pytest.approx(float(gen_norm), rel=2e-6)
    assert moved(before, codec.generator) == pytest.approx(0.5, rel=1e-3)


def test_float16_unscales_before_clipping_the_same_set(debug_config):
    """float16 keeps a GradScaler: the norm reported is the unscaled gradient's (ESPnet's trainer
    clipped with the other network's gradients still multiplied by the scale)."""
    norms = {}
    for name, dtype, scaler in (("fp32", None, None),
                                ("fp16", torch.float16, torch.amp.GradScaler("cpu", init_scale=256.0))):
        codec = debug_codec(debug_config)
        torch.manual_seed(1)
        out = gan_turn(codec, {"audio": audio_batch()}, "generator", sgd_pair(codec), [None, None], dtype, scaler,
                       grad_clip=1e9)
        assert out["stepped"], name
        norms[name] = float(out["grad_norm"])
    assert norms["fp16"] == pytest.approx(norms["fp32"], rel=0.05), norms


def test_training_and_inference_codes_agree_under_bf16(debug_config):
    codec = debug_codec(debug_config)
    gen = codec.generator
    wav = torch.stack([speechlike(3.0, seed=s) * (1 + s) for s in range(4)]).unsqueeze(1)
    gen(wav, 4)  # the codebook-space norm's first update (a training forward updates it after coding)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eval_codes = gen.eval().encode(wav, 4)
        train_codes = gen.train()(wav, 4)["codes"]
    assert torch.equal(train_codes, eval_codes)


def test_validation_runs_the_generator_once_per_batch(debug_config):
    codec = debug_codec(debug_config).eval()
    calls = []
    codec.generator.register_forward_hook(lambda *a: calls.append(1))
    audio = audio_batch()
    with torch.no_grad():
        d = codec(audio, forward_generator=False)["stats"]
        g = codec(audio, forward_generator=True)["stats"]
        assert len(calls) == 1 and d and g
        codec(audio_batch(), forward_generator=False)  # another batch: its own pass
        codec(audio, forward_generator=True)  # not the tensor the cached pass was made from
        codec(audio, forward_generator=True)  # the same turn again: no reuse
    assert len(calls) == 4


def test_autocast_dtype_choices():
    assert autocast_dtype(False, "auto", "cpu") is None
    assert autocast_dtype(True, "auto", "cpu") is torch.bfloat16
    assert autocast_dtype(True, "float16", "cpu") is torch.float16
    with pytest.raises(ValueError, match="choose one of"):
        autocast_dtype(True, "int8", "cpu")


@pytest.mark.slow  # ~1.5 min on 2 cores (the paper-size model); the turns above cover bf16 in the default suite
def test_espnet_trainer_trains_the_paper_config_under_use_amp(tmp_path):
    """ESPnet's training entry point with the paper config, --use_amp true on a CPU: bf16
    autocast (said in the log), a G+D step and a validation pass, finite weights saved."""
    from conftest import ROOT, make_data_dir

    data = make_data_dir(tmp_path, n=2, seconds=1.0)
    exp = tmp_path / "exp"
    proc = run(["-m", "espnet2_almtok.bin.codec_train", "--config", str(ROOT / "conf/tuning/train_almtok_paper.yaml"),
                "--train_data_path_and_name_and_type", f"{data}/wav.scp,audio,sound",
                "--train_shape_file", f"{data}/audio_shape",
                "--valid_data_path_and_name_and_type", f"{data}/wav.scp,audio,sound",
                "--valid_shape_file", f"{data}/audio_shape",
                "--output_dir", str(exp), "--max_epoch", "1", "--num_iters_per_epoch", "1",
                "--batch_size", "2", "--crop_length", "12000", "--num_workers", "0", "--use_amp", "true",
                "--ngpu", "0"], cwd=tmp_path)
    assert "autocast torch.bfloat16" in proc.stderr
    assert "--use_amp with --use_tf32" in proc.stderr  # the paper config asks for TF32; both apply
    state = torch.load(exp / "latest.pth", map_location="cpu")
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
