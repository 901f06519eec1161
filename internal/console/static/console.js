// vncfleet console: the little script the pages need. Every request goes to the JSON
// API under /ui/api (the session cookie stands for the bearer token); state-changing
// ones carry the CSRF token of the page. Text reaches the page as textContent only.
"use strict";

const meta = (name) => (document.querySelector(`meta[name="${name}"]`) || {}).content || "";
const STATUSES = meta("statuses").split(",");
const SETTLED = new Set(meta("settled-statuses").split(","));
const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v);
  }
  for (const c of children.flat()) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

const SVG = "http://www.w3.org/2000/svg";
const label = (s) => s.replaceAll("_", " ");

// api calls /ui/api + path and answers {status, body} (body parsed when JSON).
async function api(method, path, body, headers = {}) {
  const h = { ...headers };
  if (method !== "GET") h["X-CSRF-Token"] = meta("csrf-token");
  const resp = await fetch("/ui/api" + path, { method, body, headers: h, cache: "no-store", credentials: "same-origin" });
  const type = resp.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await resp.json() : await resp.text();
  if (resp.status === 401) toSignIn();
  return { status: resp.status, body: data };
}

// toSignIn sends the operator whose session ended to sign in, and back here after.
function toSignIn() {
  location.assign("/signin?expired=1&next=" + encodeURIComponent(location.pathname + location.search));
}

// bar draws counts by status as the server's bar template does: an SVG stacked bar
// and a legend with the counts in words.
function bar(counts) {
  const segs = STATUSES.filter((s) => (counts[s] || 0) > 0).map((s) => [s, counts[s]]);
  const total = segs.reduce((n, [, c]) => n + c, 0);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "bar");
  svg.setAttribute("role", "img");
  svg.setAttribute("viewBox", "0 0 1000 20");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("aria-label", segs.length ? segs.map(([s, c]) => `${c} ${label(s)}`).join(", ") : "no devices");
  let x = 0;
  for (const [s, c] of segs) {
    const r = document.createElementNS(SVG, "rect");
    const w = (1000 * c) / total;
    r.setAttribute("class", "st-" + s);
    r.setAttribute("x", x);
    r.setAttribute("width", w);
    r.setAttribute("height", 20);
    const t = document.createElementNS(SVG, "title");
    t.textContent = `${c} ${label(s)}`;
    r.append(t);
    svg.append(r);
    x += w;
  }
  const legend = el("ul", { class: "legend" },
    segs.map(([s, c]) => el("li", {}, el("span", { class: "key st-" + s, "aria-hidden": "true" }), label(s) + " ", el("strong", {}, c))));
  const frag = document.createDocumentFragment();
  frag.append(svg, legend);
  return frag;
}

function settledOf(counts) {
  let settled = 0, total = 0;
  for (const [s, n] of Object.entries(counts || {})) {
    total += n;
    if (SETTLED.has(s)) settled += n;
  }
  return { settled, total };
}

function duration(seconds) {
  if (seconds === undefined || seconds === null) return "–";
  if (seconds < 1) return "under a second";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h} h ${m} min` : m ? `${m} min ${r} s` : `${r} s`;
}

// limiterNote is the cluster limiter's state while a manifest waits, as `upload
// --wait` says it: a Retry-After pause, a slow-down at VNC Cloud's request; "" at full speed.
function limiterNote(cloud) {
  if (!cloud) return "";
  const parts = [];
  if (cloud.pausedUntil && new Date(cloud.pausedUntil) > new Date()) {
    parts.push(`Paused until ${new Date(cloud.pausedUntil).toLocaleTimeString()} by Retry-After.`);
  }
  const l = cloud.limiter;
  if (l && l.slowed > 0) parts.push(`Sending ${perSecond(l.sending)} of ${perSecond(l.rate)}: VNC Cloud asked to slow down.`);
  return parts.join(" ");
}

function perSecond(r) {
  return (r >= 10 || Number.isInteger(r) ? r.toFixed(0) : r.toFixed(1)) + "/s";
}

// plural is the server's rule for a count (fleet.Plural): the singular only for
// exactly 1, "1 device", "0 devices"; many for an irregular plural.
function plural(n, noun, many = noun + "s") {
  return `${n} ${agree(n, noun, many)}`;
}

// agree is the word of the two that agrees with count n (fleet.Agree).
function agree(n, one, many) {
  return n === 1 ? one : many;
}

// liveStream follows a Server-Sent Events stream: handlers[name] gets each event of
// that name, onState hears "live" and what the stream waits for when it is not. The
// answer closes the stream or opens it afresh.
//
// EventSource reconnects by itself after a dropped connection, but an answer other
// than 200 ends it for good, without saying which: the stream then asks the server
// once more with fetch to learn why. 401, the session ended: to sign in. 503 (the
// process's stream limit) or 429: again after its Retry-After. Another 4xx will not
// change by asking again: said, and left. Anything else (a 5xx, the server
// unreachable): again after a while.
const STREAM_RETRY_SECONDS = 5;

function liveStream(url, handlers, onState) {
  let es, timer, closed = false;
  // One stream at a time: open closes the one it replaces, and a refused stream's
  // question (whyClosed) is dropped once another stream took its place (reopen while
  // the fetch was out), else both would draw the page and hold a server slot each.
  const open = () => {
    clearTimeout(timer);
    es?.close();
    const mine = new EventSource(url);
    es = mine;
    mine.onopen = () => onState("live");
    mine.onerror = () => {
      if (mine.readyState === EventSource.CLOSED) whyClosed(mine);
      else onState("reconnecting…");
    };
    for (const [name, handle] of Object.entries(handlers)) mine.addEventListener(name, handle);
  };
  const whyClosed = async (mine) => {
    let status = 0, wait = STREAM_RETRY_SECONDS;
    const asked = new AbortController();
    try {
      const resp = await fetch(url, { signal: asked.signal, cache: "no-store", credentials: "same-origin" });
      status = resp.status;
      wait = Number(resp.headers.get("Retry-After")) || wait;
    } catch {
      // unreachable: as a 5xx
    } finally {
      asked.abort(); // a 200 is a stream: only its status was wanted
    }
    if (closed || es !== mine) return;
    if (status === 401) return toSignIn();
    if (status >= 400 && status < 500 && status !== 429) return onState(`stopped: the server answered ${status}; reload the page to try again`);
    onState(status === 503 || status === 429
      ? `the server has too many live streams open; trying again in ${wait} s…`
      : `reconnecting in ${wait} s…`);
    timer = setTimeout(open, wait * 1000);
  };
  open();
  return {
    close: () => { closed = true; clearTimeout(timer); es.close(); },
    reopen: () => { closed = false; open(); },
  };
}

// --- fleets overview: everything on it live ---

// The overview redraws itself from GET /ui/api/overview (the page's own data, read as
// the page is: fleets, manifests and their state, the last reconcile) every
// OVERVIEW_EVERY ms, and at once when the fleet status stream says the counts moved;
// the rotation lines from GET /v1/rotation every ROTATION_EVERY ms, as that read counts
// every device holding a password (a second at a million devices).
const OVERVIEW_EVERY = 5000;
const ROTATION_EVERY = 30000;

// when is a time as the pages' templates write it: "2006-01-02 15:04:05 UTC".
const when = (t) => new Date(t).toISOString().slice(0, 19).replace("T", " ") + " UTC";

function overview() {
  const live = $("#live");
  if (!live) return;
  const canUpload = !!$('nav a[href="/upload"]');
  let data = null, rotation = undefined; // the last answers; rotation null: it could not be read
  let reading = false, again = false;

  const refresh = async () => {
    if (reading) { again = true; return; }
    reading = true;
    try {
      const { status, body } = await api("GET", "/overview");
      if (status === 200) {
        data = body;
        draw();
        live.textContent = "This page refreshes live; last update " + new Date().toLocaleTimeString() + ".";
      } else {
        live.textContent = "Live updates failed: " + ((body && body.error) || status) + "; trying again.";
      }
    } catch {
      live.textContent = "Live updates interrupted; trying again.";
    } finally {
      reading = false;
    }
    if (again) { again = false; refresh(); }
  };
  const refreshRotation = async () => {
    try {
      const { status, body } = await api("GET", "/v1/rotation");
      rotation = status === 200 ? body : null;
      draw();
    } catch {
      // the lines drawn stay; the next round tries again
    }
  };

  function draw() {
    if (!data) return;
    if (rotation !== undefined) drawNextRotation();
    drawLastReconcile();
    // Until the script has read the rotation, the lines the page came with stay.
    const drawn = new Map([...document.querySelectorAll("section.fleet")].map((s) => [s.dataset.fleet, $(".rotation", s)]));
    const fleets = data.fleets.map((f) => fleetCard(f, drawn.get(f.name)));
    $("#fleets").replaceChildren(...(fleets.length ? fleets : [el("p", {}, "No manifest has been uploaded yet. ",
      canUpload ? [el("a", { href: "/upload" }, "Upload one"), "."] : [])]));
  }

  function drawNextRotation() {
    let p = $("#next-rotation");
    if (!rotation) { p?.remove(); return; }
    if (!p) { p = el("p", { id: "next-rotation" }); live.after(p); }
    p.replaceChildren("Next scheduled rotation: ", el("strong", {}, rotation.nextRun ? when(rotation.nextRun) : "none (rotation is not scheduled)"), ".");
  }

  function drawLastReconcile() {
    let p = $("#last-reconcile");
    const run = data.lastReconcile;
    if (!run && !data.noReconcile) { p?.remove(); return; }
    if (!p) { p = el("p", { id: "last-reconcile" }); ($("#next-rotation") || live).after(p); }
    if (!run) { p.replaceChildren("Last reconcile: " + data.noReconcile); return; }
    const c = (k) => (run.counts || {})[k] || 0;
    p.replaceChildren(...["Last reconcile: ", el("strong", {}, when(run.startedAt)), run.dryRun ? " (a dry run)" : "", ", ",
      run.error ? [el("strong", {}, "failed"), ": " + run.error]
        : [el("strong", {}, run.converged ? "converged" : "not converged"),
          `: ${c("vanished")} vanished, ${c("drifted")} drifted, ${c("adopted")} adopted, ${c("foreign")} foreign, ${plural(c("errors"), "error")}`],
      ". ", el("a", { href: "/reconcile" }, "The report"), "."].flat());
  }

  function fleetCard(f, drawnRotation) {
    const head = "fleet-" + f.name;
    const rot = rotation ? (rotation.fleets || []).find((r) => r.fleet === f.name) : null;
    const rotationLine = rotation === undefined ? drawnRotation || [] : rot ? el("p", { class: "rotation" }, `Passwords: ${rot.devices}, `, el("strong", {}, `${rot.overdue} overdue`),
      rot.newestPasswordAt ? `; last set ${when(rot.newestPasswordAt)}` : "",
      rot.nextRotation && rot.nextRotation.nextRunAt ? `; next rotation: the scheduled run of ${when(rot.nextRotation.nextRunAt)}` : "", ".") : [];
    const found = f.reconciled;
    return el("section", { class: "card fleet", "data-fleet": f.name, "aria-labelledby": head },
      el("h2", { id: head }, "Fleet " + f.name),
      el("p", {}, el("span", { class: "settled", "data-total": "" }, `${f.bar.settled} of ${f.bar.total}`), ` ${agree(f.bar.total, "device", "devices")} settled.`),
      el("div", { class: "fleet-bar" }, bar(f.bar.counts)),
      rotationLine,
      found ? el("p", { class: "reconciled" }, "Last reconcile, of this fleet's devices: " +
        (found.vanished || found.drifted || found.adopted || found.createsInFlight
          ? `${found.vanished} vanished, ${found.drifted} drifted, ${found.adopted} adopted` +
            (found.createsInFlight ? `, ${found.createsInFlight} creates in flight` : "")
          : "nothing to put right") + ".") : [],
      el("table", {},
        el("caption", {}, "Manifests, newest first"),
        el("thead", {}, el("tr", {}, ["Manifest", "Mode", "Rows", "Uploaded", "By", "State", "Failed"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, f.manifests.map((m) => el("tr", {},
          el("td", {}, el("a", { href: "/manifests/" + m.id }, "#" + m.id)), el("td", {}, m.mode), el("td", {}, m.rows),
          el("td", {}, when(m.uploadedAt)), el("td", {}, m.uploader),
          el("td", {}, el("span", { class: "state state-" + m.state }, m.state)), el("td", {}, m.bar.counts.failed || 0))))));
  }

  liveStream(live.dataset.stream, { status: refresh }, (state) => {
    if (state !== "live") live.textContent = "Live updates interrupted; " + state;
  });
  setInterval(refresh, OVERVIEW_EVERY);
  setInterval(refreshRotation, ROTATION_EVERY);
}

// --- upload: plan first, then apply ---

// parseCSV splits text into records (RFC 4180 quoting), keeping each record's line.
function parseCSV(text) {
  const rows = [];
  let row = [], field = "", quoted = false, line = 1, start = 1;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') { field += '"'; i++; }
      else if (ch === '"') quoted = false;
      else { if (ch === "\n") line++; field += ch; }
    } else if (ch === '"') quoted = true;
    else if (ch === ",") { row.push(field); field = ""; }
    else if (ch === "\n" || ch === "\r") {
      if (ch === "\r" && text[i + 1] === "\n") i++;
      row.push(field); rows.push({ line: start, cells: row }); row = []; field = ""; line++; start = line;
    } else field += ch;
  }
  if (field !== "" || row.length) { row.push(field); rows.push({ line: start, cells: row }); }
  return rows;
}

function upload() {
  const form = $("#upload");
  if (!form) return;
  const result = $("#result");
  const drop = $("#drop"), file = $("#file");
  const over = (e) => { e.preventDefault(); e.dataTransfer.dropEffect = "copy"; drop.classList.add("over"); };
  drop.addEventListener("dragenter", over);
  drop.addEventListener("dragover", over);
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  // A file dropped is a file picked: its plan is checked at once.
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (!e.dataTransfer.files.length) return;
    file.files = e.dataTransfer.files;
    form.requestSubmit();
  });

  const send = async (dryRun, maxDeletions) => {
    const q = new URLSearchParams({ fleet: form.fleet.value.trim(), mode: form.mode.value });
    if (dryRun) q.set("dry_run", "true");
    if (maxDeletions !== undefined) q.set("max_deletions", String(maxDeletions));
    return api("POST", "/v1/manifests?" + q, file.files[0], { "Content-Type": "text/csv" });
  };

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!file.files.length) {
      result.replaceChildren(el("p", { class: "error", role: "alert" }, "Choose a CSV file first."));
      return;
    }
    result.replaceChildren(el("p", { role: "status" }, "Checking the manifest…"));
    const { status, body } = await send(true);
    if (status === 422) return showProblems(body, await file.files[0].text());
    if (status !== 200) return showError(body);
    showPlan(body.plan);
  });

  const showError = (body) =>
    result.replaceChildren(el("p", { class: "error", role: "alert" }, (body && body.error) || String(body)));

  function showProblems(body, text) {
    const rows = parseCSV(text.replace(/^\uFEFF/, ""));
    const header = rows[0] ? rows[0].cells : [];
    const byLine = new Map(rows.map((r) => [r.line, r.cells]));
    const problems = new Map();
    for (const p of body.details || []) {
      if (!problems.has(p.line)) problems.set(p.line, []);
      problems.get(p.line).push(p);
    }
    const items = [...problems.entries()].sort((a, b) => a[0] - b[0]).map(([line, list]) => {
      const cells = byLine.get(line) || [];
      const bad = new Set(list.map((p) => p.column));
      const preview = el("table", { class: "preview" },
        el("thead", {}, el("tr", {}, el("th", { class: "ln", scope: "col" }, "line"), header.map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, el("tr", {}, el("td", { class: "ln" }, line),
          cells.map((c, i) => bad.has(i + 1)
            ? el("td", { class: "bad", "aria-invalid": "true" }, el("span", { class: "mark" }, "✗ "), c)
            : el("td", {}, c)))));
      return el("article", { class: "problem", "aria-label": `Line ${line}` },
        el("h3", {}, `Line ${line}`),
        el("ul", {}, list.map((p) => el("li", {}, `column ${p.column}${p.columnName ? ` (${p.columnName})` : ""}: ${p.reason}`))),
        el("div", { class: "table-wrap" }, preview));
    });
    const more = body.total > (body.details || []).length ? ` (the first ${body.details.length} are shown)` : "";
    result.replaceChildren(el("section", { class: "card", "aria-labelledby": "problems-h" },
      el("h2", { id: "problems-h" }, `Rejected: ${plural(body.total, "problem")}${more}`),
      el("p", {}, "Nothing was stored. Correct the file and check it again."),
      el("div", { class: "problems" }, items)));
    $("#problems-h").focus?.();
  }

  function idList(title, ids, total) {
    if (!total) return [];
    const capped = total > ids.length ? ` (first ${ids.length} listed)` : "";
    return [el("h3", {}, `${title}: ${total}${capped}`), el("ul", { class: "items" }, ids.map((i) => el("li", {}, el("code", {}, i))))];
  }

  function showPlan(plan, guard) {
    const apply = el("button", { type: "button", id: "apply" }, "Apply");
    const out = el("p", { role: "status", "aria-live": "polite" });
    const card = el("section", { class: "card", "aria-labelledby": "plan-h" },
      el("h2", { id: "plan-h" }, "Plan (dry run: nothing changed yet)"),
      el("ul", { class: "plan-counts" },
        el("li", {}, el("strong", {}, plan.creates), "to create"),
        el("li", {}, el("strong", {}, plan.updates), "to update"),
        el("li", {}, el("strong", {}, plan.deletes), "to delete"),
        el("li", {}, el("strong", {}, plan.unchanged), "unchanged")),
      plan.resumes ? el("p", {}, `${plural(plan.resumes, "cancelled device")} will be resumed.`) : [],
      idList("Creates", plan.createIds || [], plan.creates),
      plan.updates ? [el("h3", {}, `Updates: ${plan.updates}`), el("ul", { class: "items" },
        (plan.updateList || []).map((u) => el("li", {}, el("code", {}, u.deviceId), " changes " + u.fields.join(", "))))] : [],
      idList("Deletions", plan.deleteIds || [], plan.deletes));
    let confirmInput;
    if (guard) {
      confirmInput = el("input", { id: "confirm-deletions", inputmode: "numeric", autocomplete: "off" });
      card.append(el("div", { class: "error", role: "alert" },
        el("p", {}, `This replace would delete ${plural(plan.deletes, "device")}, more than the ${guard.maxDeletions} allowed without confirmation.`),
        el("label", { for: "confirm-deletions" }, `Type ${plan.deletes} to confirm the deletions`), confirmInput));
      apply.disabled = true;
      confirmInput.addEventListener("input", () => { apply.disabled = confirmInput.value.trim() !== String(plan.deletes); });
    }
    card.append(el("div", { class: "actions" }, apply), out);
    apply.addEventListener("click", async () => {
      apply.disabled = true;
      out.textContent = "Applying…";
      const { status, body } = await send(false, guard ? plan.deletes : undefined);
      if (status === 409 && body.plan) return showPlan(body.plan, body);
      if (status === 201) { location.assign("/manifests/" + body.manifest.id); return; }
      if (status === 200 && body.unchanged) {
        out.replaceChildren("Identical to the fleet's latest manifest: nothing to do. ", el("a", { href: "/manifests/" + body.manifest.id }, `See manifest #${body.manifest.id}`));
        return;
      }
      apply.disabled = false;
      out.textContent = (body && body.error) || "The upload failed.";
    });
    result.replaceChildren(card);
  }
}

// --- manifest: live progress by SSE, retry, cancel ---
function manifest() {
  const root = $("#progress");
  if (!root) return;
  const id = root.dataset.id;
  const streamState = $("#stream-state");
  let stream;
  const connect = () => {
    if (stream) return stream.reopen();
    stream = liveStream(root.dataset.stream, {
      progress: (ev) => draw(JSON.parse(ev.data)),
      done: () => { stream.close(); streamState.textContent = "finished"; refreshFailures(); },
    }, (state) => { streamState.textContent = state; });
  };
  function draw(p) {
    const pct = p.total ? ((100 * p.settled) / p.total).toFixed(1) : "100.0";
    $("#settled").textContent = p.settled;
    $("#total").textContent = p.total;
    $("#pct").textContent = pct;
    const meter = $("#meter");
    meter.max = Math.max(p.total, 1);
    meter.value = p.settled;
    meter.textContent = pct + "%";
    $("#rate").textContent = (p.devicesPerSecond || 0).toFixed(1);
    $("#eta").textContent = p.done ? "done" : duration(p.etaSeconds);
    $("#limiter").textContent = p.done ? "" : limiterNote(p.cloud);
    $("#by-status").replaceChildren(bar(p.byStatus));
    drawGroups(p);
    const state = $("#state");
    const st = p.manifest.cancelledAt ? "cancelled" : p.done ? "done" : "in progress";
    state.textContent = st;
    state.className = "state state-" + st;
    const cancel = $("#cancel");
    if (cancel) cancel.disabled = p.done || !!p.manifest.cancelledAt;
    // The failures are read again only when their count moved (a retry that fails
    // anew keeps it, and the list is read again on done).
    if (p.failed !== failedSeen) { failedSeen = p.failed; refreshFailures(); }
  }
  // drawGroups draws the page of groups the stream sends (the page this one asked
  // for: the stream has its query) and keeps the count of groups and the link to
  // the next page up to date, as a large manifest's apply adds groups.
  function drawGroups(p) {
    const groups = Object.keys(p.byGroup || {}).sort();
    const alone = new URLSearchParams(location.search).has("group");
    $("#groups").replaceChildren(...(groups.length ? groups.map((g) => {
      const { settled, total } = settledOf(p.byGroup[g]);
      return el("div", { class: "group" }, el("h3", {}, g || "(no group)"), el("p", {}, `${settled} of ${total} settled`), bar(p.byGroup[g]));
    }) : [el("p", {}, alone ? "No device of this manifest is in that group." : "No groups.")]));
    if (p.groups === undefined) return;
    const set = (sel, text) => { const e = $(sel); if (e) e.textContent = text; };
    set("#groups-shown", groups.length);
    set("#groups-total", p.groups);
    const first = !new URLSearchParams(location.search).has("groups_after") && !alone;
    const more = first ? p.groups - groups.length : 0; // groupPages.More's rule
    set("#groups-more", more > 0 ? `${plural(more, "more group")}.` : p.nextGroupsAfter != null ? "More groups follow." : "");
    const next = $("#groups-next");
    if (next && !alone) {
      // "" is a cursor too: the "(no group)" group's name.
      next.hidden = p.nextGroupsAfter == null;
      if (p.nextGroupsAfter != null) next.href = `/manifests/${id}?` + new URLSearchParams({ groups_after: p.nextGroupsAfter });
    }
  }
  let lastFailures = -1, failedSeen = Number($("#progress").dataset.failed);
  async function refreshFailures() {
    const { status, body } = await api("GET", `/v1/manifests/${id}/failures`);
    if (status !== 200 || body.failures.length === lastFailures) return;
    lastFailures = body.failures.length;
    const fleet = $("#progress").querySelector("strong").textContent;
    $("#failures").replaceChildren(body.failures.length ? el("table", {},
      el("thead", {}, el("tr", {}, ["Line", "Device", "HTTP status", "Code", "Message"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, body.failures.map((f) => el("tr", {},
        el("td", {}, f.line),
        el("td", {}, el("a", { href: `/fleets/${encodeURIComponent(fleet)}/devices/${encodeURIComponent(f.deviceId)}` }, f.deviceId)),
        el("td", {}, f.httpStatus || ""), el("td", {}, f.errorCode || ""), el("td", {}, f.message)))))
      : el("p", {}, "No device has failed."));
    const retry = $("#retry");
    if (retry) retry.disabled = body.failures.length === 0;
  }
  const say = (msg) => { $("#action-result").textContent = msg; };
  $("#print")?.addEventListener("click", () => window.print());
  $("#retry")?.addEventListener("click", async () => {
    const { status, body } = await api("POST", `/v1/retry?manifest=${id}`);
    say(status === 200 ? `${plural(body.retried, "failed device")} scheduled again.` : body.error);
    lastFailures = -1;
    connect();
  });
  const cancel = $("#cancel");
  cancel?.addEventListener("click", async () => {
    if (!cancel.dataset.armed) {
      cancel.dataset.armed = "1";
      cancel.textContent = "Yes, cancel its owed work";
      cancel.classList.add("danger");
      say("Calls in flight will finish; devices not started will say cancelled. Press again to confirm.");
      return;
    }
    cancel.disabled = true;
    for (;;) {
      const { status, body } = await api("POST", `/v1/manifests/${id}/cancel`);
      if (status !== 200) { say(body.error); return; }
      if (body.inFlight === 0) {
        const now = STATUSES.filter((s) => body.byStatus[s]).map((s) => `${body.byStatus[s]} ${label(s)}`).join(", ");
        say(`Cancelled: ${plural(body.byStatus.cancelled || 0, "device")} will not be provisioned. Now: ${now}.`);
        cancel.textContent = "Cancelled";
        cancel.classList.remove("danger");
        break;
      }
      say(`Waiting for ${plural(body.inFlight, "call")} in flight to finish…`);
      await new Promise((r) => setTimeout(r, 500));
    }
    connect();
  });
  connect();
}

// --- device: reveal a password, never kept ---
function device() {
  const reveal = $("#reveal");
  if (!reveal) return;
  const box = $("#secret"), value = $("#secret-value");
  reveal.addEventListener("click", async () => {
    const { status, body } = await api("GET", `/v1/fleets/${encodeURIComponent(reveal.dataset.fleet)}/devices/${encodeURIComponent(reveal.dataset.device)}/credentials`);
    if (status !== 200) { value.textContent = body.error; box.hidden = false; return; }
    value.textContent = body.cloudPassword;
    box.hidden = false;
    reveal.disabled = true;
    $("#dismiss").focus();
  });
  $("#dismiss").addEventListener("click", () => {
    value.textContent = "";
    box.hidden = true;
    reveal.disabled = false;
    reveal.focus();
  });
}

// --- rotation run: follows the work's progress ---
function rotation() {
  const work = $("#work");
  if (!work) return;
  const tick = async () => {
    const { status, body } = await api("GET", "/v1/work/" + encodeURIComponent(work.dataset.key));
    if (status !== 200) { $("#work-state").textContent = body.error; return; }
    $("#work-settled").textContent = body.settled;
    $("#work-total").textContent = body.total;
    const meter = $("#work-meter");
    meter.max = Math.max(body.total, 1);
    meter.value = body.settled;
    if (body.done) { $("#work-state").textContent = `Done: ${body.failed || 0} failed.`; return; }
    $("#work-state").textContent = "Rotating…";
    setTimeout(tick, 1000);
  };
  tick();
}

document.addEventListener("DOMContentLoaded", () => { overview(); upload(); manifest(); device(); rotation(); });
