"""bench/learning_floor: each path reconstructs at the input's shape, and its training lowers the
mel distance on the clip it trains on."""

import copy

import pytest
import torch
import yaml

from conftest import speechlike


@pytest.fixture
def codec(debug_config):
    from espnet2_almtok.codec.almtok import ALMTokenizerCodec

    torch.manual_seed(0)
    return ALMTokenizerCodec(**yaml.safe_load(open(debug_config))["codec_conf"])


@pytest.mark.parametrize("path", ["conv", "transformer", "vq", "frames", "pooled"])
def test_each_path_returns_the_input_length(codec, path):
    from espnet2_almtok.bench.learning_floor import reconstruct

    wav = torch.randn(2, 1, 7000) * 0.1
    resyn, vq_loss, mae = reconstruct(codec.generator, wav, 4, path)
    assert resyn.shape == wav.shape and vq_loss.dim() == 0 and mae.item() == 0.0
    assert (vq_loss > 0) == (path == "vq")  # only the quantizer adds its terms


def test_training_lowers_the_mel_distance_on_its_clip(codec, one_thread):
    from espnet2_almtok.bench.learning_floor import train

    clip = speechlike(0.5)
    curve = train(codec.generator, codec, lambda: clip.view(1, -1).repeat(2, 1), [clip], "transformer",
                  cpu_seconds=8.0, lr=2e-3, points=2)
    assert [c["steps"] for c in curve][0] == 0 and curve[-1]["steps"] > curve[1]["steps"] > 0
    assert curve[-1]["dev_mel"] < curve[0]["dev_mel"] - 0.3


def test_degradations_keep_the_shape_and_scale_with_severity():
    from espnet2_almtok.bench.learning_floor import degradations
    from espnet2_almtok.recipe.score import Scorer

    clip = speechlike(1.0)
    scorer = Scorer(16000)
    d = {name: scorer.mel_distance(clip, f(clip)) for name, f in degradations().items()}
    assert all(f(clip).shape == clip.shape for f in degradations().values())
    assert all(v > 0.05 for v in d.values())  # each is a real change
    assert scorer.mel_distance(clip, clip) < 1e-6


def test_a_fixed_window_trains_and_scores_at_that_window_only(codec, monkeypatch):
    from espnet2_almtok.bench import learning_floor

    seen = []
    real = learning_floor.reconstruct
    monkeypatch.setattr(learning_floor, "reconstruct", lambda g, wav, w, path, **kw: seen.append(w) or real(g, wav, w, path, **kw))
    clip = speechlike(0.5)
    learning_floor.train(codec.generator, codec, lambda: clip.view(1, -1).repeat(2, 1), [clip], "transformer",
                         cpu_seconds=1.0, lr=1e-3, points=1, window=2)
    assert seen and set(seen) == {2}
    with pytest.raises(ValueError, match="w=11 was not trained"):
        learning_floor.train(codec.generator, codec, lambda: clip.view(1, -1), [clip], "transformer",
                             cpu_seconds=1.0, lr=1e-3, points=1, window=11)


def test_mae_training_masks_the_encoder_input_of_the_whole_generator_only(codec):
    from espnet2_almtok.bench.learning_floor import main, reconstruct

    wav = torch.randn(1, 1, 7000) * 0.1
    torch.manual_seed(1)
    start = copy.deepcopy(codec.generator)  # each pass from the same codebook-input statistics
    clean, _, no_mae = reconstruct(codec.generator, wav, 4, "vq")
    for mae_pass in ("shared", "separate"):
        generator = copy.deepcopy(start)
        generator.mae_pass = mae_pass
        masked, _, mae = reconstruct(generator, wav, 4, "vq", mae=True)
        # shared: the masked pass is the one decoded; separate: it only feeds the MAE loss
        assert masked.shape == wav.shape and torch.allclose(clean, masked, atol=1e-6) == (mae_pass == "separate")
        assert no_mae.item() == 0.0 and mae > 0
    with pytest.raises(ValueError, match="path vq"):
        reconstruct(codec.generator, wav, 4, "conv", mae=True)
    with pytest.raises(SystemExit):  # refused before any data or priors are loaded
        main(["--path", "frames", "--mae", "--data_dir", "/nonexistent"])


def test_mae_loss_trains_the_encoder_on_the_masked_pass_and_separate_pass_decodes_clean(codec):
    from espnet2_almtok.bench import learning_floor

    clip = speechlike(0.5)
    before = codec.generator.mae_mask_token.detach().clone()
    learning_floor.train(codec.generator, codec, lambda: clip.view(1, -1).repeat(2, 1), [clip], "vq",
                         cpu_seconds=1.0, lr=1e-3, points=1, mae=True, mae_loss=True)
    assert not torch.equal(codec.generator.mae_mask_token, before)  # the MAE loss reached the mask token
    codec.generator.mae_pass = "separate"
    wav = clip.view(1, 1, -1)
    torch.manual_seed(2)
    assert torch.allclose(learning_floor.reconstruct(codec.generator.eval(), wav, 4, "vq", mae=True)[0],
                          learning_floor.reconstruct(codec.generator, wav, 4, "vq")[0], atol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--mae_loss"], "need --mae"),
    (["--mae_pass", "separate"], "need --mae"),
    (["--mae", "--mae_pass", "separate"], "add --mae_loss"),
])
def test_mae_options_that_train_nothing_are_refused(args, message, capsys):
    from espnet2_almtok.bench.learning_floor import main

    with pytest.raises(SystemExit):  # refused before any data or priors are loaded
        main(["--data_dir", "/nonexistent"] + args)
    assert message in capsys.readouterr().err


def test_warmup_and_betas_reach_the_optimizer(codec, monkeypatch):
    """``--warmup_steps`` ramps the learning rate per step, ``--betas`` are Adam's."""
    from espnet2_almtok.bench import learning_floor

    seen = []
    real_step = torch.optim.Adam.step

    def step(self, *a, **kw):
        seen.append((self.param_groups[0]["lr"], self.param_groups[0]["betas"]))
        return real_step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    clip = speechlike(0.3)
    learning_floor.train(codec.generator, codec, lambda: clip.view(1, -1), [clip], "conv", cpu_seconds=4.0,
                         lr=1e-3, points=1, betas=(0.9, 0.98), warmup_steps=100)
    assert len(seen) >= 3 and all(b == (0.9, 0.98) for _, b in seen)
    assert [lr for lr, _ in seen[:3]] == pytest.approx([1e-5, 2e-5, 3e-5])


def test_spreads_are_zero_for_a_constant_front_end_and_recorded_on_the_curve(codec):
    from espnet2_almtok.bench.learning_floor import spreads, train

    clip = speechlike(0.5)
    s = spreads(codec.generator, clip)
    assert s["frames"] > 0.01 and s["queries"] > 0.01
    last = codec.generator.patchify.net[-1]
    with torch.no_grad():  # a stem that emits one frame whatever the audio
        last.weight.zero_()
        last.bias.normal_()
    assert spreads(codec.generator, clip)["frames"] < 1e-5
    curve = train(codec.generator, codec, lambda: clip.view(1, -1), [clip], "conv", cpu_seconds=0.5, lr=1e-3, points=1)
    assert all(set(c["spread"]) == {"frames", "queries"} for c in curve)
