#!/usr/bin/env bash
# utils/validate_data_dir.sh DIR : check a Kaldi-style data dir; exit 1 naming each problem.
# Checks: wav.scp exists, non-empty, unique sorted ids; every per-utterance file has the same
# ids as wav.scp; referenced files exist; no empty transcripts.
set -u
dir=$1; bad=0
err() { echo "validate_data_dir.sh: $dir: $*" >&2; bad=1; }
[ -s "$dir/wav.scp" ] || { err "wav.scp is missing or empty"; exit 1; }
ids=$(mktemp)
cut -d' ' -f1 "$dir/wav.scp" > "$ids"
[ -z "$(sort "$ids" | uniq -d)" ] || err "duplicate ids in wav.scp: $(sort "$ids" | uniq -d | head -3 | tr '\n' ' ')"
sort -C "$ids" || err "wav.scp is not sorted (run utils/fix_data_dir.sh $dir)"
for f in text utt2spk utt2dur utt2num_samples utt2category; do
  [ -f "$dir/$f" ] || continue
  only=$(cut -d' ' -f1 "$dir/$f" | sort | comm -3 - <(sort "$ids") | head -3 | tr -d '\t' | tr '\n' ' ')
  [ -z "$only" ] || err "$f and wav.scp disagree on utterance(s): $only(run utils/fix_data_dir.sh $dir)"
done
while read -r utt path; do   # the path is the rest of the line (it may contain spaces)
  case "$path" in *"|") continue ;; esac   # a command pipe, not a file
  [ -f "$path" ] || err "utterance $utt: audio file $path does not exist"
done < "$dir/wav.scp"
if [ -f "$dir/text" ]; then
  empty=$(awk 'NF < 2 {print $1}' "$dir/text" | head -3 | tr '\n' ' ')
  [ -z "$empty" ] || err "empty transcript for utterance(s): $empty"
fi
rm -f "$ids"
exit $bad
