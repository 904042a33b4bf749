#!/usr/bin/env python3
"""Train the ALMTok LM (ASR / TTS / captioning over codec tokens) with ESPnet's trainer.

Same options as any ESPnet task (``--print_config``, ``--ngpu``, DDP via
``python -m espnet2.bin.launch``); see :mod:`espnet2_almtok.tasks.lm` for the data.

    % python -m espnet2_almtok.bin.lm_train --config conf/tuning/train_lm_debug.yaml \\
        --token_list dump/lm/tokens.txt --bpemodel dump/lm/bpe/bpe.model \\
        --train_data_path_and_name_and_type dump/lm/train/task,task,text ... --output_dir exp/lm
"""

from espnet2_almtok.startup import import_quietly

ALMTokLMTask = import_quietly("espnet2_almtok.tasks.lm").ALMTokLMTask


def get_parser():
    return ALMTokLMTask.get_parser()


def main(cmd=None):
    ALMTokLMTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
