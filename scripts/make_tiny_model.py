"""Build the tiny random model that `make smoke` and the smoke configs use.

    .venv/bin/python scripts/make_tiny_model.py runs/smoke/tiny-model

A 2-layer, hidden-32 Llama (SmolLM2's architecture) with random weights and the real SmolLM2 tokenizer
and chat template: every stage runs on it in seconds. The output is plain HF, so any stage loads it.
"""

import sys

from rlhf.models import build_tiny_model

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_tiny_model.py OUT_DIR")
    print(build_tiny_model(sys.argv[1]))
