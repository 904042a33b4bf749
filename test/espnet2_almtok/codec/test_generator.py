import pytest
import torch
import yaml

from espnet2_almtok.codec.almtok import ALMTokenizerCodec
from espnet2_almtok.codec.generator import ALMTokenizerGenerator


def tiny_generator(**kw):
    conf = dict(hidden_dim=32, patch_channels=4, encoder_layers=1, decoder_layers=1, num_heads=4,
                n_q=3, codebook_size=32, codebook_dim=16, n_mels=20, ar_dim=16, ar_layers=1)
    conf.update(kw)
    return ALMTokenizerGenerator(**conf).eval()


@pytest.mark.parametrize("window", [2, 3, 4, 6, 10])
def test_token_rate_and_shapes_for_each_window(window):
    gen = tiny_generator()
    assert gen.hop_length == 320 and gen.frame_rate == 50.0
    wav = torch.randn(2, 1, 16000) * 0.1  # 1 s
    codes = gen.encode(wav, window)
    n_tokens = -(-50 // window)  # ceil(50 / w): the tail is padded to a whole token
    assert codes.shape == (2, 3, n_tokens) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < 32
    out = gen.decode(codes, window)
    assert out.shape == (2, 1, n_tokens * window * 320) and out.dtype == torch.float32


def test_training_forward_returns_all_losses_and_input_length():
    gen = tiny_generator().train()
    wav = torch.randn(2, 1, 6000) * 0.1
    out = gen(wav, window=4, use_mae=True, use_ar=True)
    assert out["resyn"].shape == wav.shape
    assert out["codes"].shape == (2, 3, 5)  # 6000 samples -> 18.75 frames -> 5 tokens of w=4
    for k in ("commit", "codebook", "mae", "ar"):
        assert out[k].dim() == 0 and torch.isfinite(out[k])
    assert out["mae"] > 0 and out["ar"] > 0


def test_separate_mae_pass_decodes_the_clean_encoding_and_trains_the_encoder_on_the_masked_one():
    torch.manual_seed(0)
    wav = torch.randn(2, 1, 6400) * 0.1  # 20 frames
    mask = torch.zeros(2, 20, dtype=torch.bool)
    mask[:, 3:11] = True
    shared, separate = tiny_generator(), tiny_generator(mae_pass="separate")
    separate.load_state_dict(shared.state_dict())
    clean = shared(wav, 4)
    out_sep = separate(wav, 4, use_mae=True, mae_mask=mask)
    out_shared = shared(wav, 4, use_mae=True, mae_mask=mask)
    # separate: tokens and resynthesis are those of the clean pass; shared: of the masked one
    assert torch.equal(out_sep["codes"], clean["codes"])
    assert torch.allclose(out_sep["resyn"], clean["resyn"], atol=1e-6)
    assert not torch.allclose(out_shared["resyn"], clean["resyn"], atol=1e-4)
    assert torch.allclose(out_sep["mae"], out_shared["mae"])  # the same masked pass feeds MAE
    separate.zero_grad()
    out_sep["mae"].backward()
    assert separate.mae_mask_token.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in separate.encoder.parameters())


def test_unknown_mae_pass_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"mae_pass must be one of \('shared', 'separate'\)"):
        tiny_generator(mae_pass="twice")


@pytest.mark.parametrize("value", ["false", 1, None, "both"])
def test_query_shortcut_that_is_not_a_bool_is_refused(value):
    with pytest.raises(ValueError, match="query_shortcut must be true or false"):
        tiny_generator(query_shortcut=value)


def test_one_sided_query_shortcut_changes_that_side_only():
    torch.manual_seed(0)
    frames, queries = torch.randn(1, 8, 32), torch.randn(1, 2, 32)
    outs = {}
    for side in (False, "encoder", "decoder", True):
        torch.manual_seed(1)
        gen = tiny_generator(query_shortcut=side)
        with torch.no_grad():
            outs[side] = gen.encode_frames(frames, 4)[0], gen.decode_frames(queries, 4)
    same = lambda a, b: torch.allclose(a, b, atol=1e-6)
    assert not same(outs["encoder"][0], outs[False][0]) and same(outs["encoder"][0], outs[True][0])
    assert same(outs["encoder"][1], outs[False][1])
    assert same(outs["decoder"][0], outs[False][0]) and same(outs["decoder"][1], outs[True][1])
    assert not same(outs["decoder"][1], outs[False][1])


def test_untrained_window_is_rejected_with_the_supported_list():
    gen = tiny_generator(windows=[2, 4])
    with pytest.raises(ValueError, match=r"w=3 was not trained.*\[2, 4\]"):
        gen.encode(torch.randn(1, 1, 3200), 3)


@pytest.mark.parametrize("query_shortcut", [False, True])
def test_batch_with_padding_encodes_like_one_by_one(query_shortcut):
    gen = tiny_generator(query_shortcut=query_shortcut)
    a, b = torch.randn(7000) * 0.1, torch.randn(13000) * 0.1
    batch = torch.zeros(2, 1, 13000)
    batch[0, 0, :7000], batch[1, 0] = a, b
    codes = gen.encode(batch, 4, lengths=torch.tensor([7000, 13000]))
    ca = gen.encode(a.view(1, 1, -1), 4)
    cb = gen.encode(b.view(1, 1, -1), 4)
    assert torch.equal(codes[0, :, : ca.shape[-1]], ca[0])
    assert torch.equal(codes[1], cb[0])


def test_a_few_dozen_steps_on_a_fixed_clip_lower_the_reconstruction_loss(debug_config):
    from conftest import speechlike

    torch.manual_seed(0)
    conf = yaml.safe_load(open(debug_config))["codec_conf"]
    from espnet2_almtok.bench.measure import train_steps

    codec = ALMTokenizerCodec(**conf)
    clip = speechlike(0.5).view(1, -1).repeat(2, 1)
    recon = []
    train_steps(codec, [clip] * 30, lr=2e-3, on_step=lambda i, s: recon.append(s["reconstruct_loss"]))
    first, last = sum(recon[:5]) / 5, sum(recon[-5:]) / 5
    assert last < 0.8 * first, (first, last)


def test_meta_info_follows_the_espnet_codec_contract(debug_config):
    conf = yaml.safe_load(open(debug_config))["codec_conf"]
    codec = ALMTokenizerCodec(**conf).eval()
    meta = codec.meta_info()
    assert meta["fs"] == 16000 and meta["num_streams"] == 3
    assert meta["frame_shift"] == 320 * 4 and meta["code_size_per_stream"] == [64] * 3
    x = torch.randn(4000) * 0.1
    codes = codec.encode(x)  # ESPnet layout: (n_q, B, N)
    assert codes.shape == (3, 1, 4)
    res = codec.inference(x)
    assert res["wav"].shape == (4000,) and torch.equal(res["codec"], codes)


def test_training_and_inference_give_the_same_codes():
    """The codes stage 1's decoder and AR head learn from are the codes inference gives: a
    training-mode forward of 4 clips x 3 s codes them as ``encode`` does (the codebook-input
    norm uses its running statistics in both), also after some training updates."""
    from conftest import speechlike

    torch.manual_seed(0)
    gen = tiny_generator(windows=[4])
    wav = torch.stack([speechlike(3.0, seed=s) * (1 + s) for s in range(4)]).unsqueeze(1)
    opt = torch.optim.Adam(gen.parameters(), lr=1e-3)
    for step in range(3):
        gen.train()
        out = gen(wav, 4)
        expected = gen.eval().encode(wav, 4)
        gen.train()
        assert torch.equal(gen(wav, 4)["codes"], expected), step
        opt.zero_grad()
        (out["commit"] + out["resyn"].pow(2).mean()).backward()
        opt.step()
