import numpy as np
import pytest
import soundfile
import torch

from conftest import speechlike
from espnet2_almtok.recipe import semantic_prior
from espnet2_almtok.recipe.make_tiny_ssl import build


def test_kmeans_recovers_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(100, 2, generator=g) for c in centers])
    found, assign, inertia = semantic_prior.kmeans(x, 3, iters=10, seed=0)
    assert inertia < 0.05
    matched = torch.cdist(centers, found).min(1).values
    assert (matched < 0.1).all()
    with pytest.raises(ValueError, match="only 300 feature frames for 400 centroids"):
        semantic_prior.kmeans(x, 400, 1, 0)


def test_priors_from_a_local_hf_hubert_through_s3prl(tmp_path):
    """The real loading path (s3prl hf_hubert_custom + a local HF dir), with a tiny HuBERT."""
    ssl = build(tmp_path / "tiny_hubert", hidden=16, layers=2)
    lines = []
    for i in range(3):
        soundfile.write(tmp_path / f"u{i}.wav", speechlike(1.0, seed=i).numpy(), 16000)
        lines.append(f"u{i} {tmp_path / f'u{i}.wav'}\n")
    (tmp_path / "wav.scp").write_text("".join(lines))
    out = tmp_path / "prior"
    semantic_prior.main(["--wav_scp", str(tmp_path / "wav.scp"), "--upstream", "hf_hubert_custom",
                         "--upstream_path", str(ssl), "--layer", "2", "--codebook_size", "8", "--n_q", "3",
                         "--kmeans_iters", "5", "--out_dir", str(out)])
    books = [np.load(out / f"codebook_{i}.npy") for i in (1, 2, 3)]
    assert all(b.shape == (8, 16) and b.dtype == np.float32 for b in books)
    assert len(list((out / "feats").glob("*.npy"))) == 3
    # residual codebooks are finer than the first
    assert np.abs(books[2]).mean() < np.abs(books[0]).mean()
    # a rerun reuses the written files
    before = (out / "codebook_2.npy").stat().st_mtime_ns
    semantic_prior.main(["--wav_scp", str(tmp_path / "wav.scp"), "--upstream", "hf_hubert_custom",
                         "--upstream_path", str(ssl), "--layer", "2", "--codebook_size", "8", "--n_q", "3",
                         "--out_dir", str(out)])
    assert (out / "codebook_2.npy").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="layer 7 is out of range"):
        semantic_prior.main(["--wav_scp", str(tmp_path / "wav.scp"), "--upstream", "hf_hubert_custom",
                             "--upstream_path", str(ssl), "--layer", "7", "--codebook_size", "8",
                             "--out_dir", str(tmp_path / "p2")])
