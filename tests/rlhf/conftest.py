import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A 2-layer, hidden-32 random Llama with the real SmolLM2 tokenizer (built once per session)."""
    from rlhf.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
