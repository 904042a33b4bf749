"""The recipe's shell utilities (utils/*.sh)."""

import subprocess
from pathlib import Path


from conftest import ROOT, fake_slurm

UTILS = ROOT / "utils"


def sh(script: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_parse_options_sets_known_and_rejects_unknown(tmp_path):
    script = f'stage=1; my_opt=a; help_message="usage here"; . {UTILS}/parse_options.sh; echo "$stage $my_opt $*"'
    out = sh(f'bash -c \'{script}\' x --stage 3 --my-opt=b rest1 rest2', tmp_path).stdout
    assert out.strip() == "3 b rest1 rest2"
    bad = sh(f'bash -c \'{script}\' x --stgae 3', tmp_path, check=False)
    assert bad.returncode != 0 and "invalid option --stgae" in bad.stderr
    assert sh(f'bash -c \'{script}\' x --help', tmp_path).stdout.strip() == "usage here"


def test_stages_sh_selects_stages_and_refuses_bad_ones(tmp_path):
    """utils/stages.sh (both recipes): the stages run_stage picks, and each bad selection refused."""
    def stages(*args, stage="2", stop="5", skip="4", flag="true"):
        script = (f'stage={stage}; stop_stage={stop}; last_stage=7; skip_stages="{skip}"; flag={flag}; '
                  f'. {UTILS}/stages.sh; check_stages "$@"; check_bools flag; '
                  'for n in 1 2 3 4 5 6 7; do run_stage $n && echo -n "$n "; done')
        return subprocess.run(["bash", "-c", script, "run.sh", *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)

    assert stages().stdout.split() == ["2", "3", "5"]
    assert stages(skip="").stdout.split() == ["2", "3", "4", "5"]
    for kw, args, message in [({"stage": "0"}, (), "--stage must be a stage number from 1 to 7, got '0'"),
                              ({"stop": "8"}, (), "--stop_stage must be a stage number from 1 to 7, got '8'"),
                              ({"stage": "x"}, (), "--stage must be a stage number"),
                              ({"stage": "6"}, (), "--stage 6 is after --stop_stage 5: nothing would run"),
                              ({"skip": "3 a"}, (), "--skip_stages: 'a' is not a stage number from 1 to 7"),
                              ({"flag": "yes"}, (), "--flag must be true or false, got 'yes'"),
                              ({}, ("extra",), "unexpected argument 'extra'")]:
        bad = stages(*args, **kw)
        assert bad.returncode == 1 and f"run.sh: {message}" in bad.stderr and bad.stdout == "", (kw, bad.stderr)


def test_run_jobs_substitutes_job_and_reports_failed_logs(tmp_path):
    sh(f'{UTILS}/run_jobs.sh JOB=1:3 log/j.JOB.log bash -c "echo hi JOB > out.JOB"', tmp_path)
    assert [(tmp_path / f"out.{j}").read_text().strip() for j in (1, 2, 3)] == ["hi 1", "hi 2", "hi 3"]
    assert "ended (code 0)" in (tmp_path / "log/j.2.log").read_text()
    bad = sh(f'{UTILS}/run_jobs.sh JOB=1:3 log/b.JOB.log test JOB -ne 2', tmp_path, check=False)
    assert bad.returncode == 1 and "1 of 3 job(s) failed; see log/b.2.log" in bad.stderr


def test_run_jobs_never_rereads_arguments_as_shell(tmp_path):
    """An option value with $(...), quotes or spaces reaches the command as one literal argument."""
    sh(f"""{UTILS}/run_jobs.sh JOB=1:2 log/s.JOB.log printf '%s|' 'x$(touch pwned)' "a b" "it's JOB" """, tmp_path)
    assert not (tmp_path / "pwned").exists()
    assert "\nx$(touch pwned)|a b|it's 2|" in (tmp_path / "log/s.2.log").read_text()


def test_split_and_filter_scp(tmp_path):
    (tmp_path / "a.scp").write_text("".join(f"u{i} p{i}\n" for i in range(7)))
    sh(f"{UTILS}/split_scp.sh a.scp s1 s2 s3", tmp_path)
    parts = [(tmp_path / f"s{i}").read_text().split("\n")[:-1] for i in (1, 2, 3)]
    assert sum(parts, []) == [f"u{i} p{i}" for i in range(7)] and all(parts)
    too_many = sh(f"{UTILS}/split_scp.sh a.scp " + " ".join(f"x{i}" for i in range(9)), tmp_path, check=False)
    assert too_many.returncode != 0 and "fewer than the 9 parts" in too_many.stderr
    (tmp_path / "ids").write_text("u1\nu5\n")
    assert sh(f"{UTILS}/filter_scp.sh ids a.scp", tmp_path).stdout == "u1 p1\nu5 p5\n"
    assert "u1" not in sh(f"{UTILS}/filter_scp.sh --exclude ids a.scp", tmp_path).stdout


def test_fix_and_validate_data_dir_report_mismatches_by_utterance(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"")
    (d / "wav.scp").write_text(f"b {wav}\na {wav}\nc {wav}\n")
    (d / "text").write_text("a hello\nb world\nz orphan\n")
    (d / "utt2spk").write_text("a s1\nb s1\nc s2\nz s3\n")
    bad = sh(f"{UTILS}/validate_data_dir.sh data", tmp_path, check=False)
    assert bad.returncode == 1
    assert "not sorted" in bad.stderr and "text and wav.scp disagree" in bad.stderr and "c" in bad.stderr
    fixed = sh(f"{UTILS}/fix_data_dir.sh data", tmp_path)
    assert "dropped 2 utterance(s)" in fixed.stderr
    assert (d / "wav.scp").read_text().split("\n")[:-1] == [f"a {wav}", f"b {wav}"]
    dropped = (d / ".backup" / "dropped").read_text()
    assert "c missing" in dropped and "z missing" in dropped
    assert (d / "spk2utt").read_text() == "s1 a b\n"
    sh(f"{UTILS}/validate_data_dir.sh data", tmp_path)
    (d / "wav.scp").write_text(f"a {wav}\nb {tmp_path}/gone.wav\n")
    missing = sh(f"{UTILS}/validate_data_dir.sh data", tmp_path, check=False)
    assert "utterance b: audio file" in missing.stderr and "does not exist" in missing.stderr


def test_run_jobs_accepts_the_resource_options_of_espnet_launch(tmp_path):
    """espnet2.bin.launch calls ``${cmd} --gpu N LOG cmd...``: the options are taken, not run as a command."""
    sh(f'{UTILS}/run_jobs.sh --gpu 0 --num_threads 2 --mem 4G --time 1:00:00 --name x --max_jobs_run 1 '
       'log/l.log printf "%s|" a', tmp_path)
    assert "\na|" in (tmp_path / "log/l.log").read_text() and not (tmp_path / "--gpu").exists()
    bad = sh(f'{UTILS}/run_jobs.sh --gpus 1 log/l.log true', tmp_path, check=False)
    assert bad.returncode == 2 and "unknown option --gpus" in bad.stderr
    nodes = sh(f'{UTILS}/run_jobs.sh --num_nodes 2 log/l.log true', tmp_path, check=False)
    assert nodes.returncode == 2 and "--cmd_backend slurm" in nodes.stderr


# ------------------------------------------------------------------ utils/slurm.sh with a fake sbatch

def sbatch_argv(argv_file):
    return argv_file.read_text().split("\0")[:-1]


def test_slurm_sh_submits_one_array_and_keeps_arguments_literal(tmp_path):
    env, argv_file = fake_slurm(tmp_path)
    sh(env + f"""{UTILS}/slurm.sh --max_jobs_run 2 JOB=1:3 log/s.JOB.log printf '%s|' 'x$(touch pwned)' "a b" "it's JOB" """,
       tmp_path)
    assert not (tmp_path / "pwned").exists()
    for j in (1, 2, 3):
        log = (tmp_path / f"log/s.{j}.log").read_text()
        assert f"\nx$(touch pwned)|a b|it's {j}|" in log and "ended (code 0)" in log and "SLURM job 4242" in log
    argv = sbatch_argv(argv_file)
    opts = argv[:argv.index("--_task") - 1]
    assert "--wait" in opts and opts[opts.index("--array") + 1] == "1-3%2"
    assert opts[opts.index("--output") + 1] == "log/q/s.%a.log.slurm" and "--gres" not in opts
    # the command reaches sbatch as separate arguments, JOB still in them (each task substitutes its own)
    assert argv[argv.index("--_task"):] == ["--_task", "1", "log/s.JOB.log", "printf", "%s|", "x$(touch pwned)",
                                           "a b", "it's JOB"]


def test_slurm_sh_maps_resources_and_the_cluster_config(tmp_path):
    env, argv_file = fake_slurm(tmp_path)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/slurm.conf").write_text("partition=cpuq   # comment\ngpu_partition=gpuq\ngpu_gres=gpu:a100\n"
                                               "time=2:00:00\nextra_args=--constraint=avx2 --exclude=n[1-3]\n")
    (tmp_path / "--exclude=n1").write_text("")  # a file the option would glob to, were it globbed
    sh(env + f"{UTILS}/slurm.sh --gpu 2 --num_nodes 3 --num_tasks_per_node 2 --num_threads 4 --mem 8G "
       "--name tr exp/train.log true", tmp_path)
    opts = sbatch_argv(argv_file)
    pairs = dict(zip(opts, opts[1:]))
    assert pairs["--gres"] == "gpu:a100:2" and pairs["--partition"] == "gpuq" and pairs["--nodes"] == "3"
    assert pairs["--ntasks-per-node"] == "2" and pairs["--cpus-per-task"] == "4" and pairs["--mem"] == "8G"
    assert pairs["--time"] == "2:00:00" and pairs["--job-name"] == "tr" and "--array" not in opts
    assert "--constraint=avx2" in opts and "--exclude=n[1-3]" in opts
    assert "ended (code 0)" in (tmp_path / "exp/train.log").read_text()
    sh(env + f"{UTILS}/slurm.sh log/c.log true", tmp_path)
    opts = sbatch_argv(argv_file)
    assert dict(zip(opts, opts[1:]))["--partition"] == "cpuq" and "--gres" not in opts
    (tmp_path / "conf/slurm.conf").write_text("partiton=x\n")
    bad = sh(env + f"{UTILS}/slurm.sh log/c.log true", tmp_path, check=False)
    assert bad.returncode == 2 and "conf/slurm.conf:1: unknown key 'partiton'" in bad.stderr


def test_slurm_sh_names_the_failed_logs_and_rejects_bad_options(tmp_path):
    env, _ = fake_slurm(tmp_path)
    bad = sh(env + f"{UTILS}/slurm.sh JOB=1:3 log/b.JOB.log test JOB -ne 2", tmp_path, check=False)
    assert bad.returncode == 1 and "1 of 3 job(s) of SLURM job 4242 failed; see log/b.2.log" in bad.stderr
    assert "ended (code 1)" in (tmp_path / "log/b.2.log").read_text()
    for args, message in [("--gpus 1 l.log true", "unknown option --gpus"),
                          ("--gpu x l.log true", "--gpu must be a whole number"),
                          ("JOB=3:1 l.JOB.log true", "empty job range"),
                          ("--config nope.conf l.log true", "--config nope.conf: no such file")]:
        proc = sh(env + f"{UTILS}/slurm.sh {args}", tmp_path, check=False)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
    no_sbatch = sh(f"PATH={tmp_path}/empty /bin/bash {UTILS}/slurm.sh l.log true", tmp_path, check=False)
    assert no_sbatch.returncode == 2 and "sbatch not found" in no_sbatch.stderr and "--cmd_backend local" in no_sbatch.stderr


def test_merge_scp_sorts_and_rejects_duplicate_keys(tmp_path):
    (tmp_path / "a").write_text("u3 x\nu1 y\n")
    (tmp_path / "b").write_text("u2 z\n")
    sh(f"{UTILS}/merge_scp.sh out/m a b", tmp_path)
    assert (tmp_path / "out/m").read_text() == "u1 y\nu2 z\nu3 x\n"
    dup = sh(f"{UTILS}/merge_scp.sh m a a", tmp_path, check=False)
    assert dup.returncode == 1 and "key(s) in more than one" in dup.stderr and "u1" in dup.stderr
    missing = sh(f"{UTILS}/merge_scp.sh m a c", tmp_path, check=False)
    assert missing.returncode == 1 and "c is missing" in missing.stderr


def test_validate_data_dir_with_segments(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (tmp_path / "r1.wav").write_bytes(b"")
    (d / "wav.scp").write_text(f"r1 {tmp_path}/r1.wav\nr2 sox {tmp_path}/x.flac -t wav - |\n")
    (d / "segments").write_text("r1-a r1 0.0 1.5\nr1-b r1 1.5 -1\nr2-a r2 0 2\n")
    (d / "text").write_text("r1-a one\nr1-b two\nr2-a three\n")
    sh(f"{UTILS}/validate_data_dir.sh data", tmp_path)
    (d / "segments").write_text("r1-a r1 0.0 1.5\nr1-b r1 x 2\nr3-a r3 0 2\n")
    bad = sh(f"{UTILS}/validate_data_dir.sh data", tmp_path, check=False)
    assert bad.returncode == 1 and "segments line 2: r1-b r1 x 2: expected" in bad.stderr
    assert "segments of recordings missing from wav.scp: r3-a (recording r3)" in bad.stderr
    assert "text and segments disagree on utterance(s): r2-a" in bad.stderr


def test_espnet_launch_runs_through_both_job_runners(tmp_path):
    """The README's advice: ``espnet2.bin.launch --cmd utils/run_jobs.sh`` (or slurm.sh) on one node."""
    import sys

    env, argv_file = fake_slurm(tmp_path)
    for runner in ("run_jobs.sh", "slurm.sh"):
        sh(env + f"{sys.executable} -m espnet2.bin.launch --cmd {UTILS}/{runner} --ngpu 0 --log log/{runner}.log "
           f"-- {sys.executable} -c 'import sys; print(sys.argv[1:])'", tmp_path)
        log = (tmp_path / f"log/{runner}.log").read_text()
        assert "['--ngpu', '0', '--multiprocessing_distributed', 'True']" in log and "ended (code 0)" in log
    assert not (tmp_path / "--gpu").exists()
    opts = sbatch_argv(argv_file)
    assert "--gres" not in opts and opts[opts.index("--output") + 1] == "log/q/slurm.sh.log.slurm"


def test_setup_env_two_callers_build_the_venv_once(tmp_path):
    """Two set-ups started together (a test run and a recipe, two clones) must not delete each
    other's half-built venv: the second waits for the first and reuses its venv."""
    fake_py = tmp_path / "python3"
    # Stands in for the interpreter and the venv's pip: "-m venv DIR" makes DIR with a copy of
    # itself as bin/python; every call is logged and takes a second, so the two callers overlap.
    fake_py.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {tmp_path}/calls.log\n'
        "sleep 1\n"
        'if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; fi\n')
    fake_py.chmod(0o755)
    venv = tmp_path / "venv"
    env = f"ALMTOK_VENV={venv} ALMTOK_PYTHON={fake_py}"
    procs = [subprocess.Popen(["bash", "-c", f"{env} bash {UTILS}/setup_env.sh"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    assert [o[0].strip() for o in outs] == [str(venv), str(venv)]
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert sum(c.startswith("-m venv") for c in calls) == 1, calls
    assert (venv / ".almtok-complete").is_file()
    assert any("waiting for it" in o[1] for o in outs)


def test_run_tests_runs_just_the_tests_it_is_given():
    """utils/run_tests.sh FILE collects that file only (the whole suite without one)."""
    proc = subprocess.run([str(UTILS / "run_tests.sh"), "test/test_docs.py", "--collect-only", "-q"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    files = {line.split(":")[0] for line in proc.stdout.splitlines() if line.startswith("test/")}
    assert proc.returncode == 0 and files == {"test/test_docs.py"}, proc.stdout[-1000:]
