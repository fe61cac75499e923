"""Copy a transformers-5 model folder into one that llm2vec 0.2.3 (transformers 4.44) reads the same, and check it.

Runs in lm2vec's venv:

    .venv/bin/python benchmarks/llm2vec_baseline/convert.py [--source pkg:smollm2] [--target DIR]

transformers 4.44 loads the folder transformers 5.x writes, but wrongly or not at all:
- config.json keeps RoPE in `rope_parameters`, which 4.44 ignores; it then falls back to rope_theta=10000
  (SmolLM2 uses 100000) without a warning. `rope_theta` (and `rope_scaling` for non-default RoPE) go back to the
  top level; `dtype` becomes `torch_dtype`.
- tokenizer.json stores BPE merges as pairs, tokenizers 0.19 only as "a b" strings.
- tokenizer_config.json names the class `TokenizersBackend`, unknown to 4.44. `PreTrainedTokenizerFast` reads
  tokenizer.json as is (LlamaTokenizerFast would rewrite the post-processor to add a BOS token), but by default
  also returns token_type_ids, which llm2vec passes on to the model: the input names are set as GPT-2's.

The check runs the same token ids through both stacks (states_llm2vec.py in the llm2vec venv, .npy files in
between) and compares: token ids of every sentence as llm2vec's encode path makes them, the bidirectional last
hidden state (LM2Vec's backbone vs llm2vec's LlamaBiModel) and the causal LM logits.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from lm2vec import LM2Vec
from lm2vec.data.packaged import stsb_dir
from lm2vec.modeling.sources import resolve_source

HERE = Path(__file__).resolve().parent
BENCH_DIR = Path(os.environ.get("LM2VEC_BENCH_DIR") or Path.home() / ".cache" / "lm2vec-bench")
LLM2VEC_PYTHON = Path(os.environ.get("LLM2VEC_VENV") or BENCH_DIR / "venv-llm2vec") / "bin" / "python"
DEFAULT_DATA = stsb_dir() / "sts-dev.csv"  # lm2vec's own copy (or $LM2VEC_STSB): a clone needs nothing beside it
# fp32 on both sides, same kernels (torch 2.13.0 in both venvs); differences are summation order only.
HIDDEN_TOLERANCE = 1e-4
LOGITS_TOLERANCE = 1e-3


def read_sts_pairs(path: str | Path) -> list[tuple[str, str, float]]:
    """The (sentence1, sentence2, score) rows of an STS-B file.

    Tab-separated, no quoting; score, sentence1 and sentence2 are columns 5, 6 and 7 (a few rows carry two more,
    sources)."""
    pairs = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        columns = line.split("\t")
        if len(columns) < 7:
            raise ValueError(f"{path}: expected at least 7 tab-separated columns, got {len(columns)}: {line!r}")
        pairs.append((columns[5], columns[6], float(columns[4])))
    return pairs


def read_sts_sentences(path: str | Path) -> list[str]:
    """The unique sentences of an STS-B file, in first-seen order."""
    return list(dict.fromkeys(sentence for first, second, _ in read_sts_pairs(path) for sentence in (first, second)))


def convert_config(config: dict[str, Any]) -> dict[str, Any]:
    config = dict(config)
    rope = config.pop("rope_parameters", None) or {}
    if "rope_theta" in rope:
        config["rope_theta"] = rope["rope_theta"]
    elif "rope_theta" not in config:
        raise ValueError("config.json has no rope_theta: transformers 4.44 would silently use 10000.")
    if rope.get("rope_type", "default") != "default":
        config["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    if "dtype" in config:
        config["torch_dtype"] = config.pop("dtype")
    return config


def convert_tokenizer(tokenizer: dict[str, Any]) -> dict[str, Any]:
    tokenizer = json.loads(json.dumps(tokenizer))
    merges = tokenizer["model"].get("merges", [])
    if merges and isinstance(merges[0], list):
        if any(" " in part for pair in merges for part in pair):
            raise ValueError("A BPE merge contains a space; the old 'a b' string format cannot express it.")
        tokenizer["model"]["merges"] = [" ".join(pair) for pair in merges]
    return tokenizer


def convert_tokenizer_config(config: dict[str, Any]) -> dict[str, Any]:
    keep = ("bos_token", "eos_token", "unk_token", "pad_token", "model_max_length")
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        **{k: config[k] for k in keep if config.get(k) is not None},
    }


def convert(source: str, target: Path) -> Path:
    """Write the converted copy of `source` (any lm2vec source) to `target`; weights are hard-linked if possible."""
    folder = Path(resolve_source(source))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        work = Path(tmp)
        for weights in folder.glob("*.safetensors"):
            try:
                os.link(weights, work / weights.name)
            except OSError:
                shutil.copy2(weights, work / weights.name)
        if (folder / "generation_config.json").is_file():
            shutil.copy2(folder / "generation_config.json", work)
        _rewrite(folder / "config.json", work / "config.json", convert_config)
        _rewrite(folder / "tokenizer.json", work / "tokenizer.json", convert_tokenizer)
        _rewrite(folder / "tokenizer_config.json", work / "tokenizer_config.json", convert_tokenizer_config)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(tmp, target)
        work.mkdir()  # TemporaryDirectory removes it on exit
    return target


def _rewrite(source: Path, target: Path, change) -> None:
    target.write_text(json.dumps(change(json.loads(source.read_text())), indent=2, ensure_ascii=False) + "\n")


@torch.no_grad()
def check(source: str, converted: Path, sentences: list[str], python: Path, batch: int = 16) -> dict[str, Any]:
    """Compare lm2vec on `source` with llm2vec 0.2.3 on `converted`; raise AssertionError on any mismatch."""
    encoder = LM2Vec.from_pretrained(source, pooling="mean", dtype=torch.float32, device="cpu")
    ours_ids = [item.input_ids for item in encoder.tokenize(sentences)]
    # A right-padded batch from the shortest to the longest sentence, so padding and length both vary.
    by_length = sorted(range(len(sentences)), key=lambda i: len(ours_ids[i]))
    picked = [by_length[round(k * (len(by_length) - 1) / max(batch - 1, 1))] for k in range(min(batch, len(by_length)))]
    features = encoder.collate(encoder.tokenize([sentences[i] for i in picked]))
    real = features["attention_mask"].bool().numpy()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "sentences.json").write_text(json.dumps(sentences))
        np.save(work / "input_ids.npy", features["input_ids"].numpy())
        np.save(work / "attention_mask.npy", features["attention_mask"].numpy())
        subprocess.run([str(python), str(HERE / "states_llm2vec.py"), str(converted), str(work)], check=True)
        theirs = json.loads((work / "token_ids.json").read_text())
        their_hidden = np.load(work / "hidden.npy")
        their_logits = np.load(work / "logits.npy")

    inputs = {"input_ids": features["input_ids"], "attention_mask": features["attention_mask"]}
    hidden = encoder.model(**inputs).last_hidden_state.numpy()
    causal = AutoModelForCausalLM.from_pretrained(resolve_source(source), dtype=torch.float32).eval()
    logits = causal(**inputs).logits.numpy()

    token_mismatches = sum(
        ours != t["ids"] or t["pooled"] != len(ours) for ours, t in zip(ours_ids, theirs["tokenized"], strict=True)
    )
    result = {
        "their_transformers": theirs["transformers"],
        "their_tokenizer": theirs["tokenizer"],
        "their_backbone": theirs["backbone"],
        "their_rope_theta": theirs["rope_theta"],
        "sentences": len(sentences),
        "token_mismatches": token_mismatches,
        "batch_shape": list(features["input_ids"].shape),
        "hidden_max_abs_diff": float(np.abs(hidden - their_hidden)[real].max()),
        "hidden_max_abs": float(np.abs(hidden[real]).max()),
        "logits_max_abs_diff": float(np.abs(logits - their_logits)[real].max()),
        "logits_max_abs": float(np.abs(logits[real]).max()),
        "logits_argmax_agreement": float((logits.argmax(-1) == their_logits.argmax(-1))[real].mean()),
    }
    problems = []
    if token_mismatches:
        problems.append(f"{token_mismatches} sentences tokenize or pool differently")
    if result["hidden_max_abs_diff"] > HIDDEN_TOLERANCE:
        problems.append(f"last hidden states differ by {result['hidden_max_abs_diff']:.3g} > {HIDDEN_TOLERANCE}")
    if result["logits_max_abs_diff"] > LOGITS_TOLERANCE:
        problems.append(f"logits differ by {result['logits_max_abs_diff']:.3g} > {LOGITS_TOLERANCE}")
    if problems:
        raise AssertionError("llm2vec 0.2.3 does not see the same model: " + "; ".join(problems) + f"\n{result}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="pkg:smollm2", help="any lm2vec model source")
    parser.add_argument("--target", type=Path, default=BENCH_DIR / "smollm2-llm2vec")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="STS-B file whose sentences are checked")
    parser.add_argument("--python", type=Path, default=LLM2VEC_PYTHON, help="python of the llm2vec 0.2.3 venv")
    args = parser.parse_args()
    converted = convert(args.source, args.target)
    print(f"converted {args.source} -> {converted}")
    print(json.dumps(check(args.source, converted, read_sts_sentences(args.data), args.python), indent=2))


if __name__ == "__main__":
    main()
