"""``ALMTokLMTask``: ESPnet task for the decoder-only LM over text + codec tokens.

ESPnet 202511's SpeechLM task does not import, so this is our own ``AbsTask``: ESPnet's
trainer, samplers, ``--print_config``, ``--ngpu`` and DDP as for any ESPnet task.

Data (one Kaldi-style dir per set, written by ``espnet2_almtok.recipe.lm_data``), keys
``<task>-<utt>``::

    --train_data_path_and_name_and_type dump/lm/train/task,task,text
    --train_data_path_and_name_and_type dump/lm/train/text,text,text
    --train_data_path_and_name_and_type dump/lm/train/codes.scp,codes,kaldi_ark

The preprocessor turns each example into ``dec_seq`` ``(L, S)`` and ``prefix_len`` (see
:mod:`espnet2_almtok.lm.layout` for the templates and layouts).
"""

import argparse
import logging
from typing import Callable, Collection, Dict, List, Optional, Tuple

import numpy as np
import torch
from typeguard import typechecked

from espnet2.tasks.abs_task import AbsTask
from espnet2.train.class_choices import ClassChoices
from espnet2.train.collate_fn import CommonCollateFn
from espnet2.train.preprocessor import AbsPreprocessor
from espnet2.train.trainer import Trainer
from espnet2.utils.types import str2bool, str_or_none

from espnet2_almtok.fileio import unflatten_codes
from espnet2_almtok.lm.layout import CONTEXT_POLICIES, LAYOUTS, CodecLayout, SequenceBuilder
from espnet2_almtok.lm.model import ALMTokLM, build_lm, lm_max_len
from espnet2_almtok.lm.vocab import PAD, TextTokenizer, Vocabulary
from espnet2_almtok.tasks import DistributedTeardown, StampsConfigAfterTraining, WeightsOnlyModelFiles

lm_choices = ClassChoices(
    "lm",
    classes=dict(transformer=ALMTokLM),
    type_check=torch.nn.Module,
    default="transformer",
)


class LMPreprocessor(AbsPreprocessor):
    """``{"task", "text", "codes"}`` -> ``{"dec_seq": (L, S) int64, "prefix_len": (1,) int64}``."""

    def __init__(self, train: bool, token_list: List[str], bpemodel: str, layout: str, max_len: int,
                 context_policy: str = "error"):
        super().__init__(train)
        self.vocab = Vocabulary.from_token_list(token_list)
        self.text = TextTokenizer(bpemodel)
        if self.text.pieces() != self.vocab.text_pieces:
            raise ValueError(f"BPE model {bpemodel} does not match the token list's text pieces; "
                             "use the bpe.model the token list was built from")
        self.builder = SequenceBuilder(CodecLayout(self.vocab, layout), max_len, context_policy)

    def __call__(self, uid: str, data: Dict) -> Dict[str, np.ndarray]:
        missing = {"task", "text", "codes"} - set(data)
        if missing:
            raise KeyError(f"{uid}: missing {sorted(missing)}; give task, text and codes files "
                           "(--*_data_path_and_name_and_type)")
        codes = unflatten_codes(np.asarray(data["codes"]).reshape(-1), self.vocab.n_q, uid)
        ex = self.builder.build(uid, data["task"].strip(), self.text.encode(data["text"]), codes)
        return dict(dec_seq=ex.seq.astype(np.int64), prefix_len=np.array([ex.prefix_len], dtype=np.int64))


class ALMTokLMTask(WeightsOnlyModelFiles, DistributedTeardown, StampsConfigAfterTraining, AbsTask):
    num_optimizers: int = 1
    class_choices_list = [lm_choices]
    trainer = Trainer  # ESPnet's own: --use_deepspeed works; the config is stamped after training

    @classmethod
    @typechecked
    def add_task_arguments(cls, parser: argparse.ArgumentParser):
        group = parser.add_argument_group(description="Task related")
        required = parser.get_default("required")
        required += ["token_list", "bpemodel"]
        group.add_argument("--token_list", type=str_or_none, default=None,
                           help="vocabulary file (espnet2_almtok.recipe.lm_data writes tokens.txt)")
        group.add_argument("--bpemodel", type=str_or_none, default=None, help="sentencepiece model of the text")
        group.add_argument("--layout", type=str, default="flat", choices=LAYOUTS,
                           help="codec token layout: flat (frame-major, one stream) or delay (n_q streams)")
        group.add_argument("--context_policy", type=str, default="error", choices=CONTEXT_POLICIES,
                           help="sequences longer than lm_conf.max_len: error, or truncate (logged count)")
        group.add_argument("--use_preprocessor", type=str2bool, default=True)
        for class_choices in cls.class_choices_list:
            class_choices.add_arguments(group)
        return parser

    @classmethod
    @typechecked
    def build_collate_fn(cls, args: argparse.Namespace, train: bool) -> Callable[
            [Collection[Tuple[str, Dict[str, np.ndarray]]]], Tuple[List[str], Dict[str, torch.Tensor]]]:
        return CommonCollateFn(float_pad_value=0.0, int_pad_value=PAD)

    @classmethod
    @typechecked
    def build_preprocess_fn(cls, args: argparse.Namespace, train: bool
                            ) -> Optional[Callable[[str, Dict[str, np.ndarray]], Dict[str, np.ndarray]]]:
        if not args.use_preprocessor:
            return None
        return LMPreprocessor(train, cls._token_list(args), args.bpemodel, args.layout, lm_max_len(args.lm_conf),
                              args.context_policy)

    @classmethod
    def required_data_names(cls, train: bool = True, inference: bool = False) -> Tuple[str, ...]:
        return ("task", "text", "codes")

    @classmethod
    def optional_data_names(cls, train: bool = True, inference: bool = False) -> Tuple[str, ...]:
        return ()

    @staticmethod
    def _token_list(args: argparse.Namespace) -> List[str]:
        if isinstance(args.token_list, str):
            with open(args.token_list, encoding="utf-8") as f:
                args.token_list = [line.rstrip("\n") for line in f]  # saved in config.yaml: portable
        if not isinstance(args.token_list, (list, tuple)):
            raise RuntimeError("--token_list must be a file or a list")
        return list(args.token_list)

    @classmethod
    @typechecked
    def build_model(cls, args: argparse.Namespace) -> ALMTokLM:
        if args.lm != "transformer":
            raise ValueError(f"unknown --lm {args.lm}")
        model = build_lm(cls._token_list(args), args.layout, args.lm_conf)
        vocab = Vocabulary.from_token_list(args.token_list)
        logging.info(f"vocabulary: {len(vocab)} ids ({len(vocab.text_pieces)} text pieces, "
                     f"{vocab.n_q} x {vocab.codebook_size} codes), layout {args.layout} "
                     f"({model.num_streams} stream(s))")
        return model
