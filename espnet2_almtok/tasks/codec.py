"""ALMTokCodecTask: ESPnet's GAN codec task with ``--codec almtok`` beside ESPnet's codecs.

ESPnet's ``GANCodecTask.build_model`` reads its module-level ``codec_choices``, so this task
overrides ``build_model`` as well as ``class_choices_list``. SoundStream, Encodec, DAC and
FunCodec stay available for comparisons under the same trainer and data.
"""

import argparse

from typeguard import typechecked

from espnet2.gan_codec.dac.dac import DAC
from espnet2.gan_codec.encodec.encodec import Encodec
from espnet2.gan_codec.espnet_model import ESPnetGANCodecModel
from espnet2.gan_codec.funcodec.funcodec import FunCodec
from espnet2.gan_codec.soundstream.soundstream import SoundStream
from espnet2.tasks.gan_codec import GANCodecTask
from espnet2.train.class_choices import ClassChoices

from espnet2_almtok.codec.almtok import ALMTokenizerCodec
from espnet2.gan_codec.abs_gan_codec import AbsGANCodec

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


class ALMTokCodecTask(GANCodecTask):
    """GAN codec task whose ``--codec`` choices include ``almtok``."""

    class_choices_list = [codec_choices]

    @classmethod
    @typechecked
    def build_model(cls, args: argparse.Namespace) -> ESPnetGANCodecModel:
        codec_class = codec_choices.get_class(args.codec)
        codec = codec_class(**args.codec_conf)
        return ESPnetGANCodecModel(codec=codec, **args.model_conf)
