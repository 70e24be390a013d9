"""rlhf export --gguf: llama.cpp's own converter, an Ollama Modelfile, and a round trip through transformers."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf.cli import main as cli
from rlhf.gguf_export import default_system_prompt, write_modelfile


def test_modelfile_carries_the_chat_template(tiny_model, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    system = default_system_prompt(tokenizer.chat_template)
    assert system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    gguf = tmp_path / "model-q8_0.gguf"
    text = write_modelfile(tmp_path, gguf, tokenizer).read_text()
    assert "FROM ./model-q8_0.gguf\n" in text and f'SYSTEM """{system}"""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text
    # The Go template, with .System the default system prompt, renders a user turn as the Jinja template does.
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert rendered == f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert ('TEMPLATE """{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{- range .Messages }}'
            '<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"""') in text


@pytest.mark.parametrize("outtype, atol", [("q8_0", 0.05), ("f16", 2e-3)])
def test_export_gguf_round_trip(tiny_model, tmp_path, outtype, atol):
    import gguf

    out = tmp_path / "export"
    assert cli(["export", "--model_name_or_path", tiny_model, "--output_dir", str(out), "--gguf", outtype,
                "--max_new_tokens", "8"]) == 0
    path = out / f"export-{outtype}.gguf"
    assert path.read_bytes()[:4] == b"GGUF" and (out / "Modelfile").is_file()
    reader = gguf.GGUFReader(path)
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["tokenizer.chat_template"].contents() == AutoTokenizer.from_pretrained(tiny_model).chat_template

    # Reloaded on its own (transformers dequantizes it), the GGUF answers as the safetensors export does.
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("The quick brown fox jumps over", return_tensors="pt")
    plain = AutoModelForCausalLM.from_pretrained(out)
    loaded = AutoModelForCausalLM.from_pretrained(out, gguf_file=path.name, dtype=torch.float32)
    with torch.no_grad():
        a, b = plain(**ids).logits, loaded(**ids).logits
    assert a.shape == b.shape and torch.allclose(a, b, atol=atol) and not torch.equal(a, b)  # close, yet converted
    summary = json.loads((out / "summary.json").read_text())["gguf"]
    assert summary["type"] == outtype and summary["tokenizer_matches"] and summary["max_logit_diff"] < atol
    if outtype == "f16":  # near-exact weights: the same greedy tokens, even on a random model's flat logits
        assert summary["greedy_matches"]
    card = (out / "README.md").read_text()
    assert path.name in card and "- gguf" in card


def test_export_gguf_refuses_unknown_type(tiny_model, tmp_path, capsys):
    out = tmp_path / "export"
    assert cli(["export", "--model_name_or_path", tiny_model, "--output_dir", str(out), "--gguf", "q4_k"]) == 2
    assert "key 'gguf' must be one of f16, q8_0, bf16, f32; got 'q4_k'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_export_gguf_q8_0_on_the_embedded_model(tmp_path):
    """About 3 minutes on 2 cores: the 135M model exported (f32 safetensors), converted to Q8_0, reloaded twice."""
    out = tmp_path / "export"
    assert cli(["export", "--model_name_or_path", "smollm2-135m-instruct", "--output_dir", str(out), "--gguf", "q8_0",
                "--max_new_tokens", "24"]) == 0
    figures = json.loads((out / "summary.json").read_text())["gguf"]
    assert (out / "export-q8_0.gguf").stat().st_size > 100e6 and (out / "Modelfile").is_file()
    # a trained model's logits, unlike a random one's, are decisive: Q8_0 keeps the greedy answer
    assert figures["tokenizer_matches"] and figures["greedy_matches"] and figures["greedy_new_tokens"] >= 8
    assert figures["max_logit_diff"] < 0.05 * figures["logit_scale"]
