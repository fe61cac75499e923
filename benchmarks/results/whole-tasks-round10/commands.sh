#!/bin/bash
# Issue 24, round 10 (2026-12-08): the main job's supervised mixture (STS-B + wiki pairs, one hard negative a pair
# from the drawn pool) with its texts cut at 128 tokens instead of 64. R3 is round 9's run folder (the main job's
# recipe); R4 a copy of its data, mntp and simcse whose supervised stage runs again with max_length = 128.
set -e
R3=runs/gemma3-en-cpu-drawn
R4=runs/gemma3-en-cpu-len128
S="--set supervised.mine_negatives=1 --set supervised.mining_pool=drawn --set supervised.max_length=128"
mkdir -p $R4 && cp -r $R3/data $R3/mntp $R3/simcse $R3/stages.json $R3/pipeline.json $R4/
/usr/bin/time -v lm2vec run recipes/gemma3-en-cpu.toml --out $R4 --only supervised --redo supervised $S
lm2vec run recipes/gemma3-en-cpu.toml --out $R4 --only export $S
lm2vec report -s english --no-reference --out lengths \
 "STS-B + wiki pairs + hard negatives (main job)=$R3/model" \
 "the same at 128 tokens=$R4/model"
python benchmarks/paired_differences.py lengths/results.json \
 "the same at 128 tokens|STS-B + wiki pairs + hard negatives (main job)"
