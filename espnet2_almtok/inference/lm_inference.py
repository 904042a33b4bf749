#!/usr/bin/env python3
"""Decode with a trained ALMTok LM: ASR / captioning (-> text) or TTS (-> codec tokens + audio).

    python -m espnet2_almtok.bin.lm_inference --model_dir exp/lm_train_lm_debug \\
        --data_dir dump/lm/test --task asr --method beam --beam_size 4 --output_dir exp/lm/decode_asr_test
    python -m espnet2_almtok.bin.lm_inference --model_dir exp/lm_train_lm_debug --data_dir dump/lm/test \\
        --task tts --method sample --top_k 30 --codec_model ../codec1/exp/codec_train_almtok_debug_stage2 \\
        --output_dir exp/lm/decode_tts_test

Inputs: an LM data dir (``task``, ``text``, ``codes.scp``; see ``recipe.lm_data``); the
examples of ``--task`` are decoded (``--key_file`` narrows them to some utterances).
Outputs in ``--output_dir`` (keys are utterance ids):

* asr / caption: ``text`` (hypotheses) and ``ref`` (references), ``score`` (log-probability
  per token for beam search);
* tts: ``codes/codes.{ark,scp}`` + ``meta.yaml`` (the codec's frame-major layout) and, with
  ``--codec_model``, ``wav/<utt>.wav`` + ``wav/wav.scp`` decoded by that codec.

Outputs are written under ``tmp/`` and renamed at the end; ``.done`` makes a rerun skip.
"""

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from espnet2_almtok.inference import positive_int
from espnet2_almtok.progress import progress

from espnet2_almtok.fileio import (atomic_write_text, flatten_codes, move_outputs, point_scp_at_final_dir,
                                   read_meta, unflatten_codes, write_meta)
from espnet2_almtok.lm.generate import METHODS, DecodeConfig, LMDecoder
from espnet2_almtok.lm.layout import CONTEXT_POLICIES, TASK_MODALITIES, CodecLayout, SequenceBuilder
from espnet2_almtok.lm.vocab import TASKS, TextTokenizer, Vocabulary


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", default=None, help="LM exp dir (config.yaml + weights)")
    p.add_argument("--train_config", default=None, help="ESPnet style: the exp's config.yaml")
    p.add_argument("--model_file", default=None, help="weights (default: best found in the exp dir)")
    p.add_argument("--data_dir", type=Path, required=True, help="LM data dir (task, text, codes.scp)")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--key_file", type=Path, default=None, help="utterance ids to decode (first field)")
    p.add_argument("--output_dir", type=Path, required=True)
    p.add_argument("--method", default="greedy", choices=METHODS)
    p.add_argument("--beam_size", type=positive_int, default=4)
    p.add_argument("--length_penalty", type=float, default=1.0)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max_new_tokens", type=positive_int, default=None, help="default: up to the context")
    p.add_argument("--min_frames", type=int, default=1, help="tts: audio frames before <eos> is allowed")
    p.add_argument("--context_policy", default=None, choices=CONTEXT_POLICIES,
                   help="prompts longer than the context (default: the training config's)")
    p.add_argument("--batch_size", type=positive_int, default=8, help="prompts decoded together (greedy/sample)")
    p.add_argument("--codec_model", default=None, help="tts: codec exp dir / packed zip to write audio")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ngpu", type=int, default=0)
    p.add_argument("--log_level", default="INFO")
    return p


def load_lm(model_dir: Optional[str], train_config: Optional[str], model_file: Optional[str], device: str):
    """-> (model, training config as a namespace) from an LM exp dir.

    Builds the model from ``config.yaml`` directly (as ``ALMTokLMTask.build_model`` does) so
    decoding does not pay for importing ESPnet's task machinery.
    """
    import yaml

    from espnet2_almtok.api import _find_config, load_state_dict
    from espnet2_almtok.config_stamp import check_config_stamp
    from espnet2_almtok.lm.model import build_lm

    exp = Path(model_dir) if model_dir else Path(train_config).parent
    config = Path(train_config) if train_config else _find_config(exp)
    if model_file is None:
        for name in ("valid.loss.best.pth", "valid.acc.best.pth", "latest.pth"):
            if (exp / name).exists():
                model_file = exp / name
                break
        else:
            raise FileNotFoundError(f"no LM weights in {exp} (valid.loss.best.pth / latest.pth); train first")
    check_config_stamp(config)  # edited after training: the LM would be built with other settings
    conf = yaml.safe_load(Path(config).read_text())
    conf = argparse.Namespace(**conf) if isinstance(conf, dict) else argparse.Namespace()
    if not isinstance(getattr(conf, "token_list", None), list):
        raise ValueError(f"{config} is not an ALMTok LM training config (no token_list); "
                         "give the config.yaml that lm_train wrote")
    model = build_lm(conf.token_list, conf.layout, conf.lm_conf)
    model.load_state_dict(load_state_dict(model_file))
    return model.to(device).eval(), conf


def main(cmd: Sequence[str] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    if (args.model_dir is None) == (args.train_config is None):
        parser.error("give exactly one of --model_dir and --train_config")
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    out = args.output_dir
    if (out / ".done").exists():
        logging.info(f"{out} is complete (.done exists); nothing to do")
        return
    device = "cuda" if args.ngpu > 0 else "cpu"
    torch.manual_seed(args.seed)
    model, train_args = load_lm(args.model_dir, args.train_config, args.model_file, device)
    from espnet2_almtok.lm.model import lm_max_len

    vocab = Vocabulary.from_token_list(train_args.token_list)
    meta = read_meta(args.data_dir)
    if (meta["n_q"], meta["codebook_size"]) != (vocab.n_q, vocab.codebook_size):
        raise ValueError(f"{args.data_dir} holds {meta['n_q']} x {meta['codebook_size']} codes but the LM was "
                         f"trained on {vocab.n_q} x {vocab.codebook_size}: tokens of another codec?")
    bpe = TextTokenizer(train_args.bpemodel)
    builder = SequenceBuilder(CodecLayout(vocab, train_args.layout), lm_max_len(train_args.lm_conf),
                              args.context_policy or train_args.context_policy)
    config = DecodeConfig(args.method, args.top_k, args.top_p, args.temperature, args.beam_size,
                          args.length_penalty, args.max_new_tokens, args.min_frames)
    decoder = LMDecoder(model, builder, config, torch.Generator().manual_seed(args.seed))

    examples = load_examples(args.data_dir, args.task, args.key_file)
    src, tgt = TASK_MODALITIES[args.task]
    tmp = out / "tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    hyps, refs, scores, codes_out = {}, {}, {}, {}
    t0 = time.perf_counter()
    batch = 1 if args.method == "beam" else args.batch_size
    for start in progress(range(0, len(examples), batch), desc=f"{args.task} ({args.method})", unit="batch",
                      file=sys.stderr):
        chunk = examples[start: start + batch]
        prompts = [builder.build(key, args.task, bpe.encode(text), codes, with_target=False).seq
                   for key, _, text, codes in chunk]
        for (key, utt, text, _), res in zip(chunk, decoder(prompts, tgt)):
            refs[utt] = text
            if tgt == "text":
                hyps[utt] = bpe.decode(vocab.piece_ids(res.text_ids))
                scores[utt] = f"{res.score:.4f}"
            else:
                codes_out[utt] = res.codes
    elapsed = time.perf_counter() - t0
    logging.info(f"{len(examples)} {args.task} examples in {elapsed:.1f} s; {decoder.num_hit_limit} stopped at "
                 f"the length limit, {builder.num_truncated} prompt(s) truncated")
    from espnet2_almtok.recipe.kaldi_dir import write_table

    write_table(tmp / "ref", refs)
    if tgt == "text":
        write_table(tmp / "text", hyps)
        write_table(tmp / "score", scores)
    else:
        write_tts_outputs(tmp, out, codes_out, meta, args)
    move_outputs(tmp, out)
    atomic_write_text(out / "decode.yaml", "".join(f"{k}: {v}\n" for k, v in vars(args).items()))
    (out / ".done").touch()


def load_examples(data_dir: Path, task: str, key_file: Optional[Path]):
    """-> ``[(key, utt, text, codes (n_q, N))]`` of ``task``, in key order."""
    import kaldiio

    from espnet2_almtok.recipe.kaldi_dir import read_table

    tasks, texts, scp = (read_table(data_dir / n) for n in ("task", "text", "codes.scp"))
    n_q = read_meta(data_dir)["n_q"]
    keys = sorted(k for k, t in tasks.items() if t == task)
    if key_file is not None:
        wanted = {line.split()[0] for line in open(key_file) if line.strip()}
        keys = [k for k in keys if k.split("-", 1)[1] in wanted]
    if not keys:
        raise ValueError(f"{data_dir} has no '{task}' examples{' for ' + str(key_file) if key_file else ''}; "
                         "was the task listed when the data dir was built (lm_data build --tasks)?")
    out = []
    for key in keys:
        if key not in scp or key not in texts:
            raise KeyError(f"{data_dir}: {key} is in 'task' but not in codes.scp/text; rebuild the data dir")
        codes = unflatten_codes(np.asarray(kaldiio.load_mat(scp[key])).reshape(-1), n_q, key)
        out.append((key, key.split("-", 1)[1], texts[key], codes))
    return out


def write_tts_outputs(tmp: Path, out: Path, codes: dict, meta: dict, args) -> None:
    import kaldiio
    import soundfile

    (tmp / "codes").mkdir()
    with kaldiio.WriteHelper(f"ark,scp:{tmp / 'codes' / 'codes.ark'},{tmp / 'codes' / 'codes.scp'}") as w:
        for utt in sorted(codes):
            w[utt] = flatten_codes(codes[utt])
    point_scp_at_final_dir(tmp / "codes", out / "codes")
    write_meta(tmp / "codes", meta)
    if args.codec_model is None:
        return
    from espnet2_almtok.codec_tokenizer import load_codec_tokenizer

    tok = load_codec_tokenizer(args.codec_model, device="cuda" if args.ngpu > 0 else "cpu")
    if (tok.n_q, tok.codebook_size) != (meta["n_q"], meta["codebook_size"]):
        raise ValueError(f"--codec_model {args.codec_model} has {tok.n_q} x {tok.codebook_size} codes, the LM data "
                         f"{meta['n_q']} x {meta['codebook_size']}: give the codec that tokenized the data")
    (tmp / "wav").mkdir()
    lines = []
    for utt in progress(sorted(codes), desc="codec decode", unit="utt", file=sys.stderr):
        c = torch.as_tensor(codes[utt])
        if c.shape[1] == 0:
            logging.warning(f"{utt}: the LM generated no audio frames; writing 10 ms of silence")
            wav = np.zeros(tok.sample_rate // 100, dtype=np.float32)
        else:
            wav = tok.decode(c.unsqueeze(0), meta.get("window"))[0].cpu().numpy()
        soundfile.write(tmp / "wav" / f"{utt}.wav", wav, tok.sample_rate, "PCM_16")
        lines.append(f"{utt} {(out / 'wav' / f'{utt}.wav').resolve()}\n")
    (tmp / "wav" / "wav.scp").write_text("".join(lines))


if __name__ == "__main__":
    main()
