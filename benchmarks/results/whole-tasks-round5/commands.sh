#!/bin/bash
# Issue 24, round 5 (2026-12-06): the commands behind round5/ and sweep/ here. R2 is the main job's run folder
# (`lm2vec run recipes/gemma3-en-cpu.toml`, the recipe whose supervised stage trains on STS-B train and the data
# stage's weak pairs); R the run of the recipe before it (STS-B alone; its MNTP and SimCSE adapters are bit-identical
# to R2's); U the pairs-only adapter of round 4 (../whole-tasks-2026-12-06/commands.sh). Whole English tuning suite,
# paired bootstrap intervals; the models of round 4 come from the embedding cache.
set -e
M="pkg:gemma3-270m"
R=runs/gemma3-en-cpu-before     # the run of round 4
R2=runs/gemma3-en-cpu
U=study/U/adapter

lm2vec report -s english --out round5 \
 "causal echo=$M,causal,pooling=mean,template=echo" \
 "after SimCSE=$M,adapters=$R/mntp/adapter+$R/simcse/adapter,pooling=mean" \
 "after supervised (STS-B)=$M,adapters=$R/mntp/adapter+$R/simcse/adapter+$R/supervised/adapter,pooling=mean" \
 "after wiki pairs (no labels)=$M,adapters=$R/mntp/adapter+$R/simcse/adapter+$U,pooling=mean" \
 "after supervised (STS-B + wiki pairs)=$M,adapters=$R2/mntp/adapter+$R2/simcse/adapter+$R2/supervised/adapter,pooling=mean"

# Merges: SimCSE with supervised (STS-B) at 0.25 and 0.75 (0.5 is in round 4), SimCSE with the base (MNTP) at 0.5.
lm2vec report -s english --no-reference --out sweep \
 "merged: SimCSE 75/25 supervised=$M,adapters=$R/mntp/adapter+$R/simcse/adapter+$R/supervised/adapter,adapter_weights=1+1+0.25,pooling=mean" \
 "merged: SimCSE 25/75 supervised=$M,adapters=$R/mntp/adapter+$R/simcse/adapter+$R/supervised/adapter,adapter_weights=1+1+0.75,pooling=mean" \
 "merged: SimCSE 50/50 base=$M,adapters=$R/mntp/adapter+$R/simcse/adapter,adapter_weights=1+0.5,pooling=mean"

# Paired differences (average and each task), e.g.:
python benchmarks/paired_differences.py round5/results.json "after supervised (STS-B + wiki pairs)|after supervised (STS-B)" \
 "after supervised (STS-B + wiki pairs)|causal echo" "after supervised (STS-B + wiki pairs)|after wiki pairs (no labels)"
