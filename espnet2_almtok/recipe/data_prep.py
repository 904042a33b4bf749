"""Recipe stage 1: corpora -> Kaldi-style data dirs ``data/{train,dev,test}``.

    python -m espnet2_almtok.recipe.data_prep demo        --db downloads/demo --out data
    python -m espnet2_almtok.recipe.data_prep mini_an4    --tarball ../shared/data/mini_an4.tar.gz --db downloads --out data
    python -m espnet2_almtok.recipe.data_prep librispeech --root /data/LibriSpeech --train train-clean-100 --dev dev-clean --test test-clean --out data
    python -m espnet2_almtok.recipe.data_prep audio_dir   --root /path/to/audio --out data

``librispeech`` also reads LibriTTS (``*.normalized.txt`` transcripts). ``audio_dir`` takes
wav/flac/ogg/mp3/sph files; its dev/test sets are a deterministic hash split.
"""

import argparse
import hashlib
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Dict, List, Sequence

from espnet2_almtok.recipe.kaldi_dir import Utterance, write_data_dir

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3", ".sph")

# ---------------------------------------------------------------------------- demo corpus
DEMO_SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "please call stella and ask her to bring these things",
    "a tokenizer turns sound into a short sequence of symbols",
    "seven large boats sailed across the quiet harbour",
    "music and speech share the same air",
    "she sells sea shells by the sea shore",
    "the weather today is cold with a little rain",
    "language models read tokens one after another",
    "open the window and let the morning light in",
    "twelve green apples fell from the old tree",
]
# espeak-ng voices (language + variant): two male, two female timbres, two accents.
DEMO_VOICES = ["en-us", "en-gb", "en-us+f3", "en-gb+f2", "en-us+m3", "en-gb-scotland"]
# sox synth effects (sox -R: repeatable) and their captions, which are these clips' `text`.
DEMO_SOUNDS = {
    "tone440": ("synth 1.5 sine 440 vol 0.4", "a steady high tone"),
    "chord": ("synth 1.5 sine 261.6 sine 329.6 sine 392 remix - vol 0.3", "a major chord held for a moment"),
    "chirp": ("synth 2.0 sine 200-3000 vol 0.4", "a tone sweeping up from low to high"),
    "square": ("synth 1.2 square 220 vol 0.2", "a buzzing low square wave"),
    "pinknoise": ("synth 1.0 pinknoise vol 0.2", "a short burst of soft noise"),
    "pluck": ("synth 1.5 pluck 330 vol 0.5", "a plucked string fading away"),
}


def _run(cmd: List[str]) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True)
    except FileNotFoundError as e:
        raise RuntimeError(f"{cmd[0]} is not installed; install it (e.g. `apt-get install espeak-ng sox`)") from e
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{' '.join(cmd)} failed: {e.stderr.decode(errors='replace')[-500:]}") from e


def synthesize_demo(db: Path) -> List[Utterance]:
    """Deterministic offline corpus: espeak-ng speech (transcribed) + sox sounds. Idempotent."""
    wav_dir = db / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    utts = []
    for v, voice in enumerate(DEMO_VOICES):
        spk = "spk" + re.sub(r"[^a-z0-9]", "", voice)
        for s, sentence in enumerate(DEMO_SENTENCES):
            utt = f"{spk}-s{s:02d}"
            path = wav_dir / f"{utt}.wav"
            if not path.exists():
                tmp = path.with_suffix(".tmp.wav")
                _run(["espeak-ng", "-v", voice, "-s", str(150 + 10 * (v % 3)), "-w", str(tmp), sentence])
                tmp.rename(path)
            utts.append(Utterance(utt, str(path.resolve()), spk, sentence, category="speech"))
    for name, (effect, caption) in DEMO_SOUNDS.items():
        utt = f"sounds-{name}"
        path = wav_dir / f"{utt}.wav"
        if not path.exists():
            tmp = path.with_suffix(".tmp.wav")
            _run(["sox", "-R", "-n", "-r", "16000", "-c", "1", "-b", "16", str(tmp), *effect.split()])
            tmp.rename(path)
        utts.append(Utterance(utt, str(path.resolve()), "sounds", caption, category="sound"))
    return utts


def split_demo(utts: List[Utterance]) -> Dict[str, List[Utterance]]:
    """Sentences 0-6 train, 7 dev, 8-9 test (every voice in each); sounds: 4 train, 1 dev, 1 test."""
    sets = {"train": [], "dev": [], "test": []}
    sounds = sorted(u.utt_id for u in utts if u.speaker == "sounds")
    for u in utts:
        if u.speaker == "sounds":
            i = sounds.index(u.utt_id)
            sets["train" if i < 4 else "dev" if i == 4 else "test"].append(u)
        else:
            s = int(u.utt_id.rsplit("-s", 1)[1])
            sets["train" if s < 7 else "dev" if s == 7 else "test"].append(u)
    return sets


# ---------------------------------------------------------------------------- mini_an4
def prepare_mini_an4(tarball: Path, db: Path) -> Dict[str, List[Utterance]]:
    if not tarball.is_file():
        raise FileNotFoundError(f"mini_an4 tarball {tarball} not found; set MINI_AN4 in db.sh")
    root = db / "an4"
    if not (root / "etc").is_dir():
        db.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as tf:
            tf.extractall(db, filter="data")
        if (db / "downloads" / "an4").is_dir():  # the tarball nests downloads/an4
            shutil.move(str(db / "downloads" / "an4"), str(root))
    sets = {}
    for part, wavdir in (("train", "an4_clstk"), ("test", "an4test_clstk")):
        trans = (root / "etc" / f"an4_{part}.transcription").read_text().splitlines()
        utts = []
        for line in trans:
            m = re.match(r"^(.*)\s+\((\S+)\)$", line.strip())
            if not m:
                continue
            text = re.sub(r"</?s>", "", m.group(1)).strip()
            uid = m.group(2)
            spk = uid.split("-")[1]
            path = root / "wav" / wavdir / spk / f"{uid}.sph"
            if path.exists():
                utts.append(Utterance(f"{spk}-{uid}", str(path.resolve()), spk, text))
        sets[part] = utts
    # no dev set in an4: hold out the train set's last utterance
    sets["dev"] = sets["train"][-1:]
    sets["train"] = sets["train"][:-1]
    return sets


# ---------------------------------------------------------------------------- LibriSpeech / LibriTTS
def read_libri_subset(root: Path, subset: str) -> List[Utterance]:
    base = root / subset
    if not base.is_dir():
        raise FileNotFoundError(f"{base} not found; set LIBRISPEECH/LIBRITTS in db.sh to the corpus root")
    utts = []
    for trans in sorted(base.glob("*/*/*.trans.txt")):  # LibriSpeech
        for line in trans.read_text().splitlines():
            uid, text = line.split(maxsplit=1)
            path = trans.parent / f"{uid}.flac"
            if path.exists():
                utts.append(Utterance(uid, str(path.resolve()), uid.split("-")[0], text))
    for txt in sorted(base.glob("*/*/*.normalized.txt")):  # LibriTTS
        uid = txt.name[: -len(".normalized.txt")]
        path = txt.with_name(uid + ".wav")
        if path.exists():
            utts.append(Utterance(uid, str(path.resolve()), uid.split("_")[0], txt.read_text().strip()))
    if not utts:
        raise FileNotFoundError(f"{base} holds no LibriSpeech (*.trans.txt) or LibriTTS (*.normalized.txt) data")
    return utts


# ---------------------------------------------------------------------------- any audio directory
def read_audio_dir(root: Path) -> Dict[str, List[Utterance]]:
    if not root.is_dir():
        raise FileNotFoundError(f"audio directory {root} not found; set AUDIO_DIR in db.sh")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTS and p.is_file())
    if not files:
        raise FileNotFoundError(f"{root} holds no audio files ({', '.join(AUDIO_EXTS)})")
    sets = {"train": [], "dev": [], "test": []}
    for p in files:
        rel = p.relative_to(root).with_suffix("")
        utt = re.sub(r"[^A-Za-z0-9_.-]", "_", str(rel).replace("/", "-"))
        spk = re.sub(r"[^A-Za-z0-9_.-]", "_", rel.parent.name or "audio")
        bucket = int(hashlib.md5(utt.encode()).hexdigest(), 16) % 20
        part = "test" if bucket == 0 else "dev" if bucket == 1 else "train"
        sets[part].append(Utterance(f"{spk}-{utt}" if not utt.startswith(spk) else utt, str(p.resolve()), spk))
    for part in ("dev", "test"):  # small folders: make sure each set has something
        if not sets[part] and len(sets["train"]) > 2:
            sets[part].append(sets["train"].pop())
    return sets


def write_sets(sets: Dict[str, List[Utterance]], out: Path, with_duration: bool = True) -> None:
    for name, utts in sets.items():
        n = write_data_dir(out / name, utts, with_duration)
        print(f"{out / name}: {n} utterances")


def main(argv: Sequence[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="corpus", required=True)
    d = sub.add_parser("demo"); d.add_argument("--db", type=Path, required=True)
    a = sub.add_parser("mini_an4"); a.add_argument("--tarball", type=Path, required=True)
    a.add_argument("--db", type=Path, required=True)
    ls = sub.add_parser("librispeech"); ls.add_argument("--root", type=Path, required=True)
    ls.add_argument("--train", nargs="+", default=["train-clean-100"])
    ls.add_argument("--dev", nargs="+", default=["dev-clean"])
    ls.add_argument("--test", nargs="+", default=["test-clean"])
    ad = sub.add_parser("audio_dir"); ad.add_argument("--root", type=Path, required=True)
    for s in (d, a, ls, ad):
        s.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.corpus == "demo":
        sets = split_demo(synthesize_demo(args.db))
    elif args.corpus == "mini_an4":
        sets = prepare_mini_an4(args.tarball, args.db)
    elif args.corpus == "librispeech":
        sets = {name: [u for s in subsets for u in read_libri_subset(args.root, s)]
                for name, subsets in (("train", args.train), ("dev", args.dev), ("test", args.test))}
    else:
        sets = read_audio_dir(args.root)
    write_sets(sets, args.out)


if __name__ == "__main__":
    main()
