#!/usr/bin/env bash
# utils/fix_data_dir.sh DIR : keep only utterances present in every per-utterance file of DIR
# (wav.scp, text, utt2spk, utt2dur, utt2num_samples, segments), sort them, rebuild spk2utt.
# Every dropped utterance is counted and listed in DIR/.backup/dropped (never silent).
set -eu
dir=$1
[ -f "$dir/wav.scp" ] || { echo "$0: $dir/wav.scp is missing" >&2; exit 1; }
files=()
for f in wav.scp text utt2spk utt2dur utt2num_samples utt2category; do [ -f "$dir/$f" ] && files+=("$f"); done
mkdir -p "$dir/.backup"
tmp=$(mktemp)
cut -d' ' -f1 "$dir/wav.scp" | sort -u > "$tmp"
for f in "${files[@]}"; do
  cut -d' ' -f1 "$dir/$f" | sort -u | comm -12 "$tmp" - > "$tmp.2"; mv "$tmp.2" "$tmp"
done
: > "$dir/.backup/dropped"
for f in "${files[@]}"; do
  cp "$dir/$f" "$dir/.backup/$f"
  n_before=$(grep -c . "$dir/$f" || true)
  "$(dirname "$0")"/filter_scp.sh --exclude "$tmp" "$dir/$f" | awk -v f="$f" '{print $1, "missing from another file (was in " f ")"}' >> "$dir/.backup/dropped"
  "$(dirname "$0")"/filter_scp.sh "$tmp" "$dir/$f" | sort -k1,1 -u > "$dir/$f.tmp" && mv "$dir/$f.tmp" "$dir/$f"
  n_after=$(grep -c . "$dir/$f" || true)
  [ "$n_before" = "$n_after" ] || echo "fix_data_dir.sh: $dir/$f: kept $n_after of $n_before lines" >&2
done
if [ -f "$dir/utt2spk" ]; then
  awk '{a[$2] = a[$2] " " $1} END {for (s in a) print s a[s]}' "$dir/utt2spk" | sort > "$dir/spk2utt"
fi
rm -f "$tmp"
n=$(sort -u "$dir/.backup/dropped" | cut -d' ' -f1 | sort -u | grep -c . || true)
[ "$n" = 0 ] || echo "fix_data_dir.sh: dropped $n utterance(s) of $dir; see $dir/.backup/dropped" >&2
