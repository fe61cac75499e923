#!/bin/bash
# Issue 24, round 8 (2026-12-07): one mined hard negative a pair in the main job's STS-B + wiki pairs mixture, and the
# best no-label encoder (round 7's H1, ../whole-tasks-round7/commands.sh) merged 50/50 toward SimCSE. R is the main
# job's run folder (`lm2vec run recipes/gemma3-en-cpu.toml`); R2 a copy of it (data, mntp, simcse) whose supervised
# stage is run again with mining on, nothing else changed.
set -e
M="pkg:gemma3-270m"
R=runs/gemma3-en-cpu
R2=runs/gemma3-en-cpu-negatives
H=study/H1/adapter
mkdir -p $R2 && cp -r $R/data $R/mntp $R/simcse $R/model $R/stages.json $R/pipeline.json $R2/
lm2vec run recipes/gemma3-en-cpu.toml --out $R2 --only supervised --set supervised.mine_negatives=1 --redo supervised
chain="$M,adapters=$R/mntp/adapter+$R/simcse/adapter"
lm2vec report -s english --no-reference --out mixture \
 "causal echo=$M,causal,pooling=mean,template=echo" \
 "STS-B + wiki pairs (main job)=$chain+$R/supervised/adapter,pooling=mean" \
 "STS-B + wiki pairs + hard negatives=$chain+$R2/supervised/adapter,pooling=mean" \
 "wiki pairs + hard negatives (no labels)=$chain+$H,pooling=mean"
lm2vec report -s english --no-reference --out merges \
 "causal echo=$M,causal,pooling=mean,template=echo" \
 "wiki pairs + hard negatives (no labels)=$chain+$H,pooling=mean" \
 "the same merged 50/50 with SimCSE=$chain+$H,adapter_weights=1+1+0.5,pooling=mean"
python benchmarks/paired_differences.py mixture/results.json \
 "STS-B + wiki pairs + hard negatives|STS-B + wiki pairs (main job)" "STS-B + wiki pairs + hard negatives|causal echo"
python benchmarks/paired_differences.py merges/results.json \
 "the same merged 50/50 with SimCSE|wiki pairs + hard negatives (no labels)"
