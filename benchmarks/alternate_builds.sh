#!/usr/bin/env bash
# The fused op's benchmark suite, alternating between two source trees (each built in
# place), N runs each, one process per run: old, new, old, new, ...
#   bash benchmarks/alternate_builds.sh OLD_TREE NEW_TREE [N=4] [OUT=/tmp/alternate_builds]
#   python benchmarks/compare_builds.py OUT
set -u
OLD=$1; NEW=$2; N=${3:-4}; OUT=${4:-/tmp/alternate_builds}
mkdir -p "$OUT"
for i in $(seq 1 "$N"); do
  for tag in old new; do
    tree=$OLD; [ "$tag" = new ] && tree=$NEW
    (cd /tmp && PYTHONPATH=$tree python "$tree/benchmarks/run_benchmarks.py" --implementations fused \
      --json "$OUT/${tag}_$i.json" > "$OUT/${tag}_$i.txt" 2>&1)
    echo "$tag $i rc=$?"
  done
done
