"""llm2vec 0.2.3's side of convert.py's check; runs in the llm2vec venv, started by convert.py.

    $LLM2VEC_VENV/bin/python benchmarks/llm2vec_baseline/states_llm2vec.py MODEL_DIR WORK_DIR

Reads WORK_DIR/sentences.json, input_ids.npy and attention_mask.npy (a right-padded batch made by lm2vec) and
writes into WORK_DIR:
- token_ids.json: each sentence as llm2vec's own `encode` path tokenizes it, and how many of its tokens it pools;
- hidden.npy: last hidden state of llm2vec's bidirectional backbone (LlamaBiModel) on the batch;
- logits.npy: logits of the plain causal LM (transformers 4.44) on the batch, to check the converted config
  (RoPE theta) and weights independently of llm2vec's attention changes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import transformers
from llm2vec import LLM2Vec
from transformers import AutoModelForCausalLM


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model folder converted by convert.py")
    parser.add_argument("work_dir")
    args = parser.parse_args()
    work = Path(args.work_dir)
    sentences = json.loads((work / "sentences.json").read_text())
    input_ids = torch.from_numpy(np.load(work / "input_ids.npy"))
    attention_mask = torch.from_numpy(np.load(work / "attention_mask.npy"))

    l2v = LLM2Vec.from_pretrained(
        args.model, enable_bidirectional=True, pooling_mode="mean", max_length=512, torch_dtype=torch.float32
    )
    tokenized = []
    for sentence in sentences:
        # The same three steps as LLM2Vec.encode/_encode, one sentence at a time so that nothing is padded.
        features = l2v.tokenize([l2v.prepare_for_tokenization(l2v._convert_to_str("", sentence))])
        tokenized.append({"ids": features["input_ids"][0].tolist(), "pooled": int(features["embed_mask"].sum())})
    hidden = l2v.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    causal = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32).eval()
    logits = causal(input_ids=input_ids, attention_mask=attention_mask).logits

    info = {
        "transformers": transformers.__version__,
        "tokenizer": type(l2v.tokenizer).__name__,
        "backbone": type(l2v.model).__name__,
        "rope_theta": l2v.model.config.rope_theta,
        "tokenized": tokenized,
    }
    (work / "token_ids.json").write_text(json.dumps(info) + "\n")
    np.save(work / "hidden.npy", hidden.numpy())
    np.save(work / "logits.npy", logits.numpy())


if __name__ == "__main__":
    main()
