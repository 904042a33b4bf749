"""Smoke test of the benchmark: it runs (--quick) and its JSON has every field. Nothing is timed here."""

import json

from espnet2_almtok.bin import benchmark


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
