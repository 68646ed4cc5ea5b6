#!/usr/bin/python3
"""tokenizer_corpus.py OUT [BYTES]: writes the benchmark's mixed text corpus
(default 1 MiB): the conformance corpus strings (prose in many scripts, code,
CJK, emoji, numbers, URLs) shuffled with a fixed seed and joined into lines of
roughly paragraph length, repeated until BYTES. Deterministic."""
import json
import os
import random
import sys

here = os.path.dirname(os.path.abspath(__file__))
out = sys.argv[1]
target = int(sys.argv[2]) if len(sys.argv) > 2 else 1 << 20
corpus = [json.loads(l) for l in open(os.path.join(here, "..", "tests", "data", "tokenizer", "corpus.jsonl"), encoding="utf-8")]
corpus = [s.replace("\n", " ") for s in corpus if s.strip()]
rng = random.Random(1234)
lines, size = [], 0
while size < target:
    para = " ".join(rng.choice(corpus) for _ in range(rng.randint(2, 6)))
    data = para.encode("utf-8", "surrogatepass")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        continue
    lines.append(para)
    size += len(data) + 1
with open(out, "w", encoding="utf-8") as f:
    for l in lines:
        f.write(l + "\n")
