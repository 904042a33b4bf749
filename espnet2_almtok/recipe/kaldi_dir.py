"""Kaldi-style data dirs: write them (wav.scp, utt2spk, spk2utt, text, utt2dur) atomically; read
their tables, ``segments`` and ``wav.scp`` entries (files or ``cmd |`` pipes)."""

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import soundfile


@dataclass
class Utterance:
    utt_id: str
    path: str
    speaker: str
    text: Optional[str] = None  # transcript (speech) or caption (sounds)
    category: Optional[str] = None  # "speech" / "sound" / "music": utt2category, when known
    # more per-utterance tables, file name -> value (e.g. {"utt2lang": "en", "text.orig": "..."})
    extra: Dict[str, str] = field(default_factory=dict)


# tables write_data_dir writes itself (an Utterance's ``extra`` may not name them)
_OWN_TABLES = ("wav.scp", "utt2spk", "spk2utt", "text", "utt2dur", "utt2category")


MAX_ID_BYTES = 200


def utt_id_problem(utt: str) -> Optional[str]:
    """Why ``utt`` cannot be an utterance id here, or None. Ids become file names and table keys:
    Kaldi ids, no path separators, whitespace or control characters, no leading ``-`` or ``.``,
    no ``..``, at most :data:`MAX_ID_BYTES` bytes (file systems allow 255 per name)."""
    if not utt:
        return "it is empty"
    if len(utt.encode("utf-8", "surrogateescape")) > MAX_ID_BYTES:
        return f"it is longer than {MAX_ID_BYTES} bytes"
    if "/" in utt or "\\" in utt:
        return "it contains a path separator"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in utt):
        return "it contains whitespace or a control character"
    if utt[0] in "-.":
        return f"it starts with '{utt[0]}'"
    if ".." in utt:
        return "it contains '..'"
    return None


def check_utt_ids(ids: Iterable[str], where: str) -> None:
    """Raise ValueError naming the ids (at most 5) that :func:`utt_id_problem` refuses, and the fix."""
    bad = [(u, why) for u in ids if (why := utt_id_problem(u))]
    if bad:
        shown = "; ".join(f"{u!r}: {why}" for u, why in bad[:5])
        raise ValueError(f"{where}: {len(bad)} utterance id(s) cannot name files: {shown}. Utterance ids are "
                         f"Kaldi ids (letters, digits, '_', '-', '.'; no '/', whitespace, leading '-' or '.', '..'; "
                         f"at most {MAX_ID_BYTES} bytes): rename them in the data dir")


def read_table(path: Path) -> Dict[str, str]:
    """A Kaldi table (``utt value`` lines) as a dict; ``{}`` if the file does not exist.
    A repeated utterance id is an error naming the line."""
    table = {}
    if not Path(path).exists():
        return table
    try:
        lines = open(path, encoding="utf-8").read().split("\n")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text table ('<utt_id> <value>' lines): is it an audio or binary "
                         "file given where a wav.scp/text file is expected?") from None
    for n, line in enumerate(lines, 1):
        parts = line.split(maxsplit=1)
        if not parts:
            continue
        if parts[0] in table:
            raise ValueError(f"{path}:{n}: utterance {parts[0]} appears twice")
        table[parts[0]] = parts[1] if len(parts) > 1 else ""
    return table


class Segment(NamedTuple):
    """A ``segments`` line ``utt rec start end`` (seconds; ``end`` -1: the end of the recording)."""
    recording: str
    start: float
    end: float


def read_segments(path: Path) -> Dict[str, Segment]:
    """``segments`` (``utt recording start end``) as ``{utt: Segment}``; ``{}`` if absent.
    A malformed line or a repeated utterance is an error naming the line."""
    segments: Dict[str, Segment] = {}
    if not Path(path).exists():
        return segments
    for n, line in enumerate(open(path), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) != 4:
                raise ValueError
            seg = Segment(parts[1], float(parts[2]), float(parts[3]))
        except ValueError:
            raise ValueError(f"{path}:{n}: expected 'utt recording start end' (seconds), got {line.strip()!r}") from None
        if parts[0] in segments:
            raise ValueError(f"{path}:{n}: utterance {parts[0]} appears twice")
        segments[parts[0]] = seg
    return segments


def is_pipe(spec: str) -> bool:
    """A ``wav.scp`` entry that is a shell command writing the audio to stdout (``cmd |``)."""
    return spec.rstrip().endswith("|")


def read_wav_entry(spec: str, name: str) -> Tuple["np.ndarray", int]:
    """Read one ``wav.scp`` entry -> (float32 ``(T,)`` or ``(T, channels)``, sample rate).

    ``spec`` is a file path, or, as in Kaldi, a command ending in ``|`` whose standard output is the
    audio (e.g. ``sph2pipe -f wav a.sph |``, ``sox a.flac -t wav - |``). The command is the data
    dir's own and runs in a shell as Kaldi runs it; ``name`` (the utterance) is in every error.
    """
    import io

    import soundfile

    from espnet2_almtok.audio import AudioError, read_audio

    spec = spec.strip()
    if not is_pipe(spec):
        return read_audio(spec, name)
    cmd = spec[:-1].strip()
    if not cmd:
        raise AudioError(f"{name}: wav.scp entry {spec!r} is an empty command")
    proc = subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise AudioError(f"{name}: wav.scp command `{cmd}` failed (exit code {proc.returncode})"
                         + (f": {' / '.join(tail)}" if tail else "") + "; fix the command in wav.scp")
    if not proc.stdout:
        raise AudioError(f"{name}: wav.scp command `{cmd}` wrote no audio to its standard output")
    try:
        return soundfile.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=False)
    except Exception as e:  # soundfile's LibsndfileError / RuntimeError
        raise AudioError(f"{name}: the output of wav.scp command `{cmd}` is not readable audio ({e}); "
                         "the command must write a wav/flac stream (e.g. `sox in.x -t wav - |`)") from e


def write_table(path: Path, rows: Dict[str, str]) -> None:
    """``utt value`` lines sorted by key, written atomically."""
    from espnet2_almtok.fileio import atomic_write_text

    atomic_write_text(path, "".join(f"{key} {rows[key]}\n" for key in sorted(rows)))


def write_data_dir(out: Path, utts: Iterable[Utterance], with_duration: bool = True) -> int:
    """Write ``out/{wav.scp,utt2spk,spk2utt,utt2dur,text,utt2category}``; ids are prefixed by speaker.
    Each name in an utterance's ``extra`` becomes one more table ``out/<name>``.

    Returns the number of utterances. Duplicated ids are an error, naming the id.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    utts: List[Utterance] = list(utts)
    wav, spk, text, dur, cat = {}, {}, {}, {}, {}
    extra: Dict[str, Dict[str, str]] = {}
    check_utt_ids((u.utt_id for u in utts), str(out))
    for u in utts:
        if u.utt_id in wav:
            raise ValueError(f"{out}: utterance id {u.utt_id} occurs twice ({wav[u.utt_id]} and {u.path})")
        if "\n" in u.path or "\r" in u.path:
            raise ValueError(f"{out}: the file of utterance {u.utt_id} has a line break in its name ({u.path!r}), "
                             "which would break wav.scp (and could make a command of it): rename the file")
        wav[u.utt_id] = u.path
        spk[u.utt_id] = u.speaker
        if u.text is not None:
            text[u.utt_id] = " ".join(u.text.split())
        if u.category is not None:
            cat[u.utt_id] = u.category
        for name, value in u.extra.items():
            if name in _OWN_TABLES or not name or "/" in name:
                raise ValueError(f"{out}: utterance {u.utt_id}: extra table name {name!r} is not a free file name")
            extra.setdefault(name, {})[u.utt_id] = " ".join(value.split())
        if with_duration:
            dur[u.utt_id] = f"{soundfile.info(u.path).duration:.3f}"
    if not wav:
        raise ValueError(f"{out}: no utterances found")
    write_table(out / "wav.scp", wav)
    write_table(out / "utt2spk", spk)
    spk2utt: Dict[str, List[str]] = {}
    for utt in sorted(spk):
        spk2utt.setdefault(spk[utt], []).append(utt)
    write_table(out / "spk2utt", {s: " ".join(us) for s, us in spk2utt.items()})
    if text:
        write_table(out / "text", text)
    if dur:
        write_table(out / "utt2dur", dur)
    if cat:
        write_table(out / "utt2category", cat)
    for name, table in extra.items():
        write_table(out / name, table)
    return len(wav)
