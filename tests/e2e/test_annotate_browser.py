"""The annotation page in a real browser against a real `labeler serve`: keyboard-only ranking lands in
the database (SQLite, and PostgreSQL when configured); hostile model output stays inert text; the page looks right (screenshot for the README)."""

import pytest
from sqlalchemy import select

from labeler.models import Annotation

pytestmark = pytest.mark.e2e

PLAIN_TASKS = [
    {"prompt": f"Question {i}", "responses": [{"text": f"answer {i}.{j}", "model": "m"} for j in range(3)]} for i in range(2)
]


def card_ids(page) -> list[int]:
    return [int(x) for x in page.eval_on_selector_all("article.response", "els => els.map(e => e.dataset.rid)")]


def stored_rankings(db) -> dict[int, dict]:
    with db.read() as session:
        return {a.task_id: a.ranking for a in session.scalars(select(Annotation))}


def test_keyboard_only_ranking_is_stored(page, server, seed, login, db):
    seed(users=[("ann", "annotator")], project=dict(name="demo", k=3, criteria=["helpfulness"]), tasks=PLAIN_TASKS)
    login(page, server, "ann")
    page.goto(f"{server}/projects/demo/annotate")
    first_task = int(page.get_attribute("#annotate-form", "data-task-id"))
    a, b, c = card_ids(page)

    page.locator("body").focus()
    for key in ("3", "1", "2"):  # third card best, then first, then second
        page.keyboard.press(key)
    assert page.inner_text("#ranking-status") == "complete: Enter submits"
    page.keyboard.press("Enter")
    # (not wait_for_function: the page's CSP forbids the eval it uses, which is the point of the CSP)
    page.wait_for_selector(f"#annotate-form:not([data-task-id='{first_task}'])")
    assert stored_rankings(db)[first_task] == {str(c): 1, str(a): 2, str(b): 3}
    assert page.inner_text("#progress-done") == "1"

    # Second task: a tie ('t' then a number), Backspace undo, and Enter ranking the last one last.
    second_task = int(page.get_attribute("#annotate-form", "data-task-id"))
    a, b, c = card_ids(page)
    for key in ("1", "3", "Backspace", "t", "2"):  # 1 best, 3 picked and undone, 2 tied with 1
        page.keyboard.press(key)
    page.keyboard.press("Enter")  # 3 is the only one left: it becomes rank 2
    page.wait_for_selector("text=Nothing left to label")
    rankings = stored_rankings(db)
    assert rankings[second_task] == {str(a): 1, str(b): 1, str(c): 2}
    with db.read() as session:
        seconds = list(session.scalars(select(Annotation.seconds_spent)))
    assert all(s > 0 for s in seconds)  # measured by the page

    # Re-open the first label from the history and change it: the page sends the version it shows.
    with db.read() as session:
        first_id = session.scalar(select(Annotation.id).where(Annotation.task_id == first_task))
    page.goto(f"{server}/projects/demo/annotations/{first_id}")
    a, b, c = card_ids(page)
    page.locator("body").focus()
    for key in ("Backspace", "Backspace", "Backspace", "1", "2", "3"):
        page.keyboard.press(key)
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Nothing left to label")
    with db.read() as session:
        row = session.get(Annotation, first_id)
        assert row.ranking == {str(a): 1, str(b): 2, str(c): 3} and row.version == 2


def test_hostile_response_renders_as_inert_text(page, server, seed, login):
    script, img = "<script>alert(1)</script>", "<img src=x onerror=alert(1)>"
    tasks = [{"prompt": [{"role": "user", "content": "Say hi <img src=y onerror=alert(2)>"}],
              "responses": [{"text": f"before {script} after"}, {"text": f"look: {img}"}, {"text": "[click](javascript:alert(3))"}]}]
    seed(users=[("ann", "annotator")], project=dict(name="xss", k=3), tasks=tasks)
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    login(page, server, "ann")
    page.goto(f"{server}/projects/xss/annotate")
    page.wait_for_selector("article.response")
    page.click("article.response a")  # a javascript: link would fire here
    page.wait_for_timeout(500)
    assert dialogs == []
    assert page.locator(".response-body script, .response-body img, .conversation img, .response-body [onerror]").count() == 0
    assert page.locator(".response-body a[href]").count() == 0
    bodies = page.locator(".response-body").all_inner_texts()
    assert any(script in t for t in bodies) and any(img in t for t in bodies)  # shown to the annotator as text


def test_annotation_page_layout_and_screenshot(page, server, seed, login, tmp_path, keep_screenshot):
    prompt = [
        {"role": "system", "content": "You are a concise Python tutor."},
        {"role": "user", "content": "How do I read a file line by line in Python without loading it all into memory?"},
    ]
    responses = [
        {"text": "Iterate over the file object; it yields one line at a time:\n\n```python\nwith open(\"data.txt\") as f:\n"
                 "    for line in f:\n        process(line.rstrip(\"\\n\"))\n```\n\nThe `with` block closes the file even on errors."},
        {"text": "Use `f.read().splitlines()`:\n\n```python\nlines = open(\"data.txt\").read().splitlines()\n```\n\n"
                 "This reads the **whole file** first, so it is not what you asked for on large files."},
        {"text": "You can use `readline()` in a loop:\n\n```python\nwith open(\"data.txt\") as f:\n    while (line := f.readline()):\n"
                 "        process(line)\n```\n\n| approach | memory |\n|---|---|\n| `for line in f` | one line |\n| `readline()` | one line |"},
    ]
    seed(users=[("ann", "annotator")],
         project=dict(name="python-help", k=3, criteria=["helpfulness", "correctness"],
                      guidelines="Prefer answers that are **correct**, then concise."),
         tasks=[{"prompt": prompt, "responses": responses}] + PLAIN_TASKS)
    login(page, server, "ann")
    page.goto(f"{server}/projects/python-help/annotate")
    boxes = [page.locator("article.response").nth(i).bounding_box() for i in range(3)]
    assert abs(boxes[0]["y"] - boxes[2]["y"]) < 2 and boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"]  # side by side
    assert page.locator(".response-body pre code").count() == 3 and page.locator(".response-body table").count() == 1
    page.locator("body").focus()
    page.keyboard.press("2")
    page.keyboard.press("3")
    page.locator("article.response").nth(1).locator("input[type=radio][value='5']").nth(0).check(force=True)
    page.locator("article.response").nth(1).locator("input[type=radio][value='4']").nth(1).check(force=True)
    assert page.locator("#rank-list .chip").count() == 2 and page.locator("#unranked .chip").count() == 1
    png = tmp_path / "annotate.png"
    page.screenshot(path=str(png), full_page=True)
    assert png.stat().st_size > 20_000
    keep_screenshot(png)
