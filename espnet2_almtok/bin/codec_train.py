#!/usr/bin/env python3
"""Train an ALMTokenizer (or an ESPnet codec) with ESPnet's GAN trainer.

Same options as ESPnet's ``gan_codec_train`` (``--print_config``, ``--ngpu``, DDP via
``python -m espnet2.bin.launch``), with ``--codec almtok`` available (the default).
"""

from espnet2_almtok.startup import import_quietly

ALMTokCodecTask = import_quietly("espnet2_almtok.tasks.codec").ALMTokCodecTask


def get_parser():
    return ALMTokCodecTask.get_parser()


def main(cmd=None):
    """Run training.

    Example:
        % python -m espnet2_almtok.bin.codec_train --print_config --codec almtok
        % python -m espnet2_almtok.bin.codec_train --config conf/tuning/train_almtok_debug.yaml \\
            --train_data_path_and_name_and_type dump/raw/train/wav.scp,audio,sound ...
    """
    ALMTokCodecTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
