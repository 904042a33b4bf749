"""The MAE mask and the AR loss along RVQ depth."""

import copy

import torch

from espnet2_almtok.codec.semantic_losses import ARHead, random_frame_mask
from test_generator import tiny_generator


def test_frame_mask_draws_only_real_frames_and_the_requested_share():
    lengths = torch.tensor([10, 25, 40])
    mask = random_frame_mask(3, 40, 0.4, lengths=lengths)
    assert mask.shape == (3, 40)
    assert mask.sum(1).tolist() == [4, 10, 16]
    for row, n in zip(mask, lengths.tolist()):
        assert not row[n:].any()


def test_ar_head_predicts_layer_k_plus_1_from_layers_up_to_k():
    torch.manual_seed(0)
    head = ARHead(input_dim=6, n_q=3, dim=16, num_layers=1, num_heads=2).eval()
    latents = torch.randn(2, 3, 5, 6)  # (B, n_q, N, D)
    pred = head(latents[:, :-1])
    assert pred.shape == (2, 2, 5, 6)  # predictions of layers 2 and 3 for each token
    # causal along depth: the prediction of layer 2 sees layer 1 only ...
    changed = latents.clone()
    changed[:, 1] += 1.0
    pred2 = head(changed[:, :-1])
    assert torch.allclose(pred[:, 0], pred2[:, 0], atol=1e-6)
    assert not torch.allclose(pred[:, 1], pred2[:, 1])  # ... the one of layer 3 sees layer 2
    # and each token position is its own sequence: other tokens do not matter
    other = latents.clone()
    other[:, :, 1:] = torch.randn_like(other[:, :, 1:])
    assert torch.allclose(head(other[:, :-1])[:, :, 0], pred[:, :, 0], atol=1e-6)


def test_ar_loss_is_squared_distance_of_unit_vectors_with_detached_targets():
    head = ARHead(input_dim=4, n_q=2, dim=8, num_layers=1, num_heads=2)
    latents = torch.randn(1, 2, 3, 4, requires_grad=True)
    loss = head.loss(latents)
    assert 0.0 <= loss.item() <= 4.0  # |a - b|^2 of unit vectors = 2 - 2 cos
    loss.backward()
    assert latents.grad[:, 0].abs().sum() > 0  # the input (layer 1) is trained through
    assert latents.grad[:, 1].abs().sum() == 0  # the target (layer 2) is detached


def test_ar_loss_reaches_the_encoder_and_falls_on_a_fixed_clip():
    from conftest import speechlike

    torch.manual_seed(0)
    gen = tiny_generator(windows=[4]).train()
    clip = speechlike(0.6).view(1, 1, -1)
    out = gen(clip, 4, use_ar=True)
    out["ar"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in gen.encoder.parameters())
    assert gen.query_token.grad is not None and gen.query_token.grad.abs().sum() > 0
    gen.zero_grad()

    opt = torch.optim.Adam([p for n, p in gen.named_parameters() if not n.startswith("decoder")], lr=3e-3)
    losses = []
    for _ in range(160):  # noisy: the targets (deeper layers' codes) move as the encoder learns, and the
        # codebook-input norm's running statistics follow it a few steps late
        loss = gen(clip, 4, use_ar=True)["ar"]
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(float(loss))
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses


def test_padding_changes_no_loss():
    """A clip alone and the same clip zero-padded in a batch (with its length) give the same
    codes and the same MAE, AR, commitment and codebook losses."""
    from conftest import speechlike

    torch.manual_seed(0)
    gen = tiny_generator(codebook_frozen=[True, False, False]).train()
    clip = speechlike(0.43).view(1, 1, -1)  # 6880 samples: not a whole token at any window
    length = clip.shape[-1]
    padded = torch.nn.functional.pad(clip, (0, 5000))
    for window in (3, 4):
        n_frames_alone = -(-length // (320 * window)) * window
        n_frames_padded = -(-(length + 5000) // (320 * window)) * window
        real = -(-length // 320)
        mask = torch.zeros(1, n_frames_alone, dtype=torch.bool)
        mask[0, torch.randperm(real)[: int(0.4 * real)]] = True
        mask_padded = torch.nn.functional.pad(mask, (0, n_frames_padded - n_frames_alone))
        twin = copy.deepcopy(gen)  # the same codebook-input statistics for both passes
        alone = gen(clip, window, use_mae=True, use_ar=True, mae_mask=mask)
        batch = twin(padded, window, use_mae=True, use_ar=True, mae_mask=mask_padded,
                    lengths=torch.tensor([length]))
        n = alone["codes"].shape[-1]
        assert torch.equal(alone["codes"], batch["codes"][..., :n])
        for k in ("mae", "ar", "commit", "codebook"):
            assert torch.allclose(alone[k], batch[k], rtol=1e-4, atol=1e-6), (window, k, alone[k], batch[k])
        assert batch["resyn"][..., length:].abs().max() == 0  # nothing past the clip's end
