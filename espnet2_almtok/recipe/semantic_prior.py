"""Recipe stage 3: semantic priors for the RVQ codebooks from self-supervised features.

Single source (the recipe's default)::

    python -m espnet2_almtok.recipe.semantic_prior --wav_scp dump/raw/train/wav.scp \\
        --upstream hf_hubert_custom --upstream_path /models/hubert-base-ls960 --layer 9 \\
        --codebook_size 2048 --n_q 3 --out_dir exp/semantic_prior

1. features of layer ``--layer`` for (a subset of) the utterances, one ``.npy`` per utterance
   under ``out_dir/feats`` (a rerun skips those already written);
2. k-means (k-means++ init) on up to ``--max_frames`` frames -> ``codebook_1.npy`` ``(K, D)``;
3. residual k-means: layer ``i`` clusters ``x - sum_{j<i} c_j[assign_j]`` -> ``codebook_i.npy``
   (the design note's default for layers 2..n_q; ``--residual_init random`` writes none).

Feature sources (``--upstream``):

* any s3prl upstream name (``hubert``, ``wavlm_base_plus``, ... download their weights) or
  ``hf_hubert_custom``/``hf_wav2vec2_custom`` with ``--upstream_path`` a local HuggingFace
  directory (offline). wav2vec2/HuBERT/WavLM frames come at 50 Hz (320-sample hop at 16 kHz).
* ``beats`` with ``--upstream_path`` an official BEATs checkpoint (``BEATs_iter3_plus_AS2M.pt``),
  run through ESPnet's BEATs encoder (:mod:`espnet2_almtok.recipe.beats_features`; the file is
  read with ``torch.load(weights_only=True)``). ``--layer`` 0..encoder_layers (12 for the
  released models; 0 = transformer input). A BEATs frame is one 160 ms patch row averaged over
  its 8 frequency patches: **6.25 Hz**. The rate need not match the codec's: k-means sees frames
  only.

Per-domain mix (the paper: wav2vec2 for speech, BEATs for sound and music)::

    python -m espnet2_almtok.recipe.semantic_prior --wav_scp data/train/wav.scp \\
        --utt2category data/train/utt2category --speech_fraction 0.5 \\
        --speech_upstream hf_wav2vec2_custom --speech_upstream_path /models/wav2vec2-base \\
        --speech_layer 9 --audio_upstream beats --audio_upstream_path /models/BEATs.pt \\
        --audio_layer 12 --codebook_size 2048 --n_q 3 --out_dir exp/semantic_prior

``utt2category`` has lines ``utt category``: category ``speech`` (case-insensitive) goes to the
speech source, any other (``sound``, ``music``, ...) to the audio source; every ``wav.scp``
utterance needs a line. Composition "split": each ``codebook_i.npy`` ``(K, D)`` is rows
``[0, K_s)`` from the speech domain, rows ``[K_s, K)`` from the audio domain, with
``K_s = round(K * speech_fraction)`` (Python rounding). Layer 1 is k-means of each domain's
features; layers 2..n_q are each domain's own residual k-means (its frames minus its own
earlier centroids), stacked the same way. Per-domain codebooks stay in ``out_dir/speech`` and
``out_dir/audio`` (features in ``out_dir/feats_speech`` / ``feats_audio``) and ``prior_info.yaml``
records the rows of each source. ``--max_utts`` and ``--max_frames`` apply per domain.

Why split rather than, e.g., k-means of the pooled features: the codec has *one* codebook per
RVQ layer serving both domains, and one token vocabulary for the LM. Two unrelated feature
spaces (wav2vec2 and BEATs) cannot be clustered together meaningfully, but their centroids can
share a table: speech frames then land on speech-prior entries and sounds on BEATs entries,
and ``speech_fraction`` sets how much of the vocabulary each domain gets. Both sources must have
the same width ``D`` (768 for the base models). A domain with no utterances is an error unless
``--allow_single_domain`` gives all K entries to the other one (recorded in ``prior_info.yaml``).

Resuming and reruns: every file is written to a temporary name and renamed. ``out_dir/.done``,
written last, records a signature (the digests of ``wav.scp`` and ``utt2category`` and every
option but ``--device``); a rerun with the same signature does nothing, one with another redoes
the stage. After a kill, a rerun keeps the features already extracted (each feature dir's
``.source`` records the source and the inputs' digests; features of another are removed) and the
codebook layers already clustered (in ``out_dir/.work`` or the domain dirs, whose ``.signature``
must match), and ends with the outputs an uninterrupted run writes. The published outputs
(``codebook_*.npy``, ``prior_info.yaml``) of an earlier run are removed when the stage starts
over and rewritten at its end, so a killed run leaves none that looks finished (the recipe reads
``codebook_*.npy`` in stage 5).

Feature extraction in N jobs (the recipe's ``JOB=1:N`` through ``cmd.sh``): run once with
``--nj N --prepare`` (empties feature dirs of other sources or inputs, removes an earlier run's
published outputs; loads no model), then ``--nj N --job J`` for J = 1..N (each extracts every
N-th utterance of the subset, in parallel, on any host that sees ``out_dir``), then the command
without ``--job`` (finds every feature in place and runs the k-means). ``--nj``/``--job`` change
no output: the codebooks equal a one-job run's.
"""

import argparse
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import yaml
from espnet2_almtok.progress import progress

from espnet2_almtok.audio import read_audio, resample, to_mono_tensor, validate_waveform
from espnet2_almtok.fileio import atomic_write_text, done_matches, done_signature, optional_file_sha256

SSL_RATE = 16000
DOMAINS = ("speech", "audio")


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
    # feature extractors such as s3prl's mfcc/fbank have no parameters: fall back to the CPU
    device = next(iter(model.parameters()), torch.empty(0)).device
    hs, hs_len = model(wav.view(1, -1).to(device), torch.tensor([wav.numel()], device=device))
    if not 0 <= layer < len(hs):
        raise ValueError(f"--layer {layer} is out of range: the upstream has layers 0..{len(hs) - 1}")
    return hs[layer][0, : hs_len[layer][0]].float().cpu().numpy()


@dataclass
class FeatureSource:
    """One upstream at one layer: ``extract(wav (T,) at 16 kHz) -> (frames, dim)`` float32."""

    upstream: str
    path: Optional[str]
    layer: int
    dim: int
    extract: Callable[[torch.Tensor], np.ndarray]

    def describe(self) -> str:
        return f"{self.upstream} ({self.path or 'default weights'}) layer {self.layer}"


def load_source(upstream: str, path: Optional[str], layer: int, device: str = "cpu",
                prefix: str = "") -> FeatureSource:
    """Load ``upstream`` (``beats`` or an s3prl name) and check ``layer``; errors name the flags
    ``--{prefix}upstream_path`` and ``--{prefix}layer``."""
    if upstream == "beats":
        from espnet2_almtok.recipe import beats_features as bf

        if not path:
            raise ValueError(f"--{prefix}upstream beats needs --{prefix}upstream_path: the official BEATs "
                             "checkpoint (.pt)")
        model = bf.load_beats(path, device)
        n_layers, dim = bf.beats_num_layers(model) + 1, model.output_size()
        extract = lambda wav: bf.beats_layer_features(model, wav, layer)  # noqa: E731
    else:
        model = load_upstream(upstream, path, device)
        n_layers = model.num_layers
        dim = model.hidden_sizes[layer] if 0 <= layer < n_layers else None
        extract = lambda wav: extract_layer(model, wav, layer)  # noqa: E731
    if not 0 <= layer < n_layers:
        raise ValueError(f"--{prefix}layer {layer} is out of range: {upstream} has layers 0..{n_layers - 1}")
    return FeatureSource(upstream, path, layer, int(dim), extract)


def read_wav_scp(wav_scp: Path) -> List[Tuple[str, str]]:
    """Kaldi ``wav.scp`` -> ``[(utt, spec), ...]`` in file order."""
    entries = []
    for n, line in enumerate(open(wav_scp), 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{wav_scp}:{n}: expected 'utt path', got {line.strip()!r}")
        entries.append((parts[0], parts[1]))
    return entries


def subsample(entries: List[Tuple[str, str]], max_utts: int, seed: int) -> List[Tuple[str, str]]:
    """A seeded random subset of ``max_utts`` entries (all of them, shuffled, if ``max_utts <= 0``)."""
    entries = list(entries)
    random.Random(seed).shuffle(entries)
    return entries[:max_utts] if max_utts > 0 else entries


def stamped(path: Path, stamp_name: str, stamp: str) -> bool:
    """True when ``path/stamp_name`` exists and records ``stamp``."""
    stamp_file = path / stamp_name
    return stamp_file.is_file() and stamp_file.read_text() == stamp


def use_dir(path: Path, stamp_name: str, stamp: str, what: str) -> None:
    """Make ``path`` a directory whose contents were made for ``stamp`` (the text of
    ``path/stamp_name``): files made for another (other inputs or options) are removed; so are
    the temporary files of a killed run."""
    path.mkdir(parents=True, exist_ok=True)
    stamp_file = path / stamp_name
    if not stamped(path, stamp_name, stamp):
        stale = [p for p in path.iterdir() if p.name != stamp_name]
        if stale:
            logging.warning(f"{path} holds {what} of other inputs or options ({len(stale)} file(s)); removing them")
        for p in stale:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        atomic_write_text(stamp_file, stamp)
    for tmp in path.glob("*.tmp[0-9]*.npy"):  # a write that a kill interrupted
        tmp.unlink()


def feature_stamp(upstream: str, path: Optional[str], layer: int, inputs: str) -> str:
    """What a feature dir's ``.source`` records: the source and the digests of the input lists."""
    return done_signature(upstream=upstream, path=path, layer=layer, inputs=inputs)


@dataclass(frozen=True)
class JobShare:
    """Job ``job`` of ``nj`` (1-based): extracts entries ``job - 1, job - 1 + nj, ...``."""

    job: int
    nj: int

    def take(self, entries: list) -> list:
        return entries[self.job - 1 :: self.nj]


def check_prepared(feat_dir: Path, stamp: str) -> None:
    """A job's check that ``--prepare`` readied ``feat_dir`` for this source and these inputs
    (jobs never empty a directory: another job may be writing to it)."""
    if not stamped(feat_dir, ".source", stamp):
        raise RuntimeError(f"{feat_dir} is not prepared for this source and these inputs: run the same command "
                           "with --prepare (and without --job) before the --job runs")


def extract_features(entries: List[Tuple[str, str]], source: FeatureSource, feat_dir: Path,
                     inputs: str = "", share: Optional[JobShare] = None) -> List[Path]:
    """One ``(frames, D)`` ``.npy`` per utterance under ``feat_dir``. Those already there are
    kept if ``feat_dir/.source`` records this source and ``inputs`` (the digests of the input
    lists); otherwise the directory is emptied first. With ``share``, only that job's share of
    ``entries`` is extracted, into a directory ``--prepare`` readied."""
    stamp = feature_stamp(source.upstream, source.path, source.layer, inputs)
    if share is None:
        use_dir(feat_dir, ".source", stamp, "features")
    else:
        check_prepared(feat_dir, stamp)
        entries = share.take(entries)
    paths = []
    desc = f"{source.upstream} layer {source.layer}" + (f" (job {share.job}/{share.nj})" if share else "")
    for utt, spec in progress(entries, desc=desc, unit="utt"):
        out = feat_dir / f"{utt}.npy"
        paths.append(out)
        if out.exists():
            continue
        wav, sr = read_audio(spec.strip(), utt)
        wav = to_mono_tensor(wav, utt)
        validate_waveform(wav, utt)
        save_npy(out, source.extract(resample(wav, sr, SSL_RATE, utt)))
    return paths


def load_frames(paths: List[Path], dim: int, max_frames: int, seed: int) -> torch.Tensor:
    """Concatenate the feature files -> ``(N, dim)``, a seeded random ``max_frames`` of them."""
    arrays = []
    for f in paths:
        a = np.load(f)
        if a.ndim != 2 or a.shape[1] != dim:
            raise ValueError(f"{f} has shape {a.shape}, not (frames, {dim}): a cached feature of another "
                             f"upstream? Delete {f.parent} and rerun")
        arrays.append(a)
    feats = torch.from_numpy(np.concatenate(arrays))
    if feats.shape[0] > max_frames:
        idx = torch.randperm(feats.shape[0], generator=torch.Generator().manual_seed(seed))
        feats = feats[idx[:max_frames]]
    return feats


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` via a temporary file (``<stem>.tmp<pid>.npy``) and a rename: a kill leaves the
    old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


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


def residual_kmeans(x: torch.Tensor, k: int, n_q: int, iters: int, seed: int, out_dir: Path,
                    signature: Optional[str] = None) -> List[dict]:
    """Write ``out_dir/codebook_{1..n_q}.npy`` ``(k, D)`` from ``x`` ``(N, D)``.

    Layers already written with the right shape are loaded, not recomputed (a resumed run); once a
    layer is recomputed, the layers after it are too (their residuals changed). With
    ``signature``, the layers there are kept only if ``out_dir/.signature`` records it."""
    if signature is not None:
        use_dir(out_dir, ".signature", signature, "codebooks")
    out_dir.mkdir(parents=True, exist_ok=True)
    residual = x.clone()
    info = []
    recompute = False
    for layer in range(1, n_q + 1):
        path = out_dir / f"codebook_{layer}.npy"
        cached = None if recompute or not path.exists() else np.load(path)
        if cached is not None and cached.shape == (k, x.shape[1]):
            centroids = torch.from_numpy(cached)
        else:
            if cached is not None:
                logging.warning(f"{path} has shape {cached.shape}, not {(k, x.shape[1])}: recomputing it")
            recompute = True
            centroids = kmeans(residual, k, iters, seed + layer)[0].float()
            save_npy(path, centroids.numpy())
        # as kmeans() computes them, for a layer computed now or loaded (a resumed run): the same figures
        dist = torch.cdist(residual, centroids)
        assign = dist.argmin(1)
        inertia = float((dist.gather(1, assign.unsqueeze(1)) ** 2).mean())
        logging.info(f"codebook {layer}: mean squared residual {inertia:.4f}")
        info.append({"layer": layer, "file": str(path), "mean_sq_error": inertia})
        residual = residual - centroids[assign]
    return info


# ----------------------------------------------------------------- per-domain mix


def read_utt2category(path: Path) -> Dict[str, str]:
    """``utt2category`` (lines ``utt category``) -> ``{utt: category}``."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--utt2category {path} does not exist: write lines 'utt category' "
                                "(speech, sound, music, ...) for the utterances of wav.scp")
    cats = {}
    for n, line in enumerate(open(path), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{n}: expected 'utt category', got {line.strip()!r}")
        cats[parts[0]] = parts[1]
    return cats


def domain_of(category: str) -> str:
    return "speech" if category.lower() == "speech" else "audio"


def split_domains(entries: List[Tuple[str, str]], cats: Dict[str, str], utt2category: Path
                  ) -> Dict[str, List[Tuple[str, str]]]:
    """``wav.scp`` entries -> ``{"speech": [...], "audio": [...]}`` by their category."""
    missing = [utt for utt, _ in entries if utt not in cats]
    if missing:
        raise ValueError(f"{len(missing)} utterance(s) of wav.scp have no line in {utt2category} (first: "
                         f"{missing[0]}); add 'utt category' lines (speech, sound, music, ...)")
    out = {d: [] for d in DOMAINS}
    for utt, spec in entries:
        out[domain_of(cats[utt])].append((utt, spec))
    return out


def domain_sizes(k: int, speech_fraction: float, n_utts: Dict[str, int], allow_single_domain: bool,
                 utt2category: Path) -> Tuple[Dict[str, int], Optional[str]]:
    """Codebook rows per domain: ``K_s = round(k * speech_fraction)``, ``K_a = k - K_s``.

    Returns (``{domain: rows}``, a note when a domain without utterances gave its rows away)."""
    if not 0.0 <= speech_fraction <= 1.0:
        raise ValueError(f"--speech_fraction {speech_fraction} is not in [0, 1]")
    sizes = {"speech": int(round(k * speech_fraction))}
    sizes["audio"] = k - sizes["speech"]
    empty = [d for d in DOMAINS if sizes[d] > 0 and n_utts[d] == 0]
    if not empty:
        return sizes, None
    if len(empty) == 2 or not allow_single_domain:
        raise ValueError(
            f"no {' or '.join(empty)} utterances in {utt2category} (categories: speech -> speech, anything "
            f"else -> audio) but the {' and '.join(empty)} domain has rows of the codebook: add such data, "
            "set --speech_fraction to 0 or 1, or pass --allow_single_domain to give all rows to the other domain")
    (gone,) = empty
    other = "audio" if gone == "speech" else "speech"
    note = f"no {gone} utterances: all {k} rows given to {other}"
    logging.warning(note)
    return {gone: 0, other: k}, note


def check_same_width(sources: Dict[str, FeatureSource]) -> int:
    """The common feature width ``D`` of the sources; a clear error if they differ."""
    dims = {d: s.dim for d, s in sources.items()}
    if len(set(dims.values())) > 1:
        raise ValueError("the speech and audio sources give different feature widths ("
                         + ", ".join(f"{d}: {sources[d].describe()} -> {w}" for d, w in dims.items())
                         + "); one codebook needs one width: pick models of the same size (base "
                         "wav2vec2/HuBERT and BEATs are all 768)")
    return next(iter(dims.values()))


def stack_codebooks(domain_dirs: List[Path], n_layers: int, out_dir: Path) -> List[dict]:
    """``out_dir/codebook_i.npy`` = the domains' ``codebook_i.npy`` stacked in order -> info."""
    info = []
    for layer in range(1, n_layers + 1):
        path = out_dir / f"codebook_{layer}.npy"
        save_npy(path, np.concatenate([np.load(d / f"codebook_{layer}.npy") for d in domain_dirs]))
        info.append({"layer": layer, "file": str(path)})
    return info


def own_rows_fraction(feats: torch.Tensor, codebook: np.ndarray, rows: Tuple[int, int]) -> float:
    """Share of the frames ``feats`` ``(N, D)`` whose nearest entry of ``codebook`` ``(K, D)`` lies in
    ``rows`` ``[start, end)``: how often a domain's frames pick its own prior entries."""
    nearest = torch.cdist(feats, torch.from_numpy(codebook)).argmin(1)
    return float(((nearest >= rows[0]) & (nearest < rows[1])).float().mean())


# ----------------------------------------------------------------- runs


def run_signature(args) -> str:
    """What a finished stage covers (``out_dir/.done``): the inputs' digests and every option
    that changes the outputs."""
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())
               if k not in ("device", "out_dir", "wav_scp", "utt2category", "nj", "job", "prepare")}
    return done_signature(stage="semantic_prior", wav_scp=optional_file_sha256(args.wav_scp),
                          utt2category=optional_file_sha256(args.utt2category) if args.utt2category else None,
                          options=options)


def input_digests(args) -> str:
    return f"wav.scp {optional_file_sha256(args.wav_scp)}" + (
        f", utt2category {optional_file_sha256(args.utt2category)}" if args.utt2category else "")


def remove_published(out_dir: Path) -> None:
    """Remove an earlier run's outputs from ``out_dir`` (its .done already gone): none may look
    finished while this run works (stage 5 takes every ``codebook_*.npy`` there)."""
    for p in [out_dir / "prior_info.yaml", *out_dir.glob("codebook_*.npy")]:
        p.unlink(missing_ok=True)


@dataclass
class FeaturePlan:
    """One feature dir a run fills: the utterances of one source (a domain's, in a mix)."""

    feat_dir: Path
    upstream: str
    path: Optional[str]
    layer: int
    entries: List[Tuple[str, str]]
    domain: Optional[str] = None  # in a mix: "speech" / "audio" (its flags are --speech_upstream, ...)

    def load(self, device: str) -> FeatureSource:
        return load_source(self.upstream, self.path, self.layer, device,
                           prefix=f"{self.domain}_" if self.domain else "")


@dataclass
class MixPlan:
    cats: Dict[str, str]
    entries: Dict[str, List[Tuple[str, str]]]
    sizes: Dict[str, int]
    note: Optional[str]

    @property
    def used(self) -> List[str]:
        return [d for d in DOMAINS if self.sizes[d] > 0]


def plan_mix(args) -> MixPlan:
    cats = read_utt2category(args.utt2category)
    entries = split_domains(read_wav_scp(args.wav_scp), cats, args.utt2category)
    sizes, note = domain_sizes(args.codebook_size, args.speech_fraction, {d: len(e) for d, e in entries.items()},
                               args.allow_single_domain, args.utt2category)
    return MixPlan(cats, entries, sizes, note)


def mix_plans(args, mix: MixPlan) -> Dict[str, FeaturePlan]:
    """Each used domain's feature dir and (subsampled) utterances."""
    return {d: FeaturePlan(args.out_dir / f"feats_{d}", *domain_args(args, d),
                           subsample(mix.entries[d], args.max_utts, args.seed), domain=d) for d in mix.used}


def feature_plans(args, mixed: bool) -> List[FeaturePlan]:
    """The feature dirs of this run, each with its (subsampled) utterances, in extraction order."""
    if not mixed:
        return [FeaturePlan(args.out_dir / "feats", args.upstream, args.upstream_path, args.layer,
                            subsample(read_wav_scp(args.wav_scp), args.max_utts, args.seed))]
    return list(mix_plans(args, plan_mix(args)).values())


def prepare_jobs(args, mixed: bool) -> None:
    """``--prepare``: ready the feature dirs for ``--job`` runs (those of other sources or inputs
    are emptied, a killed run's temporary files removed) and remove an earlier run's published
    outputs. Loads no model."""
    remove_published(args.out_dir)
    for plan in feature_plans(args, mixed):
        use_dir(plan.feat_dir, ".source", feature_stamp(plan.upstream, plan.path, plan.layer, input_digests(args)),
                "features")


def run_job(args, mixed: bool) -> None:
    """``--job J``: extract job J's share of every feature dir (no k-means)."""
    plans = feature_plans(args, mixed)
    sources = [plan.load(args.device) for plan in plans]
    if mixed:
        check_same_width({p.domain: s for p, s in zip(plans, sources)})
    share = JobShare(args.job, args.nj)
    for plan, source in zip(plans, sources):
        paths = extract_features(plan.entries, source, plan.feat_dir, input_digests(args), share)
        logging.info(f"job {args.job}/{args.nj}: {len(paths)} utterance(s) of {source.describe()} in {plan.feat_dir}")


def run_single(args, signature: str) -> List[dict]:
    (plan,) = feature_plans(args, mixed=False)
    source = plan.load(args.device)
    paths = extract_features(plan.entries, source, plan.feat_dir, input_digests(args))
    feats = load_frames(paths, source.dim, args.max_frames, args.seed)
    logging.info(f"k-means on {feats.shape[0]} frames of dim {feats.shape[1]}")
    n_layers = args.n_q if args.residual_init == "kmeans" else 1
    work = args.out_dir / ".work"  # the layers are clustered here and published when all are done
    info = residual_kmeans(feats, args.codebook_size, n_layers, args.kmeans_iters, args.seed, work, signature)
    for c in info:  # copied, not moved: a kill while publishing leaves .work whole for the rerun
        final = args.out_dir / Path(c["file"]).name
        tmp = final.with_name(f"{final.stem}.tmp{os.getpid()}.npy")
        shutil.copyfile(c["file"], tmp)
        os.replace(tmp, final)
        c["file"] = str(final)
    meta = dict(upstream=args.upstream, upstream_path=args.upstream_path, layer=args.layer,
                dim=int(feats.shape[1]), codebook_size=args.codebook_size, n_frames=int(feats.shape[0]),
                n_utts=len(paths), codebooks=info)
    atomic_write_text(args.out_dir / "prior_info.yaml", yaml.safe_dump(meta, sort_keys=False))
    return info


def domain_args(args, domain: str) -> Tuple[str, Optional[str], int]:
    """(upstream, path, layer) of ``domain`` from ``--{domain}_upstream`` etc."""
    layer = getattr(args, f"{domain}_layer")
    return (getattr(args, f"{domain}_upstream"), getattr(args, f"{domain}_upstream_path"),
            args.layer if layer is None else layer)


def domain_prior(plan: FeaturePlan, source: FeatureSource, k: int, start: int,
                 args, signature: Optional[str] = None) -> Tuple[dict, torch.Tensor]:
    """Features + residual k-means of one domain into ``out_dir/{domain}`` -> (its
    ``prior_info`` entry with rows ``[start, start + k)``, its k-means frames ``(N, D)``)."""
    domain = plan.domain
    paths = extract_features(plan.entries, source, plan.feat_dir, input_digests(args))
    feats = load_frames(paths, source.dim, args.max_frames, args.seed)
    logging.info(f"{domain}: k-means of {k} rows on {feats.shape[0]} frames of {source.describe()}")
    n_layers = args.n_q if args.residual_init == "kmeans" else 1
    try:
        info = residual_kmeans(feats, k, n_layers, args.kmeans_iters, args.seed, args.out_dir / domain,
                               None if signature is None else signature + f"domain {domain}, rows {start}..{start + k}\n")
    except ValueError as e:
        raise ValueError(f"{domain} domain ({source.describe()}): {e}") from e
    part = dict(domain=domain, upstream=source.upstream, upstream_path=source.path, layer=source.layer,
                rows=[start, start + k], n_utts=len(paths), n_frames=int(feats.shape[0]), codebooks=info)
    return part, feats


def run_mixed(args, signature: str) -> List[dict]:
    mix = plan_mix(args)
    plans = mix_plans(args, mix)
    sources = {d: plan.load(args.device) for d, plan in plans.items()}
    dim = check_same_width(sources)  # before any extraction
    parts, feats, start = [], {}, 0
    for d, plan in plans.items():
        part, feats[d] = domain_prior(plan, sources[d], mix.sizes[d], start, args, signature)
        part["categories"] = sorted({mix.cats[u] for u, _ in mix.entries[d]})
        parts.append(part)
        start += mix.sizes[d]
    books = stack_codebooks([args.out_dir / p["domain"] for p in parts], len(parts[0]["codebooks"]), args.out_dir)
    first = np.load(books[0]["file"])
    for p in parts:
        p["own_rows_fraction"] = own_rows_fraction(feats[p["domain"]], first, tuple(p["rows"]))
    meta = dict(mode="mixed", composition="split", speech_fraction=args.speech_fraction,
                utt2category=str(args.utt2category), dim=dim, codebook_size=args.codebook_size,
                single_domain_note=mix.note, sources=parts, codebooks=books)
    atomic_write_text(args.out_dir / "prior_info.yaml", yaml.safe_dump(meta, sort_keys=False))
    return books


def mixed_mode(args, parser) -> bool:
    """True for a per-domain run; errors on half-given or conflicting flags."""
    mixed = {"--utt2category": args.utt2category, "--speech_upstream": args.speech_upstream,
             "--audio_upstream": args.audio_upstream}
    given = [f for f, v in mixed.items() if v is not None]
    if not given:
        for f in ("speech_upstream_path", "audio_upstream_path", "speech_layer", "audio_layer"):
            if getattr(args, f) is not None:
                parser.error(f"--{f} is for the per-domain mix: also give --utt2category, "
                             "--speech_upstream and --audio_upstream")
        return False
    if len(given) < len(mixed):
        parser.error(f"the per-domain mix needs {', '.join(mixed)}; missing "
                     f"{', '.join(f for f in mixed if f not in given)}")
    if args.upstream is not None or args.upstream_path is not None:
        parser.error("--upstream/--upstream_path are for a single source; the per-domain mix takes "
                     "--speech_upstream(_path) and --audio_upstream(_path)")
    return True


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wav_scp", type=Path, required=True)
    p.add_argument("--upstream", default=None,
                   help="s3prl upstream name or 'beats' (single source; default hf_hubert_custom)")
    p.add_argument("--upstream_path", default=None,
                   help="local HF dir for *_custom upstreams, or the BEATs .pt checkpoint for 'beats'")
    p.add_argument("--layer", type=int, default=9, help="hidden layer used (0 = CNN/patch-embedding output)")
    p.add_argument("--codebook_size", type=int, required=True)
    p.add_argument("--n_q", type=int, default=3)
    p.add_argument("--residual_init", choices=["kmeans", "random"], default="kmeans",
                   help="layers 2..n_q: residual k-means, or none (random init in the model)")
    p.add_argument("--max_utts", type=int, default=2000, help="utterances used, per domain (0 = all)")
    p.add_argument("--max_frames", type=int, default=200000, help="frames sampled for k-means, per domain")
    p.add_argument("--kmeans_iters", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out_dir", type=Path, required=True)
    g = p.add_argument_group("per-domain mix (speech rows first, then audio rows)")
    g.add_argument("--utt2category", type=Path, default=None, help="lines 'utt category' (speech vs other)")
    g.add_argument("--speech_upstream", default=None, help="source of the speech rows (e.g. hf_wav2vec2_custom)")
    g.add_argument("--speech_upstream_path", default=None)
    g.add_argument("--speech_layer", type=int, default=None, help="default: --layer")
    g.add_argument("--audio_upstream", default=None, help="source of the non-speech rows (e.g. beats)")
    g.add_argument("--audio_upstream_path", default=None)
    g.add_argument("--audio_layer", type=int, default=None, help="default: --layer")
    g.add_argument("--speech_fraction", type=float, default=0.5,
                   help="share of each codebook's rows for speech: round(K * fraction)")
    g.add_argument("--allow_single_domain", action="store_true",
                   help="if one domain has no utterances, give all rows to the other instead of failing")
    j = p.add_argument_group("feature extraction in N jobs (--prepare, then --job 1..N, then no --job)")
    j.add_argument("--nj", type=int, default=1, help="number of extraction jobs")
    j.add_argument("--job", type=int, default=None, help="extract only this job's share (1..nj); no k-means")
    j.add_argument("--prepare", action="store_true", help="ready the feature dirs for the --job runs; loads no model")
    return p


def main(argv: Sequence[str] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    mixed = mixed_mode(args, parser)
    if args.nj < 1:
        parser.error(f"--nj must be >= 1, got {args.nj}")
    if args.job is not None and not 1 <= args.job <= args.nj:
        parser.error(f"--job must be in 1..--nj ({args.nj}), got {args.job}")
    if args.job is not None and args.prepare:
        parser.error("--prepare runs once before the --job runs: give one of them")
    if not mixed and args.upstream is None:
        args.upstream = "hf_hubert_custom"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    done = args.out_dir / ".done"
    signature = run_signature(args)
    if args.prepare or args.job is not None:
        if not done_matches(done, signature, f"semantic priors in {args.out_dir}"):
            prepare_jobs(args, mixed) if args.prepare else run_job(args, mixed)
        return
    info = None
    if done_matches(done, signature, f"semantic priors in {args.out_dir}"):
        prior_info = args.out_dir / "prior_info.yaml"
        info = yaml.safe_load(prior_info.read_text())["codebooks"] if prior_info.is_file() else []
        if not info or not all(Path(c["file"]).is_file() for c in info):
            logging.warning(f"{done} is there but prior_info.yaml or a codebook is gone; redoing the stage")
            done.unlink()
            info = None
    if info is None:
        remove_published(args.out_dir)
        info = run_mixed(args, signature) if mixed else run_single(args, signature)
        atomic_write_text(done, signature)
        shutil.rmtree(args.out_dir / ".work", ignore_errors=True)
    print(",".join(c["file"] for c in info))


if __name__ == "__main__":
    main()
