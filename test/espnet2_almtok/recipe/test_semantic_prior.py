import argparse
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

from conftest import speechlike
from espnet2_almtok.recipe import beats_features, semantic_prior
from espnet2_almtok.recipe.make_tiny_ssl import build, build_beats, build_wav2vec2


def write_wav_scp(root: Path, n: int) -> Path:
    """``root/wav.scp`` over ``n`` one-second speech-like clips ``root/u{i}.wav``."""
    lines = []
    for i in range(n):
        soundfile.write(root / f"u{i}.wav", speechlike(1.0, seed=i).numpy(), 16000)
        lines.append(f"u{i} {root / f'u{i}.wav'}\n")
    (root / "wav.scp").write_text("".join(lines))
    return root / "wav.scp"


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
    write_wav_scp(tmp_path, 3)
    out = tmp_path / "prior"
    semantic_prior.main(["--wav_scp", str(tmp_path / "wav.scp"), "--upstream", "hf_hubert_custom",
                         "--upstream_path", str(ssl), "--layer", "2", "--codebook_size", "8", "--n_q", "3",
                         "--kmeans_iters", "5", "--out_dir", str(out)])
    books = [np.load(out / f"codebook_{i}.npy") for i in (1, 2, 3)]
    assert all(b.shape == (8, 16) and b.dtype == np.float32 for b in books)
    assert len(list((out / "feats").glob("*.npy"))) == 3
    # residual codebooks are finer than the first
    assert np.abs(books[2]).mean() < np.abs(books[0]).mean()
    # a rerun of the same command does nothing (.done); one with other options redoes the k-means
    # and keeps the features (same source and inputs)
    argv = ["--wav_scp", str(tmp_path / "wav.scp"), "--upstream", "hf_hubert_custom", "--upstream_path", str(ssl),
            "--layer", "2", "--codebook_size", "8", "--n_q", "3", "--out_dir", str(out)]
    before = (out / "codebook_2.npy").stat().st_mtime_ns
    feat_before = (out / "feats/u0.npy").stat().st_mtime_ns
    semantic_prior.main([*argv, "--kmeans_iters", "5"])
    assert (out / "codebook_2.npy").stat().st_mtime_ns == before
    semantic_prior.main([*argv, "--n_q", "2"])  # fewer layers: codebook_3 of the earlier run is gone
    assert (out / "codebook_2.npy").stat().st_mtime_ns != before and not (out / "codebook_3.npy").exists()
    assert (out / "feats/u0.npy").stat().st_mtime_ns == feat_before
    assert '"n_q": 2' in (out / ".done").read_text() and not (out / ".work").exists()
    # another layer (another source) removes the cached features and extracts them again
    semantic_prior.main([*argv, "--layer", "1", "--n_q", "2"])
    assert (out / "feats/u0.npy").stat().st_mtime_ns != feat_before
    assert yaml.safe_load((out / "prior_info.yaml").read_text())["layer"] == 1
    with pytest.raises(ValueError, match="layer 7 is out of range"):
        semantic_prior.main(["--wav_scp", str(tmp_path / "wav.scp"), "--upstream", "hf_hubert_custom",
                             "--upstream_path", str(ssl), "--layer", "7", "--codebook_size", "8",
                             "--out_dir", str(tmp_path / "p2")])


@pytest.mark.parametrize("upstream, dim", [("mfcc", 39), ("fbank", 240)])
def test_offline_priors_from_feature_upstreams_without_parameters(tmp_path, upstream, dim):
    """The recipe's default priors: s3prl's mfcc/fbank need no download (and have no weights)."""
    write_wav_scp(tmp_path, 2)
    out = tmp_path / "prior"
    semantic_prior.main(["--wav_scp", str(tmp_path / "wav.scp"), "--upstream", upstream, "--layer", "0",
                         "--codebook_size", "8", "--n_q", "2", "--kmeans_iters", "5", "--out_dir", str(out)])
    assert np.load(out / "codebook_1.npy").shape == (8, dim)
    assert yaml.safe_load((out / "prior_info.yaml").read_text())["dim"] == dim  # run.sh sizes the codec by it


# ----------------------------------------------------------------- BEATs source and per-domain mix


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny random models: wav2vec2 (width 32), BEATs of width 32 and of width 16."""
    root = tmp_path_factory.mktemp("tiny_ssl")
    return dict(w2v=build_wav2vec2(root / "w2v", hidden=32, layers=2),
                beats=build_beats(root / "beats.pt", hidden=32, layers=2),
                beats16=build_beats(root / "beats16.pt", hidden=16, layers=2))


def noise_burst(seconds: float, seed: int) -> np.ndarray:
    """White-noise bursts (on 0.2 s, off 0.1 s), ``(T,)`` at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * rng.standard_normal(t.size) * ((t % 0.3) < 0.2)).astype(np.float32)


@pytest.fixture(scope="module")
def mixed_data(tmp_path_factory):
    """3 speech-like clips (speech), 2 noise clips (sound) and 1 (music): wav.scp + utt2category."""
    d = tmp_path_factory.mktemp("mixed_data")
    scp, cats = [], []
    clips = [(f"s{i}", "speech", speechlike(1.0, seed=i).numpy()) for i in range(3)]
    clips += [(f"n{i}", "sound" if i < 2 else "music", noise_burst(1.5, seed=i)) for i in range(3)]
    for utt, cat, wav in clips:
        soundfile.write(d / f"{utt}.wav", wav, 16000)
        scp.append(f"{utt} {d / f'{utt}.wav'}\n")
        cats.append(f"{utt} {cat}\n")
    (d / "wav.scp").write_text("".join(scp))
    (d / "utt2category").write_text("".join(cats))
    return d


def mixed_argv(data: Path, speech_path, audio_path, out: Path, *extra: str) -> list:
    return ["--wav_scp", str(data / "wav.scp"), "--utt2category", str(data / "utt2category"),
            "--speech_upstream", "hf_wav2vec2_custom", "--speech_upstream_path", str(speech_path),
            "--audio_upstream", "beats", "--audio_upstream_path", str(audio_path), "--layer", "2",
            "--codebook_size", "8", "--n_q", "2", "--out_dir", str(out), *extra]


def test_tiny_beats_checkpoint_gives_frame_features(tiny):
    ckpt = beats_features.read_beats_checkpoint(tiny["beats"])
    assert ckpt["cfg"]["encoder_layers"] == 2 and ckpt["cfg"]["encoder_embed_dim"] == 32
    # ESPnet's own BEATs loader accepts the file (the official format) and gets our weights
    from espnet2.asr.encoder.beats_encoder import BeatsEncoder

    espnet_model = BeatsEncoder(input_size=1, beats_ckpt_path=str(tiny["beats"]))
    espnet_model.reload_pretrained_parameters()
    model = beats_features.load_beats(tiny["beats"])
    ours = model.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in espnet_model.state_dict().items())

    wav = speechlike(1.0, seed=0)
    feats = {layer: beats_features.beats_layer_features(model, wav, layer) for layer in (0, 2)}
    # 98 fbank frames (25 ms / 10 ms) -> 6 time steps of 16 frames (160 ms)
    assert feats[2].shape == (6, 32) and feats[2].dtype == np.float32 and np.isfinite(feats[2]).all()
    assert feats[0].shape == (6, 32) and not np.allclose(feats[0], feats[2])
    source = semantic_prior.load_source("beats", str(tiny["beats"]), 2)
    assert source.dim == 32 and np.allclose(source.extract(wav), feats[2], atol=1e-6)
    with pytest.raises(ValueError, match="--layer 3 is out of range: beats has layers 0..2"):
        semantic_prior.load_source("beats", str(tiny["beats"]), 3)


def test_beats_checkpoint_errors_name_the_file(tmp_path, tiny, mixed_data):
    missing = tmp_path / "nowhere" / "BEATs.pt"
    with pytest.raises(FileNotFoundError, match=f"BEATs checkpoint {missing} does not exist"):
        semantic_prior.main(["--wav_scp", str(mixed_data / "wav.scp"), "--upstream", "beats", "--upstream_path",
                             str(missing), "--layer", "1", "--codebook_size", "4", "--out_dir", str(tmp_path / "p")])
    no_cfg = tmp_path / "no_cfg.pt"
    torch.save({"model": {}}, no_cfg)
    with pytest.raises(ValueError, match=f"{no_cfg} is not an official BEATs checkpoint.*found \\['model'\\]"):
        beats_features.load_beats(no_cfg)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"could not read BEATs checkpoint {garbage}"):
        beats_features.load_beats(garbage)
    pickled = tmp_path / "pickled.pt"  # an arbitrary object: refused, never unpickled
    torch.save({"cfg": argparse.Namespace(a=1), "model": {}}, pickled)
    with pytest.raises(ValueError, match=f"{pickled} with torch.load\\(weights_only=True\\)"):
        beats_features.load_beats(pickled)
    truncated = tmp_path / "truncated.pt"
    ckpt = torch.load(tiny["beats"], weights_only=True)
    del ckpt["model"]["encoder.layers.1.fc1.weight"]
    torch.save(ckpt, truncated)
    with pytest.raises(ValueError, match=f"{truncated} does not match its config: missing weights "
                                         "\\['encoder.layers.1.fc1.weight'\\]"):
        beats_features.load_beats(truncated)


def lloyd_fixed_point(x: np.ndarray, centroids: np.ndarray) -> bool:
    """Each centroid is the mean of the frames ``x`` nearest to it (a converged k-means)."""
    assign = torch.cdist(torch.from_numpy(x), torch.from_numpy(centroids)).argmin(1).numpy()
    return all(np.allclose(x[assign == j].mean(0), c, atol=1e-4) for j, c in enumerate(centroids))


def test_mixed_priors_stack_speech_then_audio_rows(tmp_path, tiny, mixed_data):
    out = tmp_path / "prior"
    semantic_prior.main(mixed_argv(mixed_data, tiny["w2v"], tiny["beats"], out, "--speech_fraction", "0.5"))
    books = [np.load(out / f"codebook_{i}.npy") for i in (1, 2)]
    assert all(b.shape == (8, 32) and b.dtype == np.float32 for b in books)
    info = yaml.safe_load((out / "prior_info.yaml").read_text())
    assert info["composition"] == "split" and info["dim"] == 32
    speech, audio = info["sources"]
    assert (speech["domain"], speech["upstream"], speech["rows"], speech["categories"]) == \
        ("speech", "hf_wav2vec2_custom", [0, 4], ["speech"])
    assert (audio["domain"], audio["upstream"], audio["rows"], audio["categories"]) == \
        ("audio", "beats", [4, 8], ["music", "sound"])
    assert (speech["n_utts"], audio["n_utts"]) == (3, 3)
    assert [c["file"] for c in info["codebooks"]] == [str(out / "codebook_1.npy"), str(out / "codebook_2.npy")]

    # the rows are each domain's (residual) k-means of its own features, from its own source
    feats = {d: np.concatenate([np.load(f) for f in sorted((out / f"feats_{d}").glob("*.npy"))])
             for d in ("speech", "audio")}
    # s3prl: 50 frames per s at 16 kHz; BEATs: 9 steps of 160 ms in 1.5 s
    assert feats["speech"].shape == (3 * 50, 32) and feats["audio"].shape == (3 * 9, 32)
    rows = {"speech": slice(*speech["rows"]), "audio": slice(*audio["rows"])}
    for d in ("speech", "audio"):
        first, second = books[0][rows[d]], books[1][rows[d]]
        assert lloyd_fixed_point(feats[d], first)
        assign = torch.cdist(torch.from_numpy(feats[d]), torch.from_numpy(first)).argmin(1).numpy()
        assert lloyd_fixed_point(feats[d] - first[assign], second)

    # wav2vec2 and BEATs spaces differ: speech rows sit at the speech frames, audio rows at the audio ones
    def nearest(d: str, rows: slice) -> torch.Tensor:
        return torch.cdist(torch.from_numpy(feats[d]), torch.from_numpy(books[0][rows])).min(1).values

    assert (nearest("speech", rows["speech"]) < nearest("speech", rows["audio"])).float().mean() > 0.9
    assert (nearest("audio", rows["audio"]) < nearest("audio", rows["speech"])).float().mean() > 0.9
    assert 0.0 <= speech["own_rows_fraction"] <= 1.0 and 0.0 <= audio["own_rows_fraction"] <= 1.0


def test_mixed_priors_refuse_different_widths(tmp_path, tiny, mixed_data):
    out = tmp_path / "prior"
    with pytest.raises(ValueError, match="different feature widths \\(speech: hf_wav2vec2_custom .* -> 32, "
                                         "audio: beats .* -> 16\\)"):
        semantic_prior.main(mixed_argv(mixed_data, tiny["w2v"], tiny["beats16"], out))
    assert not (out / "feats_speech").exists()  # refused before any extraction


def test_mixed_priors_empty_domain_and_flags(tmp_path, tiny, mixed_data):
    only_speech = tmp_path / "data"
    only_speech.mkdir()
    scp = [line for line in (mixed_data / "wav.scp").read_text().splitlines(True) if line.startswith("s")]
    (only_speech / "wav.scp").write_text("".join(scp))
    (only_speech / "utt2category").write_text((mixed_data / "utt2category").read_text())
    out = tmp_path / "prior"
    with pytest.raises(ValueError, match=f"no audio utterances in {only_speech / 'utt2category'}.*"
                                         "--allow_single_domain"):
        semantic_prior.main(mixed_argv(only_speech, tiny["w2v"], tiny["beats"], out))
    semantic_prior.main(mixed_argv(only_speech, tiny["w2v"], tiny["beats"], out, "--allow_single_domain"))
    info = yaml.safe_load((out / "prior_info.yaml").read_text())
    assert [(s["domain"], s["rows"]) for s in info["sources"]] == [("speech", [0, 8])]
    assert info["single_domain_note"] == "no audio utterances: all 8 rows given to speech"
    assert np.load(out / "codebook_1.npy").shape == (8, 32)

    (only_speech / "utt2category").write_text("s0 speech\ns1 speech\n")
    with pytest.raises(ValueError, match=f"1 utterance\\(s\\) of wav.scp have no line in "
                                         f"{only_speech / 'utt2category'} \\(first: s2\\)"):
        semantic_prior.main(mixed_argv(only_speech, tiny["w2v"], tiny["beats"], out))
    with pytest.raises(ValueError, match="--audio_layer 5 is out of range: beats has layers 0..2"):
        semantic_prior.main(mixed_argv(mixed_data, tiny["w2v"], tiny["beats"], out, "--audio_layer", "5"))
    with pytest.raises(FileNotFoundError, match=f"--utt2category {tmp_path / 'nope'} does not exist"):
        semantic_prior.main(mixed_argv(mixed_data, tiny["w2v"], tiny["beats"], out, "--utt2category",
                                       str(tmp_path / "nope")))
    with pytest.raises(SystemExit):  # half a mix: argparse error naming the missing flags
        semantic_prior.main(["--wav_scp", str(only_speech / "wav.scp"), "--speech_upstream", "hf_wav2vec2_custom",
                             "--codebook_size", "8", "--out_dir", str(out)])


def test_single_source_beats_priors(tmp_path, tiny, mixed_data):
    out = tmp_path / "prior"
    semantic_prior.main(["--wav_scp", str(mixed_data / "wav.scp"), "--upstream", "beats", "--upstream_path",
                         str(tiny["beats"]), "--layer", "1", "--codebook_size", "4", "--n_q", "2",
                         "--out_dir", str(out)])
    info = yaml.safe_load((out / "prior_info.yaml").read_text())
    assert (info["upstream"], info["layer"], info["dim"], info["n_utts"]) == ("beats", 1, 32, 6)
    assert info["n_frames"] == 3 * 6 + 3 * 9  # 1 s clips: 6 steps of 160 ms; 1.5 s clips: 9
    assert [np.load(out / f"codebook_{i}.npy").shape for i in (1, 2)] == [(4, 32), (4, 32)]


# ----------------------------------------------------------------- feature extraction in N jobs


def run_in_jobs(argv: list, nj: int, order=None) -> None:
    """The recipe's stage 3: --prepare, the --job runs (in ``order``), then the k-means run."""
    semantic_prior.main([*argv, "--nj", str(nj), "--prepare"])
    for job in order or range(1, nj + 1):
        semantic_prior.main([*argv, "--nj", str(nj), "--job", str(job)])
    semantic_prior.main(argv)


def test_priors_in_jobs_equal_a_single_run(tmp_path, monkeypatch):
    wav_scp = write_wav_scp(tmp_path, 5)
    argv = ["--wav_scp", str(wav_scp), "--upstream", "mfcc", "--layer", "0", "--codebook_size", "4",
            "--n_q", "2", "--kmeans_iters", "5"]
    semantic_prior.main([*argv, "--out_dir", str(tmp_path / "one")])

    out = tmp_path / "split"
    semantic_prior.main([*argv, "--out_dir", str(out), "--nj", "3", "--prepare"])
    semantic_prior.main([*argv, "--out_dir", str(out), "--nj", "3", "--job", "2"])
    # job 2 of 3 took every third utterance from the second on, and clustered nothing
    assert len(list((out / "feats").glob("*.npy"))) == 2 and not list(out.glob("codebook_*.npy"))
    for job in (3, 1):
        semantic_prior.main([*argv, "--out_dir", str(out), "--nj", "3", "--job", str(job)])
    assert len(list((out / "feats").glob("*.npy"))) == 5

    extracted = []
    real = semantic_prior.save_npy
    monkeypatch.setattr(semantic_prior, "save_npy",
                        lambda path, a: (extracted.append(Path(path).parent.name), real(path, a)))
    semantic_prior.main([*argv, "--out_dir", str(out)])
    assert "feats" not in extracted  # the k-means run found every feature in place
    for i in (1, 2):
        np.testing.assert_array_equal(np.load(out / f"codebook_{i}.npy"), np.load(tmp_path / "one" / f"codebook_{i}.npy"))
    # --nj/--job are not part of the signature: a one-job rerun of the same stage does nothing
    done = (out / ".done").read_text()
    semantic_prior.main([*argv, "--out_dir", str(out), "--nj", "3", "--prepare"])
    assert (out / ".done").read_text() == done and (out / "codebook_1.npy").exists()


def test_a_job_refuses_an_unprepared_dir_and_bad_flags(tmp_path, capsys):
    wav_scp = write_wav_scp(tmp_path, 2)
    argv = ["--wav_scp", str(wav_scp), "--upstream", "mfcc", "--layer", "0", "--codebook_size", "4",
            "--out_dir", str(tmp_path / "p")]
    with pytest.raises(RuntimeError, match="not prepared .* run the same command with --prepare"):
        semantic_prior.main([*argv, "--nj", "2", "--job", "1"])
    semantic_prior.main([*argv, "--nj", "2", "--prepare"])
    # prepared for mfcc; a job of another source is refused, not mixed in
    with pytest.raises(RuntimeError, match="not prepared"):
        semantic_prior.main([*argv, "--upstream", "fbank", "--nj", "2", "--job", "1"])
    for bad, msg in ((["--nj", "0"], "--nj must be >= 1"), (["--nj", "2", "--job", "3"], r"--job must be in 1..--nj \(2\)"),
                     (["--nj", "2", "--job", "1", "--prepare"], "give one of them")):
        with pytest.raises(SystemExit):
            semantic_prior.main([*argv, *bad])
        assert re.search(msg, capsys.readouterr().err)


def test_mixed_priors_in_jobs_equal_a_single_run(tmp_path, tiny, mixed_data):
    semantic_prior.main(mixed_argv(mixed_data, tiny["w2v"], tiny["beats"], tmp_path / "one"))
    run_in_jobs(mixed_argv(mixed_data, tiny["w2v"], tiny["beats"], tmp_path / "split"), nj=2, order=[2, 1])
    for i in (1, 2):
        np.testing.assert_array_equal(np.load(tmp_path / "split" / f"codebook_{i}.npy"),
                                      np.load(tmp_path / "one" / f"codebook_{i}.npy"))


def test_a_rerun_after_a_killed_job_keeps_the_features_the_jobs_wrote(tmp_path):
    """A kill mid-job leaves its finished features and a temporary file: the rerun's --prepare
    removes the temporary file only, and the jobs extract just what is missing."""
    wav_scp = write_wav_scp(tmp_path, 4)
    out = tmp_path / "p"
    argv = ["--wav_scp", str(wav_scp), "--upstream", "mfcc", "--layer", "0", "--codebook_size", "4",
            "--n_q", "1", "--kmeans_iters", "3", "--out_dir", str(out)]
    semantic_prior.main([*argv, "--nj", "2", "--prepare"])
    semantic_prior.main([*argv, "--nj", "2", "--job", "1"])
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "feats").glob("*.npy")}
    assert len(kept) == 2
    (out / "feats" / "u1.tmp999.npy").write_bytes(b"half a file")  # job 2 killed while writing
    run_in_jobs(argv, nj=2)
    feats = {p.name: p.stat().st_mtime_ns for p in (out / "feats").glob("*.npy")}
    assert set(feats) == {f"u{i}.npy" for i in range(4)} and all(feats[n] == t for n, t in kept.items())
    assert (out / ".done").is_file() and (out / "codebook_1.npy").is_file()
