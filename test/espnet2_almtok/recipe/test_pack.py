"""Stage 9's zip is in ESPnet's pack format (pack_funcs.unpack reads it), ALMTokenizer loads it,
it keeps no absolute path, ships generator-only weights; stage 11's upload skips clearly offline."""

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import copy_recipe, run_recipe, speechlike


def make_exp(root: Path, debug_config: Path):
    """An exp dir as the recipe leaves it: config.yaml with absolute codebook_init prior paths
    (stage 3's files), full-model weights, and the prior dir with prior_info.yaml."""
    from espnet2_almtok.codec.almtok import ALMTokenizerCodec

    conf = yaml.safe_load(Path(debug_config).read_text())
    conf.update(model_conf={}, use_preprocessor=True)
    priors = root / "semantic_prior"
    priors.mkdir(parents=True)
    gen = conf["codec_conf"]["generator_params"]
    rng = np.random.default_rng(0)
    for i in range(1, gen["n_q"] + 1):
        np.save(priors / f"codebook_{i}.npy", rng.standard_normal((gen["codebook_size"], gen["codebook_dim"]),
                                                                  dtype=np.float32))
    (priors / "prior_info.yaml").write_text(yaml.safe_dump({"dim": gen["codebook_dim"]}))
    gen["codebook_init"] = [str((priors / f"codebook_{i}.npy").resolve()) for i in range(1, gen["n_q"] + 1)]
    exp = root / "codec_debug_stage2"
    exp.mkdir()
    (exp / "config.yaml").write_text(yaml.safe_dump(conf))
    codec = ALMTokenizerCodec(**conf["codec_conf"]).eval()
    torch.save({"codec." + k: v for k, v in codec.state_dict().items()}, exp / "valid.mel_loss.best.pth")
    return exp, priors, codec


def test_espnets_unpack_and_from_pretrained_load_the_packed_zip(tmp_path, debug_config):
    from espnet2.main_funcs.pack_funcs import unpack

    from espnet2_almtok import ALMTokenizer
    from espnet2_almtok.codec.generator import TRAINING_ONLY_PREFIXES
    from espnet2_almtok.recipe import pack

    exp, priors, codec = make_exp(tmp_path / "exp", debug_config)
    out = tmp_path / "almtok_packed.zip"
    pack.main(["--exp_dir", str(exp), "--prior_dir", str(priors), "--out", str(out)])
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        meta = yaml.safe_load(zf.read("meta.yaml"))
        packed_conf = zf.read("almtok/config.yaml").decode()
    assert names[0] == "meta.yaml" and [n for n in names if n.endswith("meta.yaml")] == ["meta.yaml"]
    assert {"files", "yaml_files", "timestamp", "python", "torch", "espnet"} <= set(meta)
    assert meta["files"] == {"model_file": "almtok/model.pth"}
    assert meta["yaml_files"] == {"train_config": "almtok/config.yaml"}
    assert str(tmp_path) not in packed_conf  # no absolute path of the exp dir or the priors
    assert "almtok/priors/prior_info.yaml" in names

    files = unpack(out, tmp_path / "unpacked")
    assert files == {"train_config": str(tmp_path / "unpacked/almtok/config.yaml"),
                     "model_file": str(tmp_path / "unpacked/almtok/model.pth")}
    conf = yaml.safe_load(Path(files["train_config"]).read_text())
    init = conf["codec_conf"]["generator_params"]["codebook_init"]
    assert init == [str(tmp_path / f"unpacked/almtok/priors/codebook_{i}.npy") for i in (1, 2, 3)]
    for i, f in enumerate(init, 1):  # the packed priors are the recipe's
        assert np.array_equal(np.load(f), np.load(priors / f"codebook_{i}.npy"))

    state = torch.load(files["model_file"])  # generator-only weights
    assert state and all(k.startswith("codec.generator.") for k in state)
    assert not any(k[len("codec.generator."):].startswith(TRAINING_ONLY_PREFIXES) for k in state)

    wav = speechlike(1.2, seed=5)
    expected = ALMTokenizer.from_pretrained(exp).encode(wav, 16000, window=5)
    assert torch.equal(ALMTokenizer.from_pretrained(out).encode(wav, 16000, window=5), expected)
    assert torch.equal(ALMTokenizer.from_pretrained(out, model_file="model.pth").encode(wav, 16000, window=5),
                       expected)
    assert torch.equal(ALMTokenizer.from_pretrained(tmp_path / "unpacked/almtok").encode(wav, 16000, window=5),
                       expected)


def test_a_moved_exp_dir_without_its_priors_packs_and_loads(tmp_path, debug_config):
    from espnet2.main_funcs.pack_funcs import unpack

    from espnet2_almtok import ALMTokenizer
    from espnet2_almtok.recipe import pack

    exp, priors, codec = make_exp(tmp_path / "orig", debug_config)
    moved = shutil.copytree(exp, tmp_path / "elsewhere" / exp.name)
    shutil.rmtree(tmp_path / "orig")
    out = pack.pack(moved, tmp_path / "packed.zip")
    files = unpack(out, tmp_path / "unpacked")
    conf = yaml.safe_load(Path(files["train_config"]).read_text())
    assert conf["codec_conf"]["generator_params"]["codebook_init"] is None  # no prior file to ship
    wav = speechlike(0.4, seed=1)
    expected = codec.generator.encode(wav.view(1, 1, -1), 4)
    for source in (moved, out):
        assert torch.equal(ALMTokenizer.from_pretrained(source).encode(wav, 16000, window=4), expected)


def test_hf_upload_skips_saying_why_when_offline_or_not_logged_in(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    from espnet2_almtok.recipe import pack

    packed = tmp_path / "almtok_packed.zip"
    with zipfile.ZipFile(packed, "w") as zf:
        zf.writestr("meta.yaml", "{}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit, match="did not happen"):  # an upload asked for and not done fails
        pack.main(["--upload_hf", "someone/almtok", "--packed", str(packed)])
    assert "Hugging Face upload skipped: HF_HUB_OFFLINE is set" in capsys.readouterr().out
    monkeypatch.delenv("HF_HUB_OFFLINE")
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no_tokens"))
    with pytest.raises(SystemExit):
        pack.main(["--upload_hf", "someone/almtok", "--packed", str(packed)])
    assert "Hugging Face upload skipped: not logged in" in capsys.readouterr().out


def test_recipe_upload_stage_needs_a_repo_and_fails_offline(tmp_path, monkeypatch):
    recipe = copy_recipe(tmp_path, "codec1")
    bad = run_recipe(recipe, "--skip_upload_hf", "false", check=False)
    assert bad.returncode != 0 and "without --hf_repo" in bad.stderr
    exp = recipe / "exp/codec_train_almtok_debug_stage2"
    exp.mkdir(parents=True)
    args = ("--stage", "11", "--stop_stage", "11", "--skip_upload_hf", "false", "--hf_repo", "someone/almtok")
    bad = run_recipe(recipe, *args, check=False)
    assert bad.returncode != 0 and "run stage 9 (packing) first" in bad.stderr
    with zipfile.ZipFile(exp / "almtok_packed.zip", "w") as zf:
        zf.writestr("meta.yaml", "{}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = run_recipe(recipe, *args, check=False)
    assert out.returncode != 0 and "Successfully finished" not in out.stdout
    assert "Stage 11" in out.stdout and "Hugging Face upload skipped: HF_HUB_OFFLINE is set" in out.stdout


def rewrite_zip(src: Path, dst: Path, change) -> None:
    """``dst``: ``src`` with each member's bytes passed through ``change(name, data)`` (the zip's
    own CRCs are recomputed, so only our sha256 can notice)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for name in zin.namelist():
            zout.writestr(name, change(name, zin.read(name)))


def flip_bit(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:]


@pytest.fixture(scope="module")
def packed(tmp_path_factory, debug_config):
    from espnet2_almtok.recipe import pack

    root = tmp_path_factory.mktemp("packed")
    exp, priors, _ = make_exp(root / "exp", debug_config)
    return pack.pack(exp, root / "almtok_packed.zip", prior_dir=priors)


def test_the_zip_records_the_sha256_of_every_member(packed):
    import hashlib

    with zipfile.ZipFile(packed) as zf:
        sums = yaml.safe_load(zf.read("meta.yaml"))["sha256"]
        others = [n for n in zf.namelist() if n != "meta.yaml"]
        assert sorted(sums) == sorted(others)
        for name in others:
            assert sums[name] == hashlib.sha256(zf.read(name)).hexdigest(), name


def test_a_bit_flipped_weights_member_is_refused_naming_the_zip_and_the_member(packed, tmp_path):
    from espnet2_almtok import ALMTokenizer
    from espnet2_almtok.api import verify_packed
    from espnet2_almtok.inference.gan_codec_inference import ALMTokAudioCoding

    bad = tmp_path / "flipped.zip"
    rewrite_zip(packed, bad, lambda name, data: flip_bit(data, len(data) // 2) if name == "almtok/model.pth" else data)
    says = rf"{bad}: member almtok/model.pth does not match the sha256 .*re-download the model or re-pack it"
    with pytest.raises(ValueError, match=says):
        ALMTokenizer.from_pretrained(bad)
    with pytest.raises(ValueError, match=says):
        verify_packed(bad)
    with pytest.raises(ValueError, match=says):  # ESPnet's inference path (unpack) checks it too
        ALMTokAudioCoding.from_pretrained(model_tag=str(bad))
    verify_packed(packed)  # the intact zip passes


def test_a_corrupted_zip_entry_is_refused_naming_the_member(packed, tmp_path):
    from espnet2_almtok import ALMTokenizer

    with zipfile.ZipFile(packed) as zf:
        info = zf.getinfo("almtok/model.pth")
    data = bytearray(packed.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)  # local header size
    data[start + info.compress_size // 2] ^= 0x10  # a bit flip on disk: the zip's CRC (or inflate) fails
    bad = tmp_path / "corrupted.zip"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{bad}: member almtok/model.pth is corrupted .*re-download"):
        ALMTokenizer.from_pretrained(bad)


def test_a_zip_packed_without_checksums_still_loads_with_a_warning(packed, tmp_path, caplog):
    from espnet2_almtok import ALMTokenizer

    def drop_sums(name, data):
        if name != "meta.yaml":
            return data
        meta = yaml.safe_load(data)
        del meta["sha256"]
        return yaml.safe_dump(meta).encode()

    old = tmp_path / "old.zip"
    rewrite_zip(packed, old, drop_sums)
    wav = speechlike(0.4, seed=2)
    expected = ALMTokenizer.from_pretrained(packed).encode(wav, 16000, window=4)
    assert torch.equal(ALMTokenizer.from_pretrained(old).encode(wav, 16000, window=4), expected)
    assert "records no checksum" in caplog.text and str(old) in caplog.text


@pytest.mark.parametrize("bad", ["/etc/passwd", "secret.npy"])
def test_packing_copies_only_semantic_prior_arrays(tmp_path, debug_config, bad):
    """A config whose codebook_init names another file (a secret, an array of another shape) is
    refused: the zip may be uploaded (stage 11)."""
    from espnet2_almtok.recipe import pack

    exp, priors, _ = make_exp(tmp_path, debug_config)
    if bad == "secret.npy":
        np.save(tmp_path / bad, np.arange(5))
        bad = str(tmp_path / bad)
    conf = yaml.safe_load((exp / "config.yaml").read_text())
    conf["codec_conf"]["generator_params"]["codebook_init"][1] = bad
    (exp / "config.yaml").write_text(yaml.safe_dump(conf))
    with pytest.raises(ValueError, match=r"codebook_init names .*(passwd|secret.npy), but it .*packing copies only the semantic priors"):
        pack.pack(exp, tmp_path / "packed.zip")
    assert not (tmp_path / "packed.zip").exists()
