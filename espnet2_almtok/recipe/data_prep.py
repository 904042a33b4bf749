"""Recipe stage 1: corpora -> Kaldi-style data dirs ``data/{train,dev,test}``.

    python -m espnet2_almtok.recipe.data_prep demo        --db downloads/demo --out data
    python -m espnet2_almtok.recipe.data_prep mini_an4    --tarball ../shared/data/mini_an4.tar.gz --db downloads --out data
    python -m espnet2_almtok.recipe.data_prep librispeech --root /data/LibriSpeech --train train-clean-100 --dev dev-clean --test test-clean --out data
    python -m espnet2_almtok.recipe.data_prep audio_dir   --root /path/to/audio --out data
    python -m espnet2_almtok.recipe.data_prep asterisk    --root / --langs "en es it ru" --db downloads/asterisk --out data

``librispeech`` also reads LibriTTS (``*.normalized.txt`` transcripts). ``audio_dir`` takes
wav/flac/ogg/mp3/sph files; its dev/test sets are a deterministic hash split.

``asterisk`` is real human speech plus real sounds and music, all from Debian packages installed
under ``--root`` (``local/data.sh --corpus asterisk`` installs them): the Asterisk PBX prompts
(``asterisk-core-sounds-<lang>-g722``: one speaker per language, G.722 at 16 kHz; transcripts in
``asterisk-core-sounds-<lang>``) and the packages of ``--sound_packages`` (event sounds, game sound
effects and music; music is cut into ``--clip_seconds`` clips). Everything is decoded with ffmpeg
to 16 kHz mono PCM16 wav under ``--db``. The data dirs also get ``utt2lang`` (``none`` for
non-speech) and ``text.orig`` (the transcript before normalisation); ``utt2category`` is
``speech``, ``sound`` or ``music``. Speech is split by a hash of its normalised transcript (a
sentence is in one set only), non-speech by a hash of its file name, about 80/10/10.
"""

import argparse
import fnmatch
import gzip
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tarfile
import time
import unicodedata
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import soundfile
from espnet2_almtok.progress import progress

from espnet2_almtok.recipe.kaldi_dir import Utterance, read_table, write_data_dir

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
def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def audio_dir_ids(root: Path, files: Sequence[Path]) -> Dict[Path, Tuple[str, str]]:
    """``{file: (utt_id, speaker)}``: ``<folder>-<relative path without suffix>``, characters
    outside ``[A-Za-z0-9_.-]`` replaced by ``_``. Distinct files whose ids would coincide
    (``a b.wav`` / ``a;b.wav``, ``x.wav`` / ``x.flac``, non-ASCII names) all get a suffix of the
    hash of their relative path, so every file keeps its own id and no two are merged."""
    ids = {}
    for p in files:
        rel = p.relative_to(root).with_suffix("")
        utt = _safe_id(str(rel).replace("/", "-"))
        spk = _safe_id(rel.parent.name or "audio")
        ids[p] = (f"{spk}-{utt}" if not utt.startswith(spk) else utt, spk)
    taken = Counter(u for u, _ in ids.values())
    for p, (utt, spk) in ids.items():
        if taken[utt] > 1:
            digest = hashlib.md5(str(p.relative_to(root)).encode("utf-8", "surrogateescape")).hexdigest()[:8]
            ids[p] = (f"{utt}-{digest}", spk)
    return ids


def read_audio_dir(root: Path) -> Dict[str, List[Utterance]]:
    """Every audio file under ``root`` (``AUDIO_EXTS``), split train/dev/test (~90/5/5 %) by a
    hash of its id. A file soundfile cannot read is left out with its reason logged."""
    if not root.is_dir():
        raise FileNotFoundError(f"audio directory {root} not found; set AUDIO_DIR in db.sh")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTS and p.is_file())
    if not files:
        raise FileNotFoundError(f"{root} holds no audio files ({', '.join(AUDIO_EXTS)})")
    readable = []
    for p in files:
        try:
            if soundfile.info(str(p)).frames <= 0:
                raise RuntimeError("no audio samples")
            readable.append(p)
        except Exception as e:  # soundfile's LibsndfileError, RuntimeError, ...
            logging.warning(f"{p}: left out, unreadable audio ({str(e).strip()}); fix or remove the file")
    if not readable:
        raise FileNotFoundError(f"{root}: none of its {len(files)} audio files is readable (see the warnings)")
    sets = {"train": [], "dev": [], "test": []}
    for p, (utt, spk) in audio_dir_ids(root, readable).items():
        bucket = int(hashlib.md5(utt.encode()).hexdigest(), 16) % 20
        part = "test" if bucket == 0 else "dev" if bucket == 1 else "train"
        sets[part].append(Utterance(utt, str(p.resolve()), spk))
    for part in ("dev", "test"):  # small folders: make sure each set has something
        if not sets[part] and len(sets["train"]) > 2:
            sets[part].append(sets["train"].pop())
    return sets


# ---------------------------------------------------------------------------- asterisk + Debian sounds
# Debian's asterisk-core-sounds-<lang>-g722 installs one voice dir (e.g. sounds/en_US_f_Allison, with
# subdirs digits/, letters/, ...) that update-alternatives links as sounds/<lang>; the base package
# asterisk-core-sounds-<lang> has the transcripts, lines "name: text" (name e.g. "digits/1").
ASTERISK_SOUNDS = Path("usr/share/asterisk/sounds")
ASTERISK_TRANSCRIPTS = "usr/share/doc/asterisk-core-sounds-{lang}/core-sounds-{lang}.txt.gz"
ASTERISK_LANGS = ("en", "es", "it", "ru")
ASTERISK_FS = 16000  # G.722 is 16 kHz audio; the sounds and music are decoded to the same rate
BRACKETED = re.compile(r"\[[^\]]*\]|\([^)]*\)|<[^>]*>")  # [beep tone], (note), <beep ascending>
APOSTROPHES = str.maketrans(dict.fromkeys("\u2019\u2018\u02bc`", "'"))
SILENT_PEAK = 33  # PCM16 peak below this (about -60 dBFS): a music clip counts as silence


@dataclass(frozen=True)
class SoundSource:
    """A Debian package of non-speech audio: where its files are, which are music, their captions."""

    package: str
    directory: str  # relative to --root
    pattern: str  # glob of the audio files in ``directory``
    caption: str  # a sound's caption; "{words}" is its file name's words
    music_caption: str = ""
    music: Tuple[str, ...] = ()  # fnmatch patterns of file stems that are music (cut into clips)
    skip: Tuple[str, ...] = ()  # ... of stems that are not non-speech

    @property
    def speaker(self) -> str:
        return self.package.replace("-", "_")


SOUND_SOURCES = {s.package: s for s in (
    # audio-channel-*: a voice saying "front left" etc., so not non-speech
    SoundSource("sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo", "*.oga", "{words} sound",
                skip=("audio-channel-*",)),
    # sound effects, and three tunes (frozen-mainzik-1p/-2p, introzik; about 12 minutes)
    SoundSource("frozen-bubble-data", "usr/share/games/frozen-bubble/snd", "*.ogg",
                "{words} sound from frozen bubble", "music from frozen bubble", music=("*zik*",)),
    # one tracker module (.xm, decoded by ffmpeg's libopenmpt): frozen-mainzik-2p again, so not a default
    SoundSource("fb-music-high", "usr/share/games/frozen-bubble/snd", "*.xm", "",
                "music from frozen bubble", music=("*",)),
)}
DEFAULT_SOUND_PACKAGES = ("sound-theme-freedesktop", "frozen-bubble-data")


class Problems:
    """Entries left out, by reason: counted and logged with a few examples; never fatal."""

    def __init__(self) -> None:
        self.by_reason: Dict[str, List[str]] = {}

    def add(self, reason: str, what: str) -> None:
        self.by_reason.setdefault(reason, []).append(what)

    def count(self, reason: str) -> int:
        return len(self.by_reason.get(reason, []))

    def log(self) -> None:
        for reason, items in sorted(self.by_reason.items()):
            logging.warning(f"left out {len(items)}: {reason} (e.g. {', '.join(items[:4])})")


@dataclass
class AudioItem:
    """One source file to decode (``src`` -> ``dst``) and what it becomes in the data dirs."""

    src: Path
    dst: Path
    utt_id: str
    speaker: str
    category: str  # speech / sound / music
    text: str  # normalised transcript or caption
    orig: str  # the transcript as the package has it (captions: the caption)
    lang: str  # "en", ... for speech; "none" otherwise
    split_key: str  # speech: the normalised text; non-speech: the file name


def normalize_text(text: str) -> str:
    """Lower case, NFC; every character but letters, digits, combining marks and apostrophes within
    a word becomes a space (so "Call-Forward" -> "call forward", "dell'utente" stays)."""
    text = unicodedata.normalize("NFC", text).translate(APOSTROPHES).lower()
    text = "".join(c if c.isalnum() or c == "'" or unicodedata.category(c).startswith("M") else " " for c in text)
    return " ".join(re.sub(r"(?<!\w)'|'(?!\w)", " ", text).split())


def kaldi_safe(name: str) -> str:
    """A prompt's name (e.g. ``digits/1``) as part of an utterance id (``digits_1``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def split_of(key: str) -> str:
    """``train``/``dev``/``test`` (80/10/10) from an md5 of ``key``: the same on every machine and run."""
    bucket = int(hashlib.md5(key.encode("utf-8")).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "dev" if bucket == 1 else "train"


def classify_prompt(name: str, transcript: str) -> Tuple[str, str]:
    """``(category, text)`` of an asterisk prompt from its transcript.

    ``("speech", words)``: the normalised transcript without its notes (``(...)``, ``<...>``) and
    symbol annotations (``at [@]`` -> ``at``). ``("sound", description)``: the transcript is nothing
    but bracketed descriptions (``[this is a simple beep tone]``, ``<beep ascending>``, ``(beep)``).
    ``("skip", reason)``: the silence/ prompts, and speech with bracketed *words* in it (``Sus
    saludos [temporales] estan``), where it is not known whether they are spoken.
    """
    if name.split("/")[0] == "silence":
        return "skip", "silence prompt"
    notes = BRACKETED.findall(transcript)
    words = normalize_text(BRACKETED.sub(" ", transcript))
    if not words:
        description = normalize_text(" ".join(n[1:-1] for n in notes))
        return ("sound", description) if description else ("skip", "transcript without words")
    if any(n.startswith("[") and normalize_text(n) for n in notes):
        return "skip", "bracketed words inside speech (spoken or not?)"
    return "speech", words


def asterisk_voice_dir(root: Path, lang: str) -> Path:
    """The dir of ``lang``'s G.722 prompts: ``sounds/<lang>`` (update-alternatives' link), else the
    one voice dir ``sounds/<lang>_*`` (e.g. ``en_US_f_Allison``) that holds ``.g722`` files."""
    base = root / ASTERISK_SOUNDS
    if (base / lang).is_dir() and any((base / lang).rglob("*.g722")):
        return base / lang
    voices = sorted({d.resolve() for d in base.glob(f"{lang}_*") if d.is_dir() and any(d.rglob("*.g722"))})
    if len(voices) == 1:
        return voices[0]
    if not voices:
        raise FileNotFoundError(f"no .g722 prompts for '{lang}' in {base}/{lang} or {base}/{lang}_*: install "
                                f"asterisk-core-sounds-{lang}-g722 (local/data.sh --corpus asterisk does)")
    raise ValueError(f"{base}: several voices for '{lang}' ({', '.join(v.name for v in voices)}); "
                     f"link {base / lang} to the one to use")


def find_prompts(voice_dir: Path) -> Dict[str, Path]:
    """``{name: path}`` of the ``.g722`` files under ``voice_dir``; name e.g. ``digits/1``."""
    return {p.relative_to(voice_dir).with_suffix("").as_posix(): p for p in sorted(voice_dir.rglob("*.g722"))}


def read_asterisk_transcripts(path: Path, lang: str, problems: Problems) -> Dict[str, str]:
    """``{name: transcript}`` from a ``core-sounds-<lang>.txt.gz`` (``name: text`` lines, ``;`` comments).
    Unparsable lines, empty transcripts and a name given two different transcripts are left out
    (counted in ``problems``)."""
    if not path.is_file():
        raise FileNotFoundError(f"transcripts {path} not found: install asterisk-core-sounds-{lang} "
                                f"(local/data.sh --corpus asterisk does)")
    texts: Dict[str, str] = {}
    conflicting = set()
    with gzip.open(path, "rt", encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith(";"):
                continue
            name, sep, text = (x.strip() for x in line.partition(":"))
            if not sep or not name or any(c.isspace() for c in name):
                problems.add("unparsable transcript line", f"{path.name}:{n}")
            elif not text:
                problems.add("empty transcript", f"{lang}/{name}")
            else:
                if texts.get(name, text) != text:
                    conflicting.add(name)
                texts[name] = text
    for name in sorted(conflicting):
        del texts[name]
        problems.add("two different transcripts", f"{lang}/{name}")
    return texts


def pair_prompts(audio: Dict[str, Path], texts: Dict[str, str]) -> Dict[str, str]:
    """``{audio name: transcript}``: names equal, else equal but for case when that is unambiguous
    (the packages have ``digits/1F`` for the transcript's ``digits/1f``)."""
    pairs = {name: texts[name] for name in audio if name in texts}
    by_lower: Dict[str, List[str]] = {}
    for name in set(texts) - set(pairs):
        by_lower.setdefault(name.lower(), []).append(name)
    for key, names in by_lower.items():
        files = [a for a in audio if a not in pairs and a.lower() == key]
        if len(names) == 1 and len(files) == 1:
            pairs[files[0]] = texts[names[0]]
    return pairs


def asterisk_items(root: Path, lang: str, db: Path, problems: Problems) -> List[AudioItem]:
    """One language's prompts that have both audio and a usable transcript."""
    audio = find_prompts(asterisk_voice_dir(root, lang))
    texts = read_asterisk_transcripts(root / ASTERISK_TRANSCRIPTS.format(lang=lang), lang, problems)
    pairs = pair_prompts(audio, texts)
    for name in sorted(set(audio) - set(pairs)):
        problems.add("audio without transcript", f"{lang}/{name}")
    paired = {n.lower() for n in pairs}
    for name in sorted(n for n in texts if n not in pairs and n.lower() not in paired):
        problems.add("transcript without audio", f"{lang}/{name}")
    items = []
    for name in sorted(pairs):
        category, text = classify_prompt(name, pairs[name])
        if category == "skip":
            problems.add(text, f"{lang}/{name}")
            continue
        speech = category == "speech"
        speaker = f"asterisk_{lang}" if speech else f"asterisk_{lang}_sounds"
        items.append(AudioItem(audio[name], db / lang / f"{name}.wav", f"{speaker}-{kaldi_safe(name)}", speaker,
                               category, text, pairs[name], lang if speech else "none", text if speech else name))
    return items


def find_sound_files(root: Path, source: SoundSource, problems: Problems) -> List[Path]:
    """The audio files of a sound package, without its ``skip`` ones and without links to a file
    already taken (e.g. freedesktop's dialog-error.oga -> dialog-warning.oga)."""
    directory = root / source.directory
    files = sorted(directory.glob(source.pattern), key=lambda p: (p.is_symlink(), p.name))
    if not files:
        raise FileNotFoundError(f"no {source.pattern} files in {directory}: install {source.package} "
                                f"(local/data.sh --corpus asterisk does), or leave it out of --sound_packages")
    kept, seen = [], set()
    for p in files:
        if any(fnmatch.fnmatch(p.stem, pat) for pat in source.skip):
            problems.add(f"not non-speech ({source.package})", p.name)
        elif p.resolve() in seen:
            problems.add("link to a file already taken", p.name)
        else:
            seen.add(p.resolve())
            kept.append(p)
    return sorted(kept)


def sound_items(root: Path, source: SoundSource, db: Path, problems: Problems) -> List[AudioItem]:
    """A sound package's files; music ones are decoded whole (``full/``), to be cut into clips."""
    items = []
    for p in find_sound_files(root, source, problems):
        is_music = any(fnmatch.fnmatch(p.stem, pat) for pat in source.music)
        caption = source.music_caption if is_music else source.caption.format(words=normalize_text(p.stem))
        dst = db / source.package / ("full" if is_music else "") / f"{p.stem}.wav"
        items.append(AudioItem(p, dst, f"{source.speaker}-{kaldi_safe(p.stem)}", source.speaker,
                               "music" if is_music else "sound", caption, caption, "none", p.name))
    return items


def ffmpeg_decode(src: Path, dst: Path, fs: int = ASTERISK_FS) -> None:
    """Decode ``src`` to mono ``fs`` Hz PCM16 wav ``dst`` (written as a tmp file, then renamed).
    Raises ``ValueError`` naming the file when ffmpeg fails or finds no audio, ``RuntimeError``
    when there is no ffmpeg."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.stem + ".tmp.wav")
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    cmd += ["-f", "g722"] if src.suffix == ".g722" else []  # raw G.722 has no header to probe
    cmd += ["-i", str(src), "-ac", "1", "-ar", str(fs), "-c:a", "pcm_s16le", "-f", "wav", str(tmp)]
    try:
        r = subprocess.run(cmd, capture_output=True)
    except FileNotFoundError as e:
        raise RuntimeError("ffmpeg is not installed: install it (apt-get install ffmpeg; "
                           "utils/setup_env.sh does when run as root)") from e
    try:
        if r.returncode != 0:
            raise ValueError(f"{src}: ffmpeg failed: {r.stderr.decode(errors='replace').strip()[-300:]}")
        try:
            frames = soundfile.info(str(tmp)).frames
        except (soundfile.LibsndfileError, RuntimeError) as e:
            raise ValueError(f"{src}: ffmpeg wrote no readable wav ({e})") from e
        if frames == 0:
            raise ValueError(f"{src}: ffmpeg found no audio in it")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _decode_or_reason(item: AudioItem) -> Optional[str]:
    """Decode ``item`` unless its wav exists (an earlier run's); why it failed, or None."""
    if item.dst.exists():
        return None
    try:
        ffmpeg_decode(item.src, item.dst)
    except ValueError as e:
        return str(e)
    return None


def decode_all(items: List[AudioItem], nj: int, problems: Problems) -> List[AudioItem]:
    """Decode every item (``nj`` ffmpeg processes at a time, progress bar); the ones that worked.
    A file ffmpeg cannot decode is left out, named in ``problems`` and the log."""
    start = time.time()
    todo = sum(not i.dst.exists() for i in items)
    with ThreadPoolExecutor(max(1, nj)) as pool:
        reasons = list(progress(pool.map(_decode_or_reason, items), total=len(items), desc="ffmpeg decode", unit="file"))
    ok = []
    for item, reason in zip(items, reasons):
        if reason is None:
            ok.append(item)
        else:
            problems.add("ffmpeg cannot decode it", str(item.src))
            logging.warning(reason)
    logging.info(f"decoded {todo} file(s) ({len(items) - todo} done before) in {time.time() - start:.1f} s")
    return ok


def cut_clips(item: AudioItem, clip_seconds: float, problems: Problems) -> List[AudioItem]:
    """Cut a decoded music file into consecutive ``clip_seconds`` clips ``clips/<stem>-000.wav``, ...
    (the tail too when it is at least half a clip); near-silent clips are left out. Clips written
    by an earlier run are kept."""
    wav, sr = soundfile.read(str(item.dst), dtype="int16")
    size = int(round(clip_seconds * sr))
    clip_dir = item.dst.parent.parent / "clips"
    clip_dir.mkdir(parents=True, exist_ok=True)
    clips = []
    for k, start in enumerate(range(0, len(wav), size)):
        piece, name = wav[start:start + size], f"{item.dst.stem}-{k:03d}"
        if len(piece) < size / 2:
            break
        if abs(piece.astype("int32")).max() < SILENT_PEAK:
            problems.add("silent music clip", name)
            continue
        dst = clip_dir / f"{name}.wav"
        if not dst.exists():
            tmp = dst.with_name(name + ".tmp.wav")
            soundfile.write(str(tmp), piece, sr, "PCM_16")
            os.replace(tmp, dst)
        clips.append(AudioItem(item.src, dst, f"{item.utt_id}-{k:03d}", item.speaker, "music", item.text,
                               item.orig, "none", dst.name))
    return clips


def check_unique_ids(items: Iterable[AudioItem]) -> None:
    """Two different files must not get one utterance id (e.g. ``digits/1`` and ``digits_1``)."""
    seen: Dict[str, Path] = {}
    for item in items:
        if item.utt_id in seen and seen[item.utt_id] != item.dst:
            raise ValueError(f"{seen[item.utt_id]} and {item.dst} would both be utterance {item.utt_id}: "
                             f"rename one of the source files (or change kaldi_safe in {__file__})")
        seen[item.utt_id] = item.dst


def check_no_shared_text(sets: Dict[str, List[Utterance]]) -> None:
    """No dev/test speech transcript may also be a train transcript (the text-hash split's promise)."""
    train = {u.text for u in sets["train"] if u.category == "speech"}
    for part in ("dev", "test"):
        shared = sorted({u.text for u in sets[part] if u.category == "speech"} & train)
        if shared:
            raise ValueError(f"{len(shared)} {part} transcript(s) are also in train (e.g. {shared[:3]}); "
                             f"the split must be by transcript (split_of(text))")


def to_utterance(item: AudioItem) -> Utterance:
    """The data-dir entry of a decoded item (``utt2lang`` and ``text.orig`` as extra tables)."""
    return Utterance(item.utt_id, str(item.dst.resolve()), item.speaker, item.text, item.category,
                     extra={"utt2lang": item.lang, "text.orig": item.orig})


def prepare_asterisk(root: Path, langs: Sequence[str], db: Path,
                     sound_packages: Sequence[str] = DEFAULT_SOUND_PACKAGES, clip_seconds: float = 8.0,
                     nj: int = 2) -> Tuple[Dict[str, List[Utterance]], Problems]:
    """The asterisk corpus as ``{train,dev,test}`` utterance lists, and what was left out and why."""
    unknown = [p for p in sound_packages if p not in SOUND_SOURCES]
    if unknown:
        raise ValueError(f"unknown --sound_packages {unknown}; known: {', '.join(SOUND_SOURCES)}")
    problems = Problems()
    items = [i for lang in langs for i in asterisk_items(root, lang, db, problems)]
    items += [i for pkg in sound_packages for i in sound_items(root, SOUND_SOURCES[pkg], db, problems)]
    check_unique_ids(items)
    items = decode_all(items, nj, problems)
    items = [c for i in items for c in (cut_clips(i, clip_seconds, problems) if i.category == "music" else [i])]
    check_unique_ids(items)
    sets: Dict[str, List[Utterance]] = {"train": [], "dev": [], "test": []}
    for item in items:
        sets[split_of(item.split_key)].append(to_utterance(item))
    check_no_shared_text(sets)
    problems.log()
    return sets, problems


def summarize(out: Path, names: Sequence[str] = ("train", "dev", "test")) -> str:
    """Utterances and hours per set, by category and by language, of written data dirs, as text."""
    lines = []
    for name in names:
        dur = {u: float(v) for u, v in read_table(out / name / "utt2dur").items()}
        lines.append(f"{name}: {len(dur)} utterances, {sum(dur.values()) / 3600:.3f} h")
        for table in ("utt2category", "utt2lang"):
            n, hours = Counter(), Counter()
            for u, v in read_table(out / name / table).items():
                n[v] += 1
                hours[v] += dur.get(u, 0.0) / 3600
            lines.append(f"  by {table[4:]}: " + ", ".join(f"{k} {n[k]} ({hours[k]:.3f} h)" for k in sorted(n)))
    return "\n".join(lines)


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
    ast = sub.add_parser("asterisk", help="real speech (Asterisk prompts) + sounds + music from Debian packages")
    ast.add_argument("--root", type=Path, default=Path("/"), help="where the packages' files are (default /)")
    ast.add_argument("--langs", nargs="+", default=list(ASTERISK_LANGS), help='e.g. "en es it ru" or en es')
    ast.add_argument("--sound_packages", nargs="*", default=list(DEFAULT_SOUND_PACKAGES),
                     help=f"non-speech packages, of: {', '.join(SOUND_SOURCES)}")
    ast.add_argument("--db", type=Path, required=True, help="where the decoded wavs go")
    ast.add_argument("--clip_seconds", type=float, default=8.0, help="music is cut into clips this long")
    ast.add_argument("--nj", type=int, default=2, help="ffmpeg processes at a time")
    for s in (d, a, ls, ad, ast):
        s.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    if args.corpus == "demo":
        sets = split_demo(synthesize_demo(args.db))
    elif args.corpus == "mini_an4":
        sets = prepare_mini_an4(args.tarball, args.db)
    elif args.corpus == "librispeech":
        sets = {name: [u for s in subsets for u in read_libri_subset(args.root, s)]
                for name, subsets in (("train", args.train), ("dev", args.dev), ("test", args.test))}
    elif args.corpus == "asterisk":
        langs = [lang for arg in args.langs for lang in arg.split()]
        if not langs or any(not re.fullmatch(r"[a-z]{2,3}", lang) for lang in langs):
            p.error(f"--langs {args.langs}: give language codes, e.g. --langs \"en es it ru\"")
        packages = [pkg for arg in args.sound_packages for pkg in arg.split()]
        sets, _ = prepare_asterisk(args.root, langs, args.db, packages, args.clip_seconds, args.nj)
    else:
        sets = read_audio_dir(args.root)
    write_sets(sets, args.out)
    if args.corpus == "asterisk":
        print(summarize(args.out))


if __name__ == "__main__":
    main()
