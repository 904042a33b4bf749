"""ALMTokCodecTask: ESPnet's GAN codec task with ``--codec almtok`` beside ESPnet's codecs.

ESPnet's ``GANCodecTask.build_model`` reads its module-level ``codec_choices``, so this task
overrides ``build_model`` as well as ``class_choices_list``. SoundStream, Encodec, DAC and
FunCodec stay available for comparisons under the same trainer and data.

Training crops. ``--crop_length N`` cuts each training utterance to a random ``N``-sample crop
(validation: the centred crop) in the preprocessor, so ESPnet's *sequence* iterator can be
used: it splits every mini-batch across the DDP ranks (``batch[rank::world_size]``), which
gives every rank the same number of batches. (ESPnet's chunk iterator shares utterances, not
batches, between ranks, so ranks can get unequal batch counts.) Utterances shorter than the
crop stay short; the collate pads them and ``audio_lengths`` reach the ALMTokenizer codec,
whose losses ignore the padding.
"""

import argparse
from typing import Callable, Dict, Optional

import numpy as np
import torch
from typeguard import typechecked

from espnet2.gan_codec.abs_gan_codec import AbsGANCodec
from espnet2.gan_codec.dac.dac import DAC
from espnet2.gan_codec.encodec.encodec import Encodec
from espnet2.gan_codec.espnet_model import ESPnetGANCodecModel
from espnet2.gan_codec.funcodec.funcodec import FunCodec
from espnet2.gan_codec.soundstream.soundstream import SoundStream
from espnet2.tasks.gan_codec import GANCodecTask
from espnet2.train.class_choices import ClassChoices

from espnet2_almtok.codec.almtok import ALMTokenizerCodec
from espnet2_almtok.tasks import DistributedTeardown, WeightsOnlyModelFiles
from espnet2_almtok.train.gan_trainer import ALMTokGANTrainer

codec_choices = ClassChoices(
    "codec",
    classes=dict(
        almtok=ALMTokenizerCodec,
        soundstream=SoundStream,
        encodec=Encodec,
        dac=DAC,
        funcodec=FunCodec,
    ),
    type_check=AbsGANCodec,
    default="almtok",
)


class ALMTokGANCodecModel(ESPnetGANCodecModel):
    """ESPnet's GAN codec model that also hands ``audio_lengths`` to codecs that take them
    (ALMTokenizer); ESPnet's own codecs are called exactly as ESPnet calls them."""

    def forward(self, audio: torch.Tensor, forward_generator: bool = True,
                audio_lengths: Optional[torch.Tensor] = None, **kwargs) -> Dict:
        if isinstance(self.codec, ALMTokenizerCodec):
            return self.codec(audio=audio, forward_generator=forward_generator, audio_lengths=audio_lengths)
        return super().forward(audio, forward_generator=forward_generator, **kwargs)


class RandomCrop:
    """Preprocessor: ``audio`` -> a ``crop_length``-sample crop (random in training, centred in
    validation); a multi-channel array keeps its first channel, as ESPnet's codec task does."""

    def __init__(self, crop_length: int, train: bool, base: Optional[Callable] = None):
        self.crop_length = crop_length
        self.train = train
        self.base = base

    def __call__(self, uid: str, data: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if self.base is not None:
            data = self.base(uid, data)
        audio = data["audio"]
        if audio.ndim == 2:  # (T, C)
            audio = audio[:, 0]
        excess = audio.shape[0] - self.crop_length
        if excess > 0:
            if self.train:
                start = np.random.randint(0, excess + 1)
            else:
                start = excess // 2
            audio = audio[start: start + self.crop_length]
        data["audio"] = audio
        return data


class ALMTokCodecTask(WeightsOnlyModelFiles, DistributedTeardown, GANCodecTask):
    """GAN codec task whose ``--codec`` choices include ``almtok``."""

    class_choices_list = [codec_choices]
    # ESPnet's GAN trainer with bf16 autocast and per-turn clipping (train/gan_trainer.py)
    trainer = ALMTokGANTrainer

    @classmethod
    @typechecked
    def add_task_arguments(cls, parser: argparse.ArgumentParser):
        super().add_task_arguments(parser)
        group = parser.add_argument_group(description="almtok training crops")
        group.add_argument(
            "--crop_length", type=int, default=0,
            help="Cut each training utterance to a random crop of this many samples (validation: "
                 "the centred crop); 0 keeps whole utterances. Use it with --iterator_type sequence, "
                 "which splits every mini-batch over DDP ranks (equal batch counts per rank).")

    @classmethod
    def main_worker(cls, args: argparse.Namespace):
        # ESPnet refuses --use_tf32 with --use_amp ("amp is not compatible with tf32"); with bf16
        # autocast the float32 remainder (the quantizer, the spectral losses) may still use TF32
        if getattr(args, "use_amp", False) and getattr(args, "use_tf32", False):
            args.use_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            # (said by the trainer: logging before ESPnet's own set-up would fix it at WARNING)
            ALMTokGANTrainer.notes.append("--use_amp with --use_tf32: autocast, and TF32 for what runs in float32")
        super().main_worker(args)

    @classmethod
    def build_preprocess_fn(cls, args: argparse.Namespace, train: bool):
        base = super().build_preprocess_fn(args, train)
        crop = getattr(args, "crop_length", 0)
        if crop and crop > 0:
            if getattr(args, "iterator_type", "sequence") == "chunk":
                raise ValueError("--crop_length cuts crops in the preprocessor; it is meant for "
                                 "--iterator_type sequence, not chunk (set one of them)")
            return RandomCrop(crop, train, base)
        return base

    @classmethod
    @typechecked
    def build_model(cls, args: argparse.Namespace) -> ESPnetGANCodecModel:
        codec_class = codec_choices.get_class(args.codec)
        codec = codec_class(**args.codec_conf)
        return ALMTokGANCodecModel(codec=codec, **args.model_conf)
