"""Fault injection: the bad inputs a new user gives, each with the clear error it must get (one
that names the file, utterance or option) or the right result (issue 13).

Each row of :data:`CASES` is one input; ``python -m pytest test/reliability -m "not slow"
--collect-only -q`` counts them (the README quotes the figure). Cases that a test elsewhere
already covers exactly are not repeated here (paths under test/espnet2_almtok/):

- missing or empty wav.scp, no .done after it (codec_inference):
  inference/test_codec_inference.py::test_missing_or_empty_wav_scp_is_an_error_and_marks_nothing_done
- decoding rerun with other inputs or options:
  inference/test_codec_inference.py::test_a_rerun_with_other_inputs_redoes_the_job_and_the_same_inputs_skip
- two decoding jobs on one output dir (lock):
  inference/test_codec_inference.py::test_a_second_job_on_the_same_output_dir_is_refused
- crafted pickle in an exp dir (from_pretrained), truncated model file (load_state_dict):
  test_api.py::test_a_crafted_model_file_is_refused_without_running_code
- a checkpoint of another config: test_api.py::test_checkpoint_of_another_config_is_rejected
- empty, silent, NaN or inf audio: test_api.py::test_bad_audio_is_named_and_explained
- (T, C), (C, T), int16, path and square layouts: test_api.py::test_common_array_layouts_are_read_as_one_clip
- window 4.5, "4", True and w=11; float or out-of-range codes:
  test_api.py::test_a_fractional_or_non_numeric_window_is_refused, ::test_unsupported_rate_and_window_and_codes
- n_q 0, -1, 4, 1.5, True in the quantizer: codec/test_quantizer.py::test_n_q_outside_the_models_codebooks_is_refused
- missing, non-YAML or binary model_info config: bin/test_lm.py::test_model_info_names_a_bad_config
- bad wav.scp entries, segments and pipes in stage 2: recipe/test_format_data.py (drop and error policies)
- stage 2 rerun under other options or inputs:
  recipe/test_format_data.py::test_other_options_or_inputs_redo_the_work_and_leave_no_stale_file
- unreadable or clashing files in stage 1:
  recipe/test_data_prep.py::test_audio_dir_gives_distinct_files_distinct_ids_and_skips_unreadable
- bit-flipped or corrupted packed weights:
  recipe/test_pack.py::test_a_bit_flipped_weights_member_is_refused_naming_the_zip_and_the_member,
  ::test_a_corrupted_zip_entry_is_refused_naming_the_member
- options re-read as shell code by utils/run_jobs.sh:
  test/utils/test_shell_utils.py::test_run_jobs_never_rereads_arguments_as_shell

The second sweep (issue 30), by class, where its cases are not rows below:

- code execution: zip members named '../..' or absolute (gan_codec_inference --model_tag):
  inference/test_gan_codec_inference.py::test_a_packed_zip_naming_members_outside_its_directory_writes_nothing_there;
  Python in a --codec_conf word (ESPnet's NestedDictAction):
  tasks/test_safe_options.py::test_code_in_an_option_is_refused_and_never_runs;
  a file name with line breaks becoming a piped wav.scp entry: the row wav-scp-path-with-a-line-break
- data loss: an id ending in .tmp, ids that leave dump/ (stage 2):
  recipe/test_format_data.py::test_ids_that_cannot_name_files_are_refused_and_no_id_names_a_temp_file
- resource exhaustion: test_api.py::test_an_oversized_yaml_member_of_a_packed_zip_is_refused_before_it_is_read,
  ::test_a_yaml_alias_bomb_in_a_packed_zip_is_refused_before_it_expands,
  ::test_a_packed_zip_member_larger_than_the_free_disk_is_refused_before_extraction
- silent wrong results: array layouts, bool/complex audio and codes:
  test_api.py::test_layouts_and_types_that_cannot_be_right_are_refused_not_coded,
  ::test_inputs_named_in_the_sweep_get_a_clear_answer;
  another input rate in ESPnet-style inference:
  inference/test_gan_codec_inference.py::test_audio_at_another_rate_is_refused_not_coded_as_the_models;
  stage numbers and shell variables as options:
  test/egs2/almtok/codec1/test_codec1_run.py::test_stage_numbers_options_and_arguments_are_checked_before_anything_runs;
  packing a file that is not a prior: recipe/test_pack.py::test_packing_copies_only_semantic_prior_arrays;
  a config edited after training, by every loader: test_config_stamp.py::test_an_edited_config_is_refused_naming_the_key_and_the_fix,
  bin/test_codec_train.py::test_trainer_checkpoint_loads_through_from_pretrained,
  bin/test_lm.py::test_an_lm_config_edited_after_training_is_refused_naming_the_key
- two stage-2 runs on one dump dir (the second waits for the first; lock):
  test/egs2/almtok/codec1/test_codec1_run.py::test_a_second_stage_2_on_the_same_dump_dir_waits_for_the_first,
  recipe/test_format_data.py::test_a_second_format_job_on_the_same_dir_is_refused

:func:`test_the_tests_named_above_exist` keeps these references true.
"""

import hashlib
import re
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch
import yaml

from conftest import DEBUG_CONFIG, speechlike
from espnet2_almtok.audio import AudioError


class RunsCode:
    """Unpickling this (``weights_only=False``) calls ``Path.touch(target)``: a crafted model file."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return Path.touch, (Path(self.target),)


def generator_state(tok) -> dict:
    return {f"codec.generator.{k}": v for k, v in tok.generator.state_dict().items()}


def write_zip(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    """An exp dir (debug config, untrained generator), its packed zip, a crafted exp dir and zip,
    and audio files: a good clip, an all-zero one and a text file named .wav."""
    from espnet2_almtok import ALMTokenizer
    from espnet2_almtok.recipe import pack
    from espnet2_almtok.tasks.codec import ALMTokCodecTask

    root = tmp_path_factory.mktemp("bad_inputs")
    tok = ALMTokenizer.from_config(DEBUG_CONFIG, use_priors=False)
    exp = root / "exp"
    exp.mkdir()
    shutil.copy(DEBUG_CONFIG, exp / "config.yaml")
    state = generator_state(tok)
    torch.save(state, exp / "model.pth")
    packed = pack.pack(exp, root / "almtok_packed.zip")

    marker = root / "pwned"  # what the crafted files would create if unpickled
    crafted = root / "crafted_exp"  # with the full config ESPnet's build_model_from_file reads
    crafted.mkdir()
    conf = vars(ALMTokCodecTask.get_parser().parse_args(["--config", str(DEBUG_CONFIG)]))
    conf.update(version="202511", distributed=False)  # what ESPnet's trainer adds at the end
    conf["codec_conf"]["generator_params"]["codebook_init"] = None
    (crafted / "config.yaml").write_text(yaml.safe_dump(conf))
    torch.save({**state, "payload": RunsCode(marker)}, crafted / "model.pth")
    with zipfile.ZipFile(packed) as zf:  # the packed zip with the crafted weights, its sha256 updated
        members = {n: zf.read(n) for n in zf.namelist()}
    members["almtok/model.pth"] = (crafted / "model.pth").read_bytes()
    meta = yaml.safe_load(members["meta.yaml"])
    meta["sha256"]["almtok/model.pth"] = hashlib.sha256(members["almtok/model.pth"]).hexdigest()
    members["meta.yaml"] = yaml.safe_dump(meta).encode()
    crafted_zip = write_zip(root / "crafted.zip", members)

    soundfile.write(root / "good.wav", speechlike(0.5, seed=1).numpy(), 16000)
    soundfile.write(root / "zeros.wav", np.zeros(8000, np.float32), 16000)
    (root / "junk.wav").write_text("not audio")
    clip = speechlike(0.5, seed=2).numpy()
    soundfile.write(root / "cancel.wav", np.stack([clip, -clip], 1), 16000)  # a phase-flipped stereo file
    return SimpleNamespace(root=root, tok=tok, exp=exp, state=state, packed=packed, marker=marker,
                           crafted=crafted, crafted_zip=crafted_zip)


def test_the_crafted_model_file_is_armed(ctx, tmp_path):
    """The crafted file does run code when unpickled without ``weights_only`` (so the cases below,
    which assert that nothing ran, can fail)."""
    armed = tmp_path / "crafted.pth"
    torch.save({"payload": RunsCode(tmp_path / "ran")}, armed)
    torch.load(armed, weights_only=False)
    assert (tmp_path / "ran").exists()


# ---------------------------------------------------------------------------- the cases
def inference(ctx, scp_text=None, *extra, model=None, out="out", scp=None):
    """codec_inference on a wav.scp holding ``scp_text`` (or the path ``scp``); returns the out dir."""
    from espnet2_almtok.inference import codec_inference

    if scp is None:
        scp = ctx.case_dir / "wav.scp"
        scp.write_text(scp_text.format(root=ctx.root))
    out = ctx.case_dir / out
    ctx.out = out
    codec_inference.main(["--model_dir", str(model or ctx.exp), "--data_path_and_name_and_type",
                          f"{scp},audio,sound", "--output_dir", str(out), *(extra or ("--window", "4"))])


def exp_with(ctx, name: str, data) -> Path:
    """A copy of the exp dir whose file ``name`` holds ``data`` (bytes, or an object to torch.save)."""
    exp = ctx.case_dir / "exp"
    shutil.copytree(ctx.exp, exp)
    if isinstance(data, bytes):
        (exp / name).write_bytes(data)
    else:
        torch.save(data, exp / name)
    return exp


def exp_without(ctx, name: str) -> Path:
    """A copy of the exp dir without its file ``name``."""
    exp = exp_with(ctx, name, b"")
    (exp / name).unlink()
    return exp


def from_pretrained(path, **kw):
    from espnet2_almtok import ALMTokenizer

    return ALMTokenizer.from_pretrained(path, **kw)


def model_bytes(ctx) -> bytes:
    return (ctx.exp / "model.pth").read_bytes()


def gan_coding(ctx, **kw):
    from espnet2_almtok.inference.gan_codec_inference import ALMTokAudioCoding

    return ALMTokAudioCoding(**kw)


def gan_inference(ctx, scp_text: str):
    """ESPnet-style gan_codec_inference of a wav.scp holding ``scp_text`` (good weights)."""
    from espnet2_almtok.inference import gan_codec_inference

    torch.save(ctx.state, ctx.case_dir / "good.pth")
    scp = write(ctx, "wav.scp", scp_text.format(root=ctx.root))
    ctx.out = ctx.case_dir / "gan_out"
    gan_codec_inference.main(["--train_config", str(ctx.crafted / "config.yaml"), "--model_file",
                              str(ctx.case_dir / "good.pth"), "--data_path_and_name_and_type", f"{scp},audio,sound",
                              "--output_dir", str(ctx.out), "--num_workers", "0"])


def gan_from_tag(tag):
    from espnet2_almtok.inference.gan_codec_inference import ALMTokAudioCoding

    return ALMTokAudioCoding.from_pretrained(model_tag=str(tag))


def format_cli(ctx, *args):
    from espnet2_almtok.recipe import format_data

    src = ctx.case_dir / "data"
    src.mkdir(exist_ok=True)
    format_data.main(["--in", str(src), "--out", str(ctx.case_dir / "dump"), *args])


def model_info(path):
    from espnet2_almtok.inference import model_info as mi

    mi.main(["--config", str(path)])


def debug_config_with(ctx, **changes) -> Path:
    """The debug config with ``changes`` (dotted keys under codec_conf, e.g.
    ``generator_params__n_q=0``; ``codec_conf=...`` replaces the whole section), as c.yaml."""
    conf = yaml.safe_load(DEBUG_CONFIG.read_text())
    for key, value in changes.items():
        *parents, leaf = ["codec_conf", *key.split("__")] if key != "codec_conf" else ["codec_conf"]
        node = conf
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return write(ctx, "c.yaml", yaml.safe_dump(conf))


def model_info_lm(ctx, *options):
    from espnet2_almtok.inference import model_info as mi

    mi.main(["--config", str(DEBUG_CONFIG.parent / "train_lm_debug.yaml"), *options])


def write(ctx, name, text) -> Path:
    path = ctx.case_dir / name
    path.write_text(text)
    return path


def pack_exp(ctx, exp):
    from espnet2_almtok.recipe import pack

    return pack.pack(exp, ctx.case_dir / "packed.zip")


def load_init_param(ctx, model_file):
    """What ``--init_param`` (recipe stage 6) does in our trainers: ESPnet's load_pretrained_model,
    as AbsTask.main_worker calls it."""
    import espnet2.tasks.abs_task as abs_task

    import espnet2_almtok.tasks.codec  # noqa: F401 (our trainers import it)

    abs_task.load_pretrained_model(init_param=f"{model_file}:::", model=torch.nn.Linear(2, 2),
                                   ignore_init_mismatch=False, map_location="cpu")


def build_lm_from_file(ctx, model_file):
    """ESPnet's build_model_from_file of our LM task (what ESPnet's tools call with a model file;
    the file is checked before the config is read)."""
    from espnet2_almtok.tasks.lm import ALMTokLMTask

    ALMTokLMTask.build_model_from_file(ctx.crafted / "config.yaml", model_file, "cpu")


def encode(ctx, wav, **kw):
    return ctx.tok.encode(wav, **{"sample_rate": 16000, **kw})


def decode(ctx, codes, **kw):
    return ctx.tok.decode(codes, **kw)


def codes(*shape, value=0):
    return torch.full(shape, value, dtype=torch.long)


def resume_from(ctx, damage=None, epochs=(2, 3)):
    """ESPnet's trainer resuming (``--resume true``) from an exp dir's ``checkpoint.pth``, written
    as ESPnet writes it and then damaged: "truncated" (cut to half, as a kill while it is saved
    leaves it), "empty", or "bit-flipped" (one byte of a tensor). Called as ``Trainer.run`` calls
    it, on our codec task's trainer (ESPnet's GANTrainer)."""
    from espnet2.train.reporter import Reporter

    from espnet2_almtok.tasks.codec import ALMTokCodecTask

    exp = ctx.case_dir / "exp"
    exp.mkdir(exist_ok=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(32, 32)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 32)).sum().backward()
    optimizer.step()
    reporter = Reporter()
    for epoch in epochs:
        reporter.set_epoch(epoch)
        torch.save(model.state_dict(), exp / f"{epoch}epoch.pth")
    torch.save({"model": model.state_dict(), "reporter": reporter.state_dict(), "optimizers": [optimizer.state_dict()],
                "schedulers": [None], "scaler": None}, exp / "checkpoint.pth")
    ckpt = exp / "checkpoint.pth"
    data = bytearray(ckpt.read_bytes())
    if damage == "truncated":
        ckpt.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "bit-flipped":
        with zipfile.ZipFile(ckpt) as zf:
            weight = next(i for i in zf.infolist() if i.file_size == 32 * 32 * 4)
        data[weight.header_offset + 2000] ^= 0xFF  # past its local header (< 200 bytes): inside the weight matrix
        ckpt.write_bytes(bytes(data))
    fresh = torch.nn.Linear(32, 32)
    fresh_optimizer = torch.optim.Adam(fresh.parameters())
    resumed = Reporter()
    ALMTokCodecTask.trainer.resume(checkpoint=ckpt, model=fresh, reporter=resumed, optimizers=[fresh_optimizer],
                                   schedulers=[None], scaler=None, ngpu=0, strict=True)
    return model, fresh, resumed


# (id, action(ctx), exception type, regex the message must match: it names the file/utt/option)
CASES = [
    # -- codec_inference: bad wav.scp, audio, key file, options. Each leaves no .done.
    ("scp-line-without-path", lambda c: inference(c, "u1\n"), ValueError, r"wav.scp: utterance u1 has no path"),
    ("scp-duplicate-id", lambda c: inference(c, "u1 {root}/good.wav\nu1 {root}/good.wav\n"), ValueError,
     r"wav.scp:2: utterance u1 appears twice"),
    ("scp-is-a-directory", lambda c: inference(c, scp=c.root), FileNotFoundError,
     r"wav.scp .*bad_inputs\d* does not exist; check --data_path_and_name_and_type"),
    ("audio-missing", lambda c: inference(c, "u1 {root}/nope.wav\n"),
     AudioError, r"u1: audio file .*nope.wav does not exist"),
    ("audio-not-audio", lambda c: inference(c, "u1 {root}/junk.wav\n"), AudioError,
     r"u1: .*junk.wav is not readable audio.*convert it"),
    ("audio-all-zeros", lambda c: inference(c, "u1 {root}/good.wav\nu2 {root}/zeros.wav\n"), AudioError,
     r"u2: .*all zeros"),
    ("audio-piped-entry", lambda c: inference(c, "u1 cat {root}/good.wav |\n"), AudioError,
     r"u1: piped wav.scp entries are not supported here; run the recipe's format stage"),
    ("key-file-key-missing",
     lambda c: inference(c, "u1 {root}/good.wav\n", "--key_file", str(write(c, "keys", "u9\n"))),
     KeyError, r"1 key\(s\) of the key file are not in .*wav.scp, e.g. \['u9'\]"),
    ("window-untrained", lambda c: inference(c, "u1 {root}/good.wav\n", "--window", "11"), ValueError,
     r"window w=11 was not trained; this model supports w in \[2, 3"),
    ("window-fractional-cli", lambda c: inference(c, "u1 {root}/good.wav\n", "--window", "4.5"), SystemExit, r"^2$"),
    ("model-dir-missing", lambda c: inference(c, "u1 {root}/good.wav\n", model=c.root / "no_exp"), FileNotFoundError,
     r"codec model .*no_exp does not exist"),
    ("model-file-corrupted-cli",
     lambda c: inference(c, "u1 {root}/good.wav\n", model=exp_with(c, "model.pth", b"\0" * 64)),
     ValueError, r"exp/model.pth is not a readable PyTorch file"),
    # -- model files: truncated, corrupted, wrong content; each error names the file
    ("pth-empty", lambda c: from_pretrained(exp_with(c, "model.pth", b"")), ValueError,
     r"exp/model.pth is not a readable PyTorch file \(truncated or corrupted\?\)"),
    ("pth-random-bytes", lambda c: from_pretrained(exp_with(c, "model.pth", np.random.default_rng(0).bytes(4096))),
     ValueError, r"exp/model.pth is not a readable PyTorch file"),
    ("pth-truncated-in-the-middle",
     lambda c: from_pretrained(exp_with(c, "model.pth", model_bytes(c)[: len(model_bytes(c)) // 2])),
     ValueError, r"exp/model.pth is not a readable PyTorch file"),
    ("pth-a-bare-tensor", lambda c: from_pretrained(exp_with(c, "model.pth", torch.zeros(3))), ValueError,
     r"exp/model.pth is not a state dict of tensors \(got Tensor\)"),
    ("pth-plain-values", lambda c: from_pretrained(exp_with(c, "model.pth", {"lr": 0.1})), ValueError,
     r"exp/model.pth is not a state dict of tensors"),
    ("pth-no-generator-weights", lambda c: from_pretrained(exp_with(c, "model.pth", {"x.weight": torch.zeros(2)})),
     ValueError, r"exp/model.pth holds no ALMTokenizer generator weights"),
    ("config-not-yaml", lambda c: from_pretrained(exp_with(c, "config.yaml", b"a: [unclosed")), ValueError,
     r"config .*exp/config.yaml is not a YAML file"),
    ("config-a-list", lambda c: from_pretrained(exp_with(c, "config.yaml", b"- a\n- b\n")), ValueError,
     r"config .*exp/config.yaml holds a list, not a mapping of options"),
    ("config-other-codec", lambda c: from_pretrained(exp_with(c, "config.yaml", b"codec: dac\n")), ValueError,
     r"exp/config.yaml configures codec 'dac'"),
    ("from-pretrained-given-the-config-file", lambda c: from_pretrained(c.exp / "config.yaml"), ValueError,
     r"exp/config.yaml is a config file, not a model: give the exp dir that holds it, from_pretrained\('.*exp'\)"),
    ("from-pretrained-given-the-model-file", lambda c: from_pretrained(c.exp / "model.pth"), ValueError,
     r"exp/model.pth is a model file, not a model: .*from_pretrained\('.*exp', model_file='model.pth'\)"),
    ("audio-path-rate-without-a-short-kernel",
     lambda c: encode(c, write_wav(c, "odd.wav", 44057), sample_rate=None), AudioError,
     r"odd.wav: unsupported sample rate 44057 Hz"),
    ("exp-without-weights", lambda c: from_pretrained(exp_without(c, "model.pth")), FileNotFoundError,
     r"no model file in .*exp: looked for model.pth"),
    ("zip-truncated", lambda c: from_pretrained(write_zip_bytes(c, c.packed.read_bytes()[:2000])), ValueError,
     r"cut.zip is a file but not a readable zip \(a truncated or corrupted download\?\): re-download"),
    ("zip-without-config", lambda c: from_pretrained(write_zip(c.case_dir / "x.zip", {"a/model.pth": model_bytes(c)})),
     FileNotFoundError, r"x.zip holds no config.yaml"),
    ("zip-model-file-not-inside", lambda c: from_pretrained(c.packed, model_file="latest.pth"), FileNotFoundError,
     r"almtok_packed.zip holds no latest.pth beside almtok/config.yaml"),
    ("zip-truncated-espnet-inference", lambda c: gan_from_tag(write_zip_bytes(c, c.packed.read_bytes()[:2000])),
     ValueError, r"cut.zip is not a local packed .zip"),
    ("pack-exp-without-weights", lambda c: pack_exp(c, exp_without(c, "model.pth")), FileNotFoundError,
     r"no model file in .*exp"),
    ("pack-exp-without-config", lambda c: pack_exp(c, exp_without(c, "config.yaml")), FileNotFoundError,
     r"exp/config.yaml"),
    # -- crafted pickles: never executed (the marker file is checked after every case), refused naming the file
    ("pickle-packed-zip", lambda c: from_pretrained(c.crafted_zip), ValueError,
     r"crafted.zip:almtok/model.pth holds objects other than tensors"),
    ("pickle-codec-inference", lambda c: inference(c, "u1 {root}/good.wav\n", model=c.crafted), ValueError,
     r"crafted_exp/model.pth holds objects other than tensors"),
    ("pickle-espnet-inference", lambda c: gan_coding(c, train_config=c.crafted / "config.yaml",
                                                     model_file=c.crafted / "model.pth"), ValueError,
     r"crafted_exp/model.pth holds objects other than tensors"),
    ("pickle-espnet-inference-zip", lambda c: gan_from_tag(c.crafted_zip), ValueError,
     r"model.pth holds objects other than tensors"),
    ("pickle-packing", lambda c: pack_exp(c, c.crafted),
     ValueError, r"crafted_exp/model.pth holds objects other than tensors"),
    ("pickle-init-param", lambda c: load_init_param(c, c.crafted / "model.pth"), ValueError,
     r"crafted_exp/model.pth holds objects other than tensors"),
    # -- the trainer's resume file (--resume true): truncated (a kill while ESPnet saves it), empty, bit-flipped
    ("checkpoint-truncated-on-resume", lambda c: resume_from(c, "truncated"), ValueError,
     r"exp/checkpoint.pth \(the trainer's resume file, read because of --resume true\) is truncated or corrupted "
     r"\(not a complete PyTorch zip archive.*delete it \('rm .*exp/checkpoint.pth'\).*starts from epoch 1.*"
     r"'--init_param .*exp/3epoch.pth'"),
    ("checkpoint-empty-on-resume", lambda c: resume_from(c, "empty", epochs=()), ValueError,
     r"exp/checkpoint.pth .*is truncated or corrupted.*Restore it from a backup, or delete it.*no <N>epoch.pth"),
    ("checkpoint-bit-flipped-on-resume", lambda c: resume_from(c, "bit-flipped"), ValueError,
     r"exp/checkpoint.pth .*is truncated or corrupted \(member .*data/\d+ fails its CRC-32 check\)"),
    ("pickle-lm-task-build-model-from-file", lambda c: build_lm_from_file(c, c.crafted / "model.pth"), ValueError,
     r"crafted_exp/model.pth holds objects other than tensors"),
    # -- codes to decode
    ("codes-zero-length", lambda c: decode(c, codes(1, 3, 0)), ValueError, r"codes of shape \(1, 3, 0\) hold no token"),
    ("codes-zero-length-2d", lambda c: decode(c, codes(3, 0)), ValueError, r"codes of shape \(1, 3, 0\) hold no token"),
    ("codes-empty-batch", lambda c: decode(c, codes(0, 3, 5)), ValueError, r"codes of shape \(0, 3, 5\) hold no token"),
    ("codes-no-codebook", lambda c: decode(c, codes(1, 0, 5)), ValueError, r"codes have 0 codebooks"),
    ("codes-too-many-codebooks", lambda c: decode(c, codes(1, 4, 5)),
     ValueError, r"codes have 4 codebooks, the model has 3"),
    ("codes-negative", lambda c: decode(c, codes(1, 3, 5, value=-1)),
     ValueError, r"codes out of range \[0, 64\): min=-1"),
    ("codes-1d", lambda c: decode(c, codes(5)), ValueError, r"codes must be \(B, n_q, N\), got shape \(5,\)"),
    ("codes-4d", lambda c: decode(c, codes(1, 1, 3, 5)), ValueError, r"codes must be \(B, n_q, N\)"),
    ("decode-window-0", lambda c: decode(c, codes(1, 3, 2), window=0), ValueError, r"window w=0 was not trained"),
    ("decode-window-fractional", lambda c: decode(c, codes(1, 3, 2), window=4.5), ValueError,
     r"window must be an integer .*got 4.5"),
    # -- n_q and window through the API (the quantizer's own checks are tested in test_quantizer.py)
    ("n_q-0", lambda c: encode(c, speechlike(0.3), n_q=0), ValueError, r"n_q must be an integer in 1..3 .*got 0"),
    ("n_q-minus-1", lambda c: encode(c, speechlike(0.3), n_q=-1),
     ValueError, r"n_q must be an integer in 1..3 .*got -1"),
    ("n_q-above-the-models", lambda c: encode(c, speechlike(0.3), n_q=4),
     ValueError, r"n_q must be an integer in 1..3 .*got 4"),
    ("n_q-a-string", lambda c: encode(c, speechlike(0.3), n_q="2"),
     ValueError, r"n_q must be an integer in 1..3 .*got '2'"),
    ("window-0", lambda c: encode(c, speechlike(0.3), window=0), ValueError, r"window w=0 was not trained"),
    ("window-negative", lambda c: encode(c, speechlike(0.3), window=-4), ValueError, r"window w=-4 was not trained"),
    ("window-none", lambda c: encode(c, speechlike(0.3), window=None), ValueError, r"window must be an integer"),
    # -- audio layouts
    ("audio-4d", lambda c: encode(c, np.zeros((2, 2, 2, 100))),
     AudioError, r"input: expected \(T,\), \(C, T\), \(T, C\), \(B, C, T\)"),
    ("audio-empty-2d", lambda c: encode(c, np.zeros((1, 0))),
     AudioError, r"input: the audio is empty \(shape \(1, 0\)\)"),
    ("audio-empty-list", lambda c: encode(c, []), AudioError, r"input: no clips to encode"),
    ("audio-none-in-a-list", lambda c: encode(c, [speechlike(0.3).numpy(), None]), AudioError,
     r"clip 1: expected an array of audio samples, got NoneType"),
    ("audio-complex", lambda c: encode(c, np.ones(1600, np.complex64)),
     AudioError, r"input: expected an array of audio samples"),
    ("audio-int64", lambda c: encode(c, np.ones(1600, np.int64)), AudioError, r"input: .*int64 have no PCM scale"),
    ("audio-silent-clip-in-a-batch",
     lambda c: encode(c, torch.stack([speechlike(0.3).view(1, -1), torch.zeros(1, 4800)])),
     AudioError, r"clip 1: the audio is all zeros"),
    ("audio-path-missing", lambda c: encode(c, str(c.root / "nope.wav"), sample_rate=None), AudioError,
     r"audio file .*nope.wav does not exist"),
    ("audio-path-not-audio", lambda c: encode(c, c.root / "junk.wav", sample_rate=None), AudioError,
     r"junk.wav is not readable audio"),
    # -- model_info and format_data options
    ("model_info-yaml-list", lambda c: model_info(write(c, "c.yaml", "- a\n- b\n")), SystemExit, r"^2$"),
    ("model_info-n_q-0", lambda c: model_info(debug_config_with(c, generator_params__n_q=0)), SystemExit, r"^2$"),
    ("model_info-n_q-true", lambda c: model_info(debug_config_with(c, generator_params__n_q=True)), SystemExit,
     r"^2$"),
    ("model_info-codebook_size-string", lambda c: model_info(debug_config_with(c, generator_params__codebook_size="64")),
     SystemExit, r"^2$"),
    ("model_info-codec_conf-a-number", lambda c: model_info(debug_config_with(c, codec_conf=5)), SystemExit, r"^2$"),
    ("model_info-generator_params-a-list", lambda c: model_info(debug_config_with(c, generator_params=[1, 2])),
     SystemExit, r"^2$"),
    ("model_info-windows-empty", lambda c: model_info(debug_config_with(c, generator_params__windows=[])),
     SystemExit, r"^2$"),
    ("model_info-inference-window-not-trained", lambda c: model_info(debug_config_with(c, inference_window=12)),
     SystemExit, r"^2$"),
    ("model_info-lm-option-n_q-0", lambda c: model_info_lm(c, "--n_q", "0"), SystemExit, r"^2$"),
    ("format-nj-0", lambda c: format_cli(c, "--nj", "0"), SystemExit, r"^2$"),
    ("format-job-outside-nj", lambda c: format_cli(c, "--nj", "2", "--job", "3"), SystemExit, r"^2$"),
    ("format-no-wav-scp", lambda c: format_cli(c), FileNotFoundError, r"data/wav.scp is missing or empty; run stage 1"),
    ("pth-diverged-nan-weights", lambda c: from_pretrained(exp_with(c, "model.pth", nan_weights(c))), ValueError,
     r"exp/model.pth: \d+ generator weight tensor\(s\) hold NaN/inf .*the training diverged"),
    ("batch-size-zero", lambda c: inference(c, "u1 {root}/good.wav\n", "--batch_size", "0"), SystemExit, r"^2$"),
    ("batch-size-negative", lambda c: inference(c, "u1 {root}/good.wav\n", "--batch_size", "-1"), SystemExit, r"^2$"),
    ("key-file-empty", lambda c: inference(c, "u1 {root}/good.wav\n", "--key_file", str(write(c, "keys", "\n"))),
     ValueError, r"--key_file .*keys lists no utterance id: nothing to decode"),
    ("config-cut-at-a-line", lambda c: from_pretrained(exp_with_config(c, lambda t: t[: t.index("crop_length")])),
     ValueError, r"config .*config.yaml looks cut short: it lacks 'version'"),
    ("config-zero-bytes", lambda c: from_pretrained(exp_with_config(c, lambda t: "")), ValueError,
     r"config .*config.yaml is empty"),
    # -- the id and path policy (ids name output files: none may leave the output dir)
    ("id-with-path-separators", lambda c: inference(c, "../../../victim/notes {root}/good.wav\n"), ValueError,
     r"wav.scp: 1 utterance id\(s\) cannot name files: '\.\./\.\./\.\./victim/notes': it contains a path separator"),
    ("id-with-path-separators-espnet-inference", lambda c: gan_inference(c, "../../victim/notes {root}/good.wav\n"),
     ValueError, r"wav.scp: 1 utterance id\(s\) cannot name files: '\.\./\.\./victim/notes'"),
    ("id-longer-than-a-file-name", lambda c: inference(c, "u" * 256 + " {root}/good.wav\n"), ValueError,
     r"cannot name files: 'uuuu.*': it is longer than 200 bytes"),
    ("id-leading-dash", lambda c: inference(c, "-rf {root}/good.wav\n"), ValueError, r"'-rf': it starts with '-'"),
    ("scp-is-an-audio-file", lambda c: inference(c, scp=c.root / "good.wav"), ValueError,
     r"good.wav is not a text table .*audio or binary file given where a wav.scp"),
    # -- audio that cannot be right, named as what it is
    ("audio-stereo-channels-cancel-file", lambda c: inference(c, "u1 {root}/cancel.wav\n"), AudioError,
     r"u1: its 2 channels cancel when averaged to mono \(one is the other inverted\); keep one channel"),
    ("audio-stereo-channels-cancel-path", lambda c: encode(c, c.root / "cancel.wav", sample_rate=None), AudioError,
     r"^\S*cancel.wav: its 2 channels cancel"),
    ("audio-stereo-channels-cancel-array",
     lambda c: encode(c, np.stack([speechlike(0.3).numpy(), -speechlike(0.3).numpy()])), AudioError,
     r"input: its 2 channels cancel when averaged to mono"),
    ("audio-stereo-channels-cancel-batch",
     lambda c: encode(c, torch.stack([torch.stack([speechlike(0.3), -speechlike(0.3)])] * 2)), AudioError,
     r"clip 0: its 2 channels cancel"),
    ("audio-permission-denied", lambda c: unreadable(c, lambda: inference(c, "u1 {root}/good.wav\n")), AudioError,
     r"u1: audio file .*good.wav cannot be read: permission denied for this user; fix its permissions"),
    ("config-edited-after-training", lambda c: from_pretrained(exp_with_stamped_config(c, crop_length=48000)),
     ValueError, r"exp/config.yaml is not the config its training wrote \(changed: 'crop_length'\).*delete "
                 r".*exp/config.digest.yaml"),
    ("config-key-lost-after-training", lambda c: from_pretrained(exp_with_stamped_config(c, crop_length=None)),
     ValueError, r"exp/config.yaml is not the config its training wrote \(lost: 'crop_length'\)"),
    ("wav-scp-path-with-a-line-break", lambda c: data_dir_with_path(c, "x\nu2 touch PWNED |\ny.wav"), ValueError,
     r"the file of utterance u1 has a line break in its name .*rename the file"),
]


def exp_with_config(ctx, change) -> Path:
    """A copy of the exp dir whose config.yaml is ESPnet's form (ending in 'distributed'), then ``change``d."""
    import shutil

    exp = ctx.case_dir / "exp"
    shutil.copytree(ctx.exp, exp)
    conf = yaml.safe_load((exp / "config.yaml").read_text())
    conf = {"config": "conf.yaml", "output_dir": "exp", **conf, "crop_length": 8000, "version": "202511",
            "distributed": False}  # ESPnet's order: config first, distributed last
    (exp / "config.yaml").write_text(change(yaml.safe_dump(conf, sort_keys=False)))
    return exp


def exp_with_stamped_config(ctx, **edits) -> Path:
    """A copy of the exp dir whose config.yaml its training stamped, then edited (``key=None``: removed)."""
    from espnet2_almtok.config_stamp import write_config_stamp

    exp = ctx.case_dir / "exp"
    shutil.copytree(ctx.exp, exp)
    conf = yaml.safe_load((exp / "config.yaml").read_text())
    write_config_stamp(exp / "config.yaml")
    for key, value in edits.items():
        conf.pop(key) if value is None else conf.__setitem__(key, value)
    (exp / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    return exp


def unreadable(ctx, action):
    """``action()`` with ``good.wav`` unreadable to this user: chmod 000, and, for root (which
    reads any file, as in CI), ``os.access`` answering as for another user."""
    import os
    from unittest import mock

    target = ctx.root / "good.wav"
    real_access = os.access
    os.chmod(target, 0)
    try:
        with mock.patch("os.access", lambda p, m, **kw: False if Path(p) == target else real_access(p, m, **kw)):
            return action()
    finally:
        os.chmod(target, 0o644)


def nan_weights(ctx) -> dict:
    state = torch.load(ctx.exp / "model.pth", map_location="cpu")
    return {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}


def data_dir_with_path(ctx, path: str):
    from espnet2_almtok.recipe.kaldi_dir import Utterance, write_data_dir

    write_data_dir(ctx.case_dir / "data", [Utterance("u1", path, "spk")], with_duration=False)

# What the stderr of the SystemExit cases must say (argparse errors name the option).
SYSTEM_EXIT_SAYS = {
    "batch-size-zero": "--batch_size: must be at least 1, got 0",
    "batch-size-negative": "--batch_size: must be at least 1, got -1",
    "window-fractional-cli": "argument --window: invalid int value: '4.5'",
    "model_info-yaml-list": "c.yaml holds no codec_conf or lm_conf",
    "model_info-n_q-0": "c.yaml: codec_conf.generator_params.n_q must be a whole number >= 1, got 0; fix it",
    "model_info-n_q-true": "c.yaml: codec_conf.generator_params.n_q must be a whole number >= 1, got True",
    "model_info-codebook_size-string": "c.yaml: codec_conf.generator_params.codebook_size must be a whole number",
    "model_info-codec_conf-a-number": "c.yaml: codec_conf must be a mapping of options, got int 5; fix it",
    "model_info-generator_params-a-list": "c.yaml: codec_conf.generator_params must be a mapping of options, got list",
    "model_info-windows-empty": "c.yaml: codec_conf.generator_params.windows must be a non-empty list",
    "model_info-inference-window-not-trained": "c.yaml: codec_conf.inference_window 12 is not one of "
                                               "codec_conf.generator_params.windows [2, 3",
    "model_info-lm-option-n_q-0": "--n_q must be >= 1, got 0",
    "format-nj-0": "--nj must be >= 1, got 0",
    "format-job-outside-nj": "--job 3 is outside 1..--nj 2",
}


def write_wav(ctx, name: str, rate: int) -> Path:
    path = ctx.case_dir / name
    soundfile.write(path, speechlike(0.3).numpy(), rate)
    return path


def write_zip_bytes(ctx, data: bytes) -> Path:
    path = ctx.case_dir / "cut.zip"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("action, error, says", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_input_gets_a_clear_error(ctx, tmp_path, capsys, request, action, error, says):
    ctx.case_dir, ctx.out = tmp_path, None
    with pytest.raises(error) as e:
        action(ctx)
    message = str(e.value.code) if isinstance(e.value, SystemExit) else str(e.value)
    assert re.search(says, message), message
    case = request.node.callspec.id
    if case in SYSTEM_EXIT_SAYS:
        assert SYSTEM_EXIT_SAYS[case] in capsys.readouterr().err
    assert not ctx.marker.exists(), "a crafted model file ran code"
    if ctx.out is not None:  # a failed decoding job marks nothing done
        assert not (ctx.out / ".done").exists()

def test_a_good_init_param_and_model_file_still_load_through_the_checks(ctx, tmp_path):
    """The weights_only checks in front of ESPnet's loaders let real model files through."""
    import espnet2.tasks.abs_task as abs_task

    from espnet2_almtok.tasks.lm import ALMTokLMTask  # noqa: F401 (installs the --init_param check)

    src, dst = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    torch.save(src.state_dict(), tmp_path / "init.pth")
    abs_task.load_pretrained_model(init_param=f"{tmp_path / 'init.pth'}", model=dst, ignore_init_mismatch=False,
                                   map_location="cpu")
    assert torch.equal(dst.weight, src.weight)
    assert abs_task.load_pretrained_model.weights_only_checked
    ctx.case_dir = tmp_path
    model, _ = gan_coding_model(ctx)
    loaded = dict(model.state_dict())
    assert all(torch.equal(loaded[k], v) for k, v in ctx.state.items())


def gan_coding_model(ctx):
    """ESPnet's build_model_from_file (our task) on the crafted exp's config with good weights."""
    from espnet2_almtok.inference.gan_codec_inference import ALMTokInferenceTask

    torch.save(ctx.state, ctx.case_dir / "good.pth")
    return ALMTokInferenceTask.build_model_from_file(ctx.crafted / "config.yaml", ctx.case_dir / "good.pth", "cpu")


def test_a_good_checkpoint_still_resumes_through_the_check(tmp_path):
    """The check in front of ESPnet's Trainer.resume lets a sound checkpoint.pth through, and an
    error of the resume itself (another model's checkpoint) is ESPnet's, not called a corruption."""
    ctx = SimpleNamespace(case_dir=tmp_path)
    model, fresh, reporter = resume_from(ctx)
    assert torch.equal(fresh.weight, model.weight) and reporter.get_epoch() == 3
    from espnet2.train.reporter import Reporter
    from espnet2.train.trainer import Trainer

    assert Trainer.resume.checkpoint_checked  # the GAN trainer and ESPnet's own share the check
    with pytest.raises(RuntimeError, match="size mismatch") as e:
        Trainer.resume(checkpoint=tmp_path / "exp/checkpoint.pth", model=torch.nn.Linear(3, 3), reporter=Reporter(),
                       optimizers=[], schedulers=[], scaler=None)
    assert "corrupted" not in str(e.value)


def test_the_tests_named_above_exist():
    """Every ``file.py::test_name`` the module doc names (paths under test/espnet2_almtok/, or from
    the repo root when they start with test/; a bare ``::test_name`` is in the file named before it)
    is a test function there: the coverage list cannot go stale when tests move."""
    from conftest import ROOT

    named, missing, current = 0, [], None
    for m in re.finditer(r"([\w/]+\.py)?::(test_\w+)", __doc__):
        current = m.group(1) or current
        path = ROOT / current if current.startswith("test/") else ROOT / "test/espnet2_almtok" / current
        named += 1
        if not path.is_file() or not re.search(rf"^def {m.group(2)}\(", path.read_text(), re.M):
            missing.append(f"{current}::{m.group(2)}")
    assert named > 20 and not missing, missing
