#!/usr/bin/env bash
# make quickstart (for now): SFT -> DPO -> export on the embedded SmolLM2-135M-Instruct, on the CPU.
# Data: data/quickstart/{sft,preferences}.jsonl (34 hand-written pairs). Configs: configs/quickstart/*.yaml.
# Each stage resumes from its last checkpoint if interrupted; delete runs/quickstart to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
RLHF=.venv/bin/rlhf
PY=.venv/bin/python
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

start=$(date +%s)
$RLHF sft --config configs/quickstart/sft.yaml
$RLHF dpo --config configs/quickstart/dpo.yaml
$RLHF export --config configs/quickstart/export.yaml
elapsed=$(( $(date +%s) - start ))

$PY - "$elapsed" <<'PY'
import json, sys
sft = json.load(open("runs/quickstart/sft/summary.json"))
dpo = json.load(open("runs/quickstart/dpo/summary.json"))
exp = json.load(open("runs/quickstart/export/summary.json"))
f = lambda v: "-" if v is None else f"{v:.4f}"
print()
print("quickstart done in %ss" % sys.argv[1])
print(f"  {'SFT loss (first -> last)':<30} {f(sft['first_loss'])} -> {f(sft['last_loss'])}")
print(f"  {'DPO loss (first -> last)':<30} {f(dpo['first_loss'])} -> {f(dpo['last_loss'])}")
print(f"  {'DPO loss (first/last quarter)':<30} {f(dpo['first_quarter_mean_loss'])} -> {f(dpo['last_quarter_mean_loss'])}")
print(f"  {'DPO reward accuracy (last)':<30} {f(dpo['last_reward_accuracy'])}")
print(f"  {'exported model':<30} runs/quickstart/export")
print(f"  {'check answer':<30} {exp['check_response'][:70]!r}")
PY
