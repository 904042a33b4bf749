#!/usr/bin/env bash
# ALMTok LM recipe: codec tokens -> BPE -> LM data (ASR, TTS, captioning) -> one multi-task
# decoder-only LM -> decoding -> scores. It reads a trained codec (the tokenizer choice) and the
# formatted audio of the codec recipe: run ../codec1/run.sh first (defaults: its demo outputs).
set -euo pipefail
cd "$(dirname "$0")"

stage=1
stop_stage=7
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
ngpu=0
nj=2

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
  --stage (${stage}) --stop_stage (${stop_stage}) --ngpu (${ngpu}) --tag NAME
Every stage is resumable: rerun the same command after a kill.
HELP
)
. ./path.sh
. utils/parse_options.sh

log() { echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (run.sh:${BASH_LINENO[0]}) $*"; }
die() { echo "$*" >&2; exit 1; }
[ -e "${codec_model}" ] || die "codec model ${codec_model} not found: run ../codec1/run.sh first, or give --codec_model"
codec_type=$(python -c "from espnet2_almtok.codec_tokenizer import codec_kind; print(codec_kind('${codec_model}'))")
if [ -z "${codec_tag}" ]; then
  codec_tag=$(basename "${codec_model%.zip}")
  [ "${codec_type}" != almtok ] || codec_tag+=_w${window}   # fixed-rate ESPnet codecs have no window
fi
yaml_get() { python -c "import yaml,sys; print(yaml.safe_load(open('$lm_config')).get(sys.argv[1], sys.argv[2]))" "$@"; }
[ -n "${layout}" ] || layout=$(yaml_get layout flat)
[ -n "${tag}" ] || tag=$(basename "${lm_config%.*}")_${codec_tag}$([ "${layout}" = flat ] || echo "_${layout}")
codes_root=dump/codes/${codec_tag}
lm_data=dump/lm/${codec_tag}
lm_exp=exp/lm_${tag}
sets="${train_set} ${valid_set} ${test_sets}"
run_logged() {  # run_logged LOG cmd...: fail naming the log
  local logf=$1; shift
  mkdir -p "$(dirname "${logf}")"
  "$@" > "${logf}" 2>&1 || { echo "failed; see ${logf}" >&2; tail -n 20 "${logf}" >&2; exit 1; }
}

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  log "Stage 1: tokenize ${sets} with ${codec_model} (w=${window})"
  for s in ${sets}; do
    [ -f "${audio_dump}/${s}/wav.scp" ] || die "${audio_dump}/${s}/wav.scp not found: run ../codec1/run.sh --stop_stage 2 first"
    run_logged "${codes_root}/${s}/tokenize.log" python -m espnet2_almtok.bin.codec_inference \
      --model_dir "${codec_model}" --data_path_and_name_and_type "${audio_dump}/${s}/wav.scp,audio,sound" \
      --output_dir "${codes_root}/${s}" --window "${window}" --encode_only --ngpu "${ngpu}"
  done
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  log "Stage 2: BPE (${nbpe}) on ${audio_dump}/${train_set}/text"
  if [ -f "${lm_data}/bpe/bpe.model" ]; then log "${lm_data}/bpe/bpe.model exists; skipping"; else
    python -m espnet2_almtok.recipe.lm_data bpe --text "${audio_dump}/${train_set}/text" --nbpe "${nbpe}" \
      --out_dir "${lm_data}/bpe"
  fi
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  log "Stage 3: LM data (${tasks}) -> ${lm_data}"
  for s in ${sets}; do
    # shellcheck disable=SC2086
    python -m espnet2_almtok.recipe.lm_data build --audio_dir "${audio_dump}/${s}" \
      --codes_dir "${codes_root}/${s}/codes" --bpemodel "${lm_data}/bpe/bpe.model" --tasks ${tasks} \
      --layout "${layout}" --max_len "$(python -c "import yaml; print(yaml.safe_load(open('${lm_config}'))['lm_conf']['max_len'])")" \
      --out "${lm_data}/${s}" --token_list "${lm_data}/tokens.txt"
  done
fi

data_args() {  # data_args train|valid SET
  for f in "task,task,text" "text,text,text" "codes.scp,codes,kaldi_ark"; do
    echo "--${1}_data_path_and_name_and_type ${lm_data}/${2}/${f}"
  done
  echo "--${1}_shape_file ${lm_data}/${2}/dec_seq_shape"
}

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  log "Stage 4: LM training -> ${lm_exp} (log: ${lm_exp}/train.log)"
  if [ -f "${lm_exp}/.done" ]; then log "${lm_exp} is trained (.done); skipping"; else
    mkdir -p "${lm_exp}"
    dist=""; [ "${ngpu}" -gt 1 ] && dist="--multiprocessing_distributed true"
    # shellcheck disable=SC2046,SC2086
    run_logged "${lm_exp}/train.log" python -m espnet2_almtok.bin.lm_train --config "${lm_config}" \
      --ngpu "${ngpu}" ${dist} --layout "${layout}" --token_list "${lm_data}/tokens.txt" --bpemodel "${lm_data}/bpe/bpe.model" \
      $(data_args train "${train_set}") $(data_args valid "${valid_set}") \
      --resume true --output_dir "${lm_exp}" ${lm_args}
    touch "${lm_exp}/.done"
  fi
fi

has_task() {  # has_task TASK SET: the set's LM data holds examples of TASK
  grep -q " $1\$" "${lm_data}/$2/task" 2>/dev/null
}
decode() {  # decode TASK DATA_DIR OUT_DIR extra-args...
  local task=$1 data=$2 dir=$3; shift 3
  if [ -f "${dir}/.done" ]; then log "${dir} is complete; skipping"; return; fi
  run_logged "${dir}/decode.log" python -m espnet2_almtok.bin.lm_inference --model_dir "${lm_exp}" \
    --data_dir "${data}" --task "${task}" --output_dir "${dir}" --ngpu "${ngpu}" "$@"
}

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
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

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ] && [ "${tts_asr}" = true ]; then
  log "Stage 6: TTS round trip (synthesis -> ${codec_tag} tokens -> the LM's ASR)"
  for s in ${test_sets}; do
    dir=${lm_exp}/decode_tts_${s}
    [ -f "${dir}/.done" ] || { log "no TTS decoding for ${s}; skipping"; continue; }
    rt=${dir}/roundtrip
    mkdir -p "${rt}/audio"
    cp "${dir}/wav/wav.scp" "${rt}/audio/wav.scp"; cp "${dir}/ref" "${rt}/audio/text"
    run_logged "${rt}/tokenize.log" python -m espnet2_almtok.bin.codec_inference --model_dir "${codec_model}" \
      --data_path_and_name_and_type "${rt}/audio/wav.scp,audio,sound" --output_dir "${rt}/codes" \
      --window "${window}" --encode_only --ngpu "${ngpu}"
    run_logged "${rt}/data.log" python -m espnet2_almtok.recipe.lm_data build --audio_dir "${rt}/audio" \
      --codes_dir "${rt}/codes/codes" --bpemodel "${lm_data}/bpe/bpe.model" --tasks asr --out "${rt}/data"
    # shellcheck disable=SC2086
    decode asr "${rt}/data" "${rt}/decode_asr" ${asr_decode_args}
  done
fi

if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
  log "Stage 7: scoring"
  rate=""; [ "${codec_type}" != almtok ] || rate=", w=${window}"
  summary="# ${tag}\n\ncodec: ${codec_model} (${codec_type}${rate}); LM config: ${lm_config}, layout ${layout} ${lm_args}\n"
  for s in ${test_sets}; do
    for t in ${tasks}; do
      dir=${lm_exp}/decode_${t}_${s}
      [ -f "${dir}/.done" ] || continue
      case ${t} in
        asr|caption) run_logged "${dir}/scores.log" python -m espnet2_almtok.recipe.lm_score "${t}" \
                       --ref "${dir}/ref" --hyp "${dir}/text" --out_dir "${dir}/scores" --title "${s}" ;;
        tts)
          rt=(); lang=()
          [ -f "${dir}/roundtrip/decode_asr/.done" ] && rt=(--asr_ref "${dir}/ref" --asr_hyp "${dir}/roundtrip/decode_asr/text")
          [ -f "${audio_dump}/${s}/utt2lang" ] && lang=(--utt2lang "${audio_dump}/${s}/utt2lang")
          run_logged "${dir}/scores.log" python -m espnet2_almtok.recipe.lm_score tts \
            --ref_scp "${audio_dump}/${s}/wav.scp" --hyp_scp "${dir}/wav/wav.scp" "${rt[@]}" --text "${dir}/ref" "${lang[@]}" \
            --out_dir "${dir}/scores" --title "${s}" ;;
      esac
      summary+="\n## ${t} (${s})\n\n$(cat "${dir}/scores/result.md")\n"
    done
  done
  echo -e "${summary}" > "${lm_exp}/RESULTS.md.tmp" && mv "${lm_exp}/RESULTS.md.tmp" "${lm_exp}/RESULTS.md"
  cat "${lm_exp}/RESULTS.md"
fi
log "Successfully finished. [stages ${stage}-${stop_stage}]"
