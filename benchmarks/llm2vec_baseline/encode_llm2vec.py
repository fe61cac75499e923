"""Benchmark worker for the official llm2vec 0.2.3; runs in its own venv (see setup.sh), started by encode.py.

    $LLM2VEC_VENV/bin/python benchmarks/llm2vec_baseline/encode_llm2vec.py MODEL_DIR SENTENCES.json OUT_PREFIX

How llm2vec 0.2.3 encodes a plain string (llm2vec.py), and why that matches lm2vec with mean pooling:
- `encode` turns it into ["", text], then "!@#$%^&*()" + text; `tokenize` splits on that separator again, so the
  model sees exactly `tokenizer(text)` (special tokens as the tokenizer adds them: none for SmolLM2).
- `embed_mask` marks the last len(tokenizer(text, add_special_tokens=False)) tokens; with skip_instruction=True it
  replaces the attention mask for pooling only, and mean pooling averages those trailing (left-padded) states.
  Without an instruction and without special tokens that is every real token, as in lm2vec's mean pooling.
- doc_max_length=400 cuts texts by words before tokenizing; STS-B sentences are far shorter.
- It sorts by character length (lm2vec sorts by token count) and pads on the left (lm2vec on the right).
"""

from __future__ import annotations

import argparse
import time

import measure
import torch
import transformers
from llm2vec import LLM2Vec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model folder converted by convert.py")
    parser.add_argument("sentences", help="JSON list of sentences")
    parser.add_argument("out_prefix", help="writes OUT_PREFIX.npy (embeddings) and OUT_PREFIX.json (figures)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    sentences = measure.load_sentences(args.sentences)
    start = time.perf_counter()
    l2v = LLM2Vec.from_pretrained(
        args.model, enable_bidirectional=True, pooling_mode="mean", max_length=512, torch_dtype=torch.float32
    )
    load_seconds = time.perf_counter() - start

    def encode(batch: list[str]):
        return l2v.encode(batch, batch_size=args.batch_size, show_progress_bar=False, convert_to_numpy=True)

    embeddings, result = measure.benchmark(encode, l2v.model, sentences, args.batch_size)
    result.update(
        implementation="llm2vec 0.2.3",
        load_seconds=load_seconds,
        backbone=type(l2v.model).__name__,
        attn_implementation=l2v.model.config._attn_implementation,
        transformers=transformers.__version__,
    )
    measure.save(args.out_prefix, embeddings, result)


if __name__ == "__main__":
    main()
