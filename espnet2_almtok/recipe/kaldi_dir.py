"""Write Kaldi-style data dirs (wav.scp, utt2spk, spk2utt, text, utt2dur) atomically."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional

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


def read_table(path: Path) -> Dict[str, str]:
    """A Kaldi table (``utt value`` lines) as a dict; ``{}`` if the file does not exist.
    A repeated utterance id is an error naming the line."""
    table = {}
    if not Path(path).exists():
        return table
    for n, line in enumerate(open(path), 1):
        parts = line.rstrip("\n").split(maxsplit=1)
        if not parts:
            continue
        if parts[0] in table:
            raise ValueError(f"{path}:{n}: utterance {parts[0]} appears twice")
        table[parts[0]] = parts[1] if len(parts) > 1 else ""
    return table


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
    for u in utts:
        if u.utt_id in wav:
            raise ValueError(f"{out}: utterance id {u.utt_id} occurs twice ({wav[u.utt_id]} and {u.path})")
        if not u.utt_id or any(c.isspace() for c in u.utt_id):
            raise ValueError(f"{out}: utterance id {u.utt_id!r} is empty or contains whitespace")
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
