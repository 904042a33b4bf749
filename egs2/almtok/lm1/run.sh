#!/usr/bin/env bash
# ALMTok LM recipe: codec tokens -> BPE -> LM data (ASR, TTS, captioning) -> one multi-task
# decoder-only LM -> decoding -> scores. It reads a trained codec (the tokenizer choice) and the
# formatted audio of the codec recipe: run ../codec1/run.sh first (defaults: its demo outputs).
set -euo pipefail
cd "$(dirname "$0")"

stage=1
stop_stage=7               # the last stage
last_stage=7
skip_stages=""             # stages to skip, e.g. "6"
python=python3             # the interpreter of the stages (the venv's)
train_config=""            # ESPnet's name for --lm_config
token_type=bpe             # bpe (sentencepiece, --bpemode) or char
bpemode=bpe                # sentencepiece model type: bpe or unigram
bpe_train_text=""          # the text the BPE model trains on (default: <audio_dump>/<train_set>/text)
fs=""                      # ESPnet: the audio rate. Refused: it is the codec model's (--codec_model)
hf_repo=""                 # ESPnet: the upload repo. Refused: this recipe has no upload stage yet
lang=""                    # ESPnet: names token dirs. Refused: one BPE model per corpus here
# ESPnet's general options (asr.sh / speechlm.sh names and meanings)
skip_data_prep=false       # skip stages 1-3 (tokenization, BPE, LM data)
skip_train=false           # skip stage 4 (LM training)
skip_eval=false            # skip stages 5-7 (decoding, TTS round trip, scoring)
skip_upload_hf=true        # the Hugging Face upload stage (see --help)
ngpu=0                     # GPUs per node for training (> 1: DDP)
num_nodes=1                # nodes for training (> 1: DDP over nodes; needs --cmd_backend slurm)
nj=2                       # parallel jobs of tokenization (stage 1)
inference_nj=2             # parallel jobs of each decoding (stages 5-6)
gpu_inference=false        # tokenize/decode on a GPU (${cuda_cmd} --gpu 1) instead of the CPU (${decode_cmd})
dumpdir=dump               # ${dumpdir}/codes/<codec_tag>, ${dumpdir}/lm/<codec_tag>
expdir=exp                 # ${expdir}/lm_<tag>
inference_model=""         # LM weights file in the exp dir for decoding (default: the best found)
inference_config=""        # YAML of lm_inference options for every task (the per-task --*_decode_args win)
cmd_backend=""             # local | slurm (default: cmd_backend in cmd.sh, which defaults to local)
train_tasks_per_node=""    # slurm: DDP ranks per node (default: max(ngpu, 1)); > 1 with --ngpu 0 is CPU DDP (gloo)
codec_model=../codec1/exp/codec_train_almtok_debug_stage2   # ALMTokenizer exp dir / packed zip, or an
                                                            # ESPnet codec exp (soundstream/encodec/dac)
codec_tag=""               # names dump/ and exp/ dirs (default: the codec exp's name + _w<window>)
audio_dump=../codec1/dump/raw   # formatted audio: <set>/{wav.scp,text,utt2category}
window=4                   # ALMTokenizer query window (ignored by fixed-rate codecs)
train_set=train
valid_set=dev
test_sets="test"
tasks="asr tts caption"    # caption uses utt2category=sound utterances, asr/tts the speech ones
nbpe=200                   # BPE vocabulary (an upper bound on tiny corpora)
lm_config=conf/tuning/train_lm_debug.yaml
layout=""                  # flat | delay (default: the config's)
lm_args=""                 # extra lm_train options, e.g. "--max_epoch 100"
tag=""                     # exp/lm_<tag> (default: <config name>_<codec_tag>)
asr_decode_args="--method beam --beam_size 4"
caption_decode_args="--method beam --beam_size 4"
tts_decode_args="--method sample --top_k 20 --max_new_tokens 600"
tts_asr=true               # TTS intelligibility: re-tokenize the synthesis and run the LM's ASR task

help_message=$(cat <<HELP
Usage: $0 [options]   (after ../codec1/run.sh)
Stages:
  1  tokenize ${audio_dump}/<set> with --codec_model -> dump/codes/<codec_tag>/<set>/codes
  2  BPE (sentencepiece, --nbpe) on the training text -> dump/lm/<codec_tag>/bpe/bpe.model
  3  LM data (tasks: ${tasks}) -> dump/lm/<codec_tag>/<set>/{task,text,codes.scp,dec_seq_shape},
     vocabulary -> dump/lm/<codec_tag>/tokens.txt
  4  LM training (ESPnet trainer, --lm_config, --lm_args) -> exp/lm_<tag>
  5  decoding per task and test set -> exp/lm_<tag>/decode_<task>_<set> (TTS: codes + audio)
  6  TTS round trip: synthesis -> codec tokens -> the LM's ASR (--tts_asr)
  7  scoring: ASR WER/CER, captioning BLEU/CIDEr, TTS mel-DTW distance + round-trip WER
     -> .../scores/result.md, all in exp/lm_<tag>/RESULTS.md
Options (default):
  --codec_model (${codec_model}) --audio_dump (${audio_dump}) --window (${window})
  --tasks ("${tasks}") --nbpe (${nbpe}) --lm_config (${lm_config}) --layout (config's) --lm_args ("${lm_args}")
  --asr_decode_args/--caption_decode_args/--tts_decode_args ("lm_inference options")
  --stage (${stage}) --stop_stage (${stop_stage}: the last) --skip_stages ("N M") --tag NAME --python (${python})
  --train_config (= --lm_config) --token_type (${token_type}: bpe|char) --bpemode (${bpemode}: bpe|unigram)
  --bpe_train_text (default: <audio_dump>/<train_set>/text)
  Refused, with the reason: --fs (the codec model's rate), --hf_repo (no upload stage yet), --lang
  (one BPE model per corpus)
  --skip_data_prep (${skip_data_prep}: stages 1-3) --skip_train (${skip_train}: 4) --skip_eval (${skip_eval}: 5-7)
  --skip_upload_hf (${skip_upload_hf}: the Hugging Face upload, not part of this recipe yet)
  --cmd_backend (local|slurm; default: cmd.sh's) --nj (${nj}: stage 1 jobs) --inference_nj (${inference_nj}: decoding jobs)
  --ngpu (${ngpu}: training GPUs per node) --num_nodes (${num_nodes}) --gpu_inference (${gpu_inference})
  --train_tasks_per_node (slurm: DDP ranks per node; default max(ngpu, 1))
  --dumpdir (${dumpdir}) --expdir (${expdir}) --inference_model (best found) --inference_config (YAML)
Every stage is resumable: rerun the same command after a kill. Jobs run through cmd.sh's
\${decode_cmd}/\${cuda_cmd} (--cmd_backend local: this machine; slurm: sbatch, conf/slurm.conf).
HELP
)
. utils/parse_options.sh
. utils/stages.sh   # check_stages, check_bools, run_stage
die() { echo "$*" >&2; exit 1; }
check_stages "$@"
check_bools skip_data_prep skip_train skip_eval skip_upload_hf gpu_inference
[ -z "${fs}" ] || die "$0: --fs: the audio rate is the codec model's (--codec_model); leave --fs out"
[ -z "${hf_repo}" ] || die "$0: --hf_repo: this recipe has no Hugging Face upload stage yet (the codec recipe's stage 11 uploads codecs)"
[ -z "${lang}" ] || die "$0: --lang: one BPE model per corpus here, named by the codec tag; leave --lang out"
case "${token_type}" in bpe|char) ;; *) die "$0: --token_type ${token_type}: bpe or char" ;; esac
case "${bpemode}" in bpe|unigram) ;; *) die "$0: --bpemode ${bpemode}: bpe or unigram" ;; esac
[ -z "${train_config}" ] || lm_config=${train_config}
bpe_type=$([ "${token_type}" = char ] && echo char || echo "${bpemode}")
ALMTOK_SYSTEM_TOOLS=${ALMTOK_SYSTEM_TOOLS:-}
[ "${cmd_backend}" != slurm ] || ALMTOK_SYSTEM_TOOLS+=" slurm"
export ALMTOK_SYSTEM_TOOLS
. ./path.sh
. ./cmd.sh

log() { echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (run.sh:${BASH_LINENO[0]}) $*"; }
[ -e "${codec_model}" ] || die "codec model ${codec_model} not found: run ../codec1/run.sh first, or give --codec_model"
codec_type=$(${python} -c 'import sys; from espnet2_almtok.codec_tokenizer import codec_kind; print(codec_kind(sys.argv[1]))' "${codec_model}")
if [ -z "${codec_tag}" ]; then
  codec_tag=$(basename "${codec_model%.zip}")
  [ "${codec_type}" != almtok ] || codec_tag+=_w${window}   # fixed-rate ESPnet codecs have no window
fi
yaml_get() { ${python} -c 'import yaml, sys; print(yaml.safe_load(open(sys.argv[1])).get(sys.argv[2], sys.argv[3]))' "${lm_config}" "$@"; }
[ -n "${layout}" ] || layout=$(yaml_get layout flat)
[ -n "${tag}" ] || tag=$(basename "${lm_config%.*}")_${codec_tag}$([ "${layout}" = flat ] || echo "_${layout}")
[ "${skip_upload_hf}" = true ] || die "$0: --skip_upload_hf false: this recipe has no Hugging Face upload stage yet"
if [ "${num_nodes}" -gt 1 ] && [ "${cmd_backend}" != slurm ]; then
  die "$0: --num_nodes ${num_nodes} needs a cluster: add --cmd_backend slurm (or set cmd_backend in cmd.sh)"
fi
if [ "${gpu_inference}" = true ]; then _cmd=${cuda_cmd}; _ngpu=1; else _cmd=${decode_cmd}; _ngpu=0; fi
codes_root=${dumpdir}/codes/${codec_tag}
lm_data=${dumpdir}/lm/${codec_tag}
lm_exp=${expdir}/lm_${tag}
sets="${train_set} ${valid_set} ${test_sets}"

# split_keys LIST DIR NJ: LIST's lines into min(NJ, lines) parts DIR/split<n>/keys.<j>; prints n
split_keys() {
  local n jobs j parts=()
  n=$(grep -c . "$1" || true)
  [ "${n}" -gt 0 ] || die "$1 is empty: nothing to run"
  jobs=$(( $3 < n ? $3 : n ))
  mkdir -p "$2/split${jobs}"
  for ((j = 1; j <= jobs; j++)); do parts+=("$2/split${jobs}/keys.${j}"); done
  utils/split_scp.sh "$1" "${parts[@]}"
  echo "${jobs}"
}
# merge_outputs DIR JOBS FILE...: each FILE of DIR/split<JOBS>/out.<j> merged into DIR/FILE (those present)
merge_outputs() {
  local dir=$1 jobs=$2 f j; shift 2
  local outs=(); for ((j = 1; j <= jobs; j++)); do outs+=("${dir}/split${jobs}/out.${j}"); done
  for f in "$@"; do
    if [ -f "${outs[0]}/${f}" ]; then utils/merge_scp.sh "${dir}/${f}" "${outs[@]/%//${f}}"; fi
  done
  if [ -f "${outs[0]}/codes/meta.yaml" ]; then cp "${outs[0]}/codes/meta.yaml" "${dir}/codes/meta.yaml"; fi
}

if run_stage 1 && [ "${skip_data_prep}" = false ]; then
  log "Stage 1: tokenize ${sets} with ${codec_model} (w=${window}; ${nj} jobs)"
  for s in ${sets}; do
    [ -f "${audio_dump}/${s}/wav.scp" ] || die "${audio_dump}/${s}/wav.scp not found: run ../codec1/run.sh --stop_stage 2 first"
    dir=${codes_root}/${s}
    jobs=$(split_keys "${audio_dump}/${s}/wav.scp" "${dir}" "${nj}")
    ${_cmd} --gpu "${_ngpu}" JOB=1:"${jobs}" "${dir}/logdir/tokenize.JOB.log" ${python} -m espnet2_almtok.bin.codec_inference \
      --model_dir "${codec_model}" --data_path_and_name_and_type "${audio_dump}/${s}/wav.scp,audio,sound" \
      --key_file "${dir}/split${jobs}/keys.JOB" --output_dir "${dir}/split${jobs}/out.JOB" \
      --window "${window}" --encode_only --ngpu "${_ngpu}"
    merge_outputs "${dir}" "${jobs}" codes/codes.scp
  done
fi

if run_stage 2 && [ "${skip_data_prep}" = false ]; then
  bpe_text=${bpe_train_text:-${audio_dump}/${train_set}/text}
  bpe_stamp="nbpe ${nbpe} type ${bpe_type} text $(readlink -f "${bpe_text}") $(sha256sum < "${bpe_text}" | cut -c1-16)"
  log "Stage 2: BPE (${nbpe}, ${bpe_type}) on ${bpe_text}"
  if [ -f "${lm_data}/bpe/bpe.model" ]; then
    if [ -f "${lm_data}/bpe/options" ] && [ "$(cat "${lm_data}/bpe/options")" != "${bpe_stamp}" ]; then
      die "${lm_data}/bpe/bpe.model was trained with other options ($(cat "${lm_data}/bpe/options")); this run" \
          "asks for ${bpe_stamp}: remove ${lm_data} (its LM data depends on it) or give --codec_tag NAME"
    fi
    log "${lm_data}/bpe/bpe.model exists; skipping"
  else
    ${python} -m espnet2_almtok.recipe.lm_data bpe --text "${bpe_text}" --nbpe "${nbpe}" --bpe_type "${bpe_type}" \
      --out_dir "${lm_data}/bpe"
    echo "${bpe_stamp}" > "${lm_data}/bpe/options"
  fi
fi

if run_stage 3 && [ "${skip_data_prep}" = false ]; then
  log "Stage 3: LM data (${tasks}) -> ${lm_data}"
  for s in ${sets}; do
    # shellcheck disable=SC2086
    ${decode_cmd} "${lm_data}/logdir/build.${s}.log" ${python} -m espnet2_almtok.recipe.lm_data build --audio_dir "${audio_dump}/${s}" \
      --codes_dir "${codes_root}/${s}/codes" --bpemodel "${lm_data}/bpe/bpe.model" --tasks ${tasks} \
      --layout "${layout}" --max_len "$(${python} -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["lm_conf"]["max_len"])' "${lm_config}")" \
      --out "${lm_data}/${s}" --token_list "${lm_data}/tokens.txt" || die "Stage 3 failed; see ${lm_data}/logdir/build.${s}.log"
  done
fi

data_args() {  # data_args train|valid SET
  for f in "task,task,text" "text,text,text" "codes.scp,codes,kaldi_ark"; do
    echo "--${1}_data_path_and_name_and_type ${lm_data}/${2}/${f}"
  done
  echo "--${1}_shape_file ${lm_data}/${2}/dec_seq_shape"
}

. utils/launch_train.sh   # launch_train LOG CMD ARG...: training through ${cuda_cmd} (DDP via srun under slurm)

if run_stage 4 && [ "${skip_train}" = false ]; then
  log "Stage 4: LM training -> ${lm_exp} (log: ${lm_exp}/train.log)"
  if [ -f "${lm_exp}/.done" ]; then log "${lm_exp} is trained (.done); skipping"; else
    mkdir -p "${lm_exp}"
    # shellcheck disable=SC2046,SC2086
    launch_train "${lm_exp}/train.log" ${python} -m espnet2_almtok.bin.lm_train --config "${lm_config}" \
      --layout "${layout}" --token_list "${lm_data}/tokens.txt" --bpemodel "${lm_data}/bpe/bpe.model" \
      $(data_args train "${train_set}") $(data_args valid "${valid_set}") \
      --resume true --output_dir "${lm_exp}" ${lm_args} || die "LM training failed; see ${lm_exp}/train.log"
    touch "${lm_exp}/.done"
  fi
fi

has_task() {  # has_task TASK SET: the set's LM data holds examples of TASK
  grep -q " $1\$" "${lm_data}/$2/task" 2>/dev/null
}
inf_args=()
if [ -n "${inference_config}" ]; then  # a YAML mapping of lm_inference options -> "--key value" arguments
  [ -f "${inference_config}" ] || die "--inference_config ${inference_config}: no such file"
  config_to_args='import sys, yaml
conf = yaml.safe_load(open(sys.argv[1])) or {}
if not isinstance(conf, dict) or any(isinstance(v, (list, dict)) for v in conf.values()):
    sys.exit(f"--inference_config {sys.argv[1]}: expected a mapping of single lm_inference option values")
for k in ("model_dir", "model_file", "data_dir", "task", "key_file", "output_dir", "ngpu"):
    if k in conf:
        sys.exit(f"--inference_config {sys.argv[1]}: {k} is set by run.sh; remove it from the file")
for k, v in conf.items():
    sys.stdout.write(f"--{k}\0{str(v).lower() if isinstance(v, bool) else v}\0")'
  ${python} -c "${config_to_args}" "${inference_config}" > /dev/null || exit 1
  mapfile -d '' -t inf_args < <(${python} -c "${config_to_args}" "${inference_config}")
fi
model_file_args=()
[ -z "${inference_model}" ] || model_file_args=(--model_file "${lm_exp}/${inference_model}")
decode() {  # decode TASK DATA_DIR OUT_DIR extra-args...: --inference_nj jobs, merged into OUT_DIR
  local task=$1 data=$2 dir=$3 jobs; shift 3
  if [ -f "${dir}/.done" ]; then log "${dir} is complete; skipping"; return; fi
  [ -f "${lm_exp}/config.yaml" ] || die "no LM in ${lm_exp} (no config.yaml); run the training stage (4) first"
  if [ -n "${inference_model}" ] && [ ! -e "${lm_exp}/${inference_model}" ]; then
    die "--inference_model ${inference_model}: ${lm_exp}/${inference_model} not found ($(cd "${lm_exp}" 2>/dev/null && ls -- *.pth 2>/dev/null | tr '\n' ' '))"
  fi
  mkdir -p "${dir}/logdir"
  awk -v t="${task}" '$2 == t { sub(/^[^-]*-/, "", $1); print $1 }' "${data}/task" | sort > "${dir}/keys"
  jobs=$(split_keys "${dir}/keys" "${dir}" "${inference_nj}")
  ${_cmd} --gpu "${_ngpu}" JOB=1:"${jobs}" "${dir}/logdir/decode.JOB.log" ${python} -m espnet2_almtok.bin.lm_inference \
    --model_dir "${lm_exp}" "${model_file_args[@]}" --data_dir "${data}" --task "${task}" \
    --key_file "${dir}/split${jobs}/keys.JOB" --output_dir "${dir}/split${jobs}/out.JOB" --ngpu "${_ngpu}" \
    "${inf_args[@]}" "$@" || die "decoding failed; see ${dir}/logdir/"
  merge_outputs "${dir}" "${jobs}" ref text score codes/codes.scp wav/wav.scp
  touch "${dir}/.done"
}

if run_stage 5 && [ "${skip_eval}" = false ]; then
  log "Stage 5: decoding (${tasks}) on ${test_sets}"
  for s in ${test_sets}; do
    for t in ${tasks}; do
      if ! has_task "${t}" "${s}"; then log "no ${t} examples in ${lm_data}/${s}; skipping"; continue; fi
      args_var=${t}_decode_args
      # shellcheck disable=SC2086
      decode "${t}" "${lm_data}/${s}" "${lm_exp}/decode_${t}_${s}" ${!args_var} \
        $([ "${t}" = tts ] && echo --codec_model "${codec_model}")
    done
  done
fi

if run_stage 6 && [ "${skip_eval}" = false ] && [ "${tts_asr}" = true ]; then
  log "Stage 6: TTS round trip (synthesis -> ${codec_tag} tokens -> the LM's ASR)"
  for s in ${test_sets}; do
    dir=${lm_exp}/decode_tts_${s}
    [ -f "${dir}/.done" ] || { log "no TTS decoding for ${s}; skipping"; continue; }
    rt=${dir}/roundtrip
    mkdir -p "${rt}/audio"
    cp "${dir}/wav/wav.scp" "${rt}/audio/wav.scp"; cp "${dir}/ref" "${rt}/audio/text"
    ${_cmd} --gpu "${_ngpu}" "${rt}/tokenize.log" ${python} -m espnet2_almtok.bin.codec_inference \
      --model_dir "${codec_model}" --data_path_and_name_and_type "${rt}/audio/wav.scp,audio,sound" \
      --output_dir "${rt}/codes" --window "${window}" --encode_only --ngpu "${_ngpu}" || die "failed; see ${rt}/tokenize.log"
    ${decode_cmd} "${rt}/data.log" ${python} -m espnet2_almtok.recipe.lm_data build --audio_dir "${rt}/audio" \
      --codes_dir "${rt}/codes/codes" --bpemodel "${lm_data}/bpe/bpe.model" --tasks asr --out "${rt}/data" \
      || die "failed; see ${rt}/data.log"
    # shellcheck disable=SC2086
    decode asr "${rt}/data" "${rt}/decode_asr" ${asr_decode_args}
  done
fi

if run_stage 7 && [ "${skip_eval}" = false ]; then
  log "Stage 7: scoring"
  rate=""; [ "${codec_type}" != almtok ] || rate=", w=${window}"
  summary="# ${tag}\n\ncodec: ${codec_model} (${codec_type}${rate}); LM config: ${lm_config}, layout ${layout} ${lm_args}\n"
  for s in ${test_sets}; do
    for t in ${tasks}; do
      dir=${lm_exp}/decode_${t}_${s}
      [ -f "${dir}/.done" ] || continue
      case ${t} in
        asr|caption) ${decode_cmd} "${dir}/scores.log" ${python} -m espnet2_almtok.recipe.lm_score "${t}" \
                       --ref "${dir}/ref" --hyp "${dir}/text" --out_dir "${dir}/scores" --title "${s}" \
                       || die "scoring failed; see ${dir}/scores.log" ;;
        tts)
          rt=(); lang=()
          [ -f "${dir}/roundtrip/decode_asr/.done" ] && rt=(--asr_ref "${dir}/ref" --asr_hyp "${dir}/roundtrip/decode_asr/text")
          [ -f "${audio_dump}/${s}/utt2lang" ] && lang=(--utt2lang "${audio_dump}/${s}/utt2lang")
          ${decode_cmd} "${dir}/scores.log" ${python} -m espnet2_almtok.recipe.lm_score tts \
            --ref_scp "${audio_dump}/${s}/wav.scp" --hyp_scp "${dir}/wav/wav.scp" "${rt[@]}" --text "${dir}/ref" "${lang[@]}" \
            --out_dir "${dir}/scores" --title "${s}" || die "scoring failed; see ${dir}/scores.log" ;;
      esac
      summary+="\n## ${t} (${s})\n\n$(cat "${dir}/scores/result.md")\n"
    done
  done
  echo -e "${summary}" > "${lm_exp}/RESULTS.md.tmp" && mv "${lm_exp}/RESULTS.md.tmp" "${lm_exp}/RESULTS.md"
  cat "${lm_exp}/RESULTS.md"
fi
log "Successfully finished. [stages ${stage}-${stop_stage}]"
