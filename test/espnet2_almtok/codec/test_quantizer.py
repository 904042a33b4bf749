import numpy as np
import pytest
import torch

from espnet2_almtok.codec.quantizer import ResidualVQ, VectorQuantizer


def test_codes_are_the_nearest_centroid_of_a_known_codebook(tmp_path):
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(16, 8)).astype(np.float32)
    path = tmp_path / "prior.npy"
    np.save(path, centroids)
    rvq = ResidualVQ(input_dim=8, codebook_dim=8, codebook_size=16, n_q=1, codebook_init=[str(path)], frozen=True)
    with torch.no_grad():  # identity projection: the lookup sees the input itself
        rvq.project_in.weight.copy_(torch.eye(8)); rvq.project_in.bias.zero_()
    x = torch.randn(2, 10, 8)
    _, codes, _, _, _ = rvq(x)
    expected = torch.cdist(x.reshape(-1, 8), torch.from_numpy(centroids)).argmin(1).reshape(2, 10)
    assert torch.equal(codes[:, 0], expected)
    # an input equal to a centroid maps to that centroid
    _, codes, _, _, _ = rvq(torch.from_numpy(centroids[[3, 11]]).reshape(1, 2, 8))
    assert codes[0, 0].tolist() == [3, 11]


def test_residual_layers_reduce_the_error():
    torch.manual_seed(0)
    rvq = ResidualVQ(8, 8, 64, n_q=3)
    with torch.no_grad():
        rvq.project_in.weight.copy_(torch.eye(8)); rvq.project_in.bias.zero_()
        rvq.project_out.weight.copy_(torch.eye(8)); rvq.project_out.bias.zero_()
        for k, layer in enumerate(rvq.layers):  # finer codebooks per layer, each with a zero entry
            layer.codebook.copy_(torch.randn(64, 8) * 0.3 * 0.5 ** k)
            layer.codebook[0].zero_()
    x = torch.randn(4, 50, 8) * 0.3
    errs = [(rvq.decode(rvq(x)[1][:, :k]) - x).pow(2).mean().item() for k in (1, 2, 3)]
    assert errs[0] > errs[1] > errs[2]


def test_frozen_codebook_is_unchanged_by_an_optimizer_step():
    rvq = ResidualVQ(8, 4, 16, n_q=3, frozen=[True, False, True])
    before = [layer.codebook.detach().clone() for layer in rvq.layers]
    opt = torch.optim.Adam(rvq.parameters(), lr=0.1)
    q, codes, _, commit, cb_loss = rvq(torch.randn(2, 20, 8))
    (q.pow(2).mean() + commit + cb_loss).backward()
    opt.step()
    assert torch.equal(rvq.layers[0].codebook, before[0])
    assert torch.equal(rvq.layers[2].codebook, before[2])
    assert not torch.equal(rvq.layers[1].codebook, before[1])


def test_straight_through_gradient_reaches_the_input():
    vq = VectorQuantizer(8, 4)
    z = torch.randn(1, 5, 4, requires_grad=True)
    q, _, _, _ = vq(z)
    q.sum().backward()
    assert torch.allclose(z.grad, torch.ones_like(z))


def test_bad_prior_file_and_bad_codes_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="stage 3"):
        ResidualVQ(8, 4, 16, n_q=1, codebook_init=[str(tmp_path / "missing.npy")])
    np.save(tmp_path / "wrong.npy", np.zeros((10, 4), np.float32))
    with pytest.raises(ValueError, match=r"shape \(10, 4\), expected \(16, 4\)"):
        ResidualVQ(8, 4, 16, n_q=1, codebook_init=[str(tmp_path / "wrong.npy")])
    rvq = ResidualVQ(8, 4, 16, n_q=2)
    with pytest.raises(ValueError, match="out of range"):
        rvq.decode(torch.full((1, 2, 3), 16))
    with pytest.raises(ValueError, match="3 codebooks"):
        rvq.decode(torch.zeros(1, 3, 3, dtype=torch.long))
