"""`make smoke` end to end: scripts/smoke.sh runs every stage through the CLI on a tiny model (minutes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_script_chains_every_stage_and_the_export_loads():
    if not (ROOT / ".venv" / "bin" / "rlhf").exists():
        pytest.skip("scripts/smoke.sh runs .venv/bin/rlhf; run `make setup` first")
    run = subprocess.run(["bash", str(ROOT / "scripts" / "smoke.sh")], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "smoke passed" in run.stdout

    runs = ROOT / "runs" / "smoke"
    reward = json.loads((runs / "reward" / "summary.json").read_text())
    assert 0.0 <= reward["heldout_accuracy"] <= 1.0 and reward["heldout_rows"] > 0
    assert any("kl" in json.loads(line) for line in (runs / "rl" / "metrics.jsonl").read_text().splitlines())
    onpolicy = json.loads((runs / "onpolicy" / "summary.json").read_text())
    assert [r["iteration"] for r in onpolicy["per_iteration"]] == [1, 2] and onpolicy["steps"] > 0
    assert all({"mean_reward", "kl_to_reference", "mean_length", "kept_pairs"} <= set(r) for r in onpolicy["per_iteration"])
    evaluation = json.loads((runs / "eval" / "summary.json").read_text())
    assert set(evaluation["policies"]) == {"base", "sft", "dpo", "rl"}
    assert (runs / "eval" / "rewards.png").is_file()

    # The export loads with plain transformers in a fresh interpreter (no rlhf import) and generates.
    check = (
        "import sys; from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); t = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "ids = t('Hello', return_tensors='pt')\n"
        "out = m.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=t.pad_token_id)\n"
        "assert out.shape[1] == ids['input_ids'].shape[1] + 4 or t.eos_token_id in out[0].tolist()\n"
        "assert t.chat_template, 'no chat template'\n"
        "print('ok')\n"
    )
    loaded = subprocess.run([sys.executable, "-c", check, str(runs / "export")], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert loaded.returncode == 0 and "ok" in loaded.stdout, loaded.stderr[-2000:]
