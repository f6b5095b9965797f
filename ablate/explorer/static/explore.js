"use strict";
// The nano4M explorer page: plain JS, no build step. Every control changes `state` and calls update(),
// which asks /api/predict for all chosen strategies at once and redraws. Attention rows for every target
// token come with the prediction, so picking a token or a query only redraws. An uploaded image goes to
// /api/upload first; its id then names the scene like any other source.

const TILE = 128; // CSS pixels of an image tile
const SMALL = 64; // training-mask tiles
const MASK_COLORS = {hidden: "rgba(58,58,58,0.82)", target: "rgba(232,65,60,0.62)"}; // as model/mask_figure.py
const CHANGED = "rgba(224,64,251,0.45)"; // tokens that hiding changed
const DEFAULT_GIVEN = ["rgb"];
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf"];

const state = {
  info: null,
  scene: {source: "heldout", index: 0, seed: 0, caption: "", upload: "", typed_caption: false},
  given: [...DEFAULT_GIVEN],
  targets: ["semseg", "depth", "caption"],
  beforeCaption: null, // {given, targets} as they were when the caption-only source was chosen
  strategies: [],
  hidden: new Set(), // painted cells of the image grid
  layer: -1,
  target: null, // {modality, position}: the decoder token whose cross-attention is shown
  query: null, // {modality, position}: the encoder token whose self-attention is shown (null: mean)
  notInput: null, // a clicked token that is no encoder input (a hidden cell): the mean is shown instead
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

// GET without a body; POST a JSON body, or raw bytes (a File) with their own Content-Type.
async function api(path, body) {
  const options = body === undefined ? {} : body instanceof Blob
    ? {method: "POST", headers: {"Content-Type": body.type || "application/octet-stream"}, body}
    : {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const response = await fetch(path, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

// One line in the header, however long (cut with an ellipsis; the whole text is its tooltip).
function setStatus(text, error = false) {
  $("#status").textContent = text;
  $("#status").title = text;
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

// The encoder slot of a token ({modality, position}), or -1 where it is no input (hidden, or not given).
function slotOf(keys, token) {
  return token ? keys.modality.findIndex((m, slot) => m === token.modality && keys.position[slot] === token.position) : -1;
}

function notInputNote() {
  const t = state.notInput;
  return t ? `${t.modality} #${t.position} is hidden: not an encoder input, nothing attends from it` : "";
}

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

// A prediction's scores against the scene's ground truth, as the API gives them (rounded there).
function scoreLine(scores) {
  if (!scores) return null;
  const arrow = {higher: "↑", lower: "↓"};
  return el("div", {class: "scores"}, ...scores.map((s) => el("span", {class: "score", "data-key": s.key,
    title: `${s.key} against the scene's ground truth (${s.better} is better), scored as the evaluation scores`},
  `${s.label} ${s.value === null ? "n/a" : s.value.toFixed(3)} ${arrow[s.better]}`)));
}

function predictionTiles(name, column) {
  const result = state.result;
  return result.targets.map((m) => el("div", {class: "prediction", "data-modality": m},
    ...predictionTile(name, column, m), scoreLine(column.scores[m])));
}

function predictionTile(name, column, m) {
  const p = column.predictions[m];
  const chosen = state.target && state.target.modality === m ? state.target.position : null;
  const pick = (position) => { state.target = {modality: m, position}; render(); };
  const mean = p.confidence.length ? p.confidence.reduce((a, b) => a + b, 0) / p.confidence.length : 0;
  const role = state.given.includes(m) ? "in-painted" : "predicted";
  const title = `${m} (${role}), confidence ${mean.toFixed(2)}`;
  if (isImage(m)) {
    return [imageTile(p.png, modality(m).grid, {
      title, outline: chosen, onCell: pick,
      cells: (fill) => state.confidence && p.confidence.forEach((c, cell) => fill(cell, `rgba(0,0,0,${0.7 * (1 - c)})`)),
    })];
  }
  const tiles = [wordsTile(withEos(p.words), {
    title, selected: chosen, onWord: pick, shade: (i) => confidenceShade(p.confidence[i] ?? 0),
  })];
  if (m === "boxes") tiles.unshift(boxesTile(p.boxes, `boxes (${name})`));
  return [el("div", {class: "row"}, ...tiles)];
}

// Before / after hiding: per target, what the answer without hidden cells was (an in-painted image: the given
// image), with the tokens that differ now shaded, and how many.
function changeTiles(column) {
  const scene = state.result.scene;
  return Object.entries(column.changes).map(([m, change]) => {
    const changed = new Set(change.changed);
    const count = `${changed.size} of ${change.of}`;
    const title = change.against === "given"
      ? `${m}: ${count} hidden cells in-painted unlike the given image`
      : `${m} without hiding: ${count} tokens changed`;
    let tile;
    if (isImage(m)) {
      const png = change.against === "given" ? scene.decoded[m].png : change.before.png;
      tile = imageTile(png, modality(m).grid, {title, cells: (fill) => changed.forEach((cell) => fill(cell, CHANGED))});
    } else {
      tile = wordsTile(withEos(change.before.words), {
        title, shade: (i) => (changed.has(i) ? CHANGED : "#fff"),
      });
    }
    return el("div", {class: "change", "data-modality": m, "data-changed": changed.size, "data-of": change.of}, tile);
  });
}

function trainingMaskTiles(column) {
  const masks = column.training_masks;
  if (!masks) return [el("p", {class: "note"}, "this scene has not every modality: nothing to mask as in training")];
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

  const querySlot = slotOf(attention.keys, state.query);
  const encoderRow = querySlot >= 0 ? attention.encoder[querySlot] : meanRows(attention.encoder);
  const pickQuery = (token) => {
    const input = slotOf(attention.keys, token) >= 0; // a hidden cell is no encoder input: nothing attends from it
    state.notInput = input ? null : token;
    state.query = !input || sameToken(token, state.query) ? null : token;
    render();
  };
  const crossRow = state.target ? (attention.cross[state.target.modality] || [])[state.target.position] : null;
  const targetName = state.target ? `${state.target.modality} #${state.target.position}` : "";

  return el("div", {class: "column", "data-strategy": name},
    el("h3", {}, name),
    el("div", {class: "meta"}, `${column.label} · seed ${column.seed} · ${state.info.objective.metric} `
      + `${Number(column.objective).toPrecision(4)}`),
    el("div", {class: "meta timing", "data-seconds": column.seconds}, `answered in ${column.seconds.toFixed(3)} s`),
    el("div", {class: "row-title"}, "predictions (click a token to see its cross-attention)"
      + (state.result.scene.scored ? "; scores against this scene's ground truth" : "")),
    el("div", {class: "row predictions"}, ...predictionTiles(name, column)),
    column.changes ? el("div", {class: "row-title"}, "before / after hiding: the answer without hidden cells "
      + "(in-painted: the given image), tokens that hiding changed in pink") : null,
    column.changes ? el("div", {class: "row changes"}, ...changeTiles(column)) : null,
    el("div", {class: "row-title"}, "its training masks on this scene (clear: seen, red: predicted, dark: hidden)"),
    el("div", {class: "row training-masks"}, ...trainingMaskTiles(column)),
    el("div", {class: "row-title"}, `encoder self-attention, layer ${layer}: `
      + (querySlot >= 0 ? `from ${state.query.modality} #${state.query.position} (click it again for the mean)`
        : `received, mean over queries (${notInputNote() || "click a token to attend from it"})`)
      + peak(encoderRow, attention.keys)),
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
  const upload = scene.upload
    ? [imageTile(scene.upload.png, modality("rgb").grid, {title: `uploaded, resized to ${state.info.canvas}x${state.info.canvas}`
      + " (the given rgb is its tokens)"})] : [];
  $("#scene").replaceChildren(
    el("h3", {id: "scene-label"}, scene.label),
    el("div", {class: "row"}, ...upload, ...inputs, ...truths),
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

// Every model's points in one frame (the reference model's, see features.py), on one scale: a scene lands at
// the same place in two plots where the two models agree.
function renderFeatures(data) {
  const size = 220;
  const all = Object.values(data.strategies).flatMap(({points, scene}) => (scene ? [...points, scene] : points));
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const at = ([x, y]) => [10 + ((x - x0) / (x1 - x0 || 1)) * (size - 20), size - 10 - ((y - y0) / (y1 - y0 || 1)) * (size - 20)];
  const plots = Object.entries(data.strategies).map(([name, {points, scene, agreement}]) => {
    const canvas = el("canvas", {width: size, height: size, "data-strategy": name});
    const ctx = canvas.getContext("2d");
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
    const caption = name === data.reference ? `${name} (the reference)` : `${name}, agreement ${agreement.toFixed(2)}`;
    return el("figure", {class: "tile"}, canvas, el("figcaption", {class: "agreement", "data-strategy": name}, caption));
  });
  const legend = data.categories.map((c, i) => el("span", {}, el("i", {style: `background:${PALETTE[i % PALETTE.length]}`}), c));
  $("#features").replaceChildren(
    el("h3", {}, `Encoder features of held-out scenes (rgb given), in ${data.reference}'s frame`),
    el("p", {class: "note", id: "feature-frame"}, data.frame),
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

// The Markdown `ablate report` writes, as elements (never as HTML): pipe tables, headings, paragraphs, and
// **bold** and `code` inside them (a lone * is the report's significance mark, not emphasis).
function inline(text) {
  return text.split(/(\*\*[^*]+\*\*|`[^`]+`)/).filter((part) => part).map((part) => {
    if (/^\*\*[^*]+\*\*$/.test(part)) return el("strong", {}, part.slice(2, -2));
    if (/^`[^`]+`$/.test(part)) return el("code", {}, part.slice(1, -1));
    return part;
  });
}

function markdown(text) {
  const cells = (line) => line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());
  const blocks = text.split(/\n\s*\n/).map((block) => block.split("\n").filter((line) => line.trim()));
  return blocks.filter((lines) => lines.length).map((lines) => {
    if (lines.every((line) => line.trim().startsWith("|"))) {
      const rows = lines.filter((line) => !/^\s*\|[\s:|-]+\|\s*$/.test(line)); // the alignment row
      const [head, ...body] = rows.map(cells);
      return el("div", {class: "md-table"}, el("table", {},
        el("thead", {}, el("tr", {}, ...head.map((c) => el("th", {}, ...inline(c))))),
        el("tbody", {}, ...body.map((row) => el("tr", {}, ...row.map((c) => el("td", {}, ...inline(c))))))));
    }
    const heading = lines[0].match(/^(#{1,4})\s+(.*)$/);
    if (heading && lines.length === 1) return el(`h${Math.min(6, heading[1].length + 3)}`, {}, ...inline(heading[2]));
    return el("p", {}, ...inline(lines.join(" ")));
  });
}

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
    report.table ? el("div", {id: "report-table"}, ...markdown(report.table)) : el("p", {}, "no table.md in the report folder"),
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
  if (slotOf(keys, state.query) < 0) state.query = null;
  state.notInput = null;
}

function render() {
  if (!state.result) return; // refused: nothing to draw until the next answer
  renderScene();
  renderPaint();
  $("#columns").replaceChildren(...state.strategies.filter((s) => s in state.result.strategies).map(renderColumn));
  $("#target-note").textContent = `cross-attention from ${state.target.modality} #${state.target.position} (click a predicted token)`;
  $("#query-note").textContent = state.query
    ? `self-attention from ${state.query.modality} #${state.query.position}`
    : `self-attention received, mean over queries${state.notInput ? ` (${notInputNote()})` : ""}`;
  document.body.dataset.renders = Number(document.body.dataset.renders || 0) + 1;
}

// A refused question leaves nothing of the last answer under the new input: the server's message instead.
function showRefusal(message) {
  state.result = null;
  setStatus(message, true);
  $("#scene").replaceChildren(el("h3", {id: "scene-label"}, "no answer"), el("p", {class: "note refusal"}, message));
  $("#columns").replaceChildren();
  $("#features").replaceChildren();
  renderPaint();
  document.body.dataset.refusals = Number(document.body.dataset.refusals || 0) + 1;
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
  const featuresCleared = !$("#features").childElementCount;
  try {
    const result = await api("/api/predict", payload);
    if (ticket !== predictTicket) return;
    state.result = result;
    keepSelectionsValid();
    render();
    setStatus(`${state.strategies.length} strategies in ${result.seconds.toFixed(2)} s`);
    if (featuresCleared && !features) updateFeatures();
  } catch (error) {
    if (ticket === predictTicket) showRefusal(error.message);
    return;
  }
  if (features) updateFeatures();
}

// Switching to the caption-only source gives the caption alone and predicts rgb from it (text -> image);
// switching back gives what was given before. The typed-caption box adds the typed words to an image scene.
function sceneChanged() {
  const source = document.querySelector("input[name=source]:checked").value;
  const was = state.scene;
  const typed = source !== "caption" && $("#typed-caption").checked;
  state.scene = {
    source,
    index: Math.max(0, Number($("#index").value) || 0),
    seed: Math.max(0, Number($("#seed").value) || 0),
    caption: $("#caption").value,
    upload: state.upload ? state.upload.upload : "",
    typed_caption: typed,
  };
  $("#typed-caption").disabled = source === "caption";
  if (source === "caption" && was.source !== "caption") {
    state.beforeCaption = {given: [...state.given], targets: [...state.targets]};
    state.given = ["caption"];
    state.targets = [...new Set(["rgb", ...state.targets])].filter((m) => m !== "caption" && modality(m));
  } else if (source !== "caption" && was.source === "caption") {
    const before = state.beforeCaption || {given: DEFAULT_GIVEN, targets: state.targets};
    state.given = [...before.given];
    state.targets = [...before.targets];
  }
  if (typed && !state.given.includes("caption")) state.given.push("caption");
  if (typed) state.targets = state.targets.filter((m) => m !== "caption");
  if (!typed && was.typed_caption && source !== "caption") state.given = state.given.filter((m) => m !== "caption");
  syncModalityBoxes();
  update({features: true});
}

// The file goes to /api/upload as it is; the server checks, resizes and tokenizes it. A refused file
// changes nothing but the status line.
async function uploadFile(file) {
  const rule = state.info.upload.rule;
  if (file.size > state.info.upload.max_bytes) { // not sent: the server would refuse it unread
    setStatus(`upload: ${file.name} has ${file.size} bytes; ${rule}`, true);
    return;
  }
  setStatus(`uploading ${file.name}…`);
  let uploaded;
  try {
    uploaded = await api(`/api/upload?name=${encodeURIComponent(file.name)}`, file);
  } catch (error) {
    setStatus(error.message, true); // "upload: what is wrong; what is allowed"
    return;
  }
  state.upload = uploaded;
  const radio = $("input[name=source][value=upload]");
  radio.disabled = false;
  radio.checked = true;
  $("#upload-note").textContent = uploaded.label;
  sceneChanged();
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

  document.querySelectorAll("input[name=source]").forEach((r) => r.addEventListener("change", sceneChanged));
  ["#index", "#seed", "#caption", "#typed-caption"].forEach((s) => $(s).addEventListener("change", sceneChanged));
  if (info.upload) {
    $("#upload").accept = info.upload.accept.join(",");
    $("#upload").title = info.upload.rule;
    $("#upload").addEventListener("change", (event) => {
      const file = event.target.files[0];
      event.target.value = ""; // the same file again is a new choice
      if (file) uploadFile(file);
    });
  } else {
    $("#upload").disabled = true;
    $("#upload-note").textContent = "this study's data has no rgb to give an image as";
  }

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
