// The annotation page: keyboard-first ranking, drag and drop, ties, timer, and a fetch() submit.
// The page works without this file too: every response has a rank <select> and the form posts normally.
// The ranking is a list of groups, best first; a group with several response ids is a tie.
(function () {
  "use strict";
  const form = document.getElementById("annotate-form");
  if (!form) return;

  const layout = form.dataset.layout;
  const cards = Array.from(form.querySelectorAll("article.response"));
  const rids = cards.map((c) => c.dataset.rid);
  const selects = Object.fromEntries(cards.map((c) => [c.dataset.rid, c.querySelector("select[data-rank-select]")]));
  const rankList = document.getElementById("rank-list");
  const tray = document.getElementById("unranked");
  const statusLine = document.getElementById("ranking-status");
  const errorBox = document.getElementById("form-error");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  let groups = [];     // [[rid, ...], ...] best first
  let picks = [];      // rids in the order they were ranked, for Backspace
  let tieNext = false; // 't' was pressed: the next pick joins the last group
  let submitting = false;

  const labelOf = (rid) => cards[rids.indexOf(rid)].querySelector(".slot").textContent.trim().replace(/^\d+\s*/, "");
  const groupIndex = (rid) => groups.findIndex((g) => g.includes(rid));
  const unranked = () => rids.filter((rid) => groupIndex(rid) < 0);

  function removeRid(rid) {
    groups = groups.map((g) => g.filter((x) => x !== rid)).filter((g) => g.length);
    picks = picks.filter((x) => x !== rid);
  }

  function pick(rid, tie) {
    if (groupIndex(rid) >= 0) {
      flashStatus(labelOf(rid) + " is already ranked: Backspace undoes, ↑/↓ moves it");
      return;
    }
    if (tie && groups.length) groups[groups.length - 1].push(rid);
    else groups.push([rid]);
    picks.push(rid);
    sync();
  }

  function undo() {
    const rid = picks[picks.length - 1];
    if (rid !== undefined) removeRid(rid);
    sync();
  }

  // Move a response one place better (delta -1) or worse (+1); a tied response first leaves its tie.
  function move(rid, delta) {
    let i = groupIndex(rid);
    if (i < 0) { pick(rid, false); return; }
    if (groups[i].length > 1) {
      groups[i] = groups[i].filter((x) => x !== rid);
      groups.splice(delta < 0 ? i : i + 1, 0, [rid]);
    } else {
      const j = i + delta;
      if (j < 0 || j >= groups.length) return;
      [groups[i], groups[j]] = [groups[j], groups[i]];
    }
    sync();
  }

  // Put `rid` as its own rank just before the group holding `beforeRid` (or last when there is none).
  function place(rid, beforeRid) {
    if (rid === beforeRid) return;
    removeRid(rid);
    const j = beforeRid ? groupIndex(beforeRid) : -1;
    if (j < 0) groups.push([rid]); else groups.splice(j, 0, [rid]);
    picks.push(rid);
    sync();
  }

  function toggleTieWithPrevious(rid) {
    const i = groupIndex(rid);
    if (i < 0) return;
    if (groups[i].length > 1) {
      groups[i] = groups[i].filter((x) => x !== rid);
      groups.splice(i + 1, 0, [rid]);
    } else if (i > 0) {
      groups[i - 1].push(rid);
      groups.splice(i, 1);
    }
    sync();
  }

  function choosePair(choice) {
    groups = choice === "tie" ? [[rids[0], rids[1]]] : [[rids[+choice]], [rids[1 - +choice]]];
    picks = groups.flat();
    sync();
  }

  function rankOf(rid) {
    const i = groupIndex(rid);
    return i < 0 ? null : i + 1;
  }

  function readSelects() {
    const byRank = {};
    rids.forEach((rid) => {
      const v = selects[rid].value;
      if (v) (byRank[v] = byRank[v] || []).push(rid);
    });
    groups = Object.keys(byRank).sort((a, b) => a - b).map((k) => byRank[k]);
    picks = groups.flat();
  }

  function chip(rid) {
    const li = document.createElement("li");
    li.className = "chip";
    li.draggable = true;
    li.dataset.rid = rid;
    const name = document.createElement("span");
    name.textContent = labelOf(rid);
    li.appendChild(name);
    if (groupIndex(rid) > 0 || (groupIndex(rid) === 0 && groups[0].length > 1)) {
      const tieButton = document.createElement("button");
      tieButton.type = "button";
      tieButton.className = "tie-toggle";
      const tied = groups[groupIndex(rid)].length > 1;
      tieButton.textContent = tied ? "untie" : "= tie ↑";
      tieButton.title = tied ? "Give it its own rank" : "Tie with the rank above";
      tieButton.addEventListener("click", () => toggleTieWithPrevious(rid));
      li.appendChild(tieButton);
    }
    wireDrag(li);
    return li;
  }

  function sync() {
    rids.forEach((rid, idx) => {
      const rank = rankOf(rid);
      selects[rid].value = rank ? String(rank) : "";
      const card = cards[idx];
      card.classList.toggle("ranked", rank !== null);
      card.classList.toggle("best", rank === 1);
      card.classList.toggle("tied", rank !== null && groups[rank - 1].length > 1);
      card.querySelector("[data-rank-badge]").textContent = rank ? "#" + rank + (groups[rank - 1].length > 1 ? " (tie)" : "") : "";
    });
    if (rankList) {
      rankList.replaceChildren(...groups.map((g, i) => {
        const li = document.createElement("li");
        li.className = "rank-group" + (g.length > 1 ? " tie" : "");
        const n = document.createElement("span");
        n.className = "rank-no";
        n.textContent = i + 1;
        const ul = document.createElement("ul");
        g.forEach((rid) => ul.appendChild(chip(rid)));
        li.append(n, ul);
        return li;
      }));
      const rest = unranked();
      tray.replaceChildren(...rest.map(chip));
      tray.classList.toggle("empty", rest.length === 0);
      const done = rids.length - rest.length;
      statusLine.textContent = tieNext ? "tie: the next number joins the last rank"
        : rest.length === 0 ? "complete: Enter submits"
        : rest.length === 1 ? done + " of " + rids.length + " ranked: Enter puts the last one last and submits"
        : done + " of " + rids.length + " ranked";
    }
    form.querySelectorAll("button[data-choice]").forEach((b) => {
      const c = b.dataset.choice;
      const on = groups.length > 0 && (c === "tie" ? groups[0].length === 2 : groups[0].length === 1 && groups[0][0] === rids[+c]);
      b.classList.toggle("selected", on);
    });
  }

  let statusTimer = null;
  function flashStatus(text) {
    if (!statusLine) return;
    statusLine.textContent = text;
    clearTimeout(statusTimer);
    statusTimer = setTimeout(sync, 2500);
  }

  // ---- drag and drop: cards and chips are draggable; chips, the ranking and the tray are drop targets
  let dragged = null;
  function wireDrag(el) {
    el.addEventListener("dragstart", (e) => {
      dragged = el.dataset.rid;
      e.dataTransfer.effectAllowed = "move";
      e.dataTransfer.setData("text/plain", dragged);
    });
    el.addEventListener("dragend", () => { dragged = null; });
    el.addEventListener("dragover", (e) => { if (dragged) { e.preventDefault(); el.classList.add("drop-before"); } });
    el.addEventListener("dragleave", () => el.classList.remove("drop-before"));
    el.addEventListener("drop", (e) => {
      e.preventDefault();
      e.stopPropagation();
      el.classList.remove("drop-before");
      if (!dragged) return;
      if (layout === "pairwise") { choosePair(String(rids.indexOf(dragged))); return; }
      place(dragged, groupIndex(el.dataset.rid) >= 0 ? el.dataset.rid : null);
    });
  }
  cards.forEach(wireDrag);
  [rankList, tray].forEach((zone) => {
    if (!zone) return;
    zone.addEventListener("dragover", (e) => { if (dragged) e.preventDefault(); });
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      if (!dragged) return;
      if (zone.dataset.dropzone === "unranked") { removeRid(dragged); sync(); } else place(dragged, null);
    });
  });

  // ---- mouse helpers
  form.querySelectorAll("button[data-choice]").forEach((b) => b.addEventListener("click", () => choosePair(b.dataset.choice)));
  rids.forEach((rid) => selects[rid].addEventListener("change", () => { readSelects(); sync(); }));

  // ---- timer: counts only while the tab is visible, so a lunch break is not "time spent"
  const secondsInput = document.getElementById("seconds-spent");
  const timerEl = document.getElementById("timer");
  let banked = parseFloat(form.dataset.startSeconds || "0") || 0;
  let since = document.hidden ? null : performance.now();
  const elapsed = () => banked + (since === null ? 0 : (performance.now() - since) / 1000);
  function showTime() {
    const s = Math.floor(elapsed());
    timerEl.textContent = Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }
  document.addEventListener("visibilitychange", () => {
    if (document.hidden && since !== null) { banked = elapsed(); since = null; }
    else if (!document.hidden && since === null) since = performance.now();
  });
  setInterval(showTime, 1000);
  showTime();

  // ---- submit
  function collect() {
    if (layout === "ranking" && unranked().length === 1 && groups.length) {
      groups.push(unranked()); // Enter with one left: it is the worst
      picks = groups.flat();
      sync();
    }
    const ranking = {};
    rids.forEach((rid) => { const r = rankOf(rid); if (r) ranking[rid] = r; });
    const scores = {};
    form.querySelectorAll("input[type=radio][data-criterion]:checked").forEach((input) => {
      (scores[input.dataset.criterion] = scores[input.dataset.criterion] || {})[input.dataset.rid] = parseInt(input.value, 10);
    });
    const payload = {
      ranking: ranking,
      all_bad: document.getElementById("all-bad").checked,
      scores: scores,
      seconds_spent: Math.round(elapsed() * 10) / 10,
    };
    const rationale = document.getElementById("rationale");
    if (rationale) payload.rationale = rationale.value;
    const edited = document.getElementById("edited-response");
    if (edited && edited.value.trim()) payload.edited_response = edited.value;
    // Re-opened from the history: name the version this edit replaces, so a stale page cannot
    // overwrite a newer label (the server answers 409 and keeps the newer one).
    if (form.dataset.version) payload.version = parseInt(form.dataset.version, 10);
    return payload;
  }

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
  }

  function submit() {
    if (submitting) return; // a double Enter or double click sends one request
    const payload = collect();
    const ranked = Object.keys(payload.ranking).length;
    if (payload.all_bad && ranked === 0) {
      delete payload.ranking; // "all bad" with no order: the server stores them all tied
    } else if (ranked < rids.length) {
      showError("Rank every response first (" + unranked().length + " left), or mark them all bad with b.");
      return;
    }
    submitting = true;
    secondsInput.value = payload.seconds_spent;
    document.getElementById("submit-button").disabled = true;
    fetch(form.action, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(payload),
    })
      .then((r) => r.json().catch(() => ({ error: "server answered " + r.status })).then((body) => ({ ok: r.ok, body: body })))
      .then(({ ok, body }) => {
        if (ok) { window.location.assign(body.next); return; }
        showError(body.error || "could not save");
        submitting = false;
        document.getElementById("submit-button").disabled = false;
      })
      .catch((err) => {
        showError("Network error, nothing was lost: press Enter to try again (" + err + ")");
        submitting = false;
        document.getElementById("submit-button").disabled = false;
      });
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); submit(); });

  // ---- keyboard
  const isTextField = (el) => el && (el.tagName === "TEXTAREA" || el.tagName === "SELECT" ||
    (el.tagName === "INPUT" && !["radio", "checkbox"].includes(el.type)));

  document.addEventListener("keydown", (e) => {
    const target = e.target;
    if (isTextField(target)) {
      if (e.key === "Escape") target.blur();
      else if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const focusedCard = target.closest ? target.closest("article.response") : null;
    if (/^[1-9]$/.test(e.key) && +e.key <= rids.length) {
      e.preventDefault();
      const rid = rids[+e.key - 1];
      if (layout === "pairwise") {
        if (tieNext) { choosePair("tie"); tieNext = false; } else choosePair(String(+e.key - 1));
      } else {
        const tie = tieNext;
        tieNext = false;
        pick(rid, tie);
      }
      return;
    }
    switch (e.key) {
      case "t":
        e.preventDefault();
        if (layout === "pairwise") choosePair("tie");
        else { tieNext = !tieNext; sync(); }
        break;
      case "Backspace":
        e.preventDefault();
        if (layout === "pairwise") { groups = []; picks = []; sync(); } else undo();
        break;
      case "b":
        e.preventDefault();
        document.getElementById("all-bad").click();
        break;
      case "r": {
        const el = document.getElementById("rationale");
        if (el) { e.preventDefault(); el.focus(); }
        break;
      }
      case "e": {
        const box = document.getElementById("edit-box");
        if (box) {
          e.preventDefault();
          box.open = true;
          document.getElementById("edited-response").focus();
        }
        break;
      }
      case "ArrowLeft":
      case "ArrowRight": {
        if (target.type === "radio") return; // radios use arrows to change the score
        e.preventDefault();
        const i = focusedCard ? cards.indexOf(focusedCard) : -1;
        const next = e.key === "ArrowRight" ? Math.min(i + 1, cards.length - 1) : Math.max(i - 1, 0);
        cards[next].focus();
        break;
      }
      case "ArrowUp":
      case "ArrowDown":
        if (!focusedCard || layout === "pairwise" || target.type === "radio") return;
        e.preventDefault();
        move(focusedCard.dataset.rid, e.key === "ArrowUp" ? -1 : 1);
        break;
      case "Enter":
        if (target.tagName === "BUTTON" || target.tagName === "A" || target.tagName === "SUMMARY") return;
        e.preventDefault();
        submit();
        break;
      default:
        break;
    }
  });

  readSelects(); // an edited annotation arrives with its ranks already in the selects
  sync();
})();
