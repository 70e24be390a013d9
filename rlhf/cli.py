"""`rlhf`: the command line of the training pipeline. Each stage is a module with `main(argv)`.

    rlhf generate --config smoke
    rlhf sft      --config smoke --learning_rate 1e-4   (a recipe name, or any YAML file)
    rlhf dpo --help
"""

from __future__ import annotations

import importlib
import os
import sys

STAGES = {
    "generate": "sample K candidate responses per prompt from a policy; write labeler tasks (JSONL)",
    "sft": "supervised fine-tuning (TRL SFTTrainer) on prompt/completion or messages data",
    "reward": "train a reward model (TRL RewardTrainer) on preferences; report held-out accuracy",
    "dpo": "direct preference optimisation (TRL DPOTrainer) from an SFT checkpoint",
    "rl": "online RL against the reward model (TRL GRPOTrainer, or RLOOTrainer)",
    "onpolicy": "on-policy DPO: sample from the policy, pair by the reward model, DPO; iterated",
    "eval": "compare policies on held-out prompts: reward, win rate, KL, length; plots",
    "arena": "blind A/B votes between checkpoints in the labeler; win rates and Bradley-Terry scores",
    "export": "merge LoRA, save a Hugging Face folder with tokenizer, chat template and model card",
    "loop": "the closed loop: generate -> label -> labels -> sft -> reward -> dpo/rl -> eval -> export",
    "simulate": "simulated annotators: label a labeler project's tasks through its API",
}


# what the [train] extra brings; a missing one means a labeler-only install
TRAIN_PACKAGES = {"torch", "transformers", "trl", "peft", "accelerate", "gguf", "yaml", "tqdm", "tensorboard", "matplotlib", "requests"}


def missing_training_packages(command: str, name: str) -> int:
    """The base install is the labeler alone (pyproject.toml): the stages need the [train] extra."""
    print(f"rlhf {command}: needs the training packages ({name} is missing): pip install 'rlhf-loop[train]' (or make setup)",
          file=sys.stderr)
    return 2


def usage() -> str:
    from rlhf.config import RECIPES, recipe_names

    width = max(map(len, STAGES))
    lines = [
        "usage: rlhf <command> [--config FILE.yaml] [--key value ...]",
        "",
        "Train and align language models on human preferences, thin over TRL.",
        "Every stage reads a YAML config (TRL's field names) and takes command-line overrides.",
        "",
        "commands:",
    ]
    lines += [f"  {name.ljust(width)}  {text}" for name, text in STAGES.items()]
    lines += [
        "",
        "Run `rlhf <command> --help` for a command's options.",
        "Embedded default model: smollm2-135m-instruct",
        f"Shipped recipes (--config NAME): {', '.join(recipe_names())}; e.g. `rlhf loop --config quickstart`,",
        f"  `rlhf sft --config smoke`. Their YAML files and example data: {RECIPES}",
    ]
    return "\n".join(lines)


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory in the process instead of handing it back to the kernel.

    Training on CPU allocates tensors of hundreds of MB every step (a batch's logits over a 49k vocabulary);
    glibc serves each with a fresh mmap and unmaps it on free, so the kernel zeroes every page again on the
    next step. That page clearing took ~40% of a training step here (perf: clear_page_erms); with mmap off
    and no trimming the same steps run 1.22x faster (scripts/bench_malloc.py: 7.95 -> 6.49 s). A no-op off glibc.
    """
    if not sys.platform.startswith("linux") or os.environ.get("RLHF_KEEP_MALLOC") == "1":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def run_measured(module, command: str, argv: list[str]) -> int:
    """The command's `main`; where the loop asked (rlhf.resources.RESOURCES_ENV names a file), its seconds and
    peak resident memory measured in this process go to that file as JSON (the loop's stage processes)."""
    from rlhf.resources import RESOURCES_ENV, measure, write_resources

    target = os.environ.pop(RESOURCES_ENV, None)
    if not target:
        return int(module.main(argv) or 0)
    record = {"stage": command, "pid": os.getpid()}
    with measure(record):
        code = int(module.main(argv) or 0)
    if code == 0:
        write_resources(target, record)
    return code


def main(argv: list[str] | None = None) -> int:
    from rlhf.errors import RlhfError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from rlhf import __version__

        print(f"rlhf-loop {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in STAGES:
        print(f"rlhf: unknown command '{command}'\n\n{usage()}", file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    keep_freed_memory()
    try:
        module = importlib.import_module(f"rlhf.{command}")
    except ModuleNotFoundError as exc:
        # The training packages are the [train] extra: a labeler-only install says how to get them.
        if exc.name and exc.name.split(".")[0] in TRAIN_PACKAGES:
            return missing_training_packages(command, exc.name)
        raise
    try:
        if command in ("sft", "reward", "dpo", "rl", "onpolicy", "loop"):
            from rlhf.resources import small_logprob_tiles

            small_logprob_tiles()  # TRL's log-prob tiles sized for the CPU: less than half the memory
        return run_measured(module, command, rest)
    except ModuleNotFoundError as exc:  # stages import TRL and friends inside main()
        if exc.name and exc.name.split(".")[0] in TRAIN_PACKAGES:
            return missing_training_packages(command, exc.name)
        raise
    except RlhfError as exc:
        print(f"rlhf {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rlhf {command}: interrupted; re-run the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
