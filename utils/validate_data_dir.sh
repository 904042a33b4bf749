#!/usr/bin/env bash
# utils/validate_data_dir.sh DIR : check a Kaldi-style data dir; exit 1 naming each problem.
# Checks: wav.scp exists, non-empty, unique sorted ids; every per-utterance file has the same
# ids as the utterances (wav.scp's, or segments' when DIR has a segments file, whose recordings
# must be in wav.scp); referenced files exist (a "cmd |" entry is a command, not checked); no empty
# transcripts.
set -u
dir=$1; bad=0
err() { echo "validate_data_dir.sh: $dir: $*" >&2; bad=1; }
[ -s "$dir/wav.scp" ] || { err "wav.scp is missing or empty"; exit 1; }
ids=$(mktemp)
utts=wav.scp; entry=utterance
if [ -f "$dir/segments" ]; then utts=segments; entry=recording; fi
cut -d' ' -f1 "$dir/$utts" > "$ids"
[ -z "$(sort "$ids" | uniq -d)" ] || err "duplicate ids in $utts: $(sort "$ids" | uniq -d | head -3 | tr '\n' ' ')"
sort -C "$ids" || err "$utts is not sorted (run utils/fix_data_dir.sh $dir)"
if [ "$utts" = segments ]; then
  [ -z "$(cut -d' ' -f1 "$dir/wav.scp" | sort | uniq -d)" ] || err "duplicate recording ids in wav.scp"
  awk '{ if (NF != 4 || $3 !~ /^[0-9.]+$/ || $4 !~ /^-?[0-9.]+$/) print "line " NR ": " $0 }' "$dir/segments" \
    | head -3 | while read -r l; do echo "validate_data_dir.sh: $dir: segments $l: expected 'utt recording start end'" >&2; done
  [ -z "$(awk '{ if (NF != 4 || $3 !~ /^[0-9.]+$/ || $4 !~ /^-?[0-9.]+$/) print }' "$dir/segments")" ] || bad=1
  orphans=$(awk 'NR == FNR { rec[$1] = 1; next } !($2 in rec) { print $1 " (recording " $2 ")" }' \
              "$dir/wav.scp" "$dir/segments" | head -3 | tr '\n' ' ')
  [ -z "$orphans" ] || err "segments of recordings missing from wav.scp: $orphans"
fi
for f in text utt2spk utt2dur utt2num_samples utt2category; do
  [ -f "$dir/$f" ] || continue
  only=$(cut -d' ' -f1 "$dir/$f" | sort | comm -3 - <(sort "$ids") | head -3 | tr -d '\t' | tr '\n' ' ')
  [ -z "$only" ] || err "$f and $utts disagree on utterance(s): $only(run utils/fix_data_dir.sh $dir)"
done
while read -r utt path; do   # the path is the rest of the line (it may contain spaces)
  case "$path" in *"|") continue ;; esac   # a command pipe, not a file
  [ -f "$path" ] || err "$entry $utt: audio file $path does not exist"
done < "$dir/wav.scp"
if [ -f "$dir/text" ]; then
  empty=$(awk 'NF < 2 {print $1}' "$dir/text" | head -3 | tr '\n' ' ')
  [ -z "$empty" ] || err "empty transcript for utterance(s): $empty"
fi
rm -f "$ids"
exit $bad
