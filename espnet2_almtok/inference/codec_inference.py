#!/usr/bin/env python3
"""Encode audio to codec tokens and resynthesise it (codec recipe stage 7, LM recipe stage 1).

    python -m espnet2_almtok.bin.codec_inference --model_dir exp/codec_stage2 \\
        --data_path_and_name_and_type dump/raw/test/wav.scp,audio,sound \\
        --output_dir exp/codec_stage2/decode_w4/test --window 4

Writes ``codes/codes.{ark,scp}`` (int32, frame-major flattened; ``codes/meta.yaml`` holds
``n_q`` and ``window``) and ``wav/<utt>.wav`` + ``wav/wav.scp`` (resynthesis trimmed to the
input length). ``--model_dir`` may hold an ALMTokenizer or any ESPnet codec trained by
``ALMTokCodecTask`` (SoundStream/Encodec/DAC: fixed token rate, ``--window`` ignored).
Outputs are written to temporary names and renamed when the job ends, and a
``.done`` marker makes a rerun skip a finished job.

Long files: an ALMTokenizer codes audio longer than its context (``--context_seconds``,
default the training crop) in Transformer windows, and a plain file at the model's rate that
long is streamed from disk block by block (read, encoded, decoded and written without being
held whole), so memory does not grow with the file's length. ``--dtype bfloat16|float16``
runs the networks in half precision (GPU; bfloat16 also on CPU).
"""

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

import kaldiio
import soundfile
import torch
from espnet2_almtok.inference import positive_int
from espnet2_almtok.progress import progress

from espnet2_almtok.audio import AudioError
from espnet2_almtok.fileio import (atomic_write_text, done_matches, done_signature, flatten_codes, hold_lock,
                                  move_outputs, point_scp_at_final_dir, text_sha256, write_meta)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", default=None, help="exp dir (config.yaml + weights) or packed .zip")
    p.add_argument("--train_config", default=None,
                   help="ESPnet style: the exp dir's config.yaml (instead of --model_dir)")
    p.add_argument("--model_file", default=None, help="weights inside/beside model_dir (default: best found)")
    p.add_argument("--data_path_and_name_and_type", required=True,
                   help="wav.scp,audio,sound (ESPnet style; only the path is used)")
    p.add_argument("--key_file", default=None, help="only these utterance ids (one per line, first field)")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--window", type=int, default=4, help="query window w: token rate = frame rate / w")
    p.add_argument("--batch_size", type=positive_int, default=1, help="clips encoded together (padding-safe)")
    p.add_argument("--encode_only", action="store_true", help="write tokens only, no resynthesis")
    p.add_argument("--context_seconds", type=float, default=None,
                   help="ALMTokenizer: seconds one Transformer pass attends (default: the training crop)")
    p.add_argument("--overlap_seconds", type=float, default=None,
                   help="ALMTokenizer: context on each side of a window's kept tokens (default: context / 6)")
    p.add_argument("--chunk_batch", type=positive_int, default=8, help="ALMTokenizer: windows per Transformer pass")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="precision of the networks (autocast; the codebook search stays float32)")
    p.add_argument("--ngpu", type=int, default=0)
    p.add_argument("--log_level", default="INFO")
    return p


def read_scp(path: str, keys=None):
    """``[(utt, path)]`` of a wav.scp, in file order, or in ``keys`` order when given."""
    from espnet2_almtok.recipe.kaldi_dir import check_utt_ids, read_table

    if not Path(path).is_file():
        raise FileNotFoundError(f"wav.scp {path} does not exist; check --data_path_and_name_and_type")
    table = read_table(Path(path))
    if not table:
        raise ValueError(f"wav.scp {path} lists no utterance; expected '<utt_id> <path>' lines")
    check_utt_ids(table, f"wav.scp {path}")  # ids name the output files: none may leave --output_dir
    empty = [k for k, v in table.items() if not v]
    if empty:
        raise ValueError(f"{path}: utterance {empty[0]} has no path; expected '<utt_id> <path>' lines")
    if keys is None:
        return list(table.items())
    missing = [k for k in keys if k not in table]
    if missing:
        raise KeyError(f"{len(missing)} key(s) of the key file are not in {path}, e.g. {missing[:3]}")
    return [(k, table[k]) for k in keys]


def job_signature(entries, args) -> str:
    """What a finished job covers (written to ``.done``): its utterances and their paths, the
    model file (path, size, mtime), the window and the outputs asked for."""
    model = Path(args.model_file) if args.model_file else Path(args.model_dir)
    stat = model.stat() if model.exists() else None
    listing = "".join(f"{u} {p}\n" for u, p in entries)
    return done_signature(
        utterances=len(entries), wav_scp_sha256=text_sha256(listing),
        model=str(model.resolve()), model_size=stat.st_size if stat else None,
        model_mtime_ns=stat.st_mtime_ns if stat else None, window=args.window,
        encode_only=bool(args.encode_only), context_seconds=args.context_seconds,
        overlap_seconds=args.overlap_seconds, dtype=args.dtype)


def load_clip(utt: str, spec: str):
    from espnet2_almtok.audio import read_audio, to_mono_tensor

    if spec.endswith("|"):
        raise AudioError(f"{utt}: piped wav.scp entries are not supported here; run the recipe's "
                         "format stage (stage 2) to dump plain files")
    wav, sr = read_audio(spec, utt)
    return to_mono_tensor(wav, utt), sr


def streamable(tok, spec: str, window) -> bool:
    """Whether to stream ``spec`` from disk: an ALMTokenizer, a plain file soundfile reads at the
    model's rate, and longer than one Transformer context (shorter clips are batched as usual)."""
    if not getattr(tok, "windowed", False) or spec.endswith("|"):
        return False
    try:
        info = soundfile.info(spec)
    except Exception:  # not readable here: the batched path reports it, naming the utterance
        return False
    context = tok.chunking.groups(tok.generator.frame_rate, window)[0]
    return info.samplerate == tok.sample_rate and tok.num_tokens(info.frames, window) > context


class DecodeJob:
    """Writes codes (and resynthesis) of utterances, batched in memory or streamed one by one."""

    def __init__(self, tok, window, writer, tmp: Path, out: Path, encode_only: bool):
        self.tok, self.window, self.writer = tok, window, writer
        self.tmp, self.out, self.encode_only = tmp, out, encode_only
        self.wav_scp, self.n_audio = [], 0.0

    def _done(self, utt: str) -> Path:
        path = self.out / "wav" / f"{utt}.wav"
        self.wav_scp.append(f"{utt} {path.resolve()}\n")
        return self.tmp / "wav" / f"{utt}.wav"

    def batch(self, chunk) -> None:
        """Clips loaded whole and encoded together (padding-safe), decoded one by one."""
        if not chunk:
            return
        tok, window = self.tok, self.window
        clips, rates = zip(*(load_clip(u, p) for u, p in chunk))
        if len(set(rates)) != 1:
            raise AudioError(f"utterances {[u for u, _ in chunk]} have different rates {rates}; "
                             "use --batch_size 1 or resample in stage 2")
        try:
            codes, lengths = tok.encode(list(clips), rates[0], window, return_lengths=True)
        except AudioError as e:
            if len(chunk) == 1:
                raise AudioError(f"{chunk[0][0]}: {e}") from e
            raise
        for i, (utt, _) in enumerate(chunk):
            c = codes[i, :, : lengths[i]]
            self.writer[utt] = flatten_codes(c.cpu().numpy())
            self.n_audio += clips[i].numel() / rates[0]
            if not self.encode_only:
                n_out = round(clips[i].numel() * tok.sample_rate / rates[0])
                wav = tok.decode(c.unsqueeze(0), window)[0, :n_out].cpu().numpy()
                soundfile.write(self._done(utt), wav, tok.sample_rate, "PCM_16")

    def stream(self, utt: str, spec: str) -> None:
        """One long file read, coded and written block by block (memory bounded by the context)."""
        from espnet2_almtok.codec.sources import SoundFileSource

        tok = self.tok
        with SoundFileSource(spec, utt) as src:
            src.validate()
            codes = tok.encode_source(src, self.window)  # (n_q, N)
            n_samples = src.num_samples
        self.writer[utt] = flatten_codes(codes.cpu().numpy())
        self.n_audio += n_samples / tok.sample_rate
        if self.encode_only:
            return
        left = n_samples
        with soundfile.SoundFile(self._done(utt), "w", tok.sample_rate, 1, "PCM_16") as f:
            for block in tok.decode_blocks(codes, self.window):
                part = block[:left].cpu().numpy()
                f.write(part)
                left -= part.shape[0]


def main(cmd=None):
    parser = get_parser()
    args = parser.parse_args(cmd)
    if (args.model_dir is None) == (args.train_config is None):
        parser.error("give exactly one of --model_dir and --train_config")
    if args.train_config is not None:
        args.model_dir = str(Path(args.train_config).parent)
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    out = Path(args.output_dir)
    keys = None
    if args.key_file:
        keys = [line.split()[0] for line in open(args.key_file) if line.strip()]
        if not keys:
            raise ValueError(f"--key_file {args.key_file} lists no utterance id: nothing to decode (give a key "
                             "file with one id per line, or leave --key_file out for the whole wav.scp)")
    entries = read_scp(args.data_path_and_name_and_type.split(",")[0], keys)
    out.mkdir(parents=True, exist_ok=True)
    lock = hold_lock(out, "decoding job", "wait for it to finish or give another --output_dir")  # noqa: F841
    signature = job_signature(entries, args)
    done = out / ".done"
    if done_matches(done, signature, str(out)):
        return
    from espnet2_almtok.codec_tokenizer import load_codec_tokenizer

    device = "cuda" if args.ngpu > 0 else "cpu"
    tok = load_codec_tokenizer(args.model_dir, args.model_file, device=device, context_s=args.context_seconds,
                               overlap_s=args.overlap_seconds, chunk_batch=args.chunk_batch, dtype=args.dtype)
    window = tok.check_window(args.window) if tok.windowed else None

    tmp = out / "tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "codes").mkdir(parents=True)
    if not args.encode_only:
        (tmp / "wav").mkdir()
    t0 = time.perf_counter()
    ark_spec = f"ark,scp:{tmp / 'codes' / 'codes.ark'},{tmp / 'codes' / 'codes.scp'}"
    with kaldiio.WriteHelper(ark_spec) as writer, torch.inference_mode():
        job = DecodeJob(tok, window, writer, tmp, out, args.encode_only)
        for start in progress(range(0, len(entries), args.batch_size), desc=f"encode w={window}",
                          unit="batch", file=sys.stderr):
            pending = []
            for utt, spec in entries[start: start + args.batch_size]:
                if streamable(tok, spec, window):
                    job.batch(pending)
                    pending = []
                    job.stream(utt, spec)
                else:
                    pending.append((utt, spec))
            job.batch(pending)
    wav_scp, n_audio = job.wav_scp, job.n_audio
    elapsed = time.perf_counter() - t0
    logging.info(f"{len(entries)} utterances, {n_audio:.1f} s of audio in {elapsed:.1f} s "
                 f"(RTF {elapsed / max(n_audio, 1e-9):.3f})")
    write_meta(tmp / "codes", dict(
        n_q=tok.n_q, window=window, codebook_size=tok.codebook_size, sample_rate=tok.sample_rate,
        token_rate=tok.token_rate(window), bitrate=tok.bitrate(window),
        layout="int32 vector per utterance, frame-major: t0q0 t0q1 .. t1q0 ..",
    ))
    point_scp_at_final_dir(tmp / "codes", out / "codes")
    if not args.encode_only:
        (tmp / "wav" / "wav.scp").write_text("".join(wav_scp))
    move_outputs(tmp, out)
    atomic_write_text(done, signature)


if __name__ == "__main__":
    main()
