#!/bin/bash
# Issue 26, layer pruning (2026-12-07): the main job's MNTP + SimCSE (recipes/gemma3-en-cpu.toml, no labels) with 0,
# 20, 30 and 40% of Gemma-3-270m's 18 decoder layers dropped from the top before MNTP (18, 14, 13, 11 kept), each
# stage timed by the run (pipeline.json), the encoders evaluated on the whole English tuning suite (results.json,
# report.md here), and their encoding speed measured side by side on the idle machine.
set -e
for share in 0 0.2 0.3 0.4; do
  lm2vec run recipes/gemma3-en-cpu.toml --set mntp.prune_layers=$share --out runs/prune-$share --until simcse
done
M="pkg:gemma3-270m"
lm2vec report -s english --no-reference --out pruning \
 "after SimCSE=$M,adapters=runs/prune-0/mntp/adapter+runs/prune-0/simcse/adapter,pooling=mean" \
 "after SimCSE 20% pruned=$M,adapters=runs/prune-0.2/mntp/adapter+runs/prune-0.2/simcse/adapter,pooling=mean" \
 "after SimCSE 30% pruned=$M,adapters=runs/prune-0.3/mntp/adapter+runs/prune-0.3/simcse/adapter,pooling=mean" \
 "after SimCSE 40% pruned=$M,adapters=runs/prune-0.4/mntp/adapter+runs/prune-0.4/simcse/adapter,pooling=mean"
python benchmarks/paired_differences.py pruning/results.json "after SimCSE 20% pruned|after SimCSE" \
 "after SimCSE 30% pruned|after SimCSE" "after SimCSE 40% pruned|after SimCSE"
# Speed: the main job's exported encoder, whole and with the top layers dropped at load, one fresh process each.
python benchmarks/encode.py --source runs/gemma3-en-cpu/model --limit 1000 --repeats 2 \
 --backends torch,torch-pruned-20,torch-pruned-30,torch-pruned-40 --json pruning/encode.json
