"""GGUF for llama.cpp and Ollama: `rlhf export --gguf q8_0` (or f16, bf16, f32).

The conversion is llama.cpp's own `convert_hf_to_gguf.py`, taken from a registry package rather than
copied into this repository: the source distribution of `llama-cpp-python` (the llama.cpp bindings on
PyPI) carries llama.cpp's tree, converter and its `gguf-py` included, under vendor/llama.cpp. On first
use `pip download` fetches that sdist (about 75 MB, pinned below) and the converter's files (about 2 MB)
are kept under $RLHF_CACHE/llama.cpp-<version>; no compiler is needed. The converter runs in a child
process with its own `gguf-py`, which matches it, while this process keeps the `gguf` package
transformers reads GGUF files with. `RLHF_LLAMA_CPP=/path/to/llama.cpp` uses a llama.cpp checkout instead.

Next to the .gguf goes an Ollama Modelfile: FROM the file, the chat template in Ollama's Go template
syntax (ChatML models such as SmolLM2), the template's default system prompt, and the end-of-turn token
as a stop word. `ollama create NAME -f Modelfile` in the export folder imports it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from rlhf.errors import RlhfError

# The llama-cpp-python release whose vendored llama.cpp converter is used (llama.cpp of 2026-10).
LLAMA_CPP_PYTHON = "0.3.36"
GGUF_TYPES = ("f16", "q8_0", "bf16", "f32")
# What the converter needs of the llama.cpp tree (the rest, C/C++ sources, stays in the sdist).
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion", "gguf-py", "LICENSE")

CHATML_TEMPLATE = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""


def converter_dir() -> Path:
    """A folder with llama.cpp's convert_hf_to_gguf.py (fetched from PyPI's llama-cpp-python sdist once)."""
    from rlhf.models import cache_dir

    own = os.environ.get("RLHF_LLAMA_CPP")
    if own:
        if not (Path(own) / "convert_hf_to_gguf.py").is_file():
            raise RlhfError(f"RLHF_LLAMA_CPP={own}: no convert_hf_to_gguf.py there (give a llama.cpp checkout)")
        return Path(own)
    target = cache_dir() / f"llama.cpp-{LLAMA_CPP_PYTHON}"
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"[rlhf export] fetching llama.cpp's GGUF converter: pip download llama-cpp-python=={LLAMA_CPP_PYTHON} "
          f"(source distribution, ~75 MB, once) -> {target}", flush=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check",
               "-d", tmp, f"llama-cpp-python=={LLAMA_CPP_PYTHON}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        sdists = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if done.returncode != 0 or not sdists:
            raise RlhfError(f"could not fetch llama.cpp's converter with `{' '.join(cmd[2:])}` (a package registry is "
                            f"needed once; or set RLHF_LLAMA_CPP to a llama.cpp checkout):\n{done.stderr.strip()[-1500:]}")
        staging = Path(tmp) / "llama.cpp"
        prefix = f"{sdists[0].name[: -len('.tar.gz')]}/vendor/llama.cpp/"
        with tarfile.open(sdists[0]) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)
                       and m.name[len(prefix):].split("/")[0] in CONVERTER_PARTS and (m.isfile() or m.isdir())]
            for m in members:
                m.name = m.name[len(prefix):]
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12 / 3.11.4
            tar.extractall(staging, members=members, **safe)
        if not (staging / "convert_hf_to_gguf.py").is_file():
            raise RlhfError(f"{sdists[0].name} has no vendor/llama.cpp/convert_hf_to_gguf.py")
        try:
            os.rename(staging, target)  # atomic; a concurrent fetch that won leaves its folder
        except OSError:
            pass
    return target


def convert_to_gguf(model_dir: Path, outfile: Path, outtype: str) -> Path:
    """Run llama.cpp's converter on a Hugging Face folder; its log goes to <outfile>.log."""
    if outtype not in GGUF_TYPES:
        raise RlhfError(f"gguf: type must be one of {', '.join(GGUF_TYPES)}; got {outtype!r}")
    if importlib.util.find_spec("sentencepiece") is None:  # the converter imports it for every Llama vocabulary
        raise RlhfError("gguf: llama.cpp's converter needs the sentencepiece package: pip install sentencepiece")
    script = converter_dir() / "convert_hf_to_gguf.py"
    log = outfile.with_suffix(".log")
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # use the converter's own gguf-py
    with log.open("w") as fh:
        done = subprocess.run([sys.executable, str(script), str(model_dir), "--outfile", str(outfile),
                               "--outtype", outtype], stdout=fh, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0 or not outfile.is_file():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RlhfError(f"gguf: llama.cpp's converter failed on {model_dir} (log {log}):\n{tail}")
    return outfile


def default_system_prompt(chat_template: str) -> str | None:
    """The system turn a ChatML template inserts when a conversation has none (SmolLM2 has one), if any."""
    m = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", chat_template or "", re.S)
    return m.group(1) if m and "{{" not in m.group(1) else None


def write_modelfile(out: Path, gguf_file: Path, tokenizer) -> Path:
    """An Ollama Modelfile for the GGUF: the chat template, its default system prompt, the stop token."""
    template = tokenizer.chat_template or ""
    lines = [f"# Ollama: `ollama create {out.name} -f Modelfile` in this folder, then `ollama run {out.name}`",
             f"FROM ./{gguf_file.name}"]
    if "<|im_start|>" in template:
        lines.append(f'TEMPLATE """{CHATML_TEMPLATE}"""')
        system = default_system_prompt(template)
        if system:
            lines.append(f'SYSTEM """{system}"""')
    else:
        lines.append("# not a ChatML template: Ollama reads the chat template stored in the GGUF")
    stops = [t for t in dict.fromkeys([tokenizer.eos_token, "<|im_end|>" if "<|im_end|>" in template else None]) if t]
    lines += [f'PARAMETER stop "{t}"' for t in stops]
    path = out / "Modelfile"
    path.write_text("\n".join(lines) + "\n")
    return path


def check_gguf(out: Path, gguf_file: Path, prompt: str, max_new_tokens: int) -> dict[str, Any]:
    """Reload the GGUF with transformers (`gguf_file=`, dequantized) beside the safetensors export; compare
    the next-token logits on the check prompt and the greedy continuations."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    reference = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    loaded = AutoModelForCausalLM.from_pretrained(out, gguf_file=gguf_file.name, dtype=torch.float32)
    # the vocabulary stored in the GGUF tokenizes the chat-formatted prompt to the same ids
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    gguf_tokenizer = AutoTokenizer.from_pretrained(out, gguf_file=gguf_file.name)
    same_tokens = gguf_tokenizer(text, add_special_tokens=False)["input_ids"] == ids["input_ids"][0].tolist()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        a, b = reference(**ids).logits[0, -1], loaded(**ids).logits[0, -1]
        greedy = [m.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)[0].tolist()
                  for m in (reference, loaded)]
    return {"file": gguf_file.name, "bytes": gguf_file.stat().st_size, "tokenizer_matches": same_tokens,
            "max_logit_diff": float((a - b).abs().max()), "logit_scale": float(a.abs().max()),
            "greedy_matches": greedy[0] == greedy[1], "greedy_new_tokens": len(greedy[0]) - ids["input_ids"].shape[1]}


def export_gguf(out: Path, outtype: str, tokenizer, prompt: str, max_new_tokens: int) -> dict[str, Any]:
    """<out>/<name>-<type>.gguf from the exported folder, an Ollama Modelfile, and the round-trip figures."""
    gguf_file = convert_to_gguf(out, out / f"{out.name}-{outtype}.gguf", outtype)
    modelfile = write_modelfile(out, gguf_file, tokenizer)
    figures = check_gguf(out, gguf_file, prompt, max_new_tokens)
    print(f"[rlhf export] {gguf_file} ({figures['bytes'] / 1e6:.1f} MB), {modelfile.name}; reloaded: max logit "
          f"difference {figures['max_logit_diff']:.4f} (logits up to {figures['logit_scale']:.2f}), greedy output "
          f"{'identical' if figures['greedy_matches'] else 'different'}", flush=True)
    return {**figures, "type": outtype, "modelfile": modelfile.name, "converter": f"llama.cpp via llama-cpp-python=={LLAMA_CPP_PYTHON}"}
