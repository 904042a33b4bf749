"""LM recipe stages 2-3: the BPE model, then one LM data dir per set.

    python -m espnet2_almtok.recipe.lm_data bpe --text dump/raw/train/text --nbpe 200 --out_dir dump/lm/bpe
    python -m espnet2_almtok.recipe.lm_data build --audio_dir dump/raw/train \\
        --codes_dir dump/codes/train/codes --bpemodel dump/lm/bpe/bpe.model --tasks asr tts caption \\
        --out dump/lm/train --token_list dump/lm/tokens.txt

``build`` writes, with keys ``<task>-<utt>``: ``task``, ``text`` (the transcript or caption),
``codes.scp`` (the tokenizer's ark entries under the new keys), ``dec_seq_shape`` (sequence
length for ESPnet's samplers, from :meth:`SequenceBuilder.length`), ``utt2task_key``, and
``skipped`` (``<utt> <reason>`` for utterances that cannot be used, e.g. without text).
Which utterances serve which task: ``utt2category`` ``speech`` -> asr + tts, any other
(``sound``, ``music``, ...) -> caption (``text`` holds the caption); without ``utt2category`` every utterance is speech.
"""

import argparse
import logging
import shutil
from pathlib import Path
from typing import Dict, Sequence

from espnet2_almtok.fileio import atomic_write_text, read_meta
from espnet2_almtok.lm.layout import LAYOUTS, CodecLayout, SequenceBuilder
from espnet2_almtok.lm.vocab import TASKS, TextTokenizer, Vocabulary, train_bpe
from espnet2_almtok.recipe.kaldi_dir import read_table
from espnet2_almtok.recipe.kaldi_dir import write_table

def serves(task: str, category: str) -> bool:
    """Speech utterances serve ASR and TTS; every other category (sound, music, ...) captioning."""
    return (category == "speech") == (task in ("asr", "tts"))


def make_bpe(text: Path, nbpe: int, out_dir: Path, model_type: str = "bpe") -> Path:
    lines = [t for t in read_table(text).values() if t.strip()]
    if not lines:
        raise ValueError(f"{text} has no transcripts/captions to train the BPE model on")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "train.txt", "\n".join(lines) + "\n")
    tmp = out_dir / "tmp_bpe"
    model = train_bpe(lines, tmp, nbpe, model_type)
    shutil.move(str(tmp.with_suffix(".vocab")), out_dir / "bpe.vocab")
    shutil.move(str(model), out_dir / "bpe.model")  # last: its presence means "done"
    logging.info(f"BPE: {len(TextTokenizer(out_dir / 'bpe.model').pieces())} pieces (asked {nbpe}) -> {out_dir}/bpe.model")
    return out_dir / "bpe.model"


def build_dir(audio_dir: Path, codes_dir: Path, bpemodel: Path, tasks: Sequence[str], out: Path,
              token_list: Path = None, layout: str = "flat", max_len: int = 0) -> Dict[str, int]:
    """Write the LM data dir ``out``; returns examples per task."""
    meta = read_meta(codes_dir)
    text = read_table(audio_dir / "text")
    category = read_table(audio_dir / "utt2category")
    codes = read_table(codes_dir / "codes.scp")
    if not codes:
        raise FileNotFoundError(f"{codes_dir}/codes.scp is missing or empty; run the tokenize stage first")
    bpe = TextTokenizer(bpemodel)
    vocab = Vocabulary(bpe.pieces(), meta["n_q"], meta["codebook_size"])
    builder = SequenceBuilder(CodecLayout(vocab, layout), max_len or 10 ** 9)
    rows = {name: {} for name in ("task", "text", "codes.scp", "dec_seq_shape", "utt2task_key")}
    skipped: Dict[str, str] = {}
    counts = {t: 0 for t in tasks}
    long = []
    for utt in sorted(set(text) | set(codes)):
        if utt not in codes:
            skipped[utt] = "no_codes(not_in_codes.scp)"
            continue
        if not text.get(utt, "").strip():
            skipped[utt] = "no_text"
            continue
        cat = category.get(utt, "speech")
        n_text = len(bpe.encode(text[utt]))
        n_frames = _num_frames(codes[utt], meta["n_q"])
        used = False
        for task in tasks:
            if not serves(task, cat):
                continue
            key = f"{task}-{utt}"
            length = builder.length(task, n_text, n_frames)
            if max_len and length > max_len:
                long.append(f"{key} {length}")
            rows["task"][key] = task
            rows["text"][key] = text[utt]
            rows["codes.scp"][key] = codes[utt]
            rows["dec_seq_shape"][key] = str(length)
            rows["utt2task_key"].setdefault(utt, [])
            rows["utt2task_key"][utt].append(key)
            counts[task] += 1
            used = True
        if not used:
            skipped[utt] = f"category_{cat}_has_no_task_in({','.join(tasks)})"
    if not rows["task"]:
        raise ValueError(f"no LM examples for tasks {list(tasks)} in {audio_dir} (skipped: "
                         f"{dict(list(skipped.items())[:3])}); check text / utt2category")
    out.mkdir(parents=True, exist_ok=True)
    rows["utt2task_key"] = {u: " ".join(k) for u, k in rows["utt2task_key"].items()}
    for name, table in rows.items():
        write_table(out / name, table)
    write_table(out / "skipped", skipped)
    shutil.copy(codes_dir / "meta.yaml", out / "meta.yaml")
    if skipped:
        logging.warning(f"{out}: {len(skipped)} utterance(s) not used, reasons in {out}/skipped")
    if long:
        logging.warning(f"{out}: {len(long)} example(s) longer than max_len={max_len} (listed in {out}/too_long); "
                        "the LM's context_policy decides (error or truncate)")
    atomic_write_text(out / "too_long", "".join(f"{line}\n" for line in long))
    if token_list is not None:
        atomic_write_text(token_list, "\n".join(vocab.token_list()) + "\n")
    logging.info(f"{out}: {counts}")
    return counts


def _num_frames(spec: str, n_q: int) -> int:
    import kaldiio

    return int(kaldiio.load_mat(spec).size // n_q)


def main(argv: Sequence[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bpe", help="train the sentencepiece model on a Kaldi text file")
    b.add_argument("--text", type=Path, required=True)
    b.add_argument("--nbpe", type=int, default=500, help="vocabulary size (upper bound on tiny corpora)")
    b.add_argument("--bpe_type", default="bpe", choices=["bpe", "unigram", "char"])
    b.add_argument("--out_dir", type=Path, required=True)
    d = sub.add_parser("build", help="write an LM data dir")
    d.add_argument("--audio_dir", type=Path, required=True, help="dir with text (+ utt2category)")
    d.add_argument("--codes_dir", type=Path, required=True, help="codes.scp + meta.yaml of the tokenizer")
    d.add_argument("--bpemodel", type=Path, required=True)
    d.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    d.add_argument("--layout", default="flat", choices=LAYOUTS, help="for the lengths in dec_seq_shape")
    d.add_argument("--max_len", type=int, default=0, help="report examples longer than this (0: off)")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--token_list", type=Path, default=None, help="also write the vocabulary here")
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    if args.cmd == "bpe":
        make_bpe(args.text, args.nbpe, args.out_dir, args.bpe_type)
    else:
        build_dir(args.audio_dir, args.codes_dir, args.bpemodel, args.tasks, args.out, args.token_list,
                  args.layout, args.max_len)


if __name__ == "__main__":
    main()
