"""utils/gpu_check.sh --quick: the GPU check's every part at toy sizes on a CPU, in its folder."""

import json
import subprocess
import time

import pytest

from conftest import ROOT


def test_quick_check_writes_every_part_to_its_folder(tmp_path):
    proc = subprocess.run([str(ROOT / "utils/gpu_check.sh"), "--quick", "--device", "cpu", "--output_root", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / f"{time.strftime('%Y-%m-%d', time.gmtime())}-cpu-quick"
    assert proc.stdout.strip().endswith(str(out))
    results = json.loads((out / "results.json").read_text())
    runs = results["train"]["runs"]
    assert [(r["precision"], r["batch"]) for r in runs] == [("fp32_tf32", 1), ("fp32_tf32", 2), ("bf16", 1), ("bf16", 2)]
    assert all(r["steps_per_s"] > 0 and r["audio_s_per_s"] > 0 and r["peak_gb"] > 0 for r in runs)
    for dtype in ("float32", "bfloat16"):
        assert "error" not in results["speed"][dtype], results["speed"][dtype]
        assert (out / results["speed"][dtype]["table"]).is_file()
        assert results["speed"][dtype]["systems"]["almtok"]["points"]
    for system in ("paper_layout", "shortcut_mae_separate"):
        c = results["curve"][system]
        assert len(c["curve"]) == 5 and c["curve"][-1]["steps"] > 0 and "wall_s" in c["curve"][-1]
        assert len(c["codes_in_use"]) == 3 and 0 <= c["dev_stoi"] <= 1
    readme = (out / "README.md").read_text()
    assert "quick smoke run" in readme and "gpu_check --quick" in readme
    assert "| bf16 | 2 |" in readme and "shortcut_mae_separate" in readme

    # a later run of some parts keeps what the first measured (a cut run's figures stay)
    before = results["curve"]
    proc = subprocess.run([str(ROOT / "utils/gpu_check.sh"), "--quick", "--device", "cpu", "--output_root", str(tmp_path),
                           "--parts", "train", "--precisions", "fp32_tf32"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((out / "results.json").read_text())
    assert again["curve"] == before and [r["precision"] for r in again["train"]["runs"]] == ["fp32_tf32"] * 2


def test_learning_curves_without_the_corpus_are_refused_with_the_command(tmp_path, capsys):
    from espnet2_almtok.bench.gpu_check import main

    with pytest.raises(SystemExit):
        main(["--device", "cpu", "--parts", "curve", "--data_dir", str(tmp_path / "none"), "--output_root", str(tmp_path)])
    assert "./run.sh --corpus asterisk --stop_stage 2" in capsys.readouterr().err
