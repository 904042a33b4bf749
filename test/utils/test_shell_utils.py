"""The recipe's shell utilities (utils/*.sh)."""

import subprocess
from pathlib import Path


from conftest import ROOT

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
