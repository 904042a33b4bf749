"""Smoke test of the benchmark: it runs (--quick) and its JSON has every field. Nothing is timed here."""

import json

import pytest

from espnet2_almtok.bench import benchmark


@pytest.mark.slow  # trains and scores 4 codecs: ~2.5 min of the default suite's budget
def test_quick_benchmark_writes_every_field(tmp_path):
    out = tmp_path / "bench"
    benchmark.main(["--output_dir", str(out), "--quick", "--train_scp", str(tmp_path / "none.scp"),
                    "--test_scp", str(tmp_path / "none.scp")])
    res = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text().startswith("# Codec benchmark (quick smoke run)")
    assert (out / "quality_vs_bitrate.png").stat().st_size > 1000
    assert res["data"].startswith("synthetic") and res["machine"]["torch_threads"] >= 1
    assert set(res["codecs"]) == {"almtok", "soundstream", "encodec", "dac"}
    for name, r in res["codecs"].items():
        assert r["generator_params"] > 0 and r["discriminator_params"] > 0
        assert r["speed"] and set(r["speed"]) == set(r["quality"])
        for label, s in r["speed"].items():
            for key in ("frames_per_s", "n_q", "codes_per_s", "bitrate", "peak_memory_mb",
                        "batch_throughput_audio_s_per_s"):
                assert key in s, (name, label, key)
            assert {"median", "p25", "p75", "min", "n"} <= set(s["encode_rtf"]) and s["encode_rtf"]["median"] > 0
            assert set(r["quality"][label]) == {"mel_distance", "stft_distance", "pesq_wb", "stoi", "si_snr"}
        assert 0.0 <= r["probe"]["accuracy"] <= 1.0
        assert [p["seconds"] for p in r["scaling"]["points"]] == [1.0, 2.0]
    almtok = res["codecs"]["almtok"]
    assert set(almtok["speed"]) == {"w=2", "w=4", "w=6", "w=8", "w=10"}
    assert almtok["speed"]["w=4"]["bitrate"] == 12.5 * 3 * 10
    assert "patchify_conv_s" in almtok["scaling"]["points"][0]
    assert res["codecs"]["dac"]["speed"]["n_q=8"]["bitrate"] == 4000
    configs = [t["config"] for t in res["training"]]
    assert any("train_almtok_paper" in c for c in configs) and any("train_almtok_debug" in c for c in configs)


def run_quick_speed(tmp_path, *extra):
    out = tmp_path / "speed"
    benchmark.main(["--speed", "--quick", *extra, "--output_dir", str(out)])
    return json.loads((out / "speed.json").read_text()), (out / "speed.md").read_text()


def check_systems(res, names):
    assert set(res["systems"]) == set(names)
    for name, r in res["systems"].items():
        assert r["params"] > 0 and [p["seconds"] for p in r["points"]] == [0.5, 1.5]
        for p in r["points"]:
            assert p["encode_s"] > 0 and p["decode_s"] > 0 and p["peak_encode_mb"] >= 0, (name, p)
        assert r["throughput"]["audio_s_per_wall_s"] > 0


def test_quick_speed_table_of_almtok_in_bfloat16(tmp_path):
    """--speed --quick: every point measured in its own process, the markdown names the command.
    Nothing is timed here."""
    res, md = run_quick_speed(tmp_path, "--codecs", "almtok", "--dtype", "bfloat16")
    assert md.startswith("# Codec speed table (quick smoke run)")
    assert "python -m espnet2_almtok.bin.benchmark --speed --quick --codecs almtok --dtype bfloat16" in md
    check_systems(res, ["almtok"])
    assert res["systems"]["almtok"]["dtype"] == "bfloat16"
    assert all("peak_stream_mb" in p for p in res["systems"]["almtok"]["points"])
    assert 0.0 <= res["codes_match_rate_vs_float32"]["rate"] <= 1.0


@pytest.mark.slow
def test_quick_speed_table_of_every_codec(tmp_path):
    res, md = run_quick_speed(tmp_path)
    check_systems(res, ["almtok", "soundstream", "encodec", "dac"])
    assert set(res["goal"]["ratio_to_fastest_espnet"]) == {"0.5", "1.5"}
    assert "| dac |" in md


def test_a_measurement_that_outgrows_its_memory_limit_is_stopped_and_recorded():
    from espnet2_almtok.bench import speed

    task = {"name": "almtok", "spec": speed.system_specs(True)["almtok"], "device": "cpu", "dtype": "float32",
            "window": 4, "threads": 1, "what": "point", "seconds": 0.5, "repeats": 1, "warmup": 0}
    assert speed.run_in_child(task, max_rss_gb=0.01, timeout_s=600) == {
        "error": "stopped: needed more than 0.01 GB of memory"}


@pytest.mark.parametrize("lines", ["", "s1 x.wav\n"])
def test_a_set_without_speech_is_refused_naming_the_scp(tmp_path, lines):
    """An empty wav.scp, or one whose clips are all non-speech, gives no benchmark data: an error
    naming the file, not an empty table."""
    scp = tmp_path / "wav.scp"
    scp.write_text(lines)
    (tmp_path / "utt2category").write_text("s1 sound\n")
    with pytest.raises(ValueError, match=f"{scp} lists no speech utterances"):
        benchmark.load_set(scp, 16000)


@pytest.mark.parametrize("name", ["soundstream", "encodec", "dac"])
def test_full_speed_table_builds_espnet_codecs_at_their_default_sizes(name):
    """The full table's ESPnet systems (not the quick run's small configs) build and code a clip:
    ESPnet's Encodec() does not build with its own defaults, so the table names a working
    discriminator for it and keeps the generator's defaults."""
    from espnet2_almtok.bench import speed

    system = speed.SpeedSystem(name, speed.system_specs(False)[name], "cpu")
    assert system.fs == 24000 and system.params > 10e6
    wav = speed.test_signal(0.25, system.fs)
    assert system.decode(system.encode(wav)).shape[-1] >= wav.numel() - 320


def fake_speed(systems, threads=2, **extra):
    point = {"seconds": 10.0, "encode_s": 1.0, "decode_s": 1.0, "encode_s_per_audio_s": 0.1,
             "decode_s_per_audio_s": 0.1, "peak_encode_mb": 1.0, "peak_decode_mb": 1.0}
    res = {"systems": {n: {"params": 1e6, "points": [{**point, "encode_s": t}], "throughput": {"error": "x"}}
                       for n, t in systems.items()},
           "lengths": [10.0], "window": 4, "dtype": "float32", "repeats": 3, "quick": False,
           "machine": {"processor": "x86_64", "cpu_count": 2, "device": "cpu", "torch_threads": threads,
                       "torch": "2.8.0"}, "command": f"run {list(systems)}",
           "runs": [{"command": f"run {list(systems)}", "systems": list(systems), "date": "d"}], **extra}
    return res


def test_speed_merge_replaces_the_named_rows_and_refuses_other_conditions(tmp_path):
    from espnet2_almtok.bench import speed

    path = tmp_path / "speed.json"
    with pytest.raises(FileNotFoundError, match="run the full table first"):
        speed.merge(path, fake_speed({"encodec": 0.5}))
    path.write_text('{"systems": ')  # a torn or foreign file
    with pytest.raises(ValueError, match=f"{path} is not a speed table"):
        speed.merge(path, fake_speed({"encodec": 0.5}))
    first = fake_speed({"almtok": 1.0, "soundstream": 4.0, "encodec": 9.0})
    path.write_text(json.dumps(first))
    merged = speed.merge(path, fake_speed({"encodec": 2.0}))
    assert list(merged["systems"]) == ["almtok", "soundstream", "encodec"]
    assert merged["systems"]["encodec"]["points"][0]["encode_s"] == 2.0
    assert merged["systems"]["soundstream"] == first["systems"]["soundstream"]
    assert [r["systems"] for r in merged["runs"]] == [["almtok", "soundstream", "encodec"], ["encodec"]]
    # the goal is recomputed: almtok against the fastest peer, now encodec's 2.0 s
    assert merged["goal"]["ratio_to_fastest_espnet"]["10"]["encode_s"] == 0.5
    md = speed.markdown(merged, merged["machine"], "x")
    assert "the later runs replaced the rows" in md and "`run ['encodec']` (encodec)" in md
    with pytest.raises(ValueError, match="machine.torch_threads differ"):
        speed.merge(path, fake_speed({"encodec": 2.0}, threads=1))
