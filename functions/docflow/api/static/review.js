// The review page: one NEEDS_REVIEW document at a time, decided by one key or click.
// Everything shown comes from the API with the key in the x-api-key header (kept in sessionStorage for this
// tab only, never in a URL). Text from documents is only ever set as textContent: it is data, not markup.
"use strict";

(() => {
  // Every URL is relative to the page's own folder: the API's root locally, its stage on API Gateway
  // (https://<api>/v1/), LocalStack's /restapis/<id>/v1/_user_request_/: the page works wherever it is served.
  const $ = (id) => document.getElementById(id);
  const KEY_STORE = "docflow.apiKey";
  const NAME_STORE = "docflow.reviewer";
  const OUT_OF_SCOPE = "out_of_scope";
  // Number keys first, then letters; X (none of these) and Z (undo) are never a class's key.
  const CLASS_KEYS = "1234567890qwertyuiopasdfghjklcvbnm".split("");
  const PAGE_SIZE = 20;

  const state = {
    key: sessionStorage.getItem(KEY_STORE),
    reviewer: localStorage.getItem(NAME_STORE) || "",
    classes: [],
    keyOf: new Map(), // class -> key
    classOf: new Map(), // key -> class
    items: [],
    total: 0,
    current: null,
    page: 1,
    text: null, // the current document's pages of text
    undo: [], // {id, decision} decided in this tab, latest last
    decided: new Set(), // ids decided here and not undone: a queue page asked for earlier may still hold them
    changes: 0, // decisions and undos made in this tab: an answer asked for before one has a stale count
    toppingUp: false,
    queueGen: 0, // bumped by every full load of the queue (filters): older answers are dropped
    busy: false,
    seq: 0, // which document the latest loads are for (older answers are dropped)
    previews: new Map(), // "id/page" -> object URL
  };

  class HttpError extends Error {
    constructor(status, body) {
      super((body && body.detail) || `HTTP ${status}`);
      this.status = status;
      this.code = body && body.error;
    }
  }

  async function api(path, { method = "GET", body, accept = "application/json" } = {}) {
    const headers = { Accept: accept };
    if (state.key) headers["x-api-key"] = state.key;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
    if (!response.ok) {
      let detail = null;
      try {
        detail = await response.json();
      } catch (_) {
        /* not JSON */
      }
      const error = new HttpError(response.status, detail);
      if (response.status === 401 || response.status === 403) signIn(error.message);
      throw error;
    }
    return accept === "application/json" ? response.json() : response.blob();
  }

  // -- signing in -------------------------------------------------------------------------------------------

  function signIn(message) {
    $("review").hidden = true;
    $("empty").hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
    $("reviewer").value = state.reviewer;
    (state.reviewer ? $("api-key") : $("reviewer")).focus();
  }

  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("reviewer").value.trim();
    if (!name) {
      $("signin-error").textContent = "Your name is recorded with each decision: please give it.";
      return;
    }
    state.key = $("api-key").value;
    state.reviewer = name;
    sessionStorage.setItem(KEY_STORE, state.key);
    localStorage.setItem(NAME_STORE, name);
    $("api-key").value = "";
    start();
  });

  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    state.key = null;
    // Nothing a key holder saw stays in the page: text, images, the queue.
    for (const pending of state.previews.values()) {
      pending.then((url) => URL.revokeObjectURL(url)).catch(() => {});
    }
    state.previews.clear();
    state.items = [];
    state.current = null;
    state.undo = [];
    $("text").textContent = "";
    $("page-image").removeAttribute("src");
    signIn("Signed out.");
  });

  // -- the queue ----------------------------------------------------------------------------------------------

  async function start() {
    try {
      const model = await api("model");
      state.classes = model.classes;
      $("signin").hidden = true;
      $("who").textContent = `Reviewing as ${state.reviewer}`;
      buildClasses(model.classes);
      await loadQueue();
    } catch (error) {
      if (!(error instanceof HttpError && (error.status === 401 || error.status === 403))) {
        signIn(`The service did not answer: ${error.message}`);
      }
    }
  }

  function buildClasses(classes) {
    state.keyOf.clear();
    state.classOf.clear();
    const group = $("classes");
    group.replaceChildren();
    const filter = $("filter-class");
    filter.replaceChildren(new Option("all classes", ""));
    classes.forEach((name, i) => {
      const key = CLASS_KEYS[i];
      const button = document.createElement("button");
      button.type = "button";
      button.className = "class";
      button.dataset.label = name;
      const text = document.createElement("span");
      text.className = "name";
      text.textContent = name;
      button.title = name;
      button.append(text);
      if (key) {
        state.keyOf.set(name, key);
        state.classOf.set(key, name);
        const kbd = document.createElement("kbd");
        kbd.textContent = key.toUpperCase();
        button.append(" ", kbd);
        button.setAttribute("aria-keyshortcuts", key);
      }
      button.addEventListener("click", () => decide(name));
      group.append(button);
      filter.append(new Option(name, name));
    });
  }

  function queuePath(cursor) {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if ($("filter-class").value) params.set("predicted_class", $("filter-class").value);
    if ($("filter-reason").value) params.set("reason", $("filter-reason").value);
    if (cursor) params.set("cursor", cursor);
    return `review/queue?${params}`;
  }

  async function loadQueue() {
    const gen = ++state.queueGen;
    const page = await api(queuePath());
    if (gen !== state.queueGen) return; // the filters changed again meanwhile
    state.items = page.items.filter((item) => !state.decided.has(item.document_id));
    state.total = page.total;
    showCurrent();
  }

  async function topUp() {
    // Decided documents leave the queue: its first page now starts with those not yet shown here. An answer
    // that arrives after further decisions may still list them, and its count is then out of date.
    if (state.toppingUp) return;
    state.toppingUp = true;
    const before = state.changes;
    const gen = state.queueGen;
    try {
      const page = await api(queuePath());
      if (gen !== state.queueGen) return; // asked under other filters
      const known = new Set(state.items.map((item) => item.document_id));
      state.items.push(
        ...page.items.filter((item) => !known.has(item.document_id) && !state.decided.has(item.document_id)),
      );
      if (state.changes === before) state.total = page.total;
      renderCount();
      if (!state.current) showCurrent();
    } catch (_) {
      /* shown on the next decision */
    } finally {
      state.toppingUp = false;
    }
  }

  function renderCount() {
    const n = state.total;
    $("count").textContent = n === 1 ? "1 document waiting" : `${n.toLocaleString()} documents waiting`;
  }

  function showCurrent() {
    renderCount();
    const item = state.items[0] || null;
    state.current = item;
    state.seq += 1;
    if (!item) {
      $("review").hidden = true;
      $("empty").hidden = false;
      const filtered = $("filter-class").value || $("filter-reason").value;
      $("empty-detail").textContent = filtered
        ? "Nothing is waiting with these filters."
        : "Every document in the queue has been decided.";
      return;
    }
    $("empty").hidden = true;
    $("review").hidden = false;
    $("doc-name").textContent = item.file_name;
    const meta = [
      item.pages ? `${item.pages} page${item.pages === 1 ? "" : "s"}` : null,
      item.text_source === "ocr" ? "read by OCR" : item.text_source === "pdf_text" ? "PDF text layer" : null,
      item.ocr_confidence != null ? `OCR confidence ${Math.round(item.ocr_confidence)}` : null,
      item.model_version ? `model v${item.model_version}` : null,
      `queued ${new Date(item.queued_at).toLocaleString()}`,
    ].filter(Boolean);
    $("doc-meta").textContent = meta.join(" · ");
    $("reason").textContent = reasonText(item);
    $("reason").dataset.code = item.code || "";
    $("suggested").textContent = item.predicted_class || "nothing";
    $("suggested-score").textContent =
      item.confidence_score != null ? `· confidence ${Math.round(item.confidence_score * 100)} %` : "";
    renderScores(item);
    for (const button of $("classes").children) {
      button.classList.toggle("suggested", button.dataset.label === item.predicted_class);
    }
    state.page = 1;
    state.text = null;
    $("text").textContent = "";
    $("page-image").removeAttribute("src"); // never the last document's page beside this one's buttons
    $("page-image").alt = "";
    loadText(item, state.seq);
    showPage(1);
    prefetch(state.items[1]);
  }

  function reasonText(item) {
    const why = { LOW_CONFIDENCE: "Low confidence", OUT_OF_SCOPE: "Maybe none of the classes", NO_TEXT: "No text" };
    const head = why[item.code] || "Needs review";
    return item.reason ? `${head}: ${item.reason}` : head;
  }

  function renderScores(item) {
    const list = $("scores");
    list.replaceChildren();
    const scores = Object.entries(item.all_scores || {}).sort((a, b) => b[1] - a[1]).slice(0, 4);
    for (const [name, score] of scores) {
      const li = document.createElement("li");
      const label = document.createElement("span");
      label.className = "name";
      label.textContent = name;
      const meter = document.createElement("meter");
      meter.min = 0;
      meter.max = 1;
      meter.value = score;
      meter.setAttribute("aria-label", `${name} ${Math.round(score * 100)} percent`);
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = `${Math.round(score * 100)} %`;
      li.append(label, meter, value);
      list.append(li);
    }
  }

  async function loadText(item, seq) {
    try {
      const text = await api(`documents/${item.document_id}/text`);
      if (seq !== state.seq) return;
      state.text = text.pages;
      renderText();
    } catch (error) {
      if (seq === state.seq) $("text").textContent = `(the text could not be loaded: ${error.message})`;
    }
  }

  function renderText() {
    if (!state.text) return;
    const page = state.text.find((p) => p.page === state.page);
    $("text").textContent = page ? page.text || "(no text was read from this page)" : "";
  }

  // -- pages ------------------------------------------------------------------------------------------------

  function preview(id, page) {
    // One request per page: a prefetch still in flight is awaited, not asked again. Kept as promises of
    // object URLs; the oldest are revoked.
    const cacheKey = `${id}/${page}`;
    if (state.previews.has(cacheKey)) return state.previews.get(cacheKey);
    const pending = api(`documents/${id}/pages/${page}/preview`, { accept: "image/png, image/jpeg" }).then(
      (blob) => URL.createObjectURL(blob),
    );
    state.previews.set(cacheKey, pending);
    pending.catch(() => state.previews.delete(cacheKey));
    while (state.previews.size > 12) {
      const [oldest, oldPending] = state.previews.entries().next().value;
      state.previews.delete(oldest);
      oldPending.then((url) => URL.revokeObjectURL(url)).catch(() => {});
    }
    return pending;
  }

  function prefetch(item) {
    if (item) preview(item.document_id, 1).catch(() => {});
  }

  async function showPage(page) {
    const item = state.current;
    if (!item) return;
    const pages = item.pages || 1;
    state.page = Math.min(Math.max(page, 1), pages);
    $("page-label").textContent = `Page ${state.page} of ${pages}`;
    $("prev-page").disabled = state.page <= 1;
    $("next-page").disabled = state.page >= pages;
    renderText();
    const seq = state.seq;
    const wanted = state.page;
    const image = $("page-image");
    $("image-status").textContent = "Loading the page…";
    try {
      const url = await preview(item.document_id, wanted);
      if (seq !== state.seq || state.current !== item || state.page !== wanted) return;
      image.src = url;
      image.alt = `Page ${state.page} of ${pages} of ${item.file_name}`;
      $("image-status").textContent = "";
    } catch (error) {
      if (seq !== state.seq || state.page !== wanted) return;
      image.removeAttribute("src");
      image.alt = "";
      $("image-status").textContent = `No preview: ${error.message}`;
    }
  }

  $("prev-page").addEventListener("click", () => {
    blurButtons();
    showPage(state.page - 1);
  });
  $("next-page").addEventListener("click", () => {
    blurButtons();
    showPage(state.page + 1);
  });

  // -- deciding -----------------------------------------------------------------------------------------------

  function blurButtons() {
    // After a click, Enter must mean "accept the suggestion", not "press that button again".
    const focused = document.activeElement;
    if (focused instanceof HTMLButtonElement && focused.closest(".classes, .actions, .pager")) focused.blur();
  }

  function flash(message, kind = "info") {
    const box = $("flash");
    box.textContent = message;
    box.dataset.kind = kind;
  }

  function leave(id) {
    // Out of this tab's list by id: the list may have been reloaded while a request was in flight.
    state.items = state.items.filter((item) => item.document_id !== id);
  }

  async function decide(label) {
    const item = state.current;
    if (!item || state.busy) return;
    state.busy = true;
    try {
      // expect_status: if another person decided it meanwhile, this is refused (409), not a correction.
      const decided = await api(`documents/${item.document_id}/decision`, {
        method: "POST",
        body: { label, reviewer: state.reviewer, expect_status: "NEEDS_REVIEW" },
      });
      state.undo.push({ id: item.document_id, decision: decided.decision.decision_id });
      state.decided.add(item.document_id);
      state.changes += 1;
      blurButtons();
      flash(`${item.file_name}: ${label === OUT_OF_SCOPE ? "none of the classes" : label}. Z undoes it.`);
      leave(item.document_id);
      state.total = Math.max(0, state.total - 1);
      showCurrent();
      if (state.items.length < 5) topUp();
    } catch (error) {
      if (error.status === 404 || error.status === 409) {
        flash(`${item.file_name} was no longer waiting (${error.message}); skipped.`, "warn");
        leave(item.document_id);
        state.total = Math.max(0, state.total - 1);
        showCurrent();
        if (state.items.length < 5) topUp();
      } else if (error.status === 422) {
        flash(`Not saved: ${error.message}. The model's classes may have changed: reload the page.`, "error");
      } else if (error.status !== 401 && error.status !== 403) {
        flash(`Not saved: ${error.message}`, "error");
      }
    } finally {
      state.busy = false;
    }
  }

  async function undo() {
    if (state.busy) return;
    const last = state.undo[state.undo.length - 1];
    blurButtons();
    if (!last) {
      flash("Nothing to undo in this tab.", "warn");
      return;
    }
    state.busy = true;
    try {
      // Only this tab's own decision, and only while it is the latest on the document.
      const params = new URLSearchParams({ decision_id: last.decision });
      const undone = await api(`documents/${last.id}/decision?${params}`, { method: "DELETE" });
      state.undo.pop();
      state.decided.delete(last.id);
      state.changes += 1;
      const doc = undone.document;
      leave(last.id);
      if (doc.status === "NEEDS_REVIEW") {
        state.items.unshift(itemOf(doc));
        state.total += 1;
      }
      flash(`Undone: ${undone.decision.label} for ${itemOf(doc).file_name}.`);
      showCurrent();
    } catch (error) {
      if (error.status === 404 || error.status === 409) {
        state.undo.pop(); // it cannot be undone any more: let Z reach the decision before it
        flash(`Could not undo: ${error.message}`, "warn");
      } else if (error.status !== 401 && error.status !== 403) {
        flash(`Could not undo: ${error.message}`, "error");
      }
    } finally {
      state.busy = false;
    }
  }

  function itemOf(doc) {
    const source = (doc.source || doc.document_id).split("?versionId=")[0];
    const prediction = doc.prediction || {};
    return {
      document_id: doc.document_id,
      file_name: source.split(/[\\/]/).pop() || source,
      media_type: doc.media_type,
      pages: doc.pages,
      text_source: doc.text_source,
      ocr_confidence: doc.ocr_confidence,
      predicted_class: prediction.predicted_class,
      confidence_score: prediction.confidence_score,
      all_scores: prediction.all_scores,
      code: doc.code,
      reason: doc.reason,
      model_version: prediction.model_version,
      queued_at: doc.updated_at,
    };
  }

  $("out-of-scope").addEventListener("click", () => decide(OUT_OF_SCOPE));
  $("undo").addEventListener("click", undo);
  $("reload").addEventListener("click", () => {
    blurButtons();
    loadQueue().catch(() => {});
  });
  for (const id of ["filter-class", "filter-reason"]) {
    $(id).addEventListener("change", () => loadQueue().catch(() => {}));
  }

  document.addEventListener("keydown", (event) => {
    // A held key repeats: one decision per press, never a run through the queue.
    if (!$("signin").hidden || event.altKey || event.metaKey || event.repeat || event.isComposing) return;
    const target = event.target;
    if (target instanceof HTMLSelectElement && event.key === "Escape") {
      target.blur(); // back to the keys after choosing a filter
      return;
    }
    if (target instanceof HTMLInputElement || target instanceof HTMLSelectElement) return;
    const key = event.key.toLowerCase();
    if (key === "z" && !event.shiftKey) {
      event.preventDefault();
      undo();
      return;
    }
    if (event.ctrlKey || $("review").hidden) return;
    if (key === "enter" && !(target instanceof HTMLButtonElement)) {
      event.preventDefault();
      if (state.current && state.classes.includes(state.current.predicted_class)) decide(state.current.predicted_class);
    } else if (key === "x") {
      event.preventDefault();
      decide(OUT_OF_SCOPE);
    } else if (key === "arrowleft" || key === "pageup") {
      event.preventDefault();
      showPage(state.page - 1);
    } else if (key === "arrowright" || key === "pagedown") {
      event.preventDefault();
      showPage(state.page + 1);
    } else if (state.classOf.has(key)) {
      event.preventDefault();
      decide(state.classOf.get(key));
    }
  });

  if (state.key === null || !state.reviewer) signIn("");
  else start();
})();
