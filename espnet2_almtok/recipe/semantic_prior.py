"""Recipe stage 3: semantic priors for the RVQ codebooks from self-supervised features.

    python -m espnet2_almtok.recipe.semantic_prior --wav_scp dump/raw/train/wav.scp \\
        --upstream hf_hubert_custom --upstream_path /models/hubert-base-ls960 --layer 9 \\
        --codebook_size 2048 --n_q 3 --out_dir exp/semantic_prior

1. s3prl features of layer ``--layer`` for (a subset of) the utterances, one ``.npy`` per
   utterance under ``out_dir/feats`` (a rerun skips those already written);
2. k-means (k-means++ init) on up to ``--max_frames`` frames -> ``codebook_1.npy`` ``(K, D)``;
3. residual k-means: layer ``i`` clusters ``x - sum_{j<i} c_j[assign_j]`` -> ``codebook_i.npy``
   (the design note's default for layers 2..n_q; ``--residual_init random`` writes none).

``--upstream`` is any s3prl upstream name (``hubert``, ``wavlm_base_plus``, ... download their
weights) or ``hf_hubert_custom``/``hf_wav2vec2_custom`` with ``--upstream_path`` a local
HuggingFace directory (offline).
"""

import argparse
import logging
import os
import random
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import torch
import yaml
from tqdm import tqdm

from espnet2_almtok.audio import read_audio, resample, to_mono_tensor, validate_waveform
from espnet2_almtok.fileio import atomic_write_text

SSL_RATE = 16000


def load_upstream(name: str, path: str = None, device: str = "cpu"):
    from s3prl.nn import S3PRLUpstream

    if name.endswith("_custom") and not path:
        raise ValueError(f"upstream {name} needs --upstream_path (a local checkpoint or HF directory)")
    if path and not Path(path).exists():
        raise FileNotFoundError(f"SSL checkpoint {path} does not exist")
    try:
        model = S3PRLUpstream(name, path_or_url=path)
    except Exception as e:
        raise RuntimeError(
            f"could not load s3prl upstream {name!r} (path {path!r}): {e}. Without network, use "
            "hf_hubert_custom with --upstream_path pointing at a local HuggingFace HuBERT dir") from e
    return model.to(device).eval()


@torch.no_grad()
def extract_layer(model, wav: torch.Tensor, layer: int) -> np.ndarray:
    """``wav`` ``(T,)`` at 16 kHz -> ``(frames, D)`` float32 of hidden layer ``layer``."""
    device = next(model.parameters()).device
    hs, hs_len = model(wav.view(1, -1).to(device), torch.tensor([wav.numel()], device=device))
    if not 0 <= layer < len(hs):
        raise ValueError(f"--layer {layer} is out of range: the upstream has layers 0..{len(hs) - 1}")
    return hs[layer][0, : hs_len[layer][0]].float().cpu().numpy()


def extract_features(wav_scp: Path, model, layer: int, feat_dir: Path, max_utts: int, seed: int) -> List[Path]:
    entries = [line.split(maxsplit=1) for line in open(wav_scp) if line.strip()]
    random.Random(seed).shuffle(entries)
    entries = entries[:max_utts] if max_utts > 0 else entries
    feat_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for utt, spec in tqdm(entries, desc=f"s3prl layer {layer}", unit="utt"):
        out = feat_dir / f"{utt}.npy"
        paths.append(out)
        if out.exists():
            continue
        wav, sr = read_audio(spec.strip(), utt)
        wav = to_mono_tensor(wav, utt)
        validate_waveform(wav, utt)
        feats = extract_layer(model, resample(wav, sr, SSL_RATE, utt), layer)
        tmp = out.with_name(out.stem + ".tmp.npy")
        np.save(tmp, feats)
        os.replace(tmp, out)
    return paths


def kmeans(x: torch.Tensor, k: int, iters: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor, float]:
    """Lloyd's k-means with k-means++ init. ``x`` ``(N, D)`` -> (centroids ``(k, D)``, assign ``(N,)``, inertia)."""
    n = x.shape[0]
    if n < k:
        raise ValueError(f"only {n} feature frames for {k} centroids; use more data (--max_utts) or a "
                         "smaller codebook_size")
    g = torch.Generator().manual_seed(seed)
    centroids = x[torch.randint(n, (1,), generator=g)]
    d2 = torch.cdist(x, centroids).squeeze(1) ** 2
    for _ in range(1, k):  # k-means++
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / n)
        idx = torch.multinomial(probs, 1, generator=g)
        centroids = torch.cat([centroids, x[idx]])
        d2 = torch.minimum(d2, (torch.cdist(x, x[idx]).squeeze(1) ** 2))
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1).to(x.dtype)
        empty = counts.squeeze(1) == 0
        centroids = torch.where(empty.unsqueeze(1), centroids, sums / counts.clamp(min=1))
    dist = torch.cdist(x, centroids)
    assign = dist.argmin(1)
    inertia = float((dist.gather(1, assign.unsqueeze(1)) ** 2).mean())
    return centroids, assign, inertia


def residual_kmeans(x: torch.Tensor, k: int, n_q: int, iters: int, seed: int, out_dir: Path) -> List[dict]:
    """Write ``codebook_{1..n_q}.npy``; layers already written are loaded, not recomputed."""
    residual = x.clone()
    info = []
    for layer in range(1, n_q + 1):
        path = out_dir / f"codebook_{layer}.npy"
        if path.exists():
            centroids = torch.from_numpy(np.load(path))
            assign = torch.cdist(residual, centroids).argmin(1)
            inertia = float(((residual - centroids[assign]) ** 2).sum(1).mean())
        else:
            centroids, assign, inertia = kmeans(residual, k, iters, seed + layer)
            tmp = path.with_name(path.stem + ".tmp.npy")
            np.save(tmp, centroids.numpy().astype(np.float32))
            os.replace(tmp, path)
        logging.info(f"codebook {layer}: mean squared residual {inertia:.4f}")
        info.append({"layer": layer, "file": str(path), "mean_sq_error": inertia})
        residual = residual - centroids[assign]
    return info


def main(argv: Sequence[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wav_scp", type=Path, required=True)
    p.add_argument("--upstream", default="hf_hubert_custom", help="s3prl upstream name")
    p.add_argument("--upstream_path", default=None, help="local checkpoint / HF dir for *_custom upstreams")
    p.add_argument("--layer", type=int, default=9, help="hidden layer used (0 = CNN output)")
    p.add_argument("--codebook_size", type=int, required=True)
    p.add_argument("--n_q", type=int, default=3)
    p.add_argument("--residual_init", choices=["kmeans", "random"], default="kmeans",
                   help="layers 2..n_q: residual k-means, or none (random init in the model)")
    p.add_argument("--max_utts", type=int, default=2000, help="utterances used (0 = all)")
    p.add_argument("--max_frames", type=int, default=200000, help="frames sampled for k-means")
    p.add_argument("--kmeans_iters", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out_dir", type=Path, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    model = load_upstream(args.upstream, args.upstream_path, args.device)
    paths = extract_features(args.wav_scp, model, args.layer, args.out_dir / "feats", args.max_utts, args.seed)
    feats = torch.from_numpy(np.concatenate([np.load(f) for f in paths]))
    if feats.shape[0] > args.max_frames:
        idx = torch.randperm(feats.shape[0], generator=torch.Generator().manual_seed(args.seed))
        feats = feats[idx[: args.max_frames]]
    logging.info(f"k-means on {feats.shape[0]} frames of dim {feats.shape[1]}")
    n_layers = args.n_q if args.residual_init == "kmeans" else 1
    info = residual_kmeans(feats, args.codebook_size, n_layers, args.kmeans_iters, args.seed, args.out_dir)
    meta = dict(upstream=args.upstream, upstream_path=args.upstream_path, layer=args.layer,
                dim=int(feats.shape[1]), codebook_size=args.codebook_size, n_frames=int(feats.shape[0]),
                n_utts=len(paths), codebooks=info)
    atomic_write_text(args.out_dir / "prior_info.yaml", yaml.safe_dump(meta, sort_keys=False))
    print(",".join(c["file"] for c in info))


if __name__ == "__main__":
    main()
