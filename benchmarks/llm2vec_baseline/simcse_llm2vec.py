"""SimCSE training-step worker for the official llm2vec 0.2.3; runs in its venv (see setup.sh), started by
benchmarks/train_contrastive.py.

    $LLM2VEC_VENV/bin/python benchmarks/llm2vec_baseline/simcse_llm2vec.py MODEL_DIR SENTENCES.json OUT.json

The step is the one of llm2vec's experiments/run_simcse.py: its collator calls `LLM2Vec.tokenize` on each copy of
the batch (left padding to the longest; no instruction separator, so `embed_mask` is all zeros and mean pooling
then averages the whole left-padded row, padding included), `LLM2Vec.forward` runs each copy, and
`HardNegativeNLLLoss(scale=20)` gives the loss. LoRA r=16, alpha=32, dropout 0.05 on the seven projections
(llm2vec's `initialize_peft` defaults), attention dropout 0.3, AdamW lr 3e-5, fp32, SDPA.
"""

from __future__ import annotations

import argparse
import json

import measure
import torch
import transformers
from llm2vec import LLM2Vec
from llm2vec.loss.HardNegativeNLLLoss import HardNegativeNLLLoss
from peft import LoraConfig, get_peft_model

TARGETS = ["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("sentences")
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()

    sentences = measure.load_sentences(args.sentences)
    torch.manual_seed(0)
    l2v = LLM2Vec.from_pretrained(
        args.model,
        enable_bidirectional=True,
        pooling_mode="mean",
        max_length=args.max_length,
        torch_dtype=torch.float32,
        attention_dropout=0.3,
    )
    l2v.model = get_peft_model(
        l2v.model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGETS, bias="none")
    )
    l2v.train()
    optimizer = torch.optim.AdamW([p for p in l2v.parameters() if p.requires_grad], lr=3e-5)
    loss_function = HardNegativeNLLLoss(scale=20.0)
    stats = measure.BatchStats(l2v.model.get_base_model())

    def loss_of_batch() -> torch.Tensor:
        features = [l2v.tokenize(sentences), l2v.tokenize(sentences)]  # the collator: one call per copy
        return loss_function(l2v(features[0]), l2v(features[1]))

    timing = measure.time_training(loss_of_batch, optimizer, args.steps)
    result = {
        "implementation": "llm2vec 0.2.3",
        "transformers": transformers.__version__,
        "attn_implementation": l2v.model.config._attn_implementation,
        **timing,
        **stats.per_step(args.steps + 1),  # the warm-up step included: every step sees the same batch
    }
    with open(args.out, "w") as out:
        json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
