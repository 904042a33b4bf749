"""codec_inference refuses bad inputs and never trusts stale outputs."""

import shutil

import pytest
import soundfile
import torch

from conftest import speechlike


@pytest.fixture(scope="module")
def exp(tmp_path_factory, debug_config):
    from espnet2_almtok import ALMTokenizer

    exp = tmp_path_factory.mktemp("exp")
    shutil.copy(debug_config, exp / "config.yaml")
    tok = ALMTokenizer.from_config(debug_config, use_priors=False)
    torch.save({f"codec.generator.{k}": v for k, v in tok.generator.state_dict().items()}, exp / "model.pth")
    return exp


def decode(exp, scp, out, *extra):
    from espnet2_almtok.inference import codec_inference

    codec_inference.main(["--model_dir", str(exp), "--data_path_and_name_and_type", f"{scp},audio,sound",
                          "--output_dir", str(out), "--window", "4", *extra])


def wav_scp(tmp_path, name, utts):
    for u in utts:
        soundfile.write(tmp_path / f"{u}.wav", speechlike(0.4, seed=len(u)).numpy(), 16000)
    scp = tmp_path / name
    scp.write_text("".join(f"{u} {tmp_path / (u + '.wav')}\n" for u in utts))
    return scp


def test_missing_or_empty_wav_scp_is_an_error_and_marks_nothing_done(exp, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match=r"wav.scp .*nope.scp does not exist"):
        decode(exp, tmp_path / "nope.scp", out)
    (tmp_path / "empty.scp").write_text("")
    with pytest.raises(ValueError, match="lists no utterance"):
        decode(exp, tmp_path / "empty.scp", out)
    assert not (out / ".done").exists()


def test_a_rerun_with_other_inputs_redoes_the_job_and_the_same_inputs_skip(exp, tmp_path, caplog):
    out = tmp_path / "out"
    decode(exp, wav_scp(tmp_path, "a.scp", ["a1", "a2"]), out)
    assert (out / "wav" / "wav.scp").read_text().split()[::2] == ["a1", "a2"]
    decode(exp, wav_scp(tmp_path, "b.scp", ["b1"]), out)  # another scp: redone, not "complete"
    assert (out / "wav" / "wav.scp").read_text().split()[::2] == ["b1"]
    assert (out / "codes" / "codes.scp").read_text().split()[::2] == ["b1"]
    before = (out / "codes" / "codes.ark").stat().st_mtime_ns
    with caplog.at_level("INFO"):
        decode(exp, tmp_path / "b.scp", out)
    assert "complete for these inputs" in caplog.text
    assert (out / "codes" / "codes.ark").stat().st_mtime_ns == before
    decode(exp, tmp_path / "b.scp", out, "--encode_only")  # other options: redone too
    assert (out / "codes" / "codes.ark").stat().st_mtime_ns != before


def test_a_second_job_on_the_same_output_dir_is_refused(exp, tmp_path):
    from espnet2_almtok.fileio import hold_lock

    out = tmp_path / "out"
    out.mkdir()
    held = hold_lock(out, "test", "")
    try:
        with pytest.raises(RuntimeError, match="in use by another decoding job"):
            decode(exp, wav_scp(tmp_path, "a.scp", ["a1"]), out)
    finally:
        held.close()


def test_long_files_are_streamed_from_disk_in_order_with_the_codes_of_the_whole_clip(exp, tmp_path, monkeypatch):
    """The debug config's context is 0.5 s: the 3.2 s file is streamed (never loaded whole) and
    coded as the API codes the clip in memory; the short ones around it are batched as before."""
    from espnet2_almtok import ALMTokenizer
    from espnet2_almtok.inference import codec_inference
    from espnet2_almtok.fileio import read_codes_scp

    clips = {"s1": speechlike(0.3, seed=1), "long": speechlike(3.2, seed=2), "s2": speechlike(0.4, seed=3)}
    for u, wav in clips.items():
        soundfile.write(tmp_path / f"{u}.wav", wav.numpy(), 16000, subtype="FLOAT")
    scp = tmp_path / "mixed.scp"
    scp.write_text("".join(f"{u} {tmp_path / (u + '.wav')}\n" for u in clips))
    loaded = []
    load_clip = codec_inference.load_clip
    monkeypatch.setattr(codec_inference, "load_clip", lambda u, p: loaded.append(u) or load_clip(u, p))
    out = tmp_path / "out"
    decode(exp, scp, out, "--batch_size", "3")
    assert loaded == ["s1", "s2"]  # the long file went through the streaming path
    assert (out / "wav" / "wav.scp").read_text().split()[::2] == list(clips)
    tok = ALMTokenizer.from_pretrained(exp)
    codes = dict(read_codes_scp(out / "codes" / "codes.scp", 3))
    for u, wav in clips.items():
        assert (codes[u] == tok.encode(wav, 16000, window=4)[0].numpy()).all(), u
        resyn, sr = soundfile.read(out / "wav" / f"{u}.wav")
        assert sr == 16000 and resyn.shape == (wav.numel(),)
    expected = tok.decode(torch.from_numpy(codes["long"]), window=4)[0, : clips["long"].numel()]
    resyn, _ = soundfile.read(out / "wav" / "long.wav")
    assert abs(resyn - expected.numpy()).max() < 2 / 2 ** 15  # PCM_16 rounding
