"""Logs are appended, not overwritten, when a job is rerun or a training resumed (issue 13):
utils/run_jobs.sh (the local job runner behind ``${cuda_cmd}``/``${decode_cmd}``) and
utils/launch_train.sh (how both recipes start training into ``train.log``)."""

import subprocess

from conftest import ROOT

UTILS = ROOT / "utils"
SEPARATOR = "# ---- restarted at "


def sh(script: str, cwd, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_a_rerun_job_appends_to_its_log_after_a_restart_line(tmp_path):
    sh(f"{UTILS}/run_jobs.sh JOB=1:2 log/j.JOB.log bash -c 'echo first run JOB; exit $(( JOB - 1 ))'", tmp_path,
       check=False)  # job 2 fails, as a killed or crashed job would
    sh(f"{UTILS}/run_jobs.sh JOB=1:2 log/j.JOB.log echo second run JOB", tmp_path)
    for j in (1, 2):
        log = (tmp_path / f"log/j.{j}.log").read_text()
        assert log.index(f"first run {j}") < log.index(SEPARATOR) < log.index(f"second run {j}"), log
        assert log.count(SEPARATOR) == 1 and log.count("# started at") == 2
        assert log.rstrip().splitlines()[-1].startswith("# ended (code 0)")  # the last run's result is last
    assert "ended (code 1)" in (tmp_path / "log/j.2.log").read_text()  # the failed run's record is kept


def test_a_first_run_log_has_no_restart_line(tmp_path):
    sh(f"{UTILS}/run_jobs.sh log/one.log echo hello", tmp_path)
    log = (tmp_path / "log/one.log").read_text()
    assert SEPARATOR not in log and "hello" in log


def test_a_resumed_training_keeps_its_train_log(tmp_path):
    """launch_train (local backend) twice into one train.log, the first run killed mid-way: both
    runs' output is there, in order, and the recipe says that it appends."""
    trainer = tmp_path / "trainer.sh"
    trainer.write_text('#!/usr/bin/env bash\necho "epoch 1 of run $RUN ($*)"\n'
                       '[ "$RUN" = 1 ] && kill -9 $$\necho "epoch 2 of run $RUN"\n')
    trainer.chmod(0o755)
    recipe = (f'set -euo pipefail; cmd_backend=local; ngpu=0; num_nodes=1; cuda_cmd={UTILS}/run_jobs.sh\n'
              'log() { echo "LOG: $*"; }\n'
              f'. {UTILS}/launch_train.sh\n'
              f'launch_train exp/train.log {trainer} --resume true || echo "training failed"\n')
    first = sh(f"export RUN=1; {recipe}", tmp_path)
    assert "training failed" in first.stdout and "appending" not in first.stdout
    second = sh(f"export RUN=2; {recipe}", tmp_path)
    assert "training failed" not in second.stdout
    assert "LOG: exp/train.log exists (a resumed or repeated run): appending to it" in second.stdout
    log = (tmp_path / "exp/train.log").read_text()
    assert (log.index("epoch 1 of run 1") < log.index(SEPARATOR) < log.index("epoch 1 of run 2")
            < log.index("epoch 2 of run 2")), log
    assert "epoch 2 of run 1" not in log and "--resume true --ngpu 0" in log
