#!/bin/bash
# Issue 24, round 7 (2026-12-07): what moves whole-task retrieval without labels. R is the main job's run folder
# (its MNTP and SimCSE adapters, bit-identical in every run); round 6's L128 arm (40 steps of 32 weak Wikipedia
# pairs at 128 tokens, ../whole-tasks-round6/commands.sh) is the reference.
set -e
M="pkg:gemma3-270m"
R=runs/gemma3-en-cpu
D=.venv/lib/python3.11/site-packages/gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2
common=(--set model=$M --set "adapters=[\"$R/mntp/adapter\",\"$R/simcse/adapter\"]" --set pooling=mean
  --set max_steps=40 --set warmup_steps=3 --set mini_batch_size=16 --set save_steps=20 --set logging_steps=5
  --set per_device_batch_size=32 --set max_length=128)
chain="$M,adapters=$R/mntp/adapter+$R/simcse/adapter"
ECHO="causal echo=$M,causal,pooling=mean,template=echo"
L128="wiki pairs 40 steps at 128 tokens=$chain+study/L128/adapter,pooling=mean"
A24="24 articles=$chain+study/A24/adapter,pooling=mean"
A49="49 articles=$chain+study/A49/adapter,pooling=mean"
# The data-diversity curve: pairs from the sample's first 24 and 49 articles (1,459 and 3,043 training pairs)
# against all 98 (5,774), the same 40 steps (1,280 pairs seen).
for n in 24 49; do
  lm2vec data wiki $D --lang en --validation-fraction 0.05 --max-articles $n --out study/data-en-$n
  lm2vec train supervised "${common[@]}" --set data=study/data-en-$n --set output_dir=study/A$n
done
lm2vec report -s english --no-reference --out curve "$ECHO" "$L128" "$A24" "$A49"
# Training noise: the L128 arm again with seed 1 (the intervals cover the tasks' examples, not the training run).
lm2vec train supervised "${common[@]}" --set data=study/data-en --set output_dir=study/L128s1 --set seed=1
lm2vec report -s english --no-reference --out seeds "$L128" \
 "the same with seed 1=$chain+study/L128s1/adapter,pooling=mean" "$A24" "$A49"
# Hard negatives: one mined negative a query (the model training starts from ranks the pairs' positives; the best
# one scoring at most 0.95 x the positive is kept), the rest as L128.
lm2vec train supervised "${common[@]}" --set data=study/data-en --set output_dir=study/H1 --set mine_negatives=1
lm2vec report -s english --no-reference --out negatives "$ECHO" "$L128" \
 "hard negatives=$chain+study/H1/adapter,pooling=mean"
