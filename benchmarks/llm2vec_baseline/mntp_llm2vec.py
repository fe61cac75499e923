"""MNTP training-step worker for the official llm2vec 0.2.3; runs in its venv (see setup.sh), started by
benchmarks/train_mntp.py.

    $LLM2VEC_VENV/bin/python benchmarks/llm2vec_baseline/mntp_llm2vec.py MODEL_DIR BATCH.npz OUT.json [--steps 3]

The model and step are those of llm2vec's experiments/run_mntp.py: `LlamaBiForMNTP.from_pretrained` (fp32, SDPA),
`initialize_peft` (LoRA on the inner `LlamaBiModel` only: the seven projections, r=16, alpha=2r=32, dropout
0.05), and the loss its Trainer takes, `model(input_ids, attention_mask, labels).loss`: transformers 4.44's
`LlamaForCausalLM.forward`, i.e. the LM head over all positions, `.float()`, then cross-entropy of the logits at
0..n-2 against the labels at 1..n (the shifted MNTP loss). The batch (masked input ids, labels) comes from
train_mntp.py; AdamW lr 5e-5 on the trainable parameters, one warm-up step, then `--steps` timed ones.
"""

from __future__ import annotations

import argparse
import json

import measure
import numpy as np
import torch
import transformers
from llm2vec.models import LlamaBiForMNTP
from peft import LoraConfig, get_peft_model

TARGETS = ["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("batch")
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args()

    rss_imports = measure.rss_mib()
    batch = np.load(args.batch)
    input_ids = torch.from_numpy(batch["input_ids"]).long()
    labels = torch.from_numpy(batch["labels"]).long()
    attention_mask = torch.ones_like(input_ids)

    torch.manual_seed(0)
    model = LlamaBiForMNTP.from_pretrained(args.model, torch_dtype=torch.float32, attn_implementation="sdpa")
    config = LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, lora_dropout=0.05, bias="none", task_type=None)
    model.set_model_for_peft(get_peft_model(model.get_model_for_peft(), config))  # run_mntp's initialize_peft
    if args.gradient_checkpointing:  # what run_mntp's Trainer does with --gradient_checkpointing
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=5e-5)

    def loss_of_batch() -> torch.Tensor:
        return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss

    result = measure.time_training(loss_of_batch, optimizer, args.steps)
    result.update(
        implementation="llm2vec 0.2.3 LlamaBiForMNTP",
        gradient_checkpointing=args.gradient_checkpointing,
        transformers=transformers.__version__,
        attn_implementation=model.config._attn_implementation,
        trainable_parameters=sum(p.numel() for p in trainable),
        lm_head_tied=model.lm_head.weight is model.get_input_embeddings().weight,
        batch_shape=list(input_ids.shape),
        labelled_tokens=int((labels[:, 1:] != -100).sum()),
        rss_imports_mib=rss_imports,
    )
    with open(args.out, "w") as out:
        json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
