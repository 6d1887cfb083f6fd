"""Build a background token-frequency table for PC-Sampler from a text corpus.

    python scripts/build_token_freq.py --corpus texts.jsonl --field question \
        --tokenizer GSAI-ML/LLaDA-8B-Base --out freq_llada.json
    python scripts/build_token_freq.py --corpus ... --tokenizer tiny   # the in-process char tokenizer

Writes {"num_token": N, "p_baseline_dict": {token_id: count}} (PC-Sampler's format).
"""
import argparse
import json
from collections import Counter
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", required=True, help=".jsonl (use --field) or plain .txt")
    parser.add_argument("--field", default="text")
    parser.add_argument("--tokenizer", required=True, help="HF tokenizer id/path, or 'tiny'")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.tokenizer == "tiny":
        from boe_bench.models.tiny import build_char_tokenizer

        tokenizer = build_char_tokenizer()
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    path = Path(args.corpus)
    if path.suffix == ".jsonl":
        texts = [json.loads(line)[args.field] for line in path.read_text().splitlines() if line.strip()]
    else:
        texts = path.read_text().split("\n\n")
    counts = Counter()
    for text in texts:
        counts.update(tokenizer(text, add_special_tokens=False)["input_ids"])
    table = {"num_token": sum(counts.values()), "p_baseline_dict": {str(k): v for k, v in sorted(counts.items())}}
    Path(args.out).write_text(json.dumps(table))
    print(f"{len(texts)} texts, {table['num_token']} tokens, {len(counts)} distinct -> {args.out}")


if __name__ == "__main__":
    main()
