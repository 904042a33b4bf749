import gzip
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import speechlike
from espnet2_almtok.recipe import data_prep
from espnet2_almtok.recipe.data_prep import classify_prompt, normalize_text, split_of
from espnet2_almtok.recipe.kaldi_dir import Utterance, read_table, write_data_dir


def test_librispeech_and_libritts_layouts(tmp_path):
    ls = tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121123"
    ls.mkdir(parents=True)
    soundfile.write(ls / "84-121123-0000.flac", speechlike(0.5).numpy(), 16000)
    (ls / "84-121123.trans.txt").write_text("84-121123-0000 GO DO YOU HEAR\n")
    tts = tmp_path / "LibriSpeech" / "dev-clean" / "1272" / "128104"
    tts.mkdir(parents=True)
    soundfile.write(tts / "1272_128104_000001_000000.wav", speechlike(0.5).numpy(), 24000)
    (tts / "1272_128104_000001_000000.normalized.txt").write_text("Mister Quilter is the apostle.\n")
    utts = data_prep.read_libri_subset(tmp_path / "LibriSpeech", "dev-clean")
    by_id = {u.utt_id: u for u in utts}
    assert by_id["84-121123-0000"].text == "GO DO YOU HEAR" and by_id["84-121123-0000"].speaker == "84"
    assert by_id["1272_128104_000001_000000"].speaker == "1272"
    with pytest.raises(FileNotFoundError, match="set LIBRISPEECH"):
        data_prep.read_libri_subset(tmp_path / "LibriSpeech", "test-other")


def test_audio_dir_takes_every_format_and_fills_each_set(tmp_path):
    root = tmp_path / "audio"
    (root / "birds").mkdir(parents=True)
    for i, ext in enumerate(["wav", "flac", "ogg"] * 2):
        soundfile.write(root / "birds" / f"clip {i}.{ext}", speechlike(0.3, seed=i).numpy(), 16000)
    (root / "birds" / "notes.txt").write_text("ignored")
    sets = data_prep.read_audio_dir(root)
    assert sum(len(v) for v in sets.values()) == 6 and all(sets.values())
    ids = [u.utt_id for v in sets.values() for u in v]
    assert all(" " not in i and i.startswith("birds-") for i in ids)
    data_prep.write_sets(sets, tmp_path / "data")
    assert (tmp_path / "data" / "train" / "utt2dur").read_text().split()[1] == "0.300"


def test_audio_dir_gives_distinct_files_distinct_ids_and_skips_unreadable(tmp_path, caplog):
    root = tmp_path / "audio"
    (root / "x").mkdir(parents=True)
    names = ["a b.wav", "a;b.wav", "y.wav", "y.flac", "\u00e9t\u00e9.wav", "\u00fcb\u00e9.wav", "ok.wav"]
    for i, name in enumerate(names):
        soundfile.write(root / "x" / name, speechlike(0.2, seed=i).numpy(), 16000)
    (root / "x" / "empty.wav").write_bytes(b"")
    (root / "x" / "text.wav").write_text("not audio")
    with caplog.at_level("WARNING"):
        sets = data_prep.read_audio_dir(root)
    utts = [u for v in sets.values() for u in v]
    assert len(utts) == len(names)  # every readable file, none merged
    assert len({u.utt_id for u in utts}) == len(names)
    assert len({u.path for u in utts}) == len(names)
    assert {u.utt_id for u in utts} >= {"x-ok"}  # ids without a clash stay readable
    warned = caplog.text
    assert "empty.wav" in warned and "text.wav" in warned and "unreadable" in warned
    data_prep.write_sets(sets, tmp_path / "data")  # writes without a duplicate-id error


def test_duplicate_ids_are_an_error(tmp_path):
    f = tmp_path / "a.wav"
    soundfile.write(f, np.ones(100) * 0.1, 16000)
    with pytest.raises(ValueError, match="utterance id x occurs twice"):
        write_data_dir(tmp_path / "d", [Utterance("x", str(f), "s"), Utterance("x", str(f), "s")])


# ---------------------------------------------------------------------------- asterisk corpus
ROOT = Path(__file__).resolve().parents[3]
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                  reason="ffmpeg is not installed (apt-get install ffmpeg; utils/setup_env.sh "
                                         "installs it when run as root)")


def test_asterisk_transcripts_are_classified_and_normalised():
    assert normalize_text("Call-Forward on Busy... «Важно» dell'utente 'quoted' H.323") == \
        "call forward on busy важно dell'utente quoted h 323"
    assert classify_prompt("beep", "[this is a simple beep tone]") == ("sound", "this is a simple beep tone")
    assert classify_prompt("confbridge-join", "<beep ascending>") == ("sound", "beep ascending")
    assert classify_prompt("confbridge-join", "(beep)") == ("sound", "beep")
    assert classify_prompt("letters/at", "at [@]") == ("speech", "at")  # a symbol annotation, not a sound
    assert classify_prompt("letters/x", "[!] punto esclamativo") == ("speech", "punto esclamativo")
    assert classify_prompt("spy-iax2", 'IAX (note: does not say "2")') == ("speech", "iax")
    assert classify_prompt("x", "Sus saludos [temporales] estan")[0] == "skip"
    assert classify_prompt("silence/1", "(1 second of silence)") == ("skip", "silence prompt")


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def _g722(path: Path, seconds: float, freq: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _ffmpeg("-f", "lavfi", "-i", f"sine=frequency={freq}:duration={seconds}:sample_rate=16000",
            "-ac", "1", "-c:a", "g722", "-f", "g722", str(path))


def _ogg(path: Path, expr: str, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _ffmpeg("-f", "lavfi", "-i", f"aevalsrc={expr}:s=44100:d={seconds}", "-ac", "2", "-c:a", "libvorbis",
            "-f", "ogg", str(path))


def _transcripts(root: Path, lang: str, lines: list) -> None:
    path = root / f"usr/share/doc/asterisk-core-sounds-{lang}/core-sounds-{lang}.txt.gz"
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:  # the Italian file has a BOM: so does this one
        f.write("\ufeff; Core Asterisk Sounds\n\n" + "".join(f"{line}\n" for line in lines))


def _sentences(split: str, n: int) -> list:
    """``n`` English sentences whose transcript hash puts them in ``split``."""
    found = [t for t in (f"This is prompt number {i}." for i in range(200)) if split_of(normalize_text(t)) == split]
    return found[:n]


@pytest.fixture(scope="module")
def asterisk_root(tmp_path_factory) -> Path:
    """A fake / with the asterisk and sound packages' files: en under sounds/en (the alternatives
    link), es under its voice dir; good, bracketed, unpaired, empty and undecodable entries."""
    root = tmp_path_factory.mktemp("pkgroot")
    en, es = root / "usr/share/asterisk/sounds/en", root / "usr/share/asterisk/sounds/es_MX_f_Allison"
    sentences = _sentences("train", 2) + _sentences("dev", 1) + _sentences("test", 2)
    lines = [f"prompt-{i}: {t}" for i, t in enumerate(sentences)]
    for i in range(len(sentences)):
        _g722(en / f"prompt-{i}.g722", 0.4, 300 + 20 * i)
    lines += ["hello: Hello, world!", "hello-again: Hello world.", "digits/1: One.",
              "beep: [this is a simple beep tone]", "letters/at: at [@]", "ghost: Nobody is here.", "blank:", "dup: first", "dup: second",
              "silence/1: (1 second of silence)", "broken: This file is empty."]
    for name, freq in (("hello", 400), ("hello-again", 410), ("digits/1", 500), ("beep", 1000), ("letters/at", 600),
                       ("orphan", 700), ("silence/1", 800)):
        _g722(en / f"{name}.g722", 0.4, freq)
    (en / "broken.g722").write_bytes(b"")  # ffmpeg decodes it to no audio
    _transcripts(root, "en", lines)
    _g722(es / "hola.g722", 0.4, 450)
    _g722(es / "digits/1F.g722", 0.4, 460)  # as in the real package: its transcript says digits/1f
    _transcripts(root, "es", ["hola: ¡Hola, señor!", "invalid: Sus saludos [temporales] estan", "digits/1f: una"])
    (es / "invalid.g722").write_bytes((es / "hola.g722").read_bytes())
    fd = root / "usr/share/sounds/freedesktop/stereo"
    _ogg(fd / "dialog-warning.oga", "0.3*sin(2*PI*880*t)", 0.5)
    _ogg(fd / "audio-channel-front-left.oga", "0.3*sin(2*PI*200*t)", 0.5)  # spoken words in the real package
    (fd / "dialog-error.oga").symlink_to("dialog-warning.oga")
    (fd / "broken.oga").write_bytes(bytes(range(256)) * 8)
    fb = root / "usr/share/games/frozen-bubble/snd"
    _ogg(fb / "introzik.ogg", "if(gt(t\\,8.5)\\,0.3*sin(2*PI*440*t)\\,0)", 21)  # 8 s of silence, 13 s of tune
    _ogg(fb / "applause.ogg", "0.2*sin(2*PI*300*t)", 0.6)
    return root


def _prepare(root: Path, db: Path, out: Path) -> None:
    data_prep.main(["asterisk", "--root", str(root), "--langs", "en es", "--db", str(db), "--out", str(out),
                    "--nj", "2"])


@needs_ffmpeg
def test_asterisk_corpus_is_prepared_split_and_checked(asterisk_root, tmp_path):
    db, out = tmp_path / "db", tmp_path / "data"
    _prepare(asterisk_root, db, out)
    for part in ("train", "dev", "test"):
        r = subprocess.run(["bash", str(ROOT / "utils/validate_data_dir.sh"), str(out / part)], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
    tables = {name: {} for name in ("wav.scp", "text", "text.orig", "utt2spk", "utt2category", "utt2lang", "utt2dur")}
    part_of = {}
    for part in ("train", "dev", "test"):
        for name in tables:
            rows = read_table(out / part / name)
            assert not set(rows) & set(tables[name]), f"{name}: an utterance in two sets"
            tables[name].update(rows)
        part_of.update({u: part for u in read_table(out / part / "wav.scp")})
    cat, text, lang, spk = tables["utt2category"], tables["text"], tables["utt2lang"], tables["utt2spk"]
    assert set(cat) == set(text) == set(lang) == set(tables["text.orig"]) == set(tables["wav.scp"])
    assert cat["asterisk_en_sounds-beep"] == "sound" and text["asterisk_en_sounds-beep"] == "this is a simple beep tone"
    assert lang["asterisk_en_sounds-beep"] == "none"
    assert (cat["asterisk_en-letters_at"], text["asterisk_en-letters_at"]) == ("speech", "at")
    assert text["asterisk_en-digits_1"] == "one" and tables["text.orig"]["asterisk_en-digits_1"] == "One."
    assert (text["asterisk_es-hola"], lang["asterisk_es-hola"], spk["asterisk_es-hola"]) == ("hola señor", "es",
                                                                                          "asterisk_es")
    assert text["asterisk_es-digits_1F"] == "una"
    assert text["sound_theme_freedesktop-dialog-warning"] == "dialog warning sound"
    assert text["frozen_bubble_data-applause"] == "applause sound from frozen bubble"
    music = sorted(u for u, c in cat.items() if c == "music")  # 21 s: clip 0 silent, 1 full, 2 (5 s) kept
    assert music == ["frozen_bubble_data-introzik-001", "frozen_bubble_data-introzik-002"]
    assert [float(tables["utt2dur"][u]) for u in music] == [8.0, pytest.approx(5.0, abs=0.05)]
    assert {text[u] for u in music} == {"music from frozen bubble"}
    assert not any(u.startswith(("asterisk_en-ghost", "asterisk_en-orphan", "asterisk_en-broken", "asterisk_en-silence",
                                 "asterisk_es-invalid", "sound_theme_freedesktop-dialog-error",
                                 "sound_theme_freedesktop-audio-channel", "sound_theme_freedesktop-broken"))
                   for u in cat)
    assert all(u.startswith(spk[u] + "-") for u in spk)  # Kaldi: ids prefixed by their speaker
    assert part_of["asterisk_en-hello"] == part_of["asterisk_en-hello-again"]  # one sentence, one set
    train_text = {text[u] for u in text if part_of[u] == "train" and cat[u] == "speech"}
    en_test = {text[u] for u in text if part_of[u] == "test" and lang[u] == "en"}
    assert en_test and not en_test & train_text
    assert Counter(part_of.values()).keys() == {"train", "dev", "test"}

    # a second run: the same data dirs, nothing decoded again
    wav = Path(tables["wav.scp"]["asterisk_en-hello"])
    mtime = wav.stat().st_mtime_ns
    _prepare(asterisk_root, db, tmp_path / "again")
    assert wav.stat().st_mtime_ns == mtime
    for part in ("train", "dev", "test"):
        for f in sorted((out / part).iterdir()):
            assert (tmp_path / "again" / part / f.name).read_text() == f.read_text(), f"{part}/{f.name} differs"


@needs_ffmpeg
def test_asterisk_bad_entries_are_counted_not_fatal(asterisk_root, tmp_path, caplog):
    sets, problems = data_prep.prepare_asterisk(asterisk_root, ["en", "es"], tmp_path / "db")
    assert sum(map(len, sets.values())) == 16  # 10 en + 2 es + 1 freedesktop + 1 effect + 2 clips
    assert problems.by_reason["audio without transcript"] == ["en/orphan"]
    assert problems.by_reason["transcript without audio"] == ["en/ghost"]
    assert problems.by_reason["empty transcript"] == ["en/blank"]
    assert problems.by_reason["two different transcripts"] == ["en/dup"]
    assert problems.by_reason["silence prompt"] == ["en/silence/1"]
    assert problems.by_reason["bracketed words inside speech (spoken or not?)"] == ["es/invalid"]
    assert problems.by_reason["link to a file already taken"] == ["dialog-error.oga"]
    assert problems.by_reason["not non-speech (sound-theme-freedesktop)"] == ["audio-channel-front-left.oga"]
    assert problems.by_reason["silent music clip"] == ["introzik-000"]
    assert sorted(Path(p).name for p in problems.by_reason["ffmpeg cannot decode it"]) == ["broken.g722", "broken.oga"]
    assert "broken.oga" in caplog.text and "left out 1: audio without transcript (e.g. en/orphan)" in caplog.text
    shared = [u for u in sets["test"] if u.category == "speech"][:1]
    with pytest.raises(ValueError, match="test transcript.* also in train"):
        data_prep.check_no_shared_text({"train": shared, "dev": [], "test": shared})


def test_asterisk_id_clash_and_missing_packages_are_clear_errors(tmp_path):
    voice = tmp_path / "usr/share/asterisk/sounds/en"
    (voice / "digits").mkdir(parents=True)
    (voice / "digits/1.g722").write_bytes(b"x")
    (voice / "digits_1.g722").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="install asterisk-core-sounds-en "):
        data_prep.prepare_asterisk(tmp_path, ["en"], tmp_path / "db", [])
    _transcripts(tmp_path, "en", ["digits/1: One.", "digits_1: One again."])
    with pytest.raises(ValueError, match="would both be utterance asterisk_en-digits_1"):
        data_prep.prepare_asterisk(tmp_path, ["en"], tmp_path / "db", [])
    with pytest.raises(FileNotFoundError, match="install asterisk-core-sounds-it-g722"):
        data_prep.prepare_asterisk(tmp_path, ["it"], tmp_path / "db", [])
    with pytest.raises(FileNotFoundError, match="install sound-theme-freedesktop"):
        data_prep.prepare_asterisk(tmp_path, [], tmp_path / "db", ["sound-theme-freedesktop"])
