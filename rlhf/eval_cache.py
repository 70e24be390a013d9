"""`rlhf eval`'s cache of a policy's sampled answers, so that the same answers are not generated twice.

In every quickstart run the base model answers the same held-out prompts with the same settings; eval keeps
what that produced (the judged responses with their token ids, the KL sample, and the policy's own
log-probabilities of the KL sample) in one JSON file per policy, named by a hash of everything that
determines it:
  - the policy: a content hash (sha256) of the files a load reads from its folder (weights, config,
    generation config, tokenizer, chat template), and of its base's, down an adapter chain;
  - the prompts (texts and order), seed, max_new_tokens, temperature, top_p, batch_size (padding changes the
    floating-point sums), the generation dtype, and the KL sample's size and length;
  - torch, transformers and peft versions, the CPU and thread count, and the source of eval's sampling code.
What the reward model makes of the answers is never cached: the judge changes every round.

The default folder is $RLHF_EVAL_CACHE, else $RLHF_CACHE/eval (~/.cache/rlhf-loop/eval, beside the embedded
model's conversion): a run folder is new for every run, so a cache inside one would never be hit again.
Weight files are hashed once: the hash is kept in the cache folder (file-hashes.json) by path, size, inode and
modification time; nothing is ever written into a model folder. Entries are written atomically (temporary file,
then rename); an unreadable or mismatched entry is reported and answered again. The newest MAX_ENTRIES stay.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

CACHE_FORMAT = 1
MAX_ENTRIES = 200  # about 150 KB each for the quickstart's 92 prompts

# What from_pretrained (model, adapter, tokenizer) reads from a folder; run records beside them are not inputs.
MODEL_FILES = {
    "config.json", "generation_config.json", "adapter_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json",
}
WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json")
WEIGHT_BIN_PREFIXES = ("pytorch_model", "adapter_model")


def default_cache_dir() -> Path:
    from rlhf.models import cache_dir

    folder = os.environ.get("RLHF_EVAL_CACHE")
    return Path(folder).expanduser() if folder else cache_dir() / "eval"


def model_files(folder: Path) -> list[Path]:
    """The files of a model or adapter folder that loading it reads, sorted by name."""
    def read_by_loaders(p: Path) -> bool:
        name = p.name
        return (name in MODEL_FILES or name.endswith(WEIGHT_SUFFIXES)
                or (name.startswith(WEIGHT_BIN_PREFIXES) and name.endswith((".bin", ".bin.index.json"))))

    return sorted((p for p in folder.iterdir() if p.is_file() and read_by_loaders(p)), key=lambda p: p.name)


class FileHashes:
    """sha256 of files, remembered in <cache>/file-hashes.json by (path, size, inode, mtime): the embedded
    model's 538 MB are read once, not on every eval."""

    def __init__(self, folder: Path):
        self.path = folder / "file-hashes.json"
        try:
            known = json.loads(self.path.read_text())
        except (OSError, ValueError):
            known = {}  # missing or broken: hashes are computed again
        self.known: dict[str, dict[str, Any]] = known if isinstance(known, dict) else {}
        self.changed = False

    def sha256(self, path: Path) -> str:
        path = path.resolve()
        st = path.stat()
        stamp = {"size": st.st_size, "inode": st.st_ino, "mtime_ns": st.st_mtime_ns}
        seen = self.known.get(str(path))
        if isinstance(seen, dict) and all(seen.get(k) == v for k, v in stamp.items()) and seen.get("sha256"):
            return seen["sha256"]
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(1 << 22):
                digest.update(block)
        self.known[str(path)] = {**stamp, "sha256": digest.hexdigest()}
        self.changed = True
        return digest.hexdigest()

    def save(self) -> None:
        if self.changed:
            write_atomic(self.path, json.dumps(self.known, indent=1, sort_keys=True))
            self.changed = False


def policy_fingerprint(path: str, hashes: FileHashes) -> dict[str, Any] | None:
    """The content hashes of a policy folder's model files, with its base's for an adapter; None for a hub id
    (nothing local to hash: not cached)."""
    from rlhf.models import adapter_base, is_adapter, resolve_model_path

    folder = Path(path)
    if not folder.is_dir():
        return None
    fingerprint: dict[str, Any] = {"files": {p.name: hashes.sha256(p) for p in model_files(folder)}}
    if is_adapter(path):
        base = policy_fingerprint(resolve_model_path(adapter_base(path)), hashes)
        if base is None:
            return None
        fingerprint["base"] = base
    return fingerprint


def code_hash() -> str:
    """The source of the code that turns a model and prompts into cached answers: a change to it is a miss."""
    import inspect

    from rlhf import eval as evaluation
    from rlhf import generate, models

    parts = [evaluation.sample_responses, evaluation.token_logprobs, evaluation.eos_ids, generate.build_messages,
             models.generation_mode, models.load_causal_lm]
    try:
        source = "".join(inspect.getsource(f) for f in parts)
    except (OSError, TypeError):
        from rlhf import __version__

        source = __version__
    return hashlib.sha256(source.encode()).hexdigest()


def environment() -> dict[str, Any]:
    """Software and machine: another version or CPU can sample other tokens from the same weights."""
    import peft
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "cpu": cpu, "threads": torch.get_num_threads(), "code": code_hash()}


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def valid_samples(samples: Any, count: int) -> bool:
    """`count` samples, each with its prompt's and its response's token ids and a text."""
    return isinstance(samples, list) and len(samples) == count and all(
        isinstance(s, dict) and isinstance(s.get("text"), str)
        and all(isinstance(s.get(k), list) and all(type(t) is int for t in s[k]) for k in ("prompt_ids", "response_ids"))
        for s in samples)


def valid_logprobs(logprobs: Any, samples: list[dict[str, Any]]) -> bool:
    """One log-probability per response token of every sample."""
    return isinstance(logprobs, list) and len(logprobs) == len(samples) and all(
        isinstance(lp, list) and len(lp) == len(s["response_ids"]) and all(isinstance(x, (int, float)) for x in lp)
        for lp, s in zip(logprobs, samples))


class AnswerCache:
    """One eval's look-ups and stores: `settings` is what every policy's answers share (prompts and
    prompt_count, sampling, kl_sample: {prompts, max_new_tokens} or None); a policy's entry adds the software
    and its own fingerprint. `hits` lists the policies answered from the cache, in order."""

    def __init__(self, folder: str | os.PathLike, settings: dict[str, Any]):
        self.folder = Path(folder).expanduser()
        self.settings = {"format": CACHE_FORMAT, **settings, "environment": environment()}
        self.hashes = FileHashes(self.folder)
        self.hits: list[str] = []
        self.keys: dict[str, tuple[str, dict[str, Any]] | None] = {}

    def key(self, path: str) -> tuple[str, dict[str, Any]] | None:
        """The entry's file name (a hash of the fingerprint) and the fingerprint; None when the policy is not
        a local folder or cannot be read."""
        if path not in self.keys:
            try:
                policy = policy_fingerprint(path, self.hashes)
                if policy is None:
                    print(f"[rlhf eval] {path} is not a local model folder; its answers are not cached", flush=True)
            except OSError as exc:
                print(f"[rlhf eval] warning: cannot hash {path} for the answer cache ({exc})", flush=True)
                policy = None
            try:
                self.hashes.save()
            except OSError:
                pass  # the remembered hashes only save time
            fingerprint = {**self.settings, "policy": policy}
            text = json.dumps(fingerprint, sort_keys=True, ensure_ascii=False)
            self.keys[path] = None if policy is None else (hashlib.sha256(text.encode()).hexdigest(), fingerprint)
        return self.keys[path]

    def load(self, name: str, path: str) -> dict[str, Any] | None:
        """The entry for this policy, or None (a miss; an unusable entry is reported)."""
        found = self.key(path)
        if found is None:
            return None
        key, fingerprint = found
        file = self.folder / f"{key}.json"
        if not file.is_file():
            return None
        try:
            entry = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"[rlhf eval] warning: cache entry {file} is unreadable ({exc}); answering again", flush=True)
            return None
        if not isinstance(entry, dict) or entry.get("fingerprint") != fingerprint:
            print(f"[rlhf eval] warning: cache entry {file} was written for other inputs; answering again", flush=True)
            return None
        samples, kl = entry.get("samples"), entry.get("kl_samples")
        kl_sample = self.settings["kl_sample"]  # None: the KL is estimated on the main samples
        if not (valid_samples(samples, self.settings["prompt_count"]) and (kl is None) == (kl_sample is None)
                and (kl is None or valid_samples(kl, kl_sample["prompts"]))
                and valid_logprobs(entry.get("own_logprobs"), samples if kl is None else kl)):
            print(f"[rlhf eval] warning: cache entry {file} is incomplete or malformed; answering again", flush=True)
            return None
        os.utime(file)  # recently used: kept by prune
        self.hits.append(name)
        print(f"[rlhf eval] {name}: answers from the cache ({file})", flush=True)
        return entry

    def store(self, path: str, samples: list[dict[str, Any]], kl_samples: list[dict[str, Any]] | None,
              own_logprobs: list[list[float]]) -> None:
        """Write this policy's entry (kl_samples None: the KL sample is `samples`); a failure only warns."""
        try:
            found = self.key(path)
            if found is None:
                return
            key, fingerprint = found
            entry = {"fingerprint": fingerprint, "samples": samples, "kl_samples": kl_samples,
                     "own_logprobs": own_logprobs}
            write_atomic(self.folder / f"{key}.json", json.dumps(entry, ensure_ascii=False))
            self.prune()
        except OSError as exc:
            print(f"[rlhf eval] warning: could not write the answer cache in {self.folder} ({exc})", flush=True)

    def prune(self, keep: int = MAX_ENTRIES) -> None:
        entries = sorted((p for p in self.folder.glob("*.json") if p.name != self.hashes.path.name),
                         key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for old in entries[keep:]:
            old.unlink(missing_ok=True)
