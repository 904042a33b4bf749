"""Logs are appended, not overwritten, when a job is rerun or a training resumed (issue 13):
utils/run_jobs.sh (the local job runner behind ``${cuda_cmd}``/``${decode_cmd}``) and
utils/launch_train.sh (how both recipes start training into ``train.log``)."""

import subprocess

from conftest import ROOT, fake_slurm

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


# ------------------------------------------------------------- utils/slurm.sh (the SLURM backend)

def fake_sbatch(tmp_path) -> str:
    """The environment prefix that puts the fake sbatch (conftest.FAKE_SBATCH) first on PATH."""
    return fake_slurm(tmp_path)[0]


def test_slurm_rerun_appends_to_its_logs_after_a_restart_line(tmp_path):
    env = fake_sbatch(tmp_path)
    first = sh(env + f"{UTILS}/slurm.sh JOB=1:2 log/s.JOB.log bash -c 'echo first run JOB; exit $(( JOB - 1 ))'",
               tmp_path, check=False)  # task 2 fails, as a killed or crashed task would
    assert first.returncode == 1 and "see log/s.2.log" in first.stderr
    sh(env + f"{UTILS}/slurm.sh JOB=1:2 log/s.JOB.log echo second run JOB", tmp_path)
    argv = (tmp_path / "sbatch.argv").read_text().split("\0")
    assert "--open-mode=append" in argv[:argv.index("--_task")]  # sbatch must not truncate q/ either
    for j in (1, 2):
        log = (tmp_path / f"log/s.{j}.log").read_text()
        assert log.index(f"first run {j}") < log.index(SEPARATOR) < log.index(f"second run {j}"), log
        assert log.count(SEPARATOR) == 1 and log.count("# started at") == 2 and "SLURM job 4242" in log
        assert log.rstrip().splitlines()[-1].startswith("# ended (code 0)")  # the last run's result is last
        # SLURM's own output file (q/) keeps both runs too
        assert (tmp_path / f"log/q/s.{j}.log.slurm").read_text().count(f"slurm output of task {j}") == 2
    assert "ended (code 1)" in (tmp_path / "log/s.2.log").read_text()  # the failed run's record is kept
    # one job (no JOB=): a first run has no restart line, a rerun has one
    sh(env + f"{UTILS}/slurm.sh exp/train.log echo epoch 1", tmp_path)
    assert SEPARATOR not in (tmp_path / "exp/train.log").read_text()
    sh(env + f"{UTILS}/slurm.sh exp/train.log echo epoch 2", tmp_path)
    log = (tmp_path / "exp/train.log").read_text()
    assert log.index("epoch 1") < log.index(SEPARATOR) < log.index("epoch 2")
    assert (tmp_path / "exp/q/train.log.slurm").read_text().count("slurm output") == 2


def test_slurm_a_stale_log_is_kept_but_not_taken_for_this_runs_result(tmp_path):
    """A log that ends with an earlier run's '# ended (code 0)' is kept, and a task of this run
    that never started still counts as failed."""
    env = fake_sbatch(tmp_path)
    sh(env + f"{UTILS}/slurm.sh JOB=1:2 log/s.JOB.log echo old JOB", tmp_path)
    old = (tmp_path / "log/s.2.log").read_text()
    proc = sh(env + f"FAKE_SBATCH_SKIP=2 {UTILS}/slurm.sh JOB=1:2 log/s.JOB.log echo new JOB", tmp_path,
              check=False)
    assert proc.returncode == 1, proc.stderr
    assert "1 of 2 job(s) of SLURM job 4242 failed; see log/s.2.log" in proc.stderr
    assert "log/s.2.log has only an earlier run's log" in proc.stderr
    assert (tmp_path / "log/s.2.log").read_text() == old  # untouched
    assert "new 1" in (tmp_path / "log/s.1.log").read_text()
