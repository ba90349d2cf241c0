// The operators' page: search by text or photo, open a track, find the person
// on other cameras, confirm or reject candidates and follow the trace.
// Plain ES module, no build step; everything it loads comes from this service.

const $ = (id) => document.getElementById(id);
const PAGE_SIZE = 20;
const CANDIDATE_PAGE_SIZE = 12;
const FEEDBACK_ROLES = new Set(["investigator", "admin"]);

const state = {
  me: null, // {username, role, cameras}
  cameras: [], // camera ids this user may see
  selectedCameras: new Set(),
  query: null, // the search behind the results grid: {kind: "text", text} | {kind: "image", file, person}
  offset: 0,
  track: null, // the open track (TrackOut)
  candidateOffset: 0,
  traceOpen: false,
};

// ---------------------------------------------------------------- API access

class ApiError extends Error {
  constructor(status, message, kind) {
    super(message);
    this.status = status;
    this.kind = kind;
  }
}

let inFlight = 0;
function setLoading(delta) {
  inFlight += delta;
  $("progress").hidden = inFlight === 0;
  document.body.setAttribute("aria-busy", String(inFlight > 0));
}

// Every request goes through here: the session cookie travels by itself, a 401
// anywhere brings the login form back, and error bodies become readable messages.
async function api(path, { method = "GET", json, form, raw = false } = {}) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (json !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form) {
    init.body = form;
  }
  setLoading(1);
  try {
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ApiError(0, "The camtrace service does not answer. Check the network or ask an admin whether it is running.", "NetworkError");
    }
    if (response.status === 401 && path !== "/api/login") {
      showLogin(state.me ? "Your session has ended. Sign in again." : "");
      throw new ApiError(401, "not signed in", "AuthError");
    }
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      let kind = "HTTPError";
      try {
        const body = await response.json();
        if (body && body.error) ({ error: message, kind = kind } = body);
        else if (body && body.detail) message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      } catch { /* not JSON: keep the status line */ }
      throw new ApiError(response.status, message, kind);
    }
    if (raw) return response;
    return response.status === 204 ? null : await response.json();
  } finally {
    setLoading(-1);
  }
}

function showError(error) {
  if (error instanceof ApiError && error.status === 401) return; // the login form says it
  $("error-text").textContent = error.message || String(error);
  $("error").hidden = false;
}
function clearError() {
  $("error").hidden = true;
}

// Run an action from a button: errors go to the banner, the button is disabled meanwhile.
async function guarded(action, button) {
  clearError();
  if (button) button.disabled = true;
  try {
    return await action();
  } catch (error) {
    showError(error);
  } finally {
    if (button) button.disabled = false;
  }
}

// ---------------------------------------------------------------- formatting

const pad = (n) => String(n).padStart(2, "0");
function formatTime(ts, withDate = true) {
  const d = new Date(ts * 1000);
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return withDate ? `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}` : time;
}
function formatSpan(start, end) {
  const sameDay = new Date(start * 1000).toDateString() === new Date(end * 1000).toDateString();
  return `${formatTime(start)} – ${formatTime(end, !sameDay)}`;
}
function formatDate(ts) {
  const d = new Date(ts * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}
function formatClock(start, end) {
  return `${formatTime(start, false)} – ${formatTime(end, false)}`;
}
function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${pad(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${pad(Math.floor((s % 3600) / 60))} min`;
}
const formatScore = (score) => (score === null || score === undefined ? "–" : score.toFixed(3));

// A small element builder: el("div", {class: "x", dataset: {testid: "y"}}, child, "text").
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") Object.assign(node.style, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

// ---------------------------------------------------------------- live alerts

// New watchlist alerts arrive as server-sent events (only cameras this user may see); each becomes a banner
// with the crop, camera, time and probability, a link to the track, and acknowledge / dismiss.
let alertSource = null;
function watchAlerts() {
  if (alertSource || typeof EventSource === "undefined") return;
  alertSource = new EventSource("/api/alerts/stream");
  alertSource.addEventListener("alert", (event) => showAlert(JSON.parse(event.data)));
}

function stopAlerts() {
  if (alertSource) alertSource.close();
  alertSource = null;
}

function showAlert(alert) {
  const likely = alert.probability === null ? `score ${formatScore(alert.score)}` : `${Math.round(alert.probability * 100)}% likely`;
  const banner = el("div", { class: "alert-banner", dataset: { testid: "alert-banner", alert: String(alert.id) } },
    alert.crop_url ? el("img", { src: alert.crop_url, alt: `Person seen on ${alert.camera_id}` }) : null,
    el("div", { class: "alert-text" }, el("strong", {}, `Watchlist match on ${alert.camera_id}`),
      ` · ${formatTime(alert.ts)} · ${likely}`),
    el("button", { class: "primary", dataset: { testid: "alert-open" }, onclick: () => openTrack(alert.track_id) }, "Open track"),
    el("button", { class: "ghost", dataset: { testid: "alert-ack" }, onclick: () => handleAlert(alert, "acknowledge", banner) },
      "Acknowledge"),
    el("button", { class: "ghost", title: "Not this person", dataset: { testid: "alert-dismiss" },
      onclick: () => handleAlert(alert, "dismiss", banner) }, "Dismiss"));
  $("alerts").prepend(banner);
}

async function handleAlert(alert, action, banner) {
  await guarded(async () => {
    await api(`/api/alerts/${alert.id}/ack`, { method: "POST", json: { action } });
    banner.remove();
  });
}

// ---------------------------------------------------------------- login

function showLogin(message) {
  state.me = null;
  stopAlerts();
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
  $("login-password").value = "";
  $("login-username").focus();
}

async function startApp(me) {
  state.me = me;
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("user-name").textContent = me.username;
  $("user-role").textContent = me.role;
  $("user-role").dataset.role = me.role;
  document.body.dataset.role = me.role;
  document.body.classList.toggle("can-decide", FEEDBACK_ROLES.has(me.role));
  await guarded(loadCameras);
  $("links-panel").hidden = me.role !== "admin";
  if (me.role === "admin") await guarded(loadLinks);
  watchAlerts();
  $("search-text").focus();
  const linked = trackInAddress();
  if (linked) await openTrack(linked, { fromHistory: true });
}

async function loadCameras() {
  const answer = await api("/api/cameras");
  const rows = Array.isArray(answer) ? answer : answer.cameras || [];
  let ids = rows.map((row) => (typeof row === "string" ? row : row.id)).filter(Boolean);
  // The service already limits the list; keep the page honest if it ever does not.
  if (state.me.cameras) ids = ids.filter((id) => state.me.cameras.includes(id));
  state.cameras = [...new Set(ids)].sort();
  state.selectedCameras = new Set([...state.selectedCameras].filter((id) => state.cameras.includes(id)));
  renderChips();
}

async function loadLinks() {
  const answer = await api("/api/links");
  const rows = answer.links.map((link) => el("tr", { dataset: { testid: "link", from: link.camera_from, to: link.camera_to } },
    el("td", {}, link.camera_from), el("td", {}, link.camera_to),
    el("td", {}, formatDuration(link.transit_seconds)), el("td", {}, `± ${formatDuration(link.spread_seconds)}`),
    el("td", {}, String(Math.round(link.evidence)))));
  $("links").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: "5", class: "muted" }, "No links learned yet: ingest footage from more than one camera."))]));
}

function minProbability() {
  const text = $("min-probability").value.trim();
  if (text === "") return undefined;
  const value = Number(text);
  if (Number.isNaN(value) || value < 0 || value > 1) throw new Error("Min probability must be a number between 0 and 1, or empty.");
  return value;
}

const formatProbability = (p) => (p === null || p === undefined ? "" : `${Math.round(p * 100)}%`);

function renderChips() {
  const box = $("camera-chips");
  box.replaceChildren(
    el("span", { class: "chips-label" }, "Cameras"),
    ...state.cameras.map((id) =>
      el("button", {
        type: "button",
        class: "chip",
        "aria-pressed": String(state.selectedCameras.has(id)),
        dataset: { testid: "camera-chip", camera: id },
        onclick: () => {
          if (state.selectedCameras.has(id)) state.selectedCameras.delete(id);
          else state.selectedCameras.add(id);
          renderChips();
          if (state.query && !$("results-view").hidden) runSearch();
        },
      }, id)),
  );
  if (!state.cameras.length) box.append(el("span", { class: "muted" }, "no cameras indexed yet"));
  else if (!state.selectedCameras.size) box.append(el("span", { class: "muted chips-hint" }, "all"));
}

// ---------------------------------------------------------------- filters

function localToIso(value, name) {
  if (!value) return undefined;
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) throw new Error(`${name}: '${value}' is not a date and time`);
  return date.toISOString(); // with its zone, so the server does not guess ours
}

function currentFilters() {
  const since = localToIso($("since").value, "From");
  const until = localToIso($("until").value, "To");
  if (since && until && since > until) throw new Error("“From” is after “To”: swap them or clear one.");
  const minText = $("min-score").value.trim();
  const minScore = minText === "" ? undefined : Number(minText);
  if (minScore !== undefined && (Number.isNaN(minScore) || minScore < -1 || minScore > 1)) {
    throw new Error("Min score must be a number between -1 and 1, or empty.");
  }
  return { cameras: [...state.selectedCameras], since, until, min_score: minScore };
}

// ---------------------------------------------------------------- search and results

function showView(name) {
  $("results-view").hidden = name !== "results";
  $("track-view").hidden = name !== "track";
  window.scrollTo(0, 0);
}

function resultCard(result, { onOpen, onElsewhere }) {
  const card = el("article", { class: "card", dataset: { testid: "result-card", track: result.track_id, camera: result.camera_id } },
    el("button", { class: "thumb", title: "Open this track", dataset: { testid: "open-track" }, onclick: onOpen },
      el("img", { src: result.crop_url, alt: `Person on ${result.camera_id}`, loading: "lazy" }),
      el("span", { class: "score", dataset: { testid: "score" } }, formatScore(result.score))),
    el("div", { class: "card-body" },
      el("div", { class: "camera", dataset: { testid: "card-camera" } }, result.camera_id),
      el("div", { class: "time" }, formatClock(result.ts_start, result.ts_end)),
      el("div", { class: "muted small" }, `${formatDate(result.ts_start)} · ${formatDuration(result.ts_end - result.ts_start)}`)),
    el("button", { class: "elsewhere", dataset: { testid: "find-elsewhere-card" }, onclick: onElsewhere }, "Find elsewhere"));
  return card;
}

async function searchRequest(query, offset) {
  const filters = currentFilters();
  if (query.kind === "text") {
    return api("/api/search/text", { method: "POST", json: { text: query.text, ...filters, limit: PAGE_SIZE, offset } });
  }
  const params = new URLSearchParams({ limit: PAGE_SIZE, offset, detect: String(!query.crop) });
  for (const camera of filters.cameras) params.append("cameras", camera);
  if (filters.since) params.set("since", filters.since);
  if (filters.until) params.set("until", filters.until);
  if (filters.min_score !== undefined) params.set("min_score", filters.min_score);
  if (query.person !== null && query.person !== undefined) params.set("person", query.person);
  const form = new FormData();
  form.append("file", query.file, query.file.name || "photo.jpg");
  return api(`/api/search/image?${params}`, { method: "POST", form });
}

// Run `query` (default: the current one again); the page changes only when the service answered,
// so a failed search leaves the previous results in place.
async function runSearch({ append = false, query = state.query, title } = {}) {
  if (!query) return;
  await guarded(async () => {
    const offset = append ? state.offset + PAGE_SIZE : 0;
    const answer = await searchRequest(query, offset);
    state.query = query;
    state.offset = offset;
    if (title) $("results-title").textContent = title;
    showView("results");
    $("welcome").hidden = true;
    if (state.query.kind === "image") renderPersons(answer);
    else $("photo-panel").hidden = true;
    const grid = $("results");
    if (!append) grid.replaceChildren();
    for (const result of answer.results) {
      grid.append(resultCard(result, {
        onOpen: () => openTrack(result.track_id),
        onElsewhere: () => openTrack(result.track_id, { findElsewhere: true }),
      }));
    }
    const shown = grid.children.length;
    $("results-count").textContent = shown ? `${shown} track${shown === 1 ? "" : "s"}, best first` : "";
    $("results-empty").hidden = shown > 0;
    $("results-empty").textContent = "No one matches. Widen the time range, select more cameras or lower the min score.";
    $("more-results").hidden = answer.results.length < PAGE_SIZE;
  }, append ? $("more-results") : $("search-submit"));
}

function searchText(text) {
  runSearch({ query: { kind: "text", text }, title: `“${text}”` });
}

function searchPhoto(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    showError(new Error(`'${file.name}' is not an image: drop a JPEG or PNG photo.`));
    return;
  }
  const query = { kind: "image", file, person: null, crop: $("photo-is-crop").checked };
  runSearch({ query, title: `Photo: ${file.name}` }).then(() => {
    if (state.query !== query) return; // the service refused it
    const preview = $("photo-preview");
    if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
  });
}

function renderPersons(answer) {
  const persons = answer.persons || [];
  $("photo-panel").hidden = false;
  const box = $("persons");
  box.replaceChildren();
  if (!persons.length) {
    box.append(el("p", { class: "muted" }, state.query.crop
      ? "Searched with the whole photo (marked as a crop)."
      : "Nobody was detected: the whole photo was searched. Crop it to the person for better results."));
    return;
  }
  state.query.person = answer.person;
  for (const person of persons) {
    const chosen = person.index === answer.person;
    box.append(el("button", {
      class: "person",
      "aria-pressed": String(chosen),
      title: `Person ${person.index + 1}, detector confidence ${person.confidence.toFixed(2)}`,
      dataset: { testid: "person-choice", index: person.index },
      onclick: () => runSearch({ query: { ...state.query, person: person.index } }),
    },
    person.crop_url ? el("img", { src: person.crop_url, alt: `Person ${person.index + 1}` }) : el("span", {}, `#${person.index + 1}`),
    el("span", { class: "small" }, `${Math.round(person.confidence * 100)} %`)));
  }
}

// ---------------------------------------------------------------- track and investigation

// The open track is in the address (#track/<id>): the browser's Back returns to
// the results, and a reload or a shared link opens the same track.
const TRACK_HASH = "#track/";
function trackInAddress() {
  return location.hash.startsWith(TRACK_HASH) ? decodeURIComponent(location.hash.slice(TRACK_HASH.length)) : null;
}

async function openTrack(trackId, { findElsewhere = false, fromHistory = false } = {}) {
  await guarded(async () => {
    const track = await api(`/api/tracks/${encodeURIComponent(trackId)}`);
    state.track = track;
    state.candidateOffset = 0;
    state.traceOpen = false;
    $("track-title").textContent = track.track_id;
    $("track-camera").textContent = track.camera_id;
    $("track-span").textContent = formatSpan(track.ts_start, track.ts_end);
    $("track-duration").textContent = formatDuration(track.ts_end - track.ts_start);
    $("track-frame").src = track.frame_url || `/api/tracks/${encodeURIComponent(track.track_id)}/frame`;
    showClip(track.track_id);
    $("track-crops").replaceChildren(...track.crops.map((crop) =>
      el("figure", { class: "crop", dataset: { testid: "track-crop" } },
        el("img", { src: crop.crop_url, alt: `Crop at ${formatTime(crop.ts)}`, loading: "lazy" }),
        el("figcaption", {}, formatTime(crop.ts, false)))));
    $("candidates").replaceChildren();
    $("candidates-hint").hidden = false;
    $("more-candidates").hidden = true;
    $("trace-panel").hidden = true;
    showView("track");
    if (!fromHistory && trackInAddress() !== track.track_id) {
      history.pushState({ trackId: track.track_id }, "", TRACK_HASH + encodeURIComponent(track.track_id));
    }
    if (findElsewhere) await loadCandidates();
  });
}

// The sighting's video (WebM, cut by the service on first request; byte ranges let the player seek). Muted, so
// that a browser lets the page start it; a source that is gone shows a line instead of a broken player.
function showClip(trackId) {
  const video = $("track-clip");
  $("clip-missing").hidden = true;
  video.hidden = false;
  video.onerror = () => {
    video.hidden = true;
    $("clip-missing").hidden = false;
  };
  video.src = `/api/tracks/${encodeURIComponent(trackId)}/clip`;
}

async function loadCandidates({ append = false } = {}) {
  const track = state.track;
  const offset = append ? state.candidateOffset + CANDIDATE_PAGE_SIZE : 0;
  const answer = await api(`/api/search/track/${encodeURIComponent(track.track_id)}`, {
    method: "POST",
    json: { limit: CANDIDATE_PAGE_SIZE, offset, same_camera: $("same-camera").checked, min_probability: minProbability() ?? null },
  });
  if (state.track !== track) return; // another track was opened meanwhile
  state.candidateOffset = offset;
  const grid = $("candidates");
  grid.dataset.generation = String(Number(grid.dataset.generation || 0) + 1); // lets a test see a fresh answer
  if (!append) grid.replaceChildren();
  for (const result of answer.results) grid.append(candidateCard(result));
  $("candidates-hint").hidden = grid.children.length > 0;
  $("candidates-hint").textContent = "No candidates left on the other cameras.";
  $("more-candidates").hidden = answer.results.length < CANDIDATE_PAGE_SIZE;
}

function candidateCard(result) {
  const canDecide = FEEDBACK_ROLES.has(state.me.role);
  const card = el("article", { class: "card candidate", dataset: { testid: "candidate-card", track: result.track_id, camera: result.camera_id } },
    el("button", { class: "thumb", title: `Open this track (similarity ${formatScore(result.score)})`, onclick: () => openTrack(result.track_id) },
      el("img", { src: result.crop_url, alt: `Candidate on ${result.camera_id}`, loading: "lazy" }),
      el("span", { class: "score probability", dataset: { testid: "probability" }, title: "Probability of being the same person" }, formatProbability(result.probability))),
    el("div", { class: "card-body" },
      el("div", { class: "camera" }, result.camera_id),
      el("div", { class: "time" }, formatClock(result.ts_start, result.ts_end)),
      el("div", { class: "muted small" }, `${formatDate(result.ts_start)} · ${formatDuration(result.ts_end - result.ts_start)}`)),
    canDecide && el("div", { class: "decide" },
      el("button", { class: "confirm", dataset: { testid: "confirm" }, title: "The same person", onclick: (event) => decide(result, "same", card, event.currentTarget) }, "✓ Confirm"),
      el("button", { class: "reject", dataset: { testid: "reject" }, title: "Not the same person", onclick: (event) => decide(result, "different", card, event.currentTarget) }, "✕ Reject")));
  return card;
}

async function decide(result, verdict, card, button) {
  const track = state.track;
  await guarded(async () => {
    await api("/api/feedback", { method: "POST", json: { track_id: track.track_id, candidate_track_id: result.track_id, verdict } });
    card.classList.add(verdict === "same" ? "decided-same" : "decided-different");
    // A decided candidate leaves the list: re-id never proposes it again.
    setTimeout(() => {
      card.remove();
      if (!$("candidates").children.length) {
        $("candidates-hint").hidden = false;
        $("candidates-hint").textContent = "All candidates decided. Look again for more.";
      }
    }, 250);
    if (verdict === "same" || state.traceOpen) await loadTrace();
  }, button);
}

// ---------------------------------------------------------------- trace

async function loadTrace() {
  const track = state.track;
  const min = minProbability();
  const params = min === undefined ? "" : `?min_probability=${min}`;
  const trace = await api(`/api/trace/${encodeURIComponent(track.track_id)}${params}`);
  if (state.track !== track) return;
  state.trace = trace;
  state.traceOpen = true;
  $("trace-panel").hidden = false;
  $("exports").hidden = !FEEDBACK_ROLES.has(state.me.role);
  drawTrace(trace);
}

const LANE_LABEL_WIDTH = 110;
const STEP_WIDTH = 150; // seed and confirmed steps: crop and text
const CANDIDATE_WIDTH = 46; // candidates: the crop and its score, details on hover
const STEP_HEIGHT = 54;
const ROW_GAP = 6;
const CERTAIN = new Set(["seed", "confirmed"]);

const stepWidth = (step) => (CERTAIN.has(step.status) ? STEP_WIDTH : CANDIDATE_WIDTH);

function transitText(seconds, expected, spread) {
  if (seconds === null || seconds === undefined) return "start";
  const text = seconds < 0 ? `overlap ${formatDuration(-seconds)}` : `+${formatDuration(seconds)}`;
  return expected === null || expected === undefined ? text : `${text} (usually ${formatDuration(expected)} ± ${formatDuration(spread || 0)})`;
}

// One lane per camera along a time axis. A step's block starts at its time;
// blocks that would overlap in a lane go to another row of that lane. The
// certain steps (seed, confirmed) are linked in time order and the links carry
// the transit time; each block also names its gap to the step before it.
function drawTrace(trace) {
  const box = $("trace-timeline");
  box.replaceChildren();
  const showAlternatives = $("trace-candidates").checked;
  const steps = trace.steps
    .filter((step) => showAlternatives || step.status !== "alternative")
    .sort((a, b) => a.ts_start - b.ts_start);
  if (!steps.length) {
    box.append(el("p", { class: "muted" }, "No steps yet."));
    return;
  }
  const width = Math.max(box.clientWidth, 640) - LANE_LABEL_WIDTH - 8;
  const t0 = steps[0].ts_start;
  const t1 = Math.max(...steps.map((s) => s.ts_end));
  const span = Math.max(t1 - t0, 1);
  const usable = width - STEP_WIDTH;
  const xOf = (ts) => ((ts - t0) / span) * usable;

  const cameras = [...new Set(steps.map((s) => s.camera_id))];
  const lanes = new Map(cameras.map((camera) => [camera, { rows: [], top: 0, height: 0 }]));
  const placed = new Map();
  // Certain steps take the first rows of their lane; candidates fill in around them.
  const certainFirst = [...steps.filter((s) => CERTAIN.has(s.status)), ...steps.filter((s) => !CERTAIN.has(s.status))];
  const onPath = (step) => step.status !== "alternative";
  // Candidates may overlap each other by up to half a block (a fanned stack: the
  // order number and the flag stay visible), never a certain step.
  const GAP = 6;
  const STACK = CANDIDATE_WIDTH * 0.5;
  for (const step of certainFirst) {
    const lane = lanes.get(step.camera_id);
    const x = xOf(step.ts_start);
    const right = x + stepWidth(step);
    const candidate = !CERTAIN.has(step.status);
    const clear = ([l, r, otherIsCandidate]) => {
      const margin = candidate && otherIsCandidate ? -STACK : GAP;
      return r + margin <= x || right + margin <= l;
    };
    let row = lane.rows.findIndex((intervals) => intervals.every(clear));
    if (row === -1) row = lane.rows.push([]) - 1;
    lane.rows[row].push([x, right, candidate]);
    placed.set(step, { x, row });
  }
  let top = 24; // room for the axis labels
  for (const lane of lanes.values()) {
    lane.top = top;
    lane.height = lane.rows.length * (STEP_HEIGHT + ROW_GAP) + ROW_GAP;
    top += lane.height;
  }
  const height = top + 2;
  const canvas = el("div", { class: "timeline-canvas", style: { height: `${height}px` } });

  const tickEvery = niceInterval(span / 6);
  for (let t = Math.ceil(t0 / tickEvery) * tickEvery; t <= t1; t += tickEvery) {
    const left = LANE_LABEL_WIDTH + xOf(t);
    canvas.append(el("div", { class: "tick", style: { left: `${left}px`, height: `${height - 18}px` } }),
      el("div", { class: "tick-label", style: { left: `${left}px` } }, formatTime(t, false)));
  }
  for (const [camera, lane] of lanes) {
    canvas.append(el("div", { class: "lane", dataset: { testid: "trace-lane", camera }, style: { top: `${lane.top}px`, height: `${lane.height}px` } },
      el("div", { class: "lane-label", style: { width: `${LANE_LABEL_WIDTH - 12}px` } }, camera)));
  }

  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "connectors");
  svg.setAttribute("width", String(LANE_LABEL_WIDTH + width));
  svg.setAttribute("height", String(height));
  canvas.append(svg);

  const chain = [];
  steps.forEach((step, order) => {
    const lane = lanes.get(step.camera_id);
    const { x, row } = placed.get(step);
    const left = LANE_LABEL_WIDTH + x;
    const blockTop = lane.top + ROW_GAP + row * (STEP_HEIGHT + ROW_GAP);
    const spanWidth = Math.max(4, ((step.ts_end - step.ts_start) / span) * usable);
    const merged = step.merged_track_ids?.length ? `, ${step.merged_track_ids.length + 1} tracks merged` : "";
    const blockWidth = stepWidth(step);
    const block = el("button", {
      class: ["step", step.status, step.implausible ? "implausible" : ""].join(" "),
      style: { left: `${left}px`, top: `${blockTop}px`, width: `${blockWidth}px`, height: `${STEP_HEIGHT}px` },
      title: `${order + 1}. ${step.camera_id}, ${formatSpan(step.ts_start, step.ts_end)}, ${step.status}` +
        `${CERTAIN.has(step.status) ? "" : `, ${formatProbability(step.probability)} likely the same person`}${merged}; ` +
        (step.transit_seconds === null ? (onPath(step) ? "first step" : "not on the path")
          : `${transitText(step.transit_seconds, step.expected_transit_seconds, step.transit_spread_seconds)} after the step before`) +
        (step.implausible ? ". Seen while the path is elsewhere: cannot be the same person" : ""),
      dataset: { testid: "trace-step", track: step.track_id, status: step.status, implausible: String(step.implausible), probability: String(step.probability) },
      onclick: () => openTrack(step.track_id),
    },
    el("span", { class: "step-crop" },
      el("img", { src: step.crop_url, alt: "" }),
      CERTAIN.has(step.status) ? "" : el("span", { class: "step-score", dataset: { testid: "step-probability" } }, formatProbability(step.probability))),
    el("span", { class: "step-order" }, `${order + 1}`),
    step.implausible && !CERTAIN.has(step.status) ? el("span", { class: "step-flag", dataset: { testid: "implausible" } }, "⚠") : "",
    !CERTAIN.has(step.status) ? "" : el("span", { class: "step-text" },
      el("span", { class: "step-status" }, step.status),
      el("span", { class: "step-time" }, formatTime(step.ts_start, false)),
      step.implausible
        ? el("span", { class: "flag", dataset: { testid: "implausible" } }, "⚠ same time")
        : el("span", { class: "step-transit", dataset: { testid: "transit" } },
          transitText(step.transit_seconds, step.expected_transit_seconds, step.transit_spread_seconds))),
    el("span", { class: "span-bar", style: { width: `${Math.min(spanWidth, blockWidth)}px` } }));
    canvas.append(block);
    if (onPath(step)) chain.push({ left, top: blockTop, step });
  });

  for (let i = 1; i < chain.length; i += 1) {
    const from = chain[i - 1];
    const to = chain[i];
    const x1 = from.left + stepWidth(from.step);
    const y1 = from.top + STEP_HEIGHT / 2;
    const x2 = to.left;
    const y2 = to.top + STEP_HEIGHT / 2;
    const bend = Math.max(40, Math.abs(x2 - x1) / 2);
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`);
    path.setAttribute("class", "link");
    svg.append(path);
    const gap = to.step.ts_start - from.step.ts_end;
    canvas.append(el("span", {
      class: "transit",
      dataset: { testid: "chain-transit" },
      style: { left: `${(x1 + x2) / 2}px`, top: `${(y1 + y2) / 2}px` },
    }, transitText(gap, to.step.expected_transit_seconds, to.step.transit_spread_seconds)));
  }
  box.append(canvas);
}

function niceInterval(raw) {
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];
  return steps.find((s) => s >= raw) || 86400 * Math.ceil(raw / 86400);
}

// ---------------------------------------------------------------- export

async function exportTrace(format, button) {
  const track = state.track;
  await guarded(async () => {
    const params = new URLSearchParams({ format });
    const min = minProbability();
    if (min !== undefined) params.set("min_probability", min);
    const response = await api(`/api/trace/${encodeURIComponent(track.track_id)}/export?${params}`, { raw: true });
    const blob = await response.blob();
    const disposition = response.headers.get("content-disposition") || "";
    const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition);
    const name = match ? decodeURIComponent(match[1]) : `trace-${track.track_id.replaceAll(":", "_")}.${format}`;
    const link = el("a", { href: URL.createObjectURL(blob), download: name, hidden: true });
    document.body.append(link);
    link.click();
    setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
  }, button);
}

// ---------------------------------------------------------------- wiring

function wire() {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = event.submitter;
    button.disabled = true;
    try {
      const me = await api("/api/login", { method: "POST", json: { username: $("login-username").value, password: $("login-password").value } });
      await startApp(me);
    } catch (error) {
      $("login-error").textContent = error.status === 401 ? "Wrong username or password." : error.message;
      $("login-error").hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  $("logout").addEventListener("click", async () => {
    try { await api("/api/logout", { method: "POST" }); } catch { /* signed out either way */ }
    state.query = null;
    state.track = null;
    $("results").replaceChildren();
    showLogin();
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("search-text").value.trim();
    if (!text) {
      showError(new Error("Type a description first, e.g. “man, grey hoodie, blue jeans”."));
      return;
    }
    searchText(text);
  });
  $("photo-input").addEventListener("change", (event) => {
    searchPhoto(event.target.files[0]);
    event.target.value = "";
  });
  $("more-results").addEventListener("click", () => runSearch({ append: true }));
  $("error-close").addEventListener("click", clearError);
  $("back").addEventListener("click", () => backToResults());
  $("find-elsewhere").addEventListener("click", (event) => guarded(loadCandidates, event.currentTarget));
  $("more-candidates").addEventListener("click", (event) => guarded(() => loadCandidates({ append: true }), event.currentTarget));
  $("same-camera").addEventListener("change", () => guarded(loadCandidates));
  $("open-trace").addEventListener("click", (event) => guarded(loadTrace, event.currentTarget));
  $("trace-candidates").addEventListener("change", () => { if (state.trace) drawTrace(state.trace); });
  $("min-probability").addEventListener("change", () => guarded(async () => {
    if (state.traceOpen) await loadTrace();
    if ($("candidates").children.length) await loadCandidates();
  }));
  for (const button of document.querySelectorAll("#exports button")) {
    button.addEventListener("click", () => exportTrace(button.dataset.format, button));
  }
  for (const id of ["since", "until", "min-score"]) {
    $(id).addEventListener("change", () => { if (state.query && !$("results-view").hidden) runSearch(); });
  }
  window.addEventListener("popstate", () => {
    if (!state.me) return;
    const linked = trackInAddress();
    if (linked) openTrack(linked, { fromHistory: true });
    else backToResults({ fromHistory: true });
  });
  window.addEventListener("resize", () => { if (state.traceOpen && state.trace) drawTrace(state.trace); });

  // Drag and drop a photo anywhere on the page.
  let dragDepth = 0;
  const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
  document.addEventListener("dragenter", (event) => {
    if (!hasFiles(event) || !state.me) return;
    dragDepth += 1;
    $("drop-zone").hidden = false;
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) $("drop-zone").hidden = true;
  });
  document.addEventListener("dragover", (event) => { if (hasFiles(event)) event.preventDefault(); });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    dragDepth = 0;
    $("drop-zone").hidden = true;
    if (state.me) searchPhoto(event.dataTransfer.files[0]);
  });

  // Keyboard: "/" to search, Escape to go back.
  document.addEventListener("keydown", (event) => {
    const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement?.tagName);
    if (event.key === "/" && !typing && state.me) {
      event.preventDefault();
      $("search-text").focus();
      $("search-text").select();
    } else if (event.key === "Escape" && state.me) {
      if (!$("error").hidden) clearError();
      else if (!$("track-view").hidden) backToResults();
    }
  });
}

function backToResults({ fromHistory = false } = {}) {
  state.track = null;
  $("track-clip").pause();
  state.traceOpen = false;
  showView("results");
  if (!fromHistory && trackInAddress()) history.pushState(null, "", location.pathname + location.search);
}

async function boot() {
  wire();
  try {
    await startApp(await api("/api/me"));
  } catch (error) {
    if (error.status !== 401) showLogin(error.message);
  }
}

boot();
