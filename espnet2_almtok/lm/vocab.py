"""One vocabulary for text (sentencepiece BPE) and codec tokens, plus special tokens.

Id layout (``V = 16 + n_bpe + n_q * K``)::

    0 .. 15                  special tokens (SPECIALS, then <reserved_*>)
    16 .. 16 + n_bpe - 1     text: sentencepiece piece ``i`` -> ``16 + i``
    A .. A + n_q * K - 1     audio: code ``c`` of codebook ``q`` -> ``A + q * K + c``
                             (``A = 16 + n_bpe``; each codebook has its own id range)

The token list (one token per line, ESPnet's ``--token_list`` format) spells this layout out:
``<pad> <empty> <eos> ... ▁the ... <a0_0> .. <a2_63>``; :meth:`Vocabulary.from_token_list`
reads it back, so a trained model's config alone is enough to rebuild its vocabulary.
"""

import re
from pathlib import Path
from typing import List, Sequence, Union

SPECIALS = (
    "<pad>",      # padding; never predicted
    "<empty>",    # stream filler in the delay layout (and after an audio segment ends)
    "<eos>",      # end of the target segment
    "<task_asr>",
    "<task_tts>",
    "<task_caption>",
    "<text>",     # a text segment follows
    "<audio>",    # an audio (codec token) segment follows
)
NUM_SPECIAL = 16
PAD, EMPTY, EOS = 0, 1, 2
TASKS = ("asr", "tts", "caption")
_AUDIO_RE = re.compile(r"^<a(\d+)_(\d+)>$")


class Vocabulary:
    """Maps text pieces and codec codes to ids of the shared vocabulary.

    Args:
        text_pieces: the sentencepiece model's pieces, in id order.
        n_q: codebooks per audio frame.
        codebook_size: ``K``, codes per codebook.
    """

    def __init__(self, text_pieces: Sequence[str], n_q: int, codebook_size: int):
        self.text_pieces = list(text_pieces)
        self.n_q = int(n_q)
        self.codebook_size = int(codebook_size)
        self.text_offset = NUM_SPECIAL
        self.audio_offset = NUM_SPECIAL + len(self.text_pieces)

    # -------------------------------------------------------------- construction / io
    @classmethod
    def from_token_list(cls, tokens: Union[str, Path, Sequence[str]]) -> "Vocabulary":
        if isinstance(tokens, (str, Path)):
            tokens = Path(tokens).read_text(encoding="utf-8").splitlines()
        tokens = list(tokens)
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"token list does not start with the special tokens {SPECIALS}: "
                             f"{tokens[:len(SPECIALS)]}; build it with espnet2_almtok.recipe.lm_data")
        audio = [i for i, t in enumerate(tokens) if _AUDIO_RE.match(t)]
        if not audio:
            raise ValueError("token list has no audio tokens (<aQ_C>)")
        last_q, last_c = map(int, _AUDIO_RE.match(tokens[-1]).groups())
        vocab = cls(tokens[NUM_SPECIAL: audio[0]], last_q + 1, last_c + 1)
        if vocab.token_list() != tokens:
            raise ValueError("token list is not in the layout of espnet2_almtok.lm.vocab (specials, "
                             "text pieces, then <aQ_C> for every codebook q and code c)")
        return vocab

    def token_list(self) -> List[str]:
        specials = list(SPECIALS) + [f"<reserved_{i}>" for i in range(NUM_SPECIAL - len(SPECIALS))]
        audio = [f"<a{q}_{c}>" for q in range(self.n_q) for c in range(self.codebook_size)]
        return specials + self.text_pieces + audio

    def __len__(self) -> int:
        return self.audio_offset + self.n_q * self.codebook_size

    # -------------------------------------------------------------- ids
    @staticmethod
    def task_id(task: str) -> int:
        if task not in TASKS:
            raise ValueError(f"unknown task '{task}'; expected one of {TASKS}")
        return SPECIALS.index(f"<task_{task}>")

    @staticmethod
    def modality_id(modality: str) -> int:
        return SPECIALS.index(f"<{modality}>")

    def text_ids(self, piece_ids: Sequence[int]) -> List[int]:
        return [self.text_offset + int(i) for i in piece_ids]

    def piece_ids(self, ids: Sequence[int]) -> List[int]:
        """Text token ids -> sentencepiece ids (non-text ids are dropped)."""
        return [int(i) - self.text_offset for i in ids if self.is_text(int(i))]

    def is_text(self, i: int) -> bool:
        return self.text_offset <= i < self.audio_offset

    def audio_range(self, q: int) -> range:
        """Ids of codebook ``q``."""
        start = self.audio_offset + q * self.codebook_size
        return range(start, start + self.codebook_size)


class TextTokenizer:
    """Sentencepiece BPE: text <-> piece ids (``bos``/``eos`` are the LM's, not the BPE's)."""

    def __init__(self, bpemodel: Union[str, Path]):
        import sentencepiece as spm

        if not Path(bpemodel).is_file():
            raise FileNotFoundError(f"BPE model {bpemodel} does not exist; train it first (lm1 recipe stage 2)")
        self.sp = spm.SentencePieceProcessor(model_file=str(bpemodel))

    def pieces(self) -> List[str]:
        return [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]

    def encode(self, text: str) -> List[int]:
        return self.sp.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids])


def train_bpe(text_lines: Sequence[str], model_prefix: Union[str, Path], vocab_size: int,
              model_type: str = "bpe", character_coverage: float = 1.0) -> Path:
    """Train a sentencepiece model on ``text_lines``; returns ``<model_prefix>.model``.

    ``vocab_size`` is an upper bound: on a tiny corpus sentencepiece keeps what it can learn.
    """

    import sentencepiece as spm

    lines = [t for t in text_lines if t.strip()]
    if not lines:
        raise ValueError("no text to train the BPE model on (empty transcripts)")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(model_prefix), vocab_size=vocab_size,
        model_type=model_type, character_coverage=character_coverage, hard_vocab_limit=False,
        bos_id=-1, eos_id=-1, unk_id=0, minloglevel=2)
    return Path(f"{model_prefix}.model")
