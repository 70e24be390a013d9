"""rlhf-loop training pipeline: one module per stage, thin over TRL 1.x.

Stages: generate, sft, reward, dpo, rl, eval, export. Run them as `rlhf <stage> --config FILE.yaml`.
"""

__version__ = "0.1.0"
