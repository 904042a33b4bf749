"""The ESPnet GAN codec: the two training stages as the recipe runs them."""

import pytest
import torch
import yaml

from conftest import recipe_default, speechlike
from espnet2_almtok.bench.measure import train_steps
from espnet2_almtok.codec.almtok import ALMTokenizerCodec


def freeze_like_espnet(codec: torch.nn.Module, prefixes) -> None:
    """ESPnet's --freeze_param on the model ``codec.<name>``: prefix match on dotted names."""
    for t in prefixes:
        t = t[len("codec."):]
        for k, p in codec.named_parameters():
            if k.startswith(t + ".") or k == t:
                p.requires_grad = False


def codec_from(debug_config, **overrides) -> ALMTokenizerCodec:
    conf = yaml.safe_load(open(debug_config))["codec_conf"]
    conf.update(overrides)
    return ALMTokenizerCodec(**conf)


def test_stage2_keeps_the_codes_while_the_reconstruction_improves(debug_config):
    torch.manual_seed(0)
    stage2_conf = dict(kv.split("=") for kv in recipe_default("stage2_codec_conf").split())
    assert stage2_conf == {"use_mae_loss": "false", "use_ar_loss": "false"}
    codec = codec_from(debug_config, use_mae_loss=False, use_ar_loss=False,
                       generator_params={**yaml.safe_load(open(debug_config))["codec_conf"]["generator_params"],
                                         "windows": [4]})
    freeze_like_espnet(codec, recipe_default("stage2_freeze_param").split())
    gen = codec.generator
    trainable = {n for n, p in gen.named_parameters() if p.requires_grad}
    assert trainable and all(n.split(".")[0] in {"quantizer", "decoder_mask_token", "decoder", "depatchify"}
                             for n in trainable), trainable
    assert not any(n.startswith("quantizer.project_in") or n.startswith("quantizer.layers") for n in trainable)

    clip = speechlike(0.5).view(1, -1).repeat(2, 1)
    codes_before = gen.encode(clip.unsqueeze(1), 4)
    stats = []
    train_steps(codec, [clip] * 30, lr=2e-3, on_step=lambda i, s: stats.append(s))  # trainable params only
    assert not any("mae_loss" in s or "ar_loss" in s for s in stats)
    recon = [s["reconstruct_loss"] for s in stats]
    assert torch.equal(gen.encode(clip.unsqueeze(1), 4), codes_before)
    assert sum(recon[-5:]) / 5 < 0.8 * sum(recon[:5]) / 5, recon


def test_stage1_config_trains_both_semantic_losses(debug_config):
    conf = yaml.safe_load(open(debug_config))["codec_conf"]
    assert conf["use_mae_loss"] is True and conf["use_ar_loss"] is True
    codec = codec_from(debug_config).train()
    out = codec(speechlike(0.5).view(1, -1), forward_generator=True)
    assert out["stats"]["mae_loss"] > 0 and out["stats"]["ar_loss"] > 0


@pytest.mark.parametrize("use_mae", [True, False])
def test_validation_measures_the_regime_that_is_trained(debug_config, use_mae):
    """Stage 1 validates with the MAE masking it trains with (same masks every epoch);
    stage 2 validates clean, as it trains."""
    codec = codec_from(debug_config, use_mae_loss=use_mae).eval()
    clip = speechlike(0.5).view(1, -1)
    with torch.no_grad():
        a = codec(clip, forward_generator=True)["stats"]
        b = codec(clip, forward_generator=True)["stats"]
        assert a["mel_loss"] == b["mel_loss"]  # deterministic across validation passes
        if use_mae:
            assert a["mae_loss"] > 0
            codec.use_mae_loss = False
            clean = codec(clip, forward_generator=True)["stats"]
            # the config's mae_pass separate decodes the clean pass either way
            assert codec.generator.mae_pass == "separate" and clean["mel_loss"] == a["mel_loss"]
            codec.use_mae_loss, codec.generator.mae_pass = True, "shared"
            shared = codec(clip, forward_generator=True)["stats"]
            assert shared["mel_loss"] != clean["mel_loss"]  # shared: the masked pass is decoded
        else:
            assert "mae_loss" not in a


def test_padded_batch_trains_on_real_samples_only(debug_config):
    """audio_lengths reach the codec: a short clip padded in a batch gets the same codes as alone."""
    codec = codec_from(debug_config, use_mae_loss=False).eval()
    short, long = speechlike(0.3, seed=1), speechlike(0.6, seed=2)
    batch = torch.zeros(2, long.numel())
    batch[0, : short.numel()], batch[1] = short, long
    with torch.no_grad():
        out = codec.generator(batch.unsqueeze(1), 4, lengths=torch.tensor([short.numel(), long.numel()]))
        alone = codec.generator(short.view(1, 1, -1), 4)
    n = alone["codes"].shape[-1]
    assert torch.equal(out["codes"][0, :, :n], alone["codes"][0])
    assert out["resyn"][0, 0, short.numel():].abs().max() == 0
