"""codec/transformer.py: the ALiBi attention bias and group-local attention layers."""

import pytest
import torch


def test_alibi_bias_is_zero_on_the_diagonal_and_falls_with_distance():
    from espnet2_almtok.codec.transformer import alibi_bias

    bias = alibi_bias(6, 4)
    assert bias.shape == (4, 6, 6)
    assert torch.all(bias.diagonal(dim1=1, dim2=2) == 0)
    assert torch.all(bias[:, 0, 1] > bias[:, 0, 5])  # farther = more penalised, every head
    assert torch.allclose(bias, bias.transpose(1, 2))  # bidirectional


def test_alibi_stack_keeps_shapes_respects_padding_and_rejects_unknown_bias():
    from espnet2_almtok.codec.transformer import TransformerStack

    torch.manual_seed(0)
    stack = TransformerStack(16, 2, 4, attention_bias="alibi").eval()
    x = torch.randn(2, 9, 16)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[1, 6:] = True
    y = stack(x, padding_mask=pad)
    assert y.shape == x.shape
    # the padded clip's valid outputs do not depend on what sits in its padding
    x2 = x.clone()
    x2[1, 6:] = 100.0
    assert torch.allclose(stack(x2, padding_mask=pad)[1, :6], y[1, :6], atol=1e-5)
    with pytest.raises(ValueError, match="attention_bias='rope'"):
        TransformerStack(16, 1, 4, attention_bias="rope")


@pytest.mark.parametrize("bias", ["none", "alibi"])
def test_local_layers_attend_within_their_group_only(bias):
    from espnet2_almtok.codec.transformer import TransformerStack

    torch.manual_seed(0)
    x = torch.randn(2, 12, 16)
    changed = x.clone()
    changed[:, 4:8] = torch.randn(2, 4, 16)  # the second group of four
    local = TransformerStack(16, 2, 4, attention_bias=bias, local_layers=2).eval()
    y, y2 = local(x, group_size=4), local(changed, group_size=4)
    assert torch.allclose(y[:, :4], y2[:, :4], atol=1e-6) and torch.allclose(y[:, 8:], y2[:, 8:], atol=1e-6)
    assert not torch.allclose(y[:, 4:8], y2[:, 4:8])
    # one local layer below a global one: the change now reaches every group
    mixed = TransformerStack(16, 2, 4, attention_bias=bias, local_layers=1).eval()
    assert not torch.allclose(mixed(x, group_size=4)[:, :4], mixed(changed, group_size=4)[:, :4])
    # without groups (e.g. the frames-only diagnosis) every layer attends everywhere
    plain = TransformerStack(16, 2, 4, attention_bias=bias).eval()
    plain.load_state_dict(local.state_dict())
    assert torch.allclose(local(x), plain(x), atol=1e-6)


def test_local_layers_ignore_padding_groups_and_keep_padded_clips_equal():
    from espnet2_almtok.codec.transformer import TransformerStack

    torch.manual_seed(0)
    stack = TransformerStack(16, 3, 4, local_layers=1).eval()
    x = torch.randn(2, 12, 16)
    pad = torch.zeros(2, 12, dtype=torch.bool)
    pad[1, 8:] = True  # the last group of clip 1 is padding
    y = stack(x, padding_mask=pad, group_size=4)
    assert torch.isfinite(y).all()
    x2 = x.clone()
    x2[1, 8:] = 100.0
    assert torch.allclose(stack(x2, padding_mask=pad, group_size=4)[1, :8], y[1, :8], atol=1e-5)
    assert torch.allclose(stack(x[1:, :8], group_size=4), y[1:, :8], atol=1e-5)


@pytest.mark.parametrize("value", [-1, 3, 1.5, True, "1"])
def test_local_layers_must_be_a_layer_count(value):
    from espnet2_almtok.codec.transformer import TransformerStack

    with pytest.raises(ValueError, match="local_layers must be an integer from 0 to num_layers=2"):
        TransformerStack(16, 2, 4, local_layers=value)
    with pytest.raises(ValueError, match="not a multiple of the group size 5"):
        TransformerStack(16, 2, 4, local_layers=1)(torch.randn(1, 12, 16), group_size=5)
