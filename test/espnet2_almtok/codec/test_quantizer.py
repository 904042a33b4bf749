import numpy as np
import pytest
import torch

from espnet2_almtok.codec.quantizer import CodebookSpaceNorm, ResidualVQ


def test_codes_are_the_nearest_centroid_of_a_known_codebook(tmp_path):
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(16, 8)).astype(np.float32)
    path = tmp_path / "prior.npy"
    np.save(path, centroids)
    rvq = ResidualVQ(input_dim=8, codebook_dim=8, codebook_size=16, n_q=1, codebook_init=[str(path)], frozen=True,
                     input_norm=False)
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
    rvq = ResidualVQ(8, 8, 64, n_q=3, input_norm=False)
    with torch.no_grad():
        rvq.project_in.weight.copy_(torch.eye(8)); rvq.project_in.bias.zero_()
        rvq.project_out.weight.copy_(torch.eye(8)); rvq.project_out.bias.zero_()
        for k, layer in enumerate(rvq.layers):  # finer codebooks per layer, each with a zero entry
            layer.codebook.copy_(torch.randn(64, 8) * 0.3 * 0.5 ** k)
            layer.codebook[0].zero_()
    x = torch.randn(4, 50, 8) * 0.3
    errs = [(rvq.decode(rvq(x)[1][:, :k]) - x).pow(2).mean().item() for k in (1, 2, 3)]
    assert errs[0] > errs[1] > errs[2]


def prior_rvq(tmp_path, input_norm: bool) -> ResidualVQ:
    """One frozen 64-entry prior codebook (rows ~ N(2, 0.5^2) per dim) behind an identity projection."""
    path = tmp_path / "prior.npy"
    np.save(path, (2 + 0.5 * np.random.default_rng(0).normal(size=(64, 8))).astype(np.float32))
    rvq = ResidualVQ(8, 8, 64, n_q=1, codebook_init=[str(path)], frozen=True, input_norm=input_norm)
    with torch.no_grad():
        rvq.project_in.weight.copy_(torch.eye(8)); rvq.project_in.bias.zero_()
    return rvq


def test_input_norm_spreads_drifted_encoder_outputs_over_the_prior_codebook(tmp_path):
    """Encoder outputs with a large common offset and a small spread (what an encoder drifts to
    early in training) still use many prior codes; without the norm they all take one."""
    torch.manual_seed(0)
    x = 40 + 0.05 * torch.randn(4, 64, 8)
    used = {}
    for norm in (False, True):
        rvq = prior_rvq(tmp_path, norm).train()
        used[norm] = rvq(x)[1].unique().numel()
    assert used[False] == 1 and used[True] >= 20, used
    # in training the normalised input has the codebook's per-dimension mean and spread
    rvq = prior_rvq(tmp_path, True).train()
    z = rvq.input_norm(rvq.project_in(x))
    cb = rvq.layers[0].codebook
    assert torch.allclose(z.reshape(-1, 8).mean(0), cb.mean(0), atol=1e-3)
    assert torch.allclose(z.reshape(-1, 8).std(0), cb.std(0), rtol=0.02)


def test_input_norm_statistics_ignore_padding_and_inference_codes_are_per_token(tmp_path):
    torch.manual_seed(0)
    x = 3 + torch.randn(2, 30, 8)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, 20:] = False
    padded = x.clone()
    padded[1, 20:] = 1e4  # garbage in the padding must not move the statistics
    a, b = prior_rvq(tmp_path, True).train(), prior_rvq(tmp_path, True).train()
    codes_a, codes_b = a(x, mask=mask)[1], b(padded, mask=mask)[1]
    assert torch.equal(codes_a[mask.unsqueeze(1)], codes_b[mask.unsqueeze(1)])
    assert torch.allclose(a.input_norm.running_mean, b.input_norm.running_mean)
    # at inference a token's code depends on that token only (running statistics)
    a.eval()
    alone = a(x[:1, :5])[1]
    assert torch.equal(alone, a(x)[1][:1, :, :5])


def test_frozen_projection_keeps_the_input_norm_statistics(tmp_path):
    """Stage 2 freezes ``project_in``: training batches then neither update the statistics nor
    code differently from inference, so a clip's codes stay fixed."""
    torch.manual_seed(0)
    rvq = prior_rvq(tmp_path, True).train()
    rvq(5 + 2 * torch.randn(4, 40, 8))  # stage 1 moved the statistics
    rvq.project_in.requires_grad_(False)
    before = rvq.input_norm.running_mean.clone(), rvq.input_norm.running_var.clone()
    x = -3 + 0.1 * torch.randn(2, 40, 8)  # a batch with very different statistics
    train_codes = rvq(x)[1]
    assert torch.equal(rvq.input_norm.running_mean, before[0]) and torch.equal(rvq.input_norm.running_var, before[1])
    assert torch.equal(train_codes, rvq.eval()(x)[1])


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


def encoder_grad(rvq: ResidualVQ, h: torch.Tensor, n_q: int, upstream: torch.Tensor) -> torch.Tensor:
    h = h.clone().requires_grad_(True)
    quantized = rvq(h, n_q=n_q)[0]
    (quantized * upstream).sum().backward()
    return h.grad


def test_encoder_gradient_from_the_decoder_does_not_depend_on_n_q():
    torch.manual_seed(0)
    h = torch.randn(2, 7, 8)
    upstream = torch.randn(2, 7, 8)  # the decoder's gradient w.r.t. the quantized output
    for input_norm in (True, False):
        rvq = ResidualVQ(8, 6, 32, n_q=3, input_norm=input_norm)
        g1, g3 = encoder_grad(rvq, h, 1, upstream), encoder_grad(rvq, h, 3, upstream)
        assert torch.allclose(g1, g3, atol=1e-6)
    # and it is the plain straight-through gradient: d project_out(project_in(h)) / dh
    expected = upstream @ rvq.project_out.weight @ rvq.project_in.weight
    assert torch.allclose(g3, expected, atol=1e-5)


def test_layer_latents_carry_codebook_values_and_encoder_gradient():
    torch.manual_seed(0)
    rvq = ResidualVQ(8, 6, 32, n_q=3)
    h = torch.randn(1, 5, 8, requires_grad=True)
    _, codes, latents, _, _ = rvq(h)
    for k, layer in enumerate(rvq.layers):
        assert torch.allclose(latents[:, k], layer.lookup(codes[:, k]), atol=1e-6)
    latents[:, 2].sum().backward()
    assert h.grad is not None and h.grad.abs().sum() > 0


def test_commitment_and_codebook_losses_count_real_tokens_only():
    torch.manual_seed(0)
    rvq = ResidualVQ(8, 6, 32, n_q=3, frozen=[True, False, False])
    x = torch.randn(1, 5, 8)
    padded = torch.cat([x, 100 * torch.randn(1, 3, 8)], dim=1)  # garbage where the padding is
    mask = torch.arange(8).unsqueeze(0) < 5
    _, codes, _, commit, cb = rvq(x)
    _, codes_p, _, commit_p, cb_p = rvq(padded, mask=mask)
    assert torch.equal(codes, codes_p[..., :5])
    assert torch.allclose(commit, commit_p) and torch.allclose(cb, cb_p)


@pytest.mark.parametrize("bad", [0, -1, 4, 1.5, True])
def test_n_q_outside_the_models_codebooks_is_refused(bad):
    rvq = ResidualVQ(8, 4, 16, n_q=3)
    with pytest.raises(ValueError, match=r"n_q must be an integer in 1\.\.3"):
        rvq(torch.randn(1, 2, 8), n_q=bad)


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


def _norm_rank(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.manual_seed(0)
    norm = CodebookSpaceNorm(8, torch.randn(16, 8)).train()
    data = torch.randn(2, 4, 6, 8)
    data[1] = 5 + 3 * data[1]  # the ranks see batches with very different statistics
    for _ in range(3):
        norm(data[rank])
    torch.save({k: v for k, v in norm.state_dict().items()}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_input_norm_statistics_are_shared_across_ddp_ranks(tmp_path):
    """Two gloo ranks with different batches end with the same running statistics: those of both
    ranks' tokens together (so every rank codes a clip alike)."""
    import torch.multiprocessing as mp

    mp.start_processes(_norm_rank, args=(str(tmp_path / "store"), str(tmp_path / "norm")), nprocs=2,
                       start_method="spawn")
    a, b = (torch.load(tmp_path / f"norm.{r}", weights_only=True) for r in (0, 1))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    torch.manual_seed(0)
    CodebookSpaceNorm(8, torch.randn(16, 8))  # the same target as the ranks drew
    data = torch.randn(2, 4, 6, 8)
    data[1] = 5 + 3 * data[1]
    both = data.reshape(-1, 8)
    assert torch.allclose(a["running_mean"], both.mean(0), atol=1e-5)
    assert torch.allclose(a["running_var"], both.var(0), atol=1e-4)
