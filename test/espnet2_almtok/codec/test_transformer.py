"""codec/transformer.py: the ALiBi attention bias."""

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
