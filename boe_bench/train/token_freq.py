"""Build a background token-frequency table for PC-Sampler from a text corpus.

    python -m boe_bench.train.token_freq --corpus texts.jsonl --field question \
        --tokenizer GSAI-ML/LLaDA-8B-Base --out freq_llada.json
    python -m boe_bench.train.token_freq --corpus ... --tokenizer tiny   # the in-process char tokenizer

Any Hugging Face tokenizer id or local path works (it must be the tokenizer of the model the
table is used with). The corpus is a .jsonl file (text in ``--field``) or a plain .txt file
(paragraphs split on blank lines). Use openly licensed text; PC-Sampler's own tables were
counted over a large mixed corpus, so a bigger corpus gives frequencies closer to theirs.

Writes PC-Sampler's format {"num_token": N, "p_baseline_dict": {token_id: count}}, plus
"tokenizer" and "tokenizer_vocab" so a table built for one tokenizer is refused for another.
The shipped ``boe_bench/data/token_freq_char.json`` was built with
``--corpus <openai/grade-school-math train.jsonl> --field question --tokenizer tiny``.
"""
import argparse
import json
from collections import Counter
from pathlib import Path


def load_tokenizer(name: str):
    if name == "tiny":
        from boe_bench.models.tiny import build_char_tokenizer

        return build_char_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name)


def read_texts(path: Path, field: str) -> list[str]:
    if path.suffix == ".jsonl":
        return [json.loads(line)[field] for line in path.read_text().splitlines() if line.strip()]
    return [t for t in path.read_text().split("\n\n") if t.strip()]


def count_tokens(texts: list[str], tokenizer) -> Counter:
    counts = Counter()
    for text in texts:
        counts.update(tokenizer(text, add_special_tokens=False)["input_ids"])
    return counts


def frequency_table(counts: Counter, tokenizer_name: str, tokenizer_vocab: int) -> dict:
    return {
        "num_token": sum(counts.values()),
        "p_baseline_dict": {str(k): v for k, v in sorted(counts.items())},
        "tokenizer": tokenizer_name,
        "tokenizer_vocab": tokenizer_vocab,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", required=True, help=".jsonl (use --field) or plain .txt")
    parser.add_argument("--field", default="text")
    parser.add_argument("--tokenizer", required=True, help="HF tokenizer id/path, or 'tiny'")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    tokenizer = load_tokenizer(args.tokenizer)
    texts = read_texts(Path(args.corpus), args.field)
    counts = count_tokens(texts, tokenizer)
    table = frequency_table(counts, args.tokenizer, len(tokenizer))
    Path(args.out).write_text(json.dumps(table))
    print(f"{len(texts)} texts, {table['num_token']} tokens, {len(counts)} distinct -> {args.out}")


if __name__ == "__main__":
    main()
