"use strict";
// The nano4M explorer page: plain JS, no build step. Every control changes `state` and calls update(),
// which asks /api/predict for all chosen strategies at once and redraws. Attention rows for every target
// token come with the prediction, so picking a token or a query only redraws.

const TILE = 128; // CSS pixels of an image tile
const SMALL = 64; // training-mask tiles
const MASK_COLORS = {hidden: "rgba(58,58,58,0.82)", target: "rgba(232,65,60,0.62)"}; // as model/mask_figure.py
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf"];

const state = {
  info: null,
  scene: {source: "heldout", index: 0, seed: 0, caption: ""},
  given: ["rgb"],
  targets: ["semseg", "depth", "caption"],
  strategies: [],
  hidden: new Set(), // painted cells of the image grid
  layer: -1,
  target: null, // {modality, position}: the decoder token whose cross-attention is shown
  query: null, // {modality, position}: the encoder token whose self-attention is shown (null: mean)
  attribute: "objects",
  confidence: true,
  result: null,
};
let predictTicket = 0;
let featureTicket = 0;

// ---------- small helpers ----------

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function setStatus(text, error = false) {
  $("#status").textContent = text;
  $("#status").classList.toggle("error", error);
}

function modality(name) {
  return state.info.modalities.find((m) => m.name === name);
}

const isImage = (name) => modality(name).kind === "image";
const sameToken = (a, b) => a && b && a.modality === b.modality && a.position === b.position;

// ---------- drawing ----------

// An image with a canvas over it; `cells(fill)` paints grid cells, `onCell(i)` makes cells clickable.
function imageTile(png, grid, {title, size = TILE, cells, outline, onCell}) {
  const [h, w] = grid;
  const canvas = el("canvas", {width: size, height: size});
  const ctx = canvas.getContext("2d");
  const cw = size / w;
  const ch = size / h;
  const fill = (cell, color) => {
    ctx.fillStyle = color;
    ctx.fillRect((cell % w) * cw, Math.floor(cell / w) * ch, cw, ch);
  };
  if (cells) cells(fill);
  if (outline !== null && outline !== undefined) {
    ctx.strokeStyle = "#ffb300";
    ctx.lineWidth = 3;
    ctx.strokeRect((outline % w) * cw + 1.5, Math.floor(outline / w) * ch + 1.5, cw - 3, ch - 3);
  }
  if (onCell) {
    canvas.classList.add("clickable");
    canvas.addEventListener("click", (event) => {
      const box = canvas.getBoundingClientRect();
      const col = Math.min(w - 1, Math.floor((event.clientX - box.left) / cw));
      const row = Math.min(h - 1, Math.floor((event.clientY - box.top) / ch));
      onCell(row * w + col);
    });
  }
  const img = el("img", {src: png, width: size, height: size, alt: title});
  return el("figure", {class: "tile"}, el("div", {class: "stack"}, img, canvas), el("figcaption", {}, title));
}

// Words as chips; `shade(i)` gives a chip's background, `onWord(i)` makes chips clickable.
function wordsTile(words, {title, shade, selected, onWord}) {
  const chips = words.map((word, i) => {
    const chip = el("span", {title: `position ${i}`}, word);
    if (shade) chip.style.background = shade(i);
    if (i === selected) chip.classList.add("selected");
    if (onWord) {
      chip.classList.add("clickable");
      chip.addEventListener("click", () => onWord(i));
    }
    return chip;
  });
  return el("figure", {class: "tile"}, el("div", {class: "words"}, ...chips), el("figcaption", {}, title));
}

// Boxes drawn as rectangles on a light canvas of the scene's size.
function boxesTile(boxes, title) {
  const canvas = el("canvas", {width: TILE, height: TILE});
  const ctx = canvas.getContext("2d");
  const scale = TILE / state.info.canvas;
  ctx.fillStyle = "#f2f2f2";
  ctx.fillRect(0, 0, TILE, TILE);
  ctx.font = "9px sans-serif";
  boxes.forEach(([cls, x0, y0, x1, y1], i) => {
    ctx.strokeStyle = PALETTE[i % PALETTE.length];
    ctx.lineWidth = 2;
    ctx.strokeRect(x0 * scale, y0 * scale, (x1 - x0 + 1) * scale, (y1 - y0 + 1) * scale);
    ctx.fillStyle = "#222";
    ctx.fillText(cls.replace("_", " "), x0 * scale + 2, Math.max(9, y0 * scale - 2));
  });
  return el("figure", {class: "tile"}, canvas, el("figcaption", {}, title));
}

const heat = (w, max) => `rgba(255, 179, 0, ${max > 0 ? (0.9 * w) / max : 0})`;
const confidenceShade = (c) => `rgba(255, 255, 255, ${0.25 + 0.75 * c})`;

// Words with EOS shown, as the model's sequences end with it.
const withEos = (words) => [...words, "[EOS]"];

// ---------- the attention rows ----------

// An attention row over the encoder slots (named by `keys`) -> per given modality, a Map position -> weight.
function byModality(row, keys) {
  const out = {};
  keys.modality.forEach((m, slot) => {
    out[m] = out[m] || new Map();
    out[m].set(keys.position[slot], row[slot]);
  });
  return out;
}

// "rgb #12 (0.081)": the slot a row attends to most.
function peak(row, keys) {
  if (!row || !row.length) return "";
  const best = row.indexOf(Math.max(...row));
  return `; most: ${keys.modality[best]} #${keys.position[best]} (${row[best].toFixed(3)})`;
}

function meanRows(matrix) {
  const mean = new Array(matrix.length).fill(0);
  matrix.forEach((row) => row.forEach((w, j) => { mean[j] += w / matrix.length; }));
  return mean;
}

// Tiles of the given inputs with `row` (weights over encoder slots) as a spotlight.
function attentionTiles(row, keys, {title, marked, onToken}) {
  const scene = state.result.scene;
  const weights = row ? byModality(row, keys) : {};
  return state.given.map((m) => {
    const w = weights[m] || new Map();
    const max = Math.max(0, ...w.values());
    const mark = marked && marked.modality === m ? marked.position : null;
    const click = onToken ? (position) => onToken({modality: m, position}) : null;
    if (isImage(m)) {
      return imageTile(scene.decoded[m].png, modality(m).grid, {
        title: `${m}: ${title}`, outline: mark, onCell: click,
        cells: (fill) => {
          for (let cell = 0; cell < modality(m).grid[0] * modality(m).grid[1]; cell++) {
            const value = w.has(cell) ? w.get(cell) : 0;
            fill(cell, `rgba(0, 0, 0, ${w.has(cell) ? 0.8 * (1 - value / (max || 1)) : 0.85})`);
          }
        },
      });
    }
    return wordsTile(withEos(scene.decoded[m].words), {
      title: `${m}: ${title}`, selected: mark, onWord: click, shade: (i) => heat(w.get(i) || 0, max),
    });
  });
}

// ---------- one strategy's column ----------

function predictionTiles(name, column) {
  const result = state.result;
  return result.targets.map((m) => {
    const p = column.predictions[m];
    const chosen = state.target && state.target.modality === m ? state.target.position : null;
    const pick = (position) => { state.target = {modality: m, position}; render(); };
    const mean = p.confidence.length ? p.confidence.reduce((a, b) => a + b, 0) / p.confidence.length : 0;
    const role = state.given.includes(m) ? "in-painted" : "predicted";
    const title = `${m} (${role}), confidence ${mean.toFixed(2)}`;
    if (isImage(m)) {
      return imageTile(p.png, modality(m).grid, {
        title, outline: chosen, onCell: pick,
        cells: (fill) => state.confidence && p.confidence.forEach((c, cell) => fill(cell, `rgba(0,0,0,${0.7 * (1 - c)})`)),
      });
    }
    const tiles = [wordsTile(withEos(p.words), {
      title, selected: chosen, onWord: pick, shade: (i) => confidenceShade(p.confidence[i] ?? 0),
    })];
    if (m === "boxes") tiles.unshift(boxesTile(p.boxes, `boxes (${name})`));
    return el("div", {class: "row"}, ...tiles);
  });
}

function trainingMaskTiles(column) {
  const masks = column.training_masks;
  if (!masks) return [el("p", {class: "note"}, "a typed caption has no other modalities to mask")];
  const decoded = state.result.scene.decoded;
  const images = state.info.modalities.filter((m) => m.kind === "image").map((m) => m.name);
  const sequences = state.info.modalities.filter((m) => m.kind !== "image").map((m) => m.name);
  return [...images, ...sequences].filter((m) => m in masks).map((m) => {
    const {input, target} = masks[m];
    if (isImage(m)) {
      return imageTile(decoded[m].png, modality(m).grid, {
        title: m, size: SMALL,
        cells: (fill) => input.forEach((seen, cell) => {
          if (target[cell]) fill(cell, MASK_COLORS.target);
          else if (!seen) fill(cell, MASK_COLORS.hidden);
        }),
      });
    }
    const words = withEos(decoded[m].words);
    return wordsTile(words, {
      title: m, shade: (i) => (target[i] ? MASK_COLORS.target : input[i] ? "#fff" : MASK_COLORS.hidden),
    });
  });
}

function renderColumn(name) {
  const column = state.result.strategies[name];
  const attention = column.attention;
  const layer = state.layer < 0 ? state.info.layers + state.layer : state.layer;

  const slotOf = (token) => token ? attention.keys.modality.findIndex(
    (m, slot) => m === token.modality && attention.keys.position[slot] === token.position) : -1;
  const querySlot = slotOf(state.query);
  const encoderRow = querySlot >= 0 ? attention.encoder[querySlot] : meanRows(attention.encoder);
  const pickQuery = (token) => { state.query = sameToken(token, state.query) ? null : token; render(); };
  const crossRow = state.target ? (attention.cross[state.target.modality] || [])[state.target.position] : null;
  const targetName = state.target ? `${state.target.modality} #${state.target.position}` : "";

  return el("div", {class: "column", "data-strategy": name},
    el("h3", {}, name),
    el("div", {class: "meta"}, `${column.label} · seed ${column.seed} · ${state.info.objective.metric} `
      + `${Number(column.objective).toPrecision(4)}`),
    el("div", {class: "row-title"}, "predictions (click a token to see its cross-attention)"),
    el("div", {class: "row predictions"}, ...predictionTiles(name, column)),
    el("div", {class: "row-title"}, "its training masks on this scene (clear: seen, red: predicted, dark: hidden)"),
    el("div", {class: "row training-masks"}, ...trainingMaskTiles(column)),
    el("div", {class: "row-title"}, `encoder self-attention, layer ${layer}: `
      + (querySlot >= 0 ? `from ${state.query.modality} #${state.query.position} (click it again for the mean)`
        : "received, mean over queries (click a token to attend from it)") + peak(encoderRow, attention.keys)),
    el("div", {class: "row encoder-attention"}, ...attentionTiles(encoderRow, attention.keys, {
      title: "self-attention", marked: querySlot >= 0 ? state.query : null, onToken: pickQuery,
    })),
    el("div", {class: "row-title"}, `decoder cross-attention, layer ${layer}: from ${targetName}`
      + (crossRow ? peak(crossRow, attention.keys) : " (given, not predicted)")),
    el("div", {class: "row cross-attention", "data-target": targetName},
      ...attentionTiles(crossRow, attention.keys, {title: `from ${targetName}`})),
  );
}

// ---------- the scene and the paint grid ----------

function renderScene() {
  const scene = state.result.scene;
  const inputs = state.given.map((m) => {
    if (!isImage(m)) return wordsTile(withEos(scene.decoded[m].words), {title: `${m} (given)`});
    const hidden = new Set(scene.hidden[m] || []);
    return imageTile(scene.decoded[m].png, modality(m).grid, {
      title: `${m} (given)`, cells: (fill) => hidden.forEach((cell) => fill(cell, MASK_COLORS.hidden)),
    });
  });
  const truths = state.result.targets.filter((m) => m in scene.truth).map((m) => {
    const truth = scene.truth[m];
    if (truth.png) return imageTile(truth.png, modality(m).grid, {title: `${m} (truth)`});
    if (m === "boxes") return boxesTile(truth.boxes, "boxes (truth)");
    return wordsTile(truth.words, {title: `${m} (truth)`});
  });
  $("#scene").replaceChildren(
    el("h3", {id: "scene-label"}, scene.label),
    el("div", {class: "row"}, ...inputs, ...truths),
  );
}

function paintModality() {
  return state.given.find((m) => isImage(m)) || null;
}

function renderPaint() {
  const canvas = $("#paint");
  const ctx = canvas.getContext("2d");
  const m = paintModality();
  const grid = state.info.paint_grid;
  ctx.fillStyle = "#ddd";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!m || !grid || !state.result) {
    $("#paint-note").textContent = "give an image modality to hide cells of it";
    return;
  }
  const image = new Image();
  image.onload = () => {
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
    const [h, w] = grid;
    const cw = canvas.width / w;
    const ch = canvas.height / h;
    ctx.fillStyle = MASK_COLORS.hidden;
    state.hidden.forEach((cell) => ctx.fillRect((cell % w) * cw, Math.floor(cell / w) * ch, cw, ch));
    ctx.strokeStyle = "rgba(255,255,255,0.5)";
    for (let k = 1; k < w; k++) ctx.strokeRect(k * cw, 0, 0, canvas.height);
    for (let k = 1; k < h; k++) ctx.strokeRect(0, k * ch, canvas.width, 0);
  };
  image.src = state.result.scene.decoded[m].png;
  $("#paint-note").textContent = state.hidden.size
    ? `${state.hidden.size} cells hidden from the given images, which are in-painted`
    : "drag over the image to hide cells from the encoder";
}

function setupPainting() {
  const canvas = $("#paint");
  let painting = null; // true: hiding, false: showing again
  const cellAt = (event) => {
    const [h, w] = state.info.paint_grid;
    const box = canvas.getBoundingClientRect();
    const col = Math.min(w - 1, Math.floor(((event.clientX - box.left) / box.width) * w));
    const row = Math.min(h - 1, Math.floor(((event.clientY - box.top) / box.height) * h));
    return row * w + col;
  };
  const paint = (event) => {
    const cell = cellAt(event);
    if (painting) state.hidden.add(cell);
    else state.hidden.delete(cell);
    renderPaint();
  };
  canvas.addEventListener("mousedown", (event) => {
    if (!paintModality() || !state.info.paint_grid) return;
    painting = !state.hidden.has(cellAt(event));
    paint(event);
  });
  canvas.addEventListener("mousemove", (event) => { if (painting !== null) paint(event); });
  window.addEventListener("mouseup", () => {
    if (painting === null) return;
    painting = null;
    update();
  });
  $("#clear-hidden").addEventListener("click", () => { state.hidden.clear(); update(); });
}

// ---------- features ----------

function renderFeatures(data) {
  const plots = Object.entries(data.strategies).map(([name, {points, scene}]) => {
    const size = 220;
    const canvas = el("canvas", {width: size, height: size, "data-strategy": name});
    const ctx = canvas.getContext("2d");
    const all = scene ? [...points, scene] : points;
    const xs = all.map((p) => p[0]);
    const ys = all.map((p) => p[1]);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const at = ([x, y]) => [10 + ((x - x0) / (x1 - x0 || 1)) * (size - 20), size - 10 - ((y - y0) / (y1 - y0 || 1)) * (size - 20)];
    points.forEach((p, i) => {
      const [px, py] = at(p);
      ctx.fillStyle = PALETTE[data.labels[i] % PALETTE.length];
      ctx.beginPath();
      ctx.arc(px, py, 2.5, 0, 2 * Math.PI);
      ctx.fill();
    });
    if (scene) {
      const [px, py] = at(scene);
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(px, py, 6, 0, 2 * Math.PI);
      ctx.stroke();
    }
    return el("figure", {class: "tile"}, canvas, el("figcaption", {}, name));
  });
  const legend = data.categories.map((c, i) => el("span", {}, el("i", {style: `background:${PALETTE[i % PALETTE.length]}`}), c));
  $("#features").replaceChildren(
    el("h3", {}, "Encoder features of held-out scenes (rgb given), PCA per model"),
    el("div", {class: "legend", id: "feature-legend"}, `${data.attribute}: `, ...legend, el("span", {}, "○ this scene")),
    el("div", {class: "row"}, ...plots),
  );
  document.body.dataset.featureUpdates = Number(document.body.dataset.featureUpdates || 0) + 1;
}

async function updateFeatures() {
  const ticket = ++featureTicket;
  try {
    const data = await api("/api/features", {scene: state.scene, strategies: state.strategies, attribute: state.attribute});
    if (ticket === featureTicket) renderFeatures(data);
  } catch (error) {
    if (ticket === featureTicket) $("#features").replaceChildren(el("p", {class: "note"}, error.message));
  }
}

// ---------- report ----------

async function toggleReport() {
  const panel = $("#report");
  panel.hidden = !panel.hidden;
  if (panel.hidden) return;
  const report = await api("/api/report");
  if (report.message) {
    panel.replaceChildren(el("p", {id: "report-message"}, report.message));
    return;
  }
  const href = (file) => `/report/${file.split("/").map(encodeURIComponent).join("/")}`;
  panel.replaceChildren(
    el("h3", {}, `report of ${state.info.study}`),
    report.table ? el("pre", {id: "report-table"}, report.table) : el("p", {}, "no table.md in the report folder"),
    el("div", {}, ...report.files.filter((f) => f.endsWith(".png")).map((f) => el("img", {src: href(f), alt: f}))),
    el("ul", {}, ...report.files.map((f) => el("li", {}, el("a", {href: href(f), target: "_blank"}, f)))),
  );
}

// ---------- the whole page ----------

function keepSelectionsValid() {
  const targets = state.result.targets;
  const first = targets[0];
  if (!state.target || !targets.includes(state.target.modality)) {
    const spec = modality(first);
    const center = spec.kind === "image" ? Math.floor(spec.grid[0] / 2) * spec.grid[1] + Math.floor(spec.grid[1] / 2) : 0;
    state.target = {modality: first, position: center};
  }
  const keys = Object.values(state.result.strategies)[0].attention.keys; // the same inputs for every strategy
  const present = state.query && keys.modality.some((m, s) => m === state.query.modality && keys.position[s] === state.query.position);
  if (!present) state.query = null;
}

function render() {
  renderScene();
  renderPaint();
  $("#columns").replaceChildren(...state.strategies.filter((s) => s in state.result.strategies).map(renderColumn));
  $("#target-note").textContent = `cross-attention from ${state.target.modality} #${state.target.position} (click a predicted token)`;
  $("#query-note").textContent = state.query
    ? `self-attention from ${state.query.modality} #${state.query.position}`
    : "self-attention received, mean over queries";
  document.body.dataset.renders = Number(document.body.dataset.renders || 0) + 1;
}

async function update({features = false} = {}) {
  const ticket = ++predictTicket;
  if (!state.strategies.length) {
    $("#columns").replaceChildren(el("p", {class: "note"}, "choose at least one strategy"));
    return;
  }
  setStatus("predicting…");
  const payload = {
    scene: state.scene, strategies: state.strategies, given: state.given,
    targets: state.targets.filter((m) => !state.given.includes(m)),
    hidden: paintModality() ? [...state.hidden] : [], layer: state.layer,
  };
  try {
    const result = await api("/api/predict", payload);
    if (ticket !== predictTicket) return;
    state.result = result;
    keepSelectionsValid();
    render();
    setStatus(`${state.strategies.length} strategies in ${result.seconds.toFixed(2)} s`);
  } catch (error) {
    if (ticket === predictTicket) setStatus(error.message, true);
  }
  if (features) updateFeatures();
}

function buildControls() {
  const info = state.info;
  $("#study").textContent = `study ${info.study}`;
  $("#objective").textContent = `best run per masking by ${info.objective.metric} (${info.objective.direction})`;
  $("#index").max = info.heldout - 1;
  $("#caption").title = `words it knows: ${info.caption_words.join(" ")}`;
  state.strategies = info.strategies.map((s) => s.masking);
  state.given = state.given.filter((m) => modality(m));
  state.targets = state.targets.filter((m) => modality(m));

  const sceneChanged = () => {
    state.scene = {
      source: document.querySelector("input[name=source]:checked").value,
      index: Math.max(0, Number($("#index").value) || 0),
      seed: Math.max(0, Number($("#seed").value) || 0),
      caption: $("#caption").value,
    };
    if (state.scene.source === "caption") { // a typed caption is the only input there is
      state.given = ["caption"];
      state.targets = state.targets.filter((m) => m !== "caption");
      if (!state.targets.length) state.targets = ["rgb"];
      syncModalityBoxes();
    }
    update({features: true});
  };
  document.querySelectorAll("input[name=source]").forEach((r) => r.addEventListener("change", sceneChanged));
  ["#index", "#seed", "#caption"].forEach((s) => $(s).addEventListener("change", sceneChanged));

  for (const m of info.modalities) {
    const box = (role) => el("input", {type: "checkbox", "data-modality": m.name, "data-role": role, onchange: (event) => {
      const list = role === "given" ? state.given : state.targets;
      const i = list.indexOf(m.name);
      if (event.target.checked && i < 0) list.push(m.name);
      if (!event.target.checked && i >= 0) list.splice(i, 1);
      update();
    }});
    $("#modalities").append(el("tr", {}, el("td", {}, m.name), el("td", {}, box("given")), el("td", {}, box("targets"))));
  }
  syncModalityBoxes();

  for (const s of info.strategies) {
    const box = el("input", {type: "checkbox", value: s.masking, onchange: () => {
      state.strategies = [...document.querySelectorAll("#strategy-list input:checked")].map((b) => b.value);
      update({features: true});
    }});
    box.checked = true;
    $("#strategy-list").append(el("label", {title: `${s.label} (${s.family} family), seed ${s.seed}, run ${s.run}`}, box, ` ${s.masking} `,
      el("span", {class: "meta"}, Number(s.objective).toPrecision(3))));
  }

  for (let layer = -1; layer < info.layers; layer++) {
    $("#layer").append(el("option", {value: layer}, layer < 0 ? "last" : String(layer)));
  }
  $("#layer").addEventListener("change", (event) => { state.layer = Number(event.target.value); update(); });
  for (const a of info.attributes) $("#attribute").append(el("option", {value: a}, a));
  $("#attribute").addEventListener("change", (event) => { state.attribute = event.target.value; updateFeatures(); });
  $("#show-confidence").addEventListener("change", (event) => { state.confidence = event.target.checked; render(); });
  $("#report-toggle").addEventListener("click", toggleReport);
  setupPainting();
}

function syncModalityBoxes() {
  document.querySelectorAll("#modalities input").forEach((box) => {
    box.checked = (box.dataset.role === "given" ? state.given : state.targets).includes(box.dataset.modality);
  });
}

async function init() {
  try {
    state.info = await api("/api/info");
  } catch (error) {
    setStatus(error.message, true);
    return;
  }
  buildControls();
  await update({features: true});
}

init();
