#!/bin/bash
# Issue 24, round 6 (2026-12-06/07): the commands behind ties.json, lengths.json and batches.json here. R is the main job's run
# folder of round 4 (`lm2vec run recipes/gemma3-en-cpu.toml`; its MNTP and SimCSE adapters are bit-identical to
# today's main job's), U the pairs-only adapter of round 4 (../whole-tasks-2026-12-06/commands.sh). Whole English
# tuning suite, paired bootstrap intervals; models of earlier rounds come from the embedding cache.
set -e
M="pkg:gemma3-270m"
R=runs/gemma3-en-cpu
U=study/U

# TIES and DARE-TIES against the linear merge (SimCSE 50/50 supervised on STS-B, density 0.5); no training.
lm2vec report -s english --no-reference --out ties \
 "merged: SimCSE 50/50 supervised (linear)=$M,adapters=$R/mntp/adapter+$R/simcse/adapter+$R/supervised/adapter,adapter_weights=1+1+0.5,pooling=mean" \
 "ties: SimCSE 50/50 supervised=$M,adapters=$R/mntp/adapter+$R/simcse/adapter+$R/supervised/adapter,adapter_weights=1+1+0.5,merge_method=ties,merge_density=0.5,pooling=mean" \
 "dare_ties: SimCSE 50/50 supervised=$M,adapters=$R/mntp/adapter+$R/simcse/adapter+$R/supervised/adapter,adapter_weights=1+1+0.5,merge_method=dare_ties,merge_density=0.5,pooling=mean"

# No labels: the weak Wikipedia pairs (study/data-en, round 4) for 40 steps of 32, positives cut at 128 tokens
# instead of 64; the rest as the main job's [supervised].
lm2vec train supervised --set model=$M --set "adapters=[\"$R/mntp/adapter\",\"$R/simcse/adapter\"]" \
    --set data=study/data-en --set output_dir=study/L128 --set pooling=mean --set per_device_batch_size=32 \
    --set max_length=128 --set max_steps=40 --set warmup_steps=3 --set mini_batch_size=16 --set save_steps=20 \
    --set logging_steps=5
lm2vec report -s english --no-reference --out lengths \
 "causal echo=$M,causal,pooling=mean,template=echo" \
 "wiki pairs 40 steps=$M,adapters=$R/mntp/adapter+$R/simcse/adapter+$U/checkpoint-40,pooling=mean" \
 "wiki pairs 40 steps at 128 tokens=$M,adapters=$R/mntp/adapter+$R/simcse/adapter+study/L128/adapter,pooling=mean"

python benchmarks/paired_differences.py lengths/results.json "wiki pairs 40 steps at 128 tokens|causal echo" \
 "wiki pairs 40 steps at 128 tokens|wiki pairs 40 steps"

# Batches of 64 (twice the in-batch negatives), stopped at the step-20 checkpoint: as many pairs seen (1,280) as 40
# steps of 32 at 64 tokens.
lm2vec train supervised --set model=$M --set "adapters=[\"$R/mntp/adapter\",\"$R/simcse/adapter\"]" \
    --set data=study/data-en --set output_dir=study/B64 --set pooling=mean --set per_device_batch_size=64 \
    --set max_length=64 --set max_steps=40 --set warmup_steps=3 --set mini_batch_size=16 --set save_steps=20 \
    --set logging_steps=5   # stopped once checkpoint-20 was written
lm2vec report -s english --no-reference --out batches \
 "wiki pairs 40 steps=$M,adapters=$R/mntp/adapter+$R/simcse/adapter+$U/checkpoint-40,pooling=mean" \
 "wiki pairs 20 steps of 64=$M,adapters=$R/mntp/adapter+$R/simcse/adapter+study/B64/checkpoint-20,pooling=mean"
