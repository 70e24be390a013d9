#!/usr/bin/env bash
# make smoke: every stage through the CLI on a tiny random model, then a plain-transformers reload.
#   generate -> sft -> reward -> dpo -> rl -> onpolicy -> eval -> export, the smoke recipe (rlhf/recipes/smoke/),
#   outputs in runs/smoke/.
# The model is random, so the figures mean nothing; the point is that the stages chain and the export loads.
# Starts from a clean runs/smoke each time (a leftover run would resume instead of re-running). Under 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
RLHF=.venv/bin/rlhf
PY=.venv/bin/python
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1

start=$(date +%s)
rm -rf runs/smoke
$PY scripts/make_tiny_model.py runs/smoke/tiny-model
for stage in generate sft reward dpo rl onpolicy eval export; do
    echo "=== rlhf $stage ($(( $(date +%s) - start ))s)"
    $RLHF "$stage" --config smoke
done

echo "=== reload runs/smoke/export with plain transformers"
$PY - <<'PY'
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("runs/smoke/export")
tok = AutoTokenizer.from_pretrained("runs/smoke/export")
ids = tok.apply_chat_template([{"role": "user", "content": "Say hi."}], add_generation_prompt=True, return_tensors="pt",
                              return_dict=True)
out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
assert out.shape[1] > ids["input_ids"].shape[1], "the exported model generated nothing"
print("export reloads and generates:", repr(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)))
PY
echo "smoke passed in $(( $(date +%s) - start ))s"
