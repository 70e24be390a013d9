"""Quality figures for a project's dashboard and for the export's filters.

Per annotator:
- throughput_per_hour: annotations per hour of time spent on the annotation page (sum of
  `seconds_spent`), so breaks between sessions do not count against anyone.
- median_seconds: median time per annotation.
- gold_accuracy: share of the gold tasks they labeled where their ranking reproduces every pair the
  gold ranking orders (pairs the gold ranking ties are not scored); None without gold tasks.
- agreement: pairwise agreement (labeler.aggregate) with the other annotators on shared tasks.
- position_bias: share of their non-tie preferences that favour the response shown earlier
  (the left one when K = 2), from the stored display order; 0.5 means no bias.
Per project: Krippendorff's alpha (ordinal) over rankings and pairwise agreement, on tasks with two
or more annotations.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from itertools import combinations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from labeler.aggregate import compare_ranks, krippendorff_alpha_rankings, pairwise_agreement, rank_to_pairs, sort_key_id
from labeler.models import Annotation, Project, Task, User
from labeler.projects import find_project


def load_annotations(session: Session, project: Project) -> list[tuple[Annotation, Task, User]]:
    rows = session.execute(
        select(Annotation, Task, User).join(Task, Annotation.task_id == Task.id).join(User, Annotation.user_id == User.id).where(Task.project_id == project.id).order_by(Annotation.id)
    )
    return [tuple(r) for r in rows]


def str_keys(ranking: dict | None) -> dict[str, int]:
    return {str(k): v for k, v in (ranking or {}).items()}


def matches_gold(ranking: dict, gold: dict) -> bool:
    """True when `ranking` orders every pair the gold ranking orders the same way."""
    ranking = str_keys(ranking)
    return all(compare_ranks(ranking, better, worse) == ">" for better, worse in rank_to_pairs(str_keys(gold)))


def gold_accuracy_by_user(rows) -> dict[int, float | None]:
    hits: dict[int, list[bool]] = defaultdict(list)
    for ann, task, user in rows:
        hits.setdefault(user.id, [])
        if task.is_gold and task.gold_ranking:
            hits[user.id].append(matches_gold(ann.ranking, task.gold_ranking))
    return {uid: (sum(h) / len(h) if h else None) for uid, h in hits.items()}


def annotator_gold_accuracy(session: Session, project) -> dict[int, float | None]:
    """{user_id: gold accuracy} for every annotator with an annotation in the project."""
    return gold_accuracy_by_user(load_annotations(session, find_project(session, project)))


def position_preferences(ranking: dict, display_order: list) -> tuple[int, int]:
    """(preferences for the earlier-shown response, all non-tie preferences) in one annotation."""
    slot = {str(rid): i for i, rid in enumerate(display_order or [])}
    first = total = 0
    for better, worse in rank_to_pairs(str_keys(ranking)):
        if better in slot and worse in slot:
            total += 1
            first += slot[better] < slot[worse]
    return first, total


def agreement_with_others(user_id: int, by_task: dict[int, list[tuple[int, dict]]]) -> float | None:
    agree = total = 0
    for entries in by_task.values():
        mine = [r for uid, r in entries if uid == user_id]
        if not mine:
            continue
        for uid, other in entries:
            if uid == user_id:
                continue
            for a, b in combinations(sorted(set(mine[0]) & set(other), key=sort_key_id), 2):
                total += 1
                agree += compare_ranks(mine[0], a, b) == compare_ranks(other, a, b)
    return agree / total if total else None


def project_quality(session: Session, project) -> dict:
    """Project-level agreement and per-annotator figures (see the module docstring)."""
    project = find_project(session, project)
    rows = load_annotations(session, project)
    n_tasks = session.scalar(select(func.count()).select_from(Task).where(Task.project_id == project.id)) or 0
    by_task: dict[int, list[tuple[int, dict]]] = defaultdict(list)
    for ann, task, user in rows:
        by_task[task.id].append((user.id, str_keys(ann.ranking)))
    shared_units = [[r for _, r in entries] for entries in by_task.values() if len(entries) >= 2]
    gold = gold_accuracy_by_user(rows)

    per_user: dict[int, list[tuple[Annotation, Task, User]]] = defaultdict(list)
    for row in rows:
        per_user[row[2].id].append(row)
    annotators = []
    for uid, user_rows in sorted(per_user.items()):
        user = user_rows[0][2]
        seconds = [float(ann.seconds_spent or 0.0) for ann, _, _ in user_rows]
        first = total = 0
        for ann, _, _ in user_rows:
            f, t = position_preferences(ann.ranking, ann.display_order)
            first, total = first + f, total + t
        annotators.append(
            {
                "user_id": uid,
                "username": user.username,
                "simulated": bool(user.simulated),
                "annotations": len(user_rows),
                "throughput_per_hour": len(user_rows) / (sum(seconds) / 3600) if sum(seconds) > 0 else None,
                "median_seconds": statistics.median(seconds),
                "gold_accuracy": gold.get(uid),
                "gold_tasks": sum(1 for _, task, _ in user_rows if task.is_gold and task.gold_ranking),
                "agreement": agreement_with_others(uid, by_task),
                "position_bias": first / total if total else None,
            }
        )
    return {
        "project": {
            "id": project.id,
            "name": project.name,
            "tasks": n_tasks,
            "annotations": len(rows),
            "done_tasks": sum(1 for entries in by_task.values() if len(entries) >= max(project.overlap or 1, 1)),
            "gold_tasks": session.scalar(select(func.count()).select_from(Task).where(Task.project_id == project.id, Task.is_gold.is_(True))) or 0,
            "krippendorff_alpha": krippendorff_alpha_rankings(shared_units),
            "pairwise_agreement": pairwise_agreement(shared_units),
        },
        "annotators": annotators,
    }
