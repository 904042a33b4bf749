#!/usr/bin/env bash
# ALMTokenizer codec recipe: raw audio -> semantic priors -> two-stage codec training ->
# tokens + resynthesis -> scores -> packed model. Defaults: the offline demo corpus and the
# tiny CPU config, end to end in minutes on 2 cores. See --help for the stages.
set -euo pipefail
cd "$(dirname "$0")"

stage=1
stop_stage=11              # the last stage (10 and 11 run only when asked for: --skip_benchmark/--skip_upload_hf false)
last_stage=11
skip_stages=""             # stages to skip, e.g. "3 10"
# ESPnet's general options (codec.sh / asr.sh names and meanings)
skip_data_prep=false       # skip stages 1-4 (data, format, priors, shapes)
skip_train=false           # skip stages 5-6 (training)
skip_eval=false            # skip stages 7-8 (decoding, scoring)
skip_packing=false         # skip stage 9 (packing)
skip_benchmark=true        # false: stage 10 runs the benchmark (also when --stage 10 starts there)
skip_upload_hf=true        # false: stage 11 uploads the packed model to --hf_repo (see --help)
skip_upload=true           # ESPnet's Zenodo upload: accepted for compatibility, only "true" (no Zenodo stage)
resume=false               # true: a finished training whose arguments changed (e.g. a larger --max_epoch)
                           # continues in place from its checkpoint, as ESPnet's --resume does
python=python3             # the interpreter of the stages (the venv's)
local_data_opts=""         # extra options for local/data.sh (stage 1), e.g. "--asterisk_langs en"
audio_format=wav           # stage 2's dump format: only wav (PCM16) here
train_args=""              # extra options for both training stages (ESPnet's --train_args)
inference_args=""          # extra codec_inference options for stage 7 (ESPnet's --inference_args)
inference_tag=""           # decode dir name (default: decode_w<w>[_<model>][_<inference config>])
scoring_args=""            # extra recipe.score options for stage 8, e.g. "--judges asr"
scoring_tag=""             # scores dir name under the decode dir (default: scores)
download_model=""          # ESPnet: decode a downloaded model. Refused: no downloads here; use --inference_model
num_splits=1               # ESPnet: train on N splits of a large corpus. Only 1 is supported
hf_repo=""                 # Hugging Face model repo for stage 11, e.g. "user/almtok_demo"
ngpu=0                     # GPUs per node for training (> 1: DDP)
num_nodes=1                # nodes for training (> 1: DDP over nodes; needs --cmd_backend slurm)
nj=2                       # parallel jobs of data formatting and prior features (stages 2-3)
inference_nj=2             # parallel jobs of decoding and scoring (stages 7-8)
gpu_inference=false        # decode on a GPU (${cuda_cmd} --gpu 1) instead of the CPU (${decode_cmd})
dumpdir=dump               # formatted data: ${dumpdir}/raw/<set>
expdir=exp                 # models, priors, decodings
inference_model=""         # weights file in the exp dir that stages 7-9 use (default: the first of
                           # valid.mel_loss.best.pth, train.mel_loss.best.pth, latest.pth)
inference_config=""        # YAML of codec_inference options for stage 7 (e.g. "batch_size: 4")
cmd_backend=""             # local | slurm (default: cmd_backend in cmd.sh, which defaults to local)
train_tasks_per_node=""    # slurm: DDP ranks per node (default: max(ngpu, 1)); > 1 with --ngpu 0 is CPU DDP (gloo)
corpus=demo                # demo | mini_an4 | librispeech | audio_dir | asterisk (real speech + sounds; paths in db.sh)
fs=""                      # audio rate of dump/raw (default: the config's codec_conf.sampling_rate)
train_set=train
valid_set=dev
test_sets="test"
min_dur=0.2                # stage 2 length filter (seconds; train and valid sets only, as ESPnet's)
max_dur=30
min_wav_duration=""        # ESPnet's names for --min_dur / --max_dur
max_wav_duration=""
on_bad=drop                # stage 2: drop bad utterances (logged, counted) or error
train_config=conf/tuning/train_almtok_debug.yaml
tag=""                     # exp/codec_${tag} (default: the config's name)
ssl_upstream=mfcc          # s3prl upstream: mfcc (default: no download; k-means of MFCCs is HuBERT's own
                           # first-iteration target), fbank, hubert, wavlm_base_plus, ..., or
                           # hf_hubert_custom / hf_wav2vec2_custom with --ssl_path a local HF dir, or
                           # tiny_random: a random tiny HuBERT (tests the checkpoint path; no semantics)
ssl_path=""                # local checkpoint / HF dir for *_custom upstreams
ssl_layer=0                # hidden layer for the priors (0 for mfcc/fbank; e.g. 9 for HuBERT/wav2vec2 base)
prior_max_utts=2000
# Per-domain priors (the paper: wav2vec2 for speech, BEATs for sound/music): with an audio source,
# speech utterances (utt2category "speech") get --ssl_upstream, the rest this one, and each
# codebook's rows are split between them (--speech_fraction speech rows; same feature width).
prior_audio_upstream=""    # e.g. beats (ESPnet's BEATs encoder) or an s3prl name; "" = one source
prior_audio_path=""        # e.g. a local BEATs_iter3_plus_AS2M.pt
prior_audio_layer=""       # default: --ssl_layer
speech_fraction=0.5
residual_init=kmeans       # codebooks 2..n_q: kmeans of residuals | random
stage1_args=""             # extra options for training stage 1 (e.g. "--max_epoch 50")
stage2_args=""
# Stage 2 is a reconstruction fine-tune: the token-producing side (patchify, encoder, query and
# MAE mask tokens, quantizer input projection, codebooks) and the training-only heads are frozen,
# so a clip's codes do not change; the decoder side (quantizer output projection, decoder mask
# token, decoder, de-patchify) trains on clean encodings. (confirm: the paper's exact split)
stage2_freeze_param="codec.generator.patchify codec.generator.encoder codec.generator.query_token codec.generator.mae_mask_token codec.generator.quantizer.project_in codec.generator.quantizer.layers codec.generator.mae_head codec.generator.ar_head"
stage2_codec_conf="use_mae_loss=false use_ar_loss=false"   # stage 2: no MAE masking, no AR loss
window=4                   # decoding: query window w (token rate = 50 Hz / w)
units_stream=""            # stage 7 also writes ESPnet discrete units (asr2/tts2) per set: q1 (the semantic-prior
                           # codebook) or all (every codebook, offset per codebook) -> <decode dir>/units_<stream>/
score_judges=asr,dnsmos    # stage 8 independent judges: asr (pocketsphinx WER), dnsmos, spk (needs
                           # --score_spk_model DIR, a local HuggingFace *ForXVector model), or none
score_spk_model=""
benchmark_args=""          # stage 10: extra options, e.g. "--quick" or "--train_steps 1000"

help_message=$(cat <<HELP
Usage: $0 [options]   (e.g. $0 --stage 1 --stop_stage 5; then $0 --stage 7)
Stages:
  1  data preparation (--corpus demo|mini_an4|librispeech|audio_dir|asterisk) -> data/{train,dev,test}
  2  format/dump: mono, --fs Hz PCM16 (default: the config's sampling_rate), length filter,
     bad-data policy (--on_bad) -> dump/raw/
  3  semantic priors: s3prl features (--ssl_upstream/--ssl_path/--ssl_layer) in --nj jobs, residual k-means
     -> exp/semantic_prior/codebook_{1..n_q}.npy; per domain with --prior_audio_upstream beats
     --prior_audio_path BEATs.pt (speech rows from --ssl_upstream, the rest from BEATs)
  4  shapes for ESPnet's samplers -> dump/raw/<set>/audio_shape
  5  codec training, stage 1: frozen semantic-prior codebooks, MAE + AR (along RVQ depth) losses,
     as the config sets them -> exp/codec_<tag>_stage1
     (an ESPnet codec config, e.g. conf/tuning/train_dac_debug.yaml: its only training stage)
  6  codec training, stage 2: reconstruction fine-tune from stage 1 (--init_param) on clean
     encodings (--stage2_codec_conf "${stage2_codec_conf}"), token side frozen
     (--stage2_freeze_param "${stage2_freeze_param}") -> exp/codec_<tag>_stage2
  7  decoding: tokens (Kaldi ark/scp) + resynthesis at --window w, --inference_nj jobs
     -> <exp>/decode_w<w>/<set>
  8  scoring: mel/STFT distance, PESQ, STOI, SI-SNR, token rate, bitrate, judges, --inference_nj
     jobs then one merge -> .../scores/
  9  packing: <exp>/almtok_packed.zip in ESPnet's pack format (meta.yaml; generator-only weights), read by
     ALMTokenizer.from_pretrained, espnet2.main_funcs.pack_funcs.unpack and
     ${python} -m espnet2_almtok.bin.gan_codec_inference --model_tag <zip>
 10  benchmark (not in the default run): ALMTokenizer vs ESPnet SoundStream/Encodec/DAC on this
     recipe's data -> exp/benchmark/results.{json,md}, quality_vs_bitrate.png (--benchmark_args)
 11  upload to Hugging Face (only with --skip_upload_hf false --hf_repo user/name; not in the default run:
     e.g. --stage 11 --stop_stage 11): stage 9's zip, unpacked, plus a model card; offline or not
     logged in (huggingface-cli login / HF_TOKEN), it fails saying why (exit 1)
ESPnet's codec.sh stages: 1-2 = its 1-4 (data, format, filtering), 3 = none (semantic priors),
  4 = its 5 (shapes), 5-6 = its 6 (training), 7 = its 7 (decoding), 8 = its 8 (scoring),
  9 = its 9 (packing), 10 = none (benchmark), 11 = its 10 (upload to Hugging Face).
Options (default):
  --stage (${stage}) --stop_stage (${stop_stage}: the last) --skip_stages ("N M": stages to skip)
  --corpus (${corpus}) --local_data_opts (stage 1's options) --train_config (${train_config})
  --train_set (${train_set}) --valid_set (${valid_set}) --test_sets ("${test_sets}") --fs (Hz; default: the config's)
  --skip_packing (${skip_packing}) --skip_benchmark (${skip_benchmark}) --resume (${resume}: continue a finished
  training whose arguments changed in place) --python (${python}) --audio_format (${audio_format}: only wav)
  --min_wav_duration/--max_wav_duration (= --min_dur ${min_dur} / --max_dur ${max_dur}: train/valid only)
  --train_args (both training stages) --inference_args (stage 7) --inference_tag (decode dir name)
  --scoring_args (stage 8) --scoring_tag (scores dir name)
  Accepted for compatibility: --skip_upload (only true: no Zenodo), --num_splits (only 1),
  --download_model (refused: nothing is downloaded here; train, or give --inference_model)
  --skip_data_prep (${skip_data_prep}: stages 1-4) --skip_train (${skip_train}: 5-6) --skip_eval (${skip_eval}: 7-8)
  --skip_upload_hf (${skip_upload_hf}; false: stage 11 uploads to Hugging Face) --hf_repo (user/name, for stage 11)
  --cmd_backend (local|slurm; default: cmd.sh's) --nj (${nj}: stage 2-3 jobs) --inference_nj (${inference_nj}: stage 7-8 jobs)
  --ngpu (${ngpu}: training GPUs per node) --num_nodes (${num_nodes}) --gpu_inference (${gpu_inference})
  --train_tasks_per_node (slurm: DDP ranks per node; default max(ngpu, 1))
  --dumpdir (${dumpdir}) --expdir (${expdir}) --inference_model (best found) --inference_config (YAML)
  --ssl_upstream (${ssl_upstream}) --ssl_path (${ssl_path}) --ssl_layer (${ssl_layer})
  --window (${window}) --on_bad (${on_bad}) --units_stream (q1|all: ESPnet discrete units of each decoded set;
  decode train/dev too with --test_sets "train dev test" for an asr2/tts2 recipe)
  --stage1_args/--stage2_args "extra training options", --tag NAME
  --stage2_freeze_param "param prefixes", --stage2_codec_conf "key=value ..." (stage 2's split)
Every stage is resumable: rerun the same command after a kill. Jobs run through cmd.sh's
\${decode_cmd}/\${cuda_cmd} (--cmd_backend local: this machine; slurm: sbatch, conf/slurm.conf).
HELP
)
. utils/parse_options.sh
. utils/stages.sh   # check_stages, check_bools, run_stage
check_stages "$@"
check_bools skip_data_prep skip_train skip_eval skip_upload_hf gpu_inference skip_packing skip_benchmark resume
[[ "${window}" =~ ^[1-9][0-9]*$ ]] || { echo "$0: --window must be a whole number of frames (e.g. 4), got '${window}'" >&2; exit 1; }
[ -z "${min_wav_duration}" ] || min_dur=${min_wav_duration}
[ -z "${max_wav_duration}" ] || max_dur=${max_wav_duration}
case "${units_stream}" in ""|q1|all) ;; *) echo "$0: --units_stream ${units_stream}: q1 or all" >&2; exit 1 ;; esac
[ "${audio_format}" = wav ] || { echo "$0: --audio_format ${audio_format}: only wav (PCM16) is written here" >&2; exit 1; }
[ "${skip_upload}" = true ] || { echo "$0: --skip_upload ${skip_upload}: there is no Zenodo upload here;" \
  "use --skip_upload_hf false --hf_repo user/name (stage 11)" >&2; exit 1; }
[ "${num_splits}" = 1 ] || { echo "$0: --num_splits ${num_splits}: only 1 is supported (the codec trains on" \
  "random crops; ESPnet's split training is for large ASR corpora)" >&2; exit 1; }
[ -z "${download_model}" ] || { echo "$0: --download_model: nothing is downloaded by this recipe; put the" \
  "model in the exp dir (or use ALMTokenizer.from_pretrained) and give --inference_model" >&2; exit 1; }
# System tools this run needs (utils/setup_env.sh installs only these, and only when missing)
ALMTOK_SYSTEM_TOOLS=${ALMTOK_SYSTEM_TOOLS:-}
case "${corpus}" in demo) ALMTOK_SYSTEM_TOOLS+=" demo" ;; asterisk|audio_dir) ALMTOK_SYSTEM_TOOLS+=" ffmpeg" ;; esac
[ "${cmd_backend}" != slurm ] || ALMTOK_SYSTEM_TOOLS+=" slurm"
export ALMTOK_SYSTEM_TOOLS
. ./path.sh
. ./cmd.sh
log() { echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (run.sh:${BASH_LINENO[0]}) $*"; }
[ -n "$tag" ] || tag=$(basename "${train_config%.*}")
if [ "${skip_upload_hf}" = false ]; then
  if [ -z "${hf_repo}" ]; then
    echo "$0: --skip_upload_hf false: no Hugging Face upload stage without --hf_repo <user>/<name>" \
         "(the model repo stage 11 pushes the packed model to)" >&2; exit 1
  fi
  if [ "${stop_stage}" -lt 11 ] || [ "${stage}" -gt 11 ]; then
    log "note: --skip_upload_hf false: the upload is stage 11, outside stages ${stage}-${stop_stage} (add --stop_stage 11)"
  fi
fi
if [ "${num_nodes}" -gt 1 ] && [ "${cmd_backend}" != slurm ]; then
  echo "$0: --num_nodes ${num_nodes} needs a cluster: add --cmd_backend slurm (or set cmd_backend in cmd.sh)" >&2; exit 1
fi
if [ "${gpu_inference}" = true ]; then _cmd=${cuda_cmd}; _ngpu=1; else _cmd=${decode_cmd}; _ngpu=0; fi
raw=${dumpdir}/raw
exp1=${expdir}/codec_${tag}_stage1
exp2=${expdir}/codec_${tag}_stage2
prior_dir=${expdir}/semantic_prior
sets="${train_set} ${valid_set} ${test_sets}"
# yaml_get KEY... : a value of the training config (the path is an argument, never Python source)
yaml_get() { ${python} -c 'import sys, yaml; v = yaml.safe_load(open(sys.argv[1])); [v := v[k] for k in sys.argv[2:]]; print(v)' "${train_config}" "$@"; }
[ -n "${fs}" ] || fs=$(yaml_get codec_conf sampling_rate)
codec_type=$(yaml_get codec)   # almtok, or an ESPnet codec (soundstream/encodec/dac) as a baseline tokenizer
if [ "${codec_type}" != almtok ]; then
  log "codec '${codec_type}': no semantic priors and one training stage (stages 3 and 6 skip; stage 9 packs ALMTokenizer only)"
fi

if run_stage 1 && [ "${skip_data_prep}" = false ]; then
  log "Stage 1: data preparation (${corpus})"
  # shellcheck disable=SC2086
  local/data.sh --corpus "${corpus}" --out data ${local_data_opts}
fi

if run_stage 2 && [ "${skip_data_prep}" = false ]; then
  log "Stage 2: format to ${raw} (mono, ${fs} Hz, ${min_dur}-${max_dur} s, on_bad=${on_bad}; ${nj} jobs)"
  mkdir -p "${raw}"
  # one stage 2 at a time per dump dir: the lock is held on fd 8 (and by the jobs) until stage 2 ends;
  # a second run waits, then finds the sets it shares with the first done
  exec 8>"${raw}/.stage2.lock"
  if ! command -v flock >/dev/null; then
    log "WARNING: no flock(1) here: a second stage 2 on ${raw} at the same time would not be stopped"
  else
    rc=0; flock -n -E 75 8 || rc=$?
    if [ "${rc}" = 75 ]; then
      log "another run's stage 2 is formatting ${raw} (lock ${raw}/.stage2.lock): waiting for it to finish"
      rc=0; flock 8 || rc=$?
    fi
    [ "${rc}" = 0 ] || log "WARNING: cannot lock ${raw}/.stage2.lock (flock exit ${rc}: this file system has" \
                           "no locks?): a second stage 2 on ${raw} at the same time would not be stopped"
  fi
  for s in ${sets}; do
    # the length filter is for training (train and valid sets, as ESPnet's); test clips of any length
    # are coded (codec_inference codes long ones in Transformer windows)
    case " ${train_set} ${valid_set} " in *" ${s} "*) lim=(--min_dur "${min_dur}" --max_dur "${max_dur}") ;;
                                           *) lim=(--min_dur 0 --max_dur inf) ;; esac
    format_args=(--in "data/${s}" --out "${raw}/${s}" --fs "${fs}" "${lim[@]}"
                 --on_bad "${on_bad}" --nj "${nj}")
    ${decode_cmd} JOB=1:"${nj}" "${raw}/${s}/logdir/format.JOB.log" \
      ${python} -m espnet2_almtok.recipe.format_data "${format_args[@]}" --job JOB
    ${python} -m espnet2_almtok.recipe.format_data "${format_args[@]}" --merge "${nj}"
  done
  exec 8>&-   # the lock ends with stage 2
fi

if run_stage 3 && [ "${skip_data_prep}" = false ] && [ "${codec_type}" = almtok ]; then
  log "Stage 3: semantic priors (${ssl_upstream}, layer ${ssl_layer}) -> ${prior_dir}"
  upstream=${ssl_upstream}; path=${ssl_path}
  if [ "${ssl_upstream}" = tiny_random ]; then
    log "WARNING: tiny_random is a randomly initialised tiny HuBERT (offline pipeline test): its priors" \
        "carry no semantics. Use --ssl_upstream hf_hubert_custom --ssl_path <pretrained HF dir> for real ones."
    path=downloads/tiny_hubert; upstream=hf_hubert_custom
    ${python} -m espnet2_almtok.recipe.make_tiny_ssl --out "${path}" --hidden "$(yaml_get codec_conf generator_params codebook_dim)"
  fi
  mkdir -p "${prior_dir}"
  if [ -n "${prior_audio_upstream}" ]; then
    [ -f "${raw}/${train_set}/utt2category" ] || { echo "--prior_audio_upstream needs ${raw}/${train_set}/utt2category (speech vs other)" >&2; exit 1; }
    log "per-domain priors: speech <- ${upstream}, other audio <- ${prior_audio_upstream} (speech rows: ${speech_fraction})"
    source_args=(--utt2category "${raw}/${train_set}/utt2category" --speech_fraction "${speech_fraction}"
                 --speech_upstream "${upstream}" ${path:+--speech_upstream_path "${path}"} --speech_layer "${ssl_layer}"
                 --audio_upstream "${prior_audio_upstream}" ${prior_audio_path:+--audio_upstream_path "${prior_audio_path}"}
                 --audio_layer "${prior_audio_layer:-${ssl_layer}}")
  else
    source_args=(--upstream "${upstream}" ${path:+--upstream_path "${path}"} --layer "${ssl_layer}")
  fi
  prior_gpu=$([ "${ngpu}" -gt 0 ] && echo 1 || echo 0)
  prior_args=(--wav_scp "${raw}/${train_set}/wav.scp" "${source_args[@]}"
              --codebook_size "$(yaml_get codec_conf generator_params codebook_size)"
              --n_q "$(yaml_get codec_conf generator_params n_q)" --residual_init "${residual_init}"
              --max_utts "${prior_max_utts}" --out_dir "${prior_dir}")
  [ "${prior_gpu}" = 1 ] && prior_args+=(--device cuda)
  # features in ${nj} jobs (JOB=1:N through cmd.sh, logs in ${prior_dir}/logdir), then the k-means
  ${python} -m espnet2_almtok.recipe.semantic_prior "${prior_args[@]}" --nj "${nj}" --prepare \
    || { echo "Stage 3 failed preparing ${prior_dir}" >&2; exit 1; }
  ${cuda_cmd} --gpu "${prior_gpu}" JOB=1:"${nj}" "${prior_dir}/logdir/extract.JOB.log" \
    ${python} -m espnet2_almtok.recipe.semantic_prior "${prior_args[@]}" --nj "${nj}" --job JOB \
    || { echo "Stage 3 failed extracting features; see ${prior_dir}/logdir/extract.*.log" >&2; exit 1; }
  ${cuda_cmd} --gpu "${prior_gpu}" "${prior_dir}/extract.log" \
    ${python} -m espnet2_almtok.recipe.semantic_prior "${prior_args[@]}" \
    || { echo "Stage 3 failed; see ${prior_dir}/extract.log" >&2; exit 1; }
fi

if run_stage 4 && [ "${skip_data_prep}" = false ]; then
  log "Stage 4: shape files for the samplers"
  for s in ${sets}; do
    cp "${raw}/${s}/utt2num_samples" "${raw}/${s}/audio_shape.tmp"
    mv "${raw}/${s}/audio_shape.tmp" "${raw}/${s}/audio_shape"
  done
fi

# The codebook space's width is the priors' feature width (39 for MFCC, 768 for base SSL models).
prior_dim_args() {
  [ -f "${prior_dir}/prior_info.yaml" ] || return 0
  echo "--codec_conf generator_params.codebook_dim=$(${python} -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["dim"])' "${prior_dir}/prior_info.yaml")"
}

# Codebook init: the stage-3 priors, one per codebook; "null" for layers without one.
prior_list() {
  if compgen -G "${prior_dir}/codebook_*.npy" >/dev/null && [ ! -f "${prior_dir}/.done" ]; then
    echo "ERROR: ${prior_dir} holds codebooks but no .done: stage 3 did not finish; rerun it (--stage 3)" >&2
    return 1
  fi
  local n_q; n_q=$(yaml_get codec_conf generator_params n_q); local out="["
  for ((i = 1; i <= n_q; i++)); do
    f=${prior_dir}/codebook_${i}.npy
    if [ -f "$f" ]; then out+="$(cd "$(dirname "$f")" && pwd)/$(basename "$f")"; else out+="null"; fi
    [ $i -lt $n_q ] && out+=","
  done
  echo "${out}]"
}

. utils/launch_train.sh   # launch_train LOG CMD ARG...: training through ${cuda_cmd} (DDP via srun under slurm)

train_codec() {  # train_codec OUT_DIR extra-args...
  local out=$1; shift
  # .done holds what the training was run with (the config's digest and the arguments): an
  # unchanged rerun skips; a changed one is refused, or with --resume true continues in place
  # (paths inside this recipe dir relative: a moved or copied recipe dir keeps its stamps)
  local stamp; stamp=$(printf 'config %s\n' "$(sha256sum < "${train_config}" | cut -c1-16)"; printf 'arg %s\n' "${@//${PWD}\//}")
  if [ -f "${out}/.done" ]; then
    if [ ! -s "${out}/.done" ] || [ "$(cat "${out}/.done")" = "${stamp}" ]; then
      log "${out} is trained (.done) with these arguments; skipping"; return
    fi
    if [ "${resume}" != true ]; then
      echo "ERROR: ${out} was trained with other arguments or another ${train_config} than this run's:" >&2
      diff <(cat "${out}/.done") <(echo "${stamp}") | grep '^[<>]' | sed 's/^</  trained:/; s/^>/  now:    /' >&2 || true
      echo "  --resume true continues that training in place with the new ones (e.g. a larger --max_epoch);" \
           "--tag NAME trains into a new exp dir; or remove ${out}" >&2
      exit 1
    fi
    log "${out}: arguments changed and --resume true: continuing its training in place"
    rm -f "${out}/.done"
  fi
  mkdir -p "${out}"
  log "training ${out} (log: ${out}/train.log)"
  launch_train "${out}/train.log" ${python} -m espnet2_almtok.bin.codec_train --config "${train_config}" \
    --train_data_path_and_name_and_type "${raw}/${train_set}/wav.scp,audio,sound" \
    --train_shape_file "${raw}/${train_set}/audio_shape" \
    --valid_data_path_and_name_and_type "${raw}/${valid_set}/wav.scp,audio,sound" \
    --valid_shape_file "${raw}/${valid_set}/audio_shape" \
    --resume true --output_dir "${out}" "$@" \
    || { echo "training failed; see ${out}/train.log" >&2; exit 1; }
  echo "${stamp}" > "${out}/.done.tmp" && mv "${out}/.done.tmp" "${out}/.done"
}

best_model() {  # best_model EXP [any]: --inference_model, or the best weights found; "any": the weights a
                # later training stage starts from (the best found, whatever --inference_model says)
  if [ -n "${inference_model}" ] && [ "${2:-}" != any ]; then
    [ -e "$1/${inference_model}" ] || { echo "--inference_model ${inference_model}: $1/${inference_model} not found" \
      "($(cd "$1" 2>/dev/null && ls -- *.pth 2>/dev/null | tr '\n' ' '))" >&2; exit 1; }
    echo "$1/${inference_model}"; return
  fi
  for f in valid.mel_loss.best.pth train.mel_loss.best.pth latest.pth; do
    [ -e "$1/$f" ] && { echo "$1/$f"; return; }
  done
  echo "no model in $1; run the training stage first" >&2; exit 1
}

if run_stage 5 && [ "${skip_train}" = false ]; then
  if [ "${codec_type}" = almtok ]; then
    log "Stage 5: codec training, stage 1 (frozen semantic priors; MAE/AR losses as in ${train_config})"
    priors=$(prior_list)   # a separate assignment, so that its failure stops the run (set -e)
    # shellcheck disable=SC2086
    train_codec "${exp1}" --codec_conf "generator_params.codebook_init=${priors}" $(prior_dim_args) ${train_args} ${stage1_args}
  else
    log "Stage 5: codec training (${codec_type})"
    # shellcheck disable=SC2086
    train_codec "${exp1}" ${train_args} ${stage1_args}
  fi
fi

if run_stage 6 && [ "${skip_train}" = false ] && [ "${codec_type}" = almtok ]; then
  log "Stage 6: codec training, stage 2 (reconstruction fine-tune: ${stage2_codec_conf}; frozen: ${stage2_freeze_param})"
  conf_args=(); for kv in ${stage2_codec_conf}; do conf_args+=(--codec_conf "${kv}"); done
  priors=$(prior_list)
  init=$(best_model "${exp1}" any)
  # shellcheck disable=SC2206
  stage2_train_args=(--codec_conf "generator_params.codebook_init=${priors}" $(prior_dim_args) "${conf_args[@]}"
                     --init_param "${init}" --freeze_param ${stage2_freeze_param} ${train_args} ${stage2_args})
  if [ ! -f "${exp2}/.done" ] && [ -f "${exp1}/config.yaml" ]; then   # same generator as stage 1's weights?
    resolved=$(mktemp "${expdir}/.stage2_config.XXXXXX.yaml")
    ${python} -m espnet2_almtok.bin.codec_train --config "${train_config}" "${stage2_train_args[@]}" \
      --output_dir "${exp2}" --print_config > "${resolved}" 2> "${resolved%.yaml}.log" \
      || { echo "stage 2's options do not parse; see ${resolved%.yaml}.log" >&2; exit 1; }
    ${python} -m espnet2_almtok.recipe.check_stage2 "${exp1}/config.yaml" "${resolved}"
    rm -f "${resolved}" "${resolved%.yaml}.log"
  fi
  train_codec "${exp2}" "${stage2_train_args[@]}"
fi

final_exp=${exp2}
if [ ! -d "${exp2}" ]; then
  final_exp=${exp1}
  if [ "${codec_type}" = almtok ] && [ "${stop_stage}" -ge 7 ]; then
    log "WARNING: no stage-2 model (${exp2}): the stages from 7 on use stage 1's model, ${exp1}" \
        "(stage 6 trains the paper's second stage)"
  fi
fi
# decode dir: --inference_tag, or named after w, the model file and the inference config (ESPnet's inference_tag)
if [ -z "${inference_tag}" ]; then
  inference_tag=decode_w${window}
  [ -z "${inference_model}" ] || inference_tag+="_$(basename "${inference_model%.pth}")"
  [ -z "${inference_config}" ] || inference_tag+="_$(basename "${inference_config%.*}")"
fi
case "${inference_tag}${scoring_tag}" in */*|.*) echo "$0: --inference_tag/--scoring_tag must be plain names" >&2; exit 1 ;; esac
scores=${scoring_tag:-scores}

# inference_config_args FILE: the YAML mapping FILE as "--key value" arguments, NUL-separated
inference_config_args() {
  ${python} - "$1" <<'PY'
import sys, yaml
path = sys.argv[1]
conf = yaml.safe_load(open(path)) or {}
if not isinstance(conf, dict):
    sys.exit(f"--inference_config {path}: expected a mapping of codec_inference options (e.g. 'batch_size: 4')")
for key, value in conf.items():
    if key in ("window", "model_dir", "model_file", "output_dir", "key_file", "ngpu", "data_path_and_name_and_type"):
        sys.exit(f"--inference_config {path}: '{key}' is set by run.sh (--window, --inference_model, "
                 f"--gpu_inference); remove it from the file")
    if isinstance(value, (list, dict)):
        sys.exit(f"--inference_config {path}: '{key}' must be a single value, got {value!r}")
    value = str(value).lower() if isinstance(value, bool) else str(value)
    sys.stdout.write(f"--{key}\0{value}\0")
PY
}

if run_stage 7 && [ "${skip_eval}" = false ]; then
  log "Stage 7: decoding ${final_exp} at w=${window} (${inference_nj} jobs, gpu_inference=${gpu_inference})"
  inf_args=()
  if [ -n "${inference_config}" ]; then
    [ -f "${inference_config}" ] || { echo "--inference_config ${inference_config}: no such file" >&2; exit 1; }
    inference_config_args "${inference_config}" > /dev/null || exit 1
    mapfile -d '' -t inf_args < <(inference_config_args "${inference_config}")
  fi
  for s in ${test_sets}; do  # before anything runs: every test set has utterances
    if ! grep -q . "${raw}/${s}/wav.scp" 2>/dev/null; then
      echo "ERROR: ${raw}/${s}/wav.scp is missing or lists no utterances: test set '${s}' has nothing to" \
           "decode; run stages 1-2 for it (check its bad_utts), or leave it out of --test_sets" >&2
      exit 1
    fi
  done
  model_file=$(best_model "${final_exp}")
  if [ "${codec_type}" = almtok ]; then  # before any job: the config loads and --window was trained
    ${python} - "${final_exp}/config.yaml" "${window}" <<'PY' || exit 1
import sys

from espnet2_almtok import ALMTokenizer

config, window = sys.argv[1], int(sys.argv[2])
try:
    windows = ALMTokenizer.from_config(config, use_priors=False).windows  # the config's checks, the model's windows
except (OSError, ValueError) as e:
    sys.exit(f"ERROR: {e}")
if window not in windows:
    sys.exit(f"ERROR: --window {window} was not trained: {config} has windows {list(windows)}; choose one of them")
PY
  fi
  # .done records the model file decoded (and its size and time): stage 9 packs that one; a
  # rerun whose best model changed (a longer training) decodes again
  decode_stamp="model ${model_file} $(stat -c '%s %Y' "$(readlink -f "${model_file}")")"
  # shellcheck disable=SC2206
  inf_args+=(${inference_args})
  for s in ${test_sets}; do
    dir=${final_exp}/${inference_tag}/${s}
    if [ -f "${dir}/.done" ]; then
      if [ "$(head -n1 "${dir}/.done")" = "${decode_stamp}" ] || [ ! -s "${dir}/.done" ]; then
        log "${dir} is complete; skipping"; continue
      fi
      log "${dir} decoded another model ($(head -n1 "${dir}/.done")); decoding ${model_file} again"
      rm -rf "${dir}"
    fi
    n=$(grep -c . "${raw}/${s}/wav.scp"); jobs=$(( inference_nj < n ? inference_nj : n ))
    mkdir -p "${dir}/split${jobs}" "${dir}/logdir"
    keys=(); for ((j = 1; j <= jobs; j++)); do keys+=("${dir}/split${jobs}/keys.${j}"); done
    utils/split_scp.sh "${raw}/${s}/wav.scp" "${keys[@]}"
    ${_cmd} --gpu "${_ngpu}" JOB=1:"${jobs}" "${dir}/logdir/decode.JOB.log" \
      ${python} -m espnet2_almtok.bin.codec_inference --model_dir "${final_exp}" --model_file "${model_file}" \
        --data_path_and_name_and_type "${raw}/${s}/wav.scp,audio,sound" \
        --key_file "${dir}/split${jobs}/keys.JOB" --output_dir "${dir}/split${jobs}/out.JOB" \
        --window "${window}" --ngpu "${_ngpu}" "${inf_args[@]}"
    outs=(); for ((j = 1; j <= jobs; j++)); do outs+=("${dir}/split${jobs}/out.${j}"); done
    utils/merge_scp.sh "${dir}/codes/codes.scp" "${outs[@]/%//codes/codes.scp}"
    utils/merge_scp.sh "${dir}/wav/wav.scp" "${outs[@]/%//wav/wav.scp}"
    cp "${dir}/split${jobs}/out.1/codes/meta.yaml" "${dir}/codes/meta.yaml"
    echo "${decode_stamp}" > "${dir}/.done.tmp" && mv "${dir}/.done.tmp" "${dir}/.done"
  done
  if [ -n "${units_stream}" ]; then
    for s in ${test_sets}; do
      dir=${final_exp}/${inference_tag}/${s}
      ${python} -m espnet2_almtok.recipe.units --codes_dir "${dir}/codes" --stream "${units_stream}" \
        --out_dir "${dir}/units_${units_stream}"
    done
  fi
fi

if run_stage 8 && [ "${skip_eval}" = false ]; then
  log "Stage 8: scoring"
  for s in ${test_sets}; do
    dir=${final_exp}/${inference_tag}/${s}
    judge_args=(--judges "${score_judges}")
    for f in text utt2lang utt2category; do
      if [ -f "${raw}/${s}/${f}" ]; then judge_args+=(--"${f}" "${raw}/${s}/${f}"); fi
    done
    [ -z "${score_spk_model}" ] || judge_args+=(--spk_model "${score_spk_model}")
    score_args=(--ref_scp "${raw}/${s}/wav.scp" --hyp_scp "${dir}/wav/wav.scp" --codes_dir "${dir}/codes"
                --fs "${fs}" --title "${tag} ${s}" "${judge_args[@]}")
    # shellcheck disable=SC2206
    score_args+=(${scoring_args})
    # --inference_nj jobs, each scoring its share of the set, then one merge of their outputs
    n=$(grep -c . "${raw}/${s}/wav.scp"); jobs=$(( inference_nj < n ? inference_nj : n ))
    sdir=${dir}/scores_split${jobs}
    mkdir -p "${sdir}"
    keys=(); outs=(); for ((j = 1; j <= jobs; j++)); do keys+=("${sdir}/keys.${j}"); outs+=("${sdir}/out.${j}"); done
    utils/split_scp.sh "${raw}/${s}/wav.scp" "${keys[@]}"
    ${decode_cmd} JOB=1:"${jobs}" "${sdir}/score.JOB.log" \
      ${python} -m espnet2_almtok.recipe.score "${score_args[@]}" --key_file "${sdir}/keys.JOB" --out_dir "${sdir}/out.JOB" \
      || { echo "scoring failed; see ${sdir}/score.*.log" >&2; exit 1; }
    ${python} -m espnet2_almtok.recipe.score "${score_args[@]}" --merge_dirs "${outs[@]}" --out_dir "${dir}/${scores}" \
      > "${sdir}/merge.log" 2>&1 || { echo "merging the scores failed; see ${sdir}/merge.log" >&2; exit 1; }
    cat "${dir}/${scores}/result.md"
  done
fi

if run_stage 9 && [ "${skip_packing}" = false ] && [ "${codec_type}" = almtok ]; then
  # the model stage 7 decoded (and stage 8 scored), where it did
  first_test=$(echo ${test_sets} | cut -d' ' -f1)
  pack_model=$(head -n1 "${final_exp}/${inference_tag}/${first_test}/.done" 2>/dev/null | sed -n 's/^model \(.*\) [0-9]* [0-9]*$/\1/p')
  [ -n "${pack_model}" ] || pack_model=$(best_model "${final_exp}")
  log "Stage 9: packing ${final_exp} (${pack_model})"
  ${python} -m espnet2_almtok.recipe.pack --exp_dir "${final_exp}" --model_file "${pack_model}" \
    --prior_dir "${prior_dir}" --out "${final_exp}/almtok_packed.zip"
fi
if run_stage 10 && { [ "${skip_benchmark}" = false ] || [ "${stage}" = 10 ]; }; then
  log "Stage 10: benchmark -> ${expdir}/benchmark (log: ${expdir}/benchmark/benchmark.log)"
  mkdir -p "${expdir}/benchmark"
  bench_gpu=$([ "${ngpu}" -gt 0 ] && echo 1 || echo 0)
  # shellcheck disable=SC2086,SC2046
  ${cuda_cmd} --gpu "${bench_gpu}" "${expdir}/benchmark/benchmark.log" \
    ${python} -m espnet2_almtok.bin.benchmark --output_dir "${expdir}/benchmark" \
    --train_scp "${raw}/${train_set}/wav.scp" --test_scp "${raw}/$(echo ${test_sets} | cut -d' ' -f1)/wav.scp" \
    $([ "${bench_gpu}" = 1 ] && echo --device cuda) ${benchmark_args} \
    || { echo "benchmark failed; see ${expdir}/benchmark/benchmark.log" >&2; exit 1; }
  cat "${expdir}/benchmark/results.md"
fi
if run_stage 11 && [ "${skip_upload_hf}" = false ]; then
  packed=${final_exp}/almtok_packed.zip
  log "Stage 11: upload ${packed} to https://huggingface.co/${hf_repo}"
  [ -f "${packed}" ] || { echo "$0: no ${packed}: run stage 9 (packing) first" >&2; exit 1; }
  # Fails (saying why) when offline or not logged in, as when the upload itself fails.
  ${python} -m espnet2_almtok.recipe.pack --upload_hf "${hf_repo}" --packed "${packed}"
fi
log "Successfully finished. [stages ${stage}-${stop_stage}]"
