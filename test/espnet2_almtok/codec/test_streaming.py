"""Long audio: blockwise conv passes equal whole-clip ones, Transformer windows never exceed the
context, short clips keep their codes, a file streamed from disk codes like the clip in memory,
and window boundaries leave no seam in the resynthesis."""

import pytest
import soundfile
import torch
import torchaudio

from conftest import speechlike
from espnet2_almtok.codec import streaming
from espnet2_almtok.codec.chunking import ChunkingConfig, plan_chunks
from espnet2_almtok.codec.generator import ALMTokenizerGenerator
from espnet2_almtok.codec.sources import SoundFileSource, TensorSource


def tiny(**kw):
    torch.manual_seed(0)
    conf = dict(hidden_dim=32, patch_channels=4, encoder_layers=1, decoder_layers=1, num_heads=4,
                n_q=3, codebook_size=32, codebook_dim=16, inference_only=True)
    return ALMTokenizerGenerator(**{**conf, **kw}).eval()


@torch.no_grad()
@pytest.mark.parametrize("block", [1, 7, 37, 1000])
def test_blockwise_patchify_equals_the_whole_clip_and_needs_its_margin(block):
    gen = tiny()
    wav, w = speechlike(3.3), 4
    n_frames = -(-wav.numel() // (w * 320)) * w
    whole = gen.patchify_frames(gen.pad_to_window(wav.view(1, 1, -1), w), n_frames)[0].t()
    blocks = torch.cat(list(streaming.patchify_blocks(gen, TensorSource(wav), n_frames, block, "cpu")), 1)
    assert blocks.shape == whole.shape
    assert torch.allclose(blocks, whole, atol=1e-5)
    if block < n_frames:  # without the margin the block edges differ: the margin is what makes it exact
        gen.patchify_margin = 0
        cut = torch.cat(list(streaming.patchify_blocks(gen, TensorSource(wav), n_frames, block, "cpu")), 1)
        assert (cut - whole).abs().max() > 1e-3


@torch.no_grad()
@pytest.mark.parametrize("piece, block", [(1, 5), (9, 13), (50, 200)])
def test_depatchify_stream_equals_the_whole_sequence(piece, block):
    gen = tiny()
    frames = torch.randn(1, 32, 101)
    whole = gen.depatchify(frames)[0, 0]
    stream = streaming.DePatchifyStream(gen, 101, block)
    out = torch.cat([b for a in range(0, 101, piece) for b in stream.push(frames[0, :, a: a + piece])])
    assert torch.allclose(out, whole, atol=1e-5)
    if block < 101:  # the margin is what makes it exact
        gen.depatchify_margin = 0
        stream = streaming.DePatchifyStream(gen, 101, block)
        cut = torch.cat([b for a in range(0, 101, piece) for b in stream.push(frames[0, :, a: a + piece])])
        assert (cut - whole).abs().max() > 1e-4


def test_clips_within_the_context_keep_todays_codes(tokenizer):
    """The debug config's training crop (0.5 s) is the default context; a clip of that length, or
    shorter, is coded exactly as by the whole-clip path."""
    assert tokenizer.chunking.context_s == 0.5
    gen = tokenizer.generator
    for seconds in (0.05, 0.31, 0.5):
        wav = speechlike(seconds).view(1, 1, -1)
        for w in (2, 4, 10):
            assert torch.equal(tokenizer.encode(wav[0, 0], 16000, window=w), gen.encode(wav, w))
            codes = gen.encode(wav, w)
            assert torch.equal(tokenizer.decode(codes, window=w), gen.decode(codes, w)[:, 0])


def attended_lengths(gen):
    lengths = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: lengths.append(tuple(args[0].shape[:2])))
             for m in (gen.encoder, gen.decoder)]
    return lengths, hooks


@torch.no_grad()
def test_a_long_clip_never_attends_beyond_the_context_and_holds_bounded_frames(monkeypatch):
    gen, w = tiny(), 4
    chunking = ChunkingConfig(context_s=1.0, chunk_batch=2)
    context, overlap = chunking.groups(gen.frame_rate, w)
    peaks = []
    append = streaming.FrameWindow.append

    def tracking_append(self, block):
        append(self, block)
        peaks.append(self.peak_frames)

    monkeypatch.setattr(streaming.FrameWindow, "append", tracking_append)
    lengths, hooks = attended_lengths(gen)
    wav = speechlike(60.0)
    codes = gen.encode(wav.view(1, 1, -1), w, chunking=chunking)
    out = gen.decode(codes, w, chunking=chunking)
    for h in hooks:
        h.remove()
    n_tokens = -(-wav.numel() // (w * 320))
    assert codes.shape == (1, 3, n_tokens) and out.shape == (1, 1, n_tokens * w * 320)
    assert max(t for _, t in lengths) == context * (w + 1)  # each pass sees training-sized windows ...
    windows = len(plan_chunks(n_tokens, context, overlap))
    assert sum(b for b, _ in lengths) == 2 * windows  # ... each window once per Transformer: linear in length
    # frames alive at once: a few contexts, not the 3000 frames of the minute
    assert max(peaks) <= 3 * (context * w + gen.patchify_margin + gen.depatchify_margin)


@torch.no_grad()
def test_batch_with_long_and_short_clips_codes_like_one_by_one():
    gen, w = tiny(), 4
    chunking = ChunkingConfig(context_s=0.5)
    clips = [speechlike(s, seed=i) for i, s in enumerate((0.3, 2.7, 0.5, 1.9))]
    batch = torch.zeros(len(clips), 1, max(c.numel() for c in clips))
    for i, c in enumerate(clips):
        batch[i, 0, : c.numel()] = c
    codes = gen.encode(batch, w, lengths=torch.tensor([c.numel() for c in clips]), chunking=chunking)
    for i, c in enumerate(clips):
        alone = gen.encode(c.view(1, 1, -1), w, chunking=chunking)
        assert torch.equal(codes[i, :, : alone.shape[-1]], alone[0]), i


def test_a_file_streamed_from_disk_codes_and_decodes_like_the_clip_in_memory(tmp_path, tokenizer):
    tokenizer.set_context(0.5)
    wav = speechlike(4.3)
    path = tmp_path / "long.wav"
    soundfile.write(path, torch.stack([wav, wav], 1).numpy(), 16000, subtype="FLOAT")  # stereo: downmixed
    with SoundFileSource(path) as src:
        src.validate()
        streamed = tokenizer.encode_source(src, window=4)
    in_memory = tokenizer.encode(wav, 16000, window=4)[0]
    assert torch.equal(streamed, in_memory)
    blocks = list(tokenizer.decode_blocks(streamed, window=4))
    assert len(blocks) > 1
    assert torch.equal(torch.cat(blocks), tokenizer.decode(streamed, window=4)[0])
    soundfile.write(tmp_path / "22k.wav", wav.numpy(), 22050)
    with SoundFileSource(tmp_path / "22k.wav", "utt3") as src, pytest.raises(ValueError, match="utt3: 22050 Hz"):
        tokenizer.encode_source(src, window=4)


@pytest.mark.parametrize("wav, match", [(torch.zeros(0), "empty"), (torch.zeros(800), "all zeros"),
                                        (torch.tensor([0.1, float("nan")] * 400), "NaN or inf"),
                                        (torch.stack([speechlike(0.1), -speechlike(0.1)], 1),
                                         "its 2 channels cancel when averaged to mono.*remix 1")])
def test_a_bad_file_is_named_before_streaming(tmp_path, wav, match):
    from espnet2_almtok.audio import AudioError

    path = tmp_path / "bad.wav"
    soundfile.write(path, wav.numpy(), 16000, subtype="FLOAT")
    with SoundFileSource(path, "utt7") as src, pytest.raises(AudioError, match=f"utt7: .*{match}"):
        src.validate(block=300)


def log_mel_frames(wav):
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=512, hop_length=160, n_mels=40)
    return torch.log(mel(wav) + 1e-5)  # (n_mels, 10 ms frames)


@torch.no_grad()
def test_window_boundaries_leave_no_seam_in_the_resynthesis():
    """Against one full-attention pass of the same model, the windowed resynthesis is no further
    off within 30 ms of a window boundary than elsewhere; clicks at the boundaries would be."""
    gen, w = tiny(), 4
    chunking = ChunkingConfig(context_s=1.0)
    codes = gen.encode(speechlike(12.0).view(1, 1, -1), w)
    full = gen.decode(codes, w)[0, 0]
    windowed = gen.decode(codes, w, chunking=chunking)[0, 0]
    context, overlap = chunking.groups(gen.frame_rate, w)
    boundaries = [c.keep_stop * w * 320 for c in plan_chunks(codes.shape[-1], context, overlap)[:-1]]
    near = torch.zeros(full.numel() // 160 + 1, dtype=torch.bool)
    for b in boundaries:
        near[b // 160 - 3: b // 160 + 3] = True

    def ratio(y):
        dist = (log_mel_frames(full) - log_mel_frames(y)).abs().mean(0)
        return float(dist[near].mean() / dist[~near].mean())

    assert ratio(windowed) < 1.5
    clicked = windowed.clone()
    for b in boundaries:
        clicked[b: b + 32] = 0  # 2 ms dropouts: what a seam sounds like
    assert ratio(clicked) > 1.5


@torch.no_grad()
def test_windowed_decoding_feeds_the_decoder_the_models_query_shortcut():
    """With ``query_shortcut``, every decoder window gets each mask slot as the mask token plus
    its quantized query, as the whole-clip pass does (streaming must not drop the shortcut)."""
    gen, w = tiny(query_shortcut=True), 4
    seen = []
    gen.decoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    codes = gen.encode(speechlike(6.0).view(1, 1, -1), w)
    gen.decode(codes, w, chunking=ChunkingConfig(context_s=1.0))
    assert len(seen) > 1  # it did run in windows
    for seq in seen:
        groups = seq.reshape(seq.shape[0], -1, w + 1, seq.shape[-1])  # (b, K, w + 1, C)
        expected = gen.decoder_mask_token + groups[:, :, :1]
        assert torch.allclose(groups[:, :, 1:], expected.expand_as(groups[:, :, 1:]))
