"""Nothing reaches the network: every entry point's --help and a tiny semantic-prior run (stage
3) with networking disabled print no NLTK download line and open no connection."""

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import ROOT, make_data_dir

ENTRY_POINTS = [
    "espnet2_almtok.bin.codec_train", "espnet2_almtok.bin.codec_inference", "espnet2_almtok.bin.gan_codec_inference",
    "espnet2_almtok.bin.lm_train", "espnet2_almtok.bin.lm_inference", "espnet2_almtok.bin.benchmark",
    "espnet2_almtok.bin.compare", "espnet2_almtok.bin.model_info",
    "espnet2_almtok.recipe.semantic_prior", "espnet2_almtok.recipe.score", "espnet2_almtok.recipe.data_prep",
    "espnet2_almtok.recipe.format_data", "espnet2_almtok.recipe.lm_data", "espnet2_almtok.recipe.lm_score",
    "espnet2_almtok.recipe.pack", "espnet2_almtok.recipe.check_stage2",
    "espnet2_almtok.bench.learning_floor", "espnet2_almtok.bench.code_usage_trace", "espnet2_almtok.bench.gpu_check",
]

NO_NETWORK = textwrap.dedent('''
    import os, socket
    _log = os.environ["ALMTOK_TEST_NETLOG"]
    def _refuse(what):
        def refuse(*args, **kwargs):
            with open(_log, "a") as f:
                f.write(f"{what} {args[1:] if what.startswith('socket.') else args}\\n")
            raise OSError(f"network disabled by the test ({what})")
        return refuse
    _connect = socket.socket.connect
    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            return _refuse("socket.connect")(self, address)
        return _connect(self, address)
    socket.socket.connect = connect
    socket.create_connection = _refuse("create_connection")
    socket.getaddrinfo = _refuse("getaddrinfo")
''')


@pytest.fixture(scope="module")
def offline_env(tmp_path_factory):
    site = tmp_path_factory.mktemp("offline_site")
    (site / "sitecustomize.py").write_text(NO_NETWORK)
    netlog = site / "network.log"
    netlog.touch()
    env = {**os.environ, "PYTHONPATH": f"{site}:{ROOT}", "ALMTOK_TEST_NETLOG": str(netlog)}
    env.pop("NLTK_DATA", None)
    return env, netlog


def run_offline(env, args, cwd):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_every_entry_point_starts_offline(offline_env, tmp_path):
    env, netlog = offline_env
    with ThreadPoolExecutor(2) as pool:
        procs = dict(zip(ENTRY_POINTS, pool.map(lambda m: run_offline(env, ["-m", m, "--help"], tmp_path), ENTRY_POINTS)))
    for module, proc in procs.items():
        assert proc.returncode == 0, f"{module} --help failed offline:\n{proc.stderr[-2000:]}"
        assert "nltk_data" not in proc.stdout + proc.stderr, f"{module}: {proc.stderr[-2000:]}"
        assert "usage" in proc.stdout.lower(), module
    assert netlog.read_text() == ""


def test_semantic_prior_extraction_runs_offline(offline_env, tmp_path):
    env, netlog = offline_env
    data = make_data_dir(tmp_path, n=4, seconds=0.8)
    proc = run_offline(env, ["-m", "espnet2_almtok.recipe.semantic_prior", "--wav_scp", str(data / "wav.scp"),
                             "--upstream", "mfcc", "--layer", "0", "--codebook_size", "16", "--n_q", "3",
                             "--out_dir", str(tmp_path / "prior")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "prior" / "codebook_3.npy").is_file()
    log = proc.stdout + proc.stderr
    assert "nltk_data" not in log and "download" not in log.lower(), log[-2000:]
    assert netlog.read_text() == ""


def test_the_guard_is_what_keeps_nltk_offline(offline_env, tmp_path):
    """Without the guard (g2p_en imported before espnet2_almtok) NLTK tries to download, which
    the disabled network turns into its error lines: the test above would see them."""
    pytest.importorskip("g2p_en")
    env, netlog = offline_env
    probe = "import nltk\ntry:\n    nltk.data.find('taggers/averaged_perceptron_tagger_eng')\nexcept LookupError:\n    print('missing')\n"
    if "missing" not in run_offline(env, ["-c", probe], tmp_path).stdout:
        pytest.skip("NLTK's tagger is installed here: g2p_en would not download anything")
    bare = run_offline(env, ["-c", "import g2p_en"], tmp_path)
    guarded = run_offline(env, ["-c", "import espnet2_almtok, g2p_en"], tmp_path)
    assert "nltk_data" in bare.stdout + bare.stderr
    assert "nltk_data" not in guarded.stdout + guarded.stderr and guarded.returncode == 0
