"""`lm2vec run RECIPE.toml`: from raw text to an evaluated encoder in one command.

    lm2vec run recipes/smollm2-en-cpu.toml [--out RUN] [--set mntp.max_steps=100 ...] [--redo simcse] [--until mntp]
    lm2vec run recipes/smollm2-en-cpu.toml --only mntp     # one stage; `lm2vec train mntp --recipe R` runs this

A recipe has one TOML section per stage; a training stage runs when its section is there, export, eval and
report always run:

    data        [data]        each of `inputs` -> RUN/data/NN-name/ (lm2vec.data corpora, read by training as one)
    mntp        [mntp]        RUN/mntp/adapter        LoRA on the bidirectional base model
    simcse      [simcse]      RUN/simcse/adapter      on base + MNTP
    supervised  [supervised]  RUN/supervised/adapter  on base + MNTP (+ SimCSE with run.supervised_after="simcse")
    export                    RUN/model               merged; loads in LM2Vec, transformers and sentence-transformers
    eval        [eval]        RUN/eval/results.json   causal baselines, untrained, every stage, reference encoder
    report                    RUN/report/report.md and report.png, with each stage's wall time

The stages are `lm2vec.stages`' registry (one module per stage; `register_stage` adds one). `--only STAGE` runs
that stage alone, in the same folders with the same inputs as the whole run; the stages it reads from must be done.

`[run]` holds what the stages share (the base model, pooling); the stage sections take the options of
`WikiConfig`/`TextConfig`, `MNTPConfig`, `SimCSEOptions`, `SupervisedOptions` and `EvalOptions`, except the
folders, which the run owns. Paths may use the placeholders of `lm2vec.data.packaged` (`${gensim_data}`,
`${stsb}`, `${fortunes_bg}` ...). `--set section.key=value` overrides one option.

RUN/pipeline.json records every stage: status, wall time, a summary, the paths it writes and a hash of its options
(as the stage reads them: `--set key=1` and `key = 1` in the recipe are one value) chained with the hashes of the
stages before it. A re-run skips finished stages, resumes an interrupted one (data from its manifest, training from
its last complete checkpoint) and refuses to continue past a finished stage whose options have changed:
`--redo STAGE` deletes the paths that stage and every later one recorded, and runs them again.

pipeline.json is also the run folder's ownership record (`lm2vec.artifacts`): a run starts only in a new or empty
folder or in one holding a run; a stage refuses to start where a path it would write exists but was not recorded.
The whole recipe is checked before any stage starts, and every problem is reported at once.

Under `torchrun`/`accelerate launch` the training stages run on every process; data, export, eval and report
run on the main process while the others wait.

`plan` reads a recipe into a checked Plan, `run` executes it and keeps RUN/pipeline.json, `cli` is `lm2vec train`.
"""
