"""Fixtures of the rlhf suite (the tiny model itself is tests/conftest.py's `tiny_model`)."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def write_reward_folder(tiny_model: str, out: Path, accuracy: float | None) -> str:
    """A full-model reward folder (random score head) on the tiny model, as `rlhf reward --use_peft false` saves,
    with the summary.json whose held-out accuracy the quality gate reads (none when `accuracy` is None)."""
    from transformers import AutoTokenizer

    from rlhf.reward import build_reward_model

    tok = AutoTokenizer.from_pretrained(tiny_model)
    build_reward_model(tiny_model, tok.pad_token_id).save_pretrained(out)
    tok.save_pretrained(out)
    if accuracy is not None:
        (out / "summary.json").write_text(json.dumps({"heldout_accuracy": accuracy, "heldout_rows": 20,
                                                      "heldout_source": "eval_file labels/preferences/test"}))
    return str(out)


@pytest.fixture(scope="session")
def smoke_loop_run(tiny_model, tmp_path_factory) -> Path:
    """The smoke recipe's loop, two rounds on 8 train and 3 held-out prompts with an empty eval cache, run once
    (a minute of stage processes) for the tests that read it: test_loop checks it, test_portable moves it."""
    from rlhf.cli import main as rlhf_main

    base = tmp_path_factory.mktemp("smoke-loop")
    out = base / "loop"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)  # configs/smoke/loop.yaml, the former path, still names the shipped smoke recipe
        mp.setenv("RLHF_EVAL_CACHE", str(base / "eval-cache"))  # empty: round 1 answers everything
        assert rlhf_main(["loop", "--config", "configs/smoke/loop.yaml", "--model_name_or_path", tiny_model,
                          "--output_dir", str(out), "--rounds", "2", "--train_prompts", "8", "--heldout_prompts", "3"]) == 0
    return out


@pytest.fixture(scope="module")
def reward_folder(tiny_model, tmp_path_factory) -> str:
    return write_reward_folder(tiny_model, tmp_path_factory.mktemp("rm") / "reward", accuracy=0.75)


def write_labels(out: Path, tasks: int = 16, edit_every: int = 4) -> dict:
    """A real labels folder (`labeler export` on a SQLite labeler database): `tasks` arithmetic prompts with two
    answers each, ranked right-first by one annotator who also edits every `edit_every`-th task; a third of
    the prompts in the test split. Returns export_project's result (id, content_hash, counts, path)."""
    from labeler.accounts import get_or_create_user
    from labeler.export import export_project
    from labeler.models import Annotation, Task
    from labeler.projects import find_project
    from rlhf.label import open_labeler, push_tasks

    out.parent.mkdir(parents=True, exist_ok=True)
    db = open_labeler(f"sqlite:///{out.parent / (out.name + '.db')}")
    push_tasks(db, "arith", [{"prompt": f"What is {i} plus {i}?", "responses": [
        {"text": f"{2 * i}.", "model": "m"}, {"text": f"Maybe {i + 3}.", "model": "m"}]} for i in range(tasks)], k=2, overlap=1)
    with db.write() as session:
        user, _ = get_or_create_user(session, "ann", "pw-for-tests")
        project = find_project(session, "arith")
        for n, task in enumerate(session.query(Task).filter_by(project_id=project.id).order_by(Task.id)):
            right, wrong = sorted(task.responses, key=lambda r: r.position)
            session.add(Annotation(task_id=task.id, user_id=user.id, ranking={str(right.id): 1, str(wrong.id): 2},
                                   display_order=[right.id, wrong.id],
                                   edited_response=f"The answer is {right.text}" if n % edit_every == 0 else None))
    result = export_project(db, "arith", out, test_fraction=0.3)
    db.dispose()
    return result


@pytest.fixture(scope="module")
def labels_folder(tmp_path_factory) -> dict:
    """A labels folder written by `labeler export` (see write_labels)."""
    return write_labels(tmp_path_factory.mktemp("labels") / "labels")
