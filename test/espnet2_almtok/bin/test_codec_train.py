"""The ESPnet entry points: --print_config round trip, a few trainer steps, checkpoint loading."""

from pathlib import Path

import soundfile
import torch
import yaml

from conftest import run_python as run
from conftest import speechlike


def make_data_dir(root: Path, n: int = 4, seconds: float = 0.8) -> Path:
    d = root / "data"
    (d / "wav").mkdir(parents=True)
    scp, shape = [], []
    for i in range(n):
        utt = f"utt{i}"
        wav = speechlike(seconds, seed=i).numpy()
        soundfile.write(d / "wav" / f"{utt}.wav", wav, 16000)
        scp.append(f"{utt} {d / 'wav' / (utt + '.wav')}\n")
        shape.append(f"{utt} {len(wav)}\n")
    (d / "wav.scp").write_text("".join(scp))
    (d / "audio_shape").write_text("".join(shape))
    return d


def test_print_config_round_trip(tmp_path, debug_config):
    out = run(["-m", "espnet2_almtok.bin.codec_train", "--config", str(debug_config), "--print_config"],
              cwd=tmp_path).stdout
    printed = yaml.safe_load(out)
    assert printed["codec"] == "almtok"
    gen = printed["codec_conf"]["generator_params"]
    assert gen["hidden_dim"] == 64 and gen["windows"] == list(range(2, 11))
    (tmp_path / "printed.yaml").write_text(out)
    again = yaml.safe_load(run(["-m", "espnet2_almtok.bin.codec_train", "--config", "printed.yaml",
                                "--print_config"], cwd=tmp_path).stdout)
    assert again == printed


def test_espnet_codecs_stay_available_in_the_task():
    from espnet2_almtok.tasks.codec import codec_choices

    assert {"almtok", "soundstream", "encodec", "dac"} <= set(codec_choices.choices())


def test_trainer_checkpoint_loads_through_from_pretrained(tmp_path, debug_config):
    from espnet2_almtok import ALMTokenizer

    data = make_data_dir(tmp_path)
    exp = tmp_path / "exp"
    run(["-m", "espnet2_almtok.bin.codec_train", "--config", str(debug_config),
         "--train_data_path_and_name_and_type", f"{data}/wav.scp,audio,sound",
         "--train_shape_file", f"{data}/audio_shape",
         "--valid_data_path_and_name_and_type", f"{data}/wav.scp,audio,sound",
         "--valid_shape_file", f"{data}/audio_shape",
         "--output_dir", str(exp), "--max_epoch", "1", "--num_iters_per_epoch", "3",
         "--ngpu", "0"], cwd=tmp_path)
    assert (exp / "config.yaml").is_file() and (exp / "checkpoint.pth").is_file()
    tok = ALMTokenizer.from_pretrained(exp)
    trained = torch.load(exp / "latest.pth", map_location="cpu")
    key = "codec.generator.query_token"
    assert torch.equal(tok.codec.state_dict()["generator.query_token"], trained[key])
    codes = tok.encode(speechlike(0.5), 16000, window=4)
    assert codes.shape == (1, 3, 7)
    assert tok.decode(codes, window=4).shape == (1, 7 * 4 * 320)
