#!/bin/bash
# Issue 24, round 9 (2026-12-07): hard negatives mined among the positives of the drawn pairs only
# (`[supervised] mining_pool = "drawn"`), a pass over fewer texts, in the main job's STS-B + wiki pairs mixture.
# R is the main job's run folder (`lm2vec run recipes/gemma3-en-cpu.toml --set export.onnx=true`, before this
# round's default); R3 a copy of its data, mntp and simcse whose supervised stage mines from the drawn pool.
set -e
R=runs/gemma3-en-cpu
R3=runs/gemma3-en-cpu-drawn
mkdir -p $R3 && cp -r $R/data $R/mntp $R/simcse $R/stages.json $R/pipeline.json $R3/
/usr/bin/time -v lm2vec run recipes/gemma3-en-cpu.toml --out $R3 --only supervised --redo supervised \
 --set supervised.mine_negatives=1 --set supervised.mining_pool=drawn
lm2vec run recipes/gemma3-en-cpu.toml --out $R3 --only export --set export.onnx=true \
 --set supervised.mine_negatives=1 --set supervised.mining_pool=drawn
lm2vec report -s english --no-reference --out drawn \
 "STS-B + wiki pairs (main job)=$R/model" \
 "STS-B + wiki pairs + hard negatives from the drawn pool=$R3/model"
python benchmarks/paired_differences.py drawn/results.json \
 "STS-B + wiki pairs + hard negatives from the drawn pool|STS-B + wiki pairs (main job)"
