#!/bin/bash
# Issue 24, round 4 (2026-12-06): the commands behind results.json and report.md here. R is the main job's run
# folder (`lm2vec run recipes/gemma3-en-cpu.toml`, the chain of README's results); every model is scored on the whole
# English tuning suite (STS-B dev 1,500 pairs, Lee 1,225, BBC classification and clustering 2,225 articles, BBC
# headline retrieval 2,096 queries against 2,225 bodies), with paired bootstrap intervals.
set -e
R=runs/gemma3-en-cpu
M="pkg:gemma3-270m"
G=$(python -c "from lm2vec.data.packaged import expand_path; print(expand_path('\${gensim_data}'))")

# The English sample's corpora, now with weak pairs (6,062: 4,139 sentence -> paragraph, 1,544 heading -> section,
# 91 title -> lead); 5 s.
lm2vec data wiki "$G/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2" --lang en \
    --validation-fraction 0.05 --workers 1 --out study/data-en

# "after wiki pairs": the main job's [supervised] settings, on the pairs instead of STS-B, from MNTP + SimCSE.
lm2vec train supervised --set model=$M --set "adapters=[\"$R/mntp/adapter\",\"$R/simcse/adapter\"]" \
    --set data=study/data-en --set output_dir=study/U --set pooling=mean --set per_device_batch_size=32 \
    --set max_length=64 --set max_steps=80 --set warmup_steps=3 --set mini_batch_size=16 --set save_steps=20 \
    --set logging_steps=5
U=study/U/adapter

lm2vec report -s english --out study/final-en \
 "after SimCSE=$M,adapters=$R/mntp/adapter+$R/simcse/adapter,pooling=mean" \
 "after supervised (STS-B)=$M,adapters=$R/mntp/adapter+$R/simcse/adapter+$R/supervised/adapter,pooling=mean" \
 "after wiki pairs (no labels)=$M,adapters=$R/mntp/adapter+$R/simcse/adapter+$U,pooling=mean" \
 "merged: SimCSE 50/50 supervised=$M,adapters=$R/mntp/adapter+$R/simcse/adapter+$R/supervised/adapter,adapter_weights=1+1+0.5,pooling=mean" \
 "merged: STS-B + wiki pairs=$M,adapters=$R/mntp/adapter+$R/simcse/adapter+$R/supervised/adapter+$U,adapter_weights=1+1+0.5+0.5,pooling=mean" \
 "causal echo=$M,causal,pooling=mean,template=echo"

# The pairs' curve: the same run's step-40 checkpoint (curve/).
lm2vec report -s english --no-reference --out study/curve-en \
 "after SimCSE=$M,adapters=$R/mntp/adapter+$R/simcse/adapter,pooling=mean" \
 "wiki pairs 40 steps=$M,adapters=$R/mntp/adapter+$R/simcse/adapter+study/U/checkpoint-40,pooling=mean" \
 "wiki pairs 80 steps=$M,adapters=$R/mntp/adapter+$R/simcse/adapter+$U,pooling=mean"
