"""codec/patchify.py: the conv front end's frame normalisations."""

import pytest
import torch

from espnet2_almtok.codec.patchify import Patchify


def test_time_norm_standardises_each_channel_over_the_real_frames_only():
    torch.manual_seed(0)
    patch = Patchify(16, 4, (2, 4, 5, 8), norm="time").train()
    wav = 0.1 * torch.randn(3, 1, 320 * 20)
    lengths = torch.tensor([20, 20, 12])
    first = patch(wav, lengths)  # the first batch sets the statistics
    real = torch.cat([first[0], first[1], first[2, :, :12]], dim=1)  # (C, real frames)
    assert torch.allclose(real.mean(1), torch.zeros(16), atol=1e-4)
    var = patch.norm.running_var
    assert torch.allclose(real.std(1), (var / (var + patch.norm.eps)).sqrt(), atol=1e-3)  # unit but for eps
    # the padding frames of clip 2 did not enter the statistics: garbage there changes nothing
    noisy = wav.clone()
    noisy[2, :, 320 * 16:] = 5.0  # past the conv context of clip 2's last real frame
    again = Patchify(16, 4, (2, 4, 5, 8), norm="time").train()
    again.load_state_dict({k: v for k, v in patch.state_dict().items() if "norm" not in k}, strict=False)
    assert torch.allclose(again(noisy, lengths)[:, :, :10], first[:, :, :10], atol=1e-5)


def test_time_norm_gives_the_same_frames_in_training_and_inference_frame_by_frame():
    torch.manual_seed(0)
    patch = Patchify(16, 4, (2, 4, 5, 8), norm="time").train()
    for _ in range(3):
        patch(0.1 * torch.randn(2, 1, 320 * 10))
    wav = 0.3 * torch.randn(2, 1, 320 * 10)
    before = patch.eval()(wav)
    trained = patch.train()(wav)  # normalises with the same running statistics, then updates them
    assert torch.allclose(trained, before, atol=1e-6)
    patch.eval()
    assert torch.allclose(patch(wav[1:]), patch(wav)[1:], atol=1e-4)  # a clip's frames do not depend on its batch


def test_time_norm_learns_with_the_batch_gradient():
    """The gradient is BatchNorm's: a common offset of every frame gets none."""
    torch.manual_seed(0)
    patch = Patchify(8, 4, (2, 4, 5, 8), norm="time").train()
    patch(0.1 * torch.randn(2, 1, 320 * 10))
    frames = patch.net(0.1 * torch.randn(2, 1, 320 * 10)).transpose(1, 2).detach().requires_grad_(True)
    out = patch.norm(frames)
    out.sum().backward()  # d/dx of a sum of standardised values: zero under BatchNorm's gradient
    assert frames.grad.abs().max() < 1e-4


@pytest.mark.parametrize("norm, kind", [(True, torch.nn.LayerNorm), ("layer", torch.nn.LayerNorm),
                                        (False, type(None)), ("none", type(None))])
def test_layer_and_no_norm_are_still_accepted(norm, kind):
    assert isinstance(Patchify(8, 4, (2, 4, 5, 8), norm=norm).norm, kind)


@pytest.mark.parametrize("norm", ["batch", "true", 1, None])
def test_an_unknown_frame_norm_is_refused(norm):
    with pytest.raises(ValueError, match="frame_norm must be one of"):
        Patchify(8, 4, (2, 4, 5, 8), norm=norm)
