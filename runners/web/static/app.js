// The page: an image sent once, prompts by image_id, masks drawn over the photo.

import { Api, ApiError, ImageSession } from "./api.js";
import { bindKeys, bindPointer } from "./input.js";
import { exportCoco, exportCutout, exportLabelMap } from "./exports.js";
import { SELECTION_COLOUR, clearCanvas, colour, maskOf, paintMasks } from "./masks.js";

const $ = (id) => document.getElementById(id);
const ui = {
  photo: $("photo"), masks: $("masks"), prompts: $("prompts"), layers: $("layers"), empty: $("empty"),
  stage: $("stage"), file: $("file"), url: $("url"), error: $("error"), status: $("status"), timing: $("timing"),
  candidates: $("candidates"), objects: $("objects"), settings: $("everything-settings"),
};
const SMALLER_SIDES = [2048, 1280, 800]; // copies tried after a 413
const URL_SCHEMES = ["https:", "http:", "s3:", "gs:"];

const state = {
  session: null, name: "image", prompts: [], result: null, everything: null, objects: [], sequence: 0, drag: null,
};

// --- messages --------------------------------------------------------------------------------

function showStatus(message) {
  ui.status.textContent = message;
}

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = false;
  document.body.dataset.errors = String(Number(document.body.dataset.errors) + 1);
}

function clearError() {
  ui.error.hidden = true;
  ui.error.textContent = "";
}

function explain(failure) {
  if (!(failure instanceof ApiError)) return failure.message || String(failure);
  const where = failure.field ? ` (field ${failure.field})` : "";
  if (failure.status === 413) {
    return `${failure.message}${where}\nFix: open a smaller image, paste an https://, s3:// or gs:// URL the server ` +
      "fetches itself, or raise the server's SEGANY_MAX_BODY_MB / SEGANY_MAX_IMAGE_PIXELS.";
  }
  return failure.status ? `${failure.message}${where} [${failure.status} ${failure.code}]` : failure.message;
}

// Runs an action; any failure becomes a message on the page (never an uncaught error).
async function guard(action) {
  document.body.dataset.state = "busy";
  try {
    await action();
  } catch (failure) {
    showError(explain(failure));
    showStatus(state.session ? "The image is still open: keep clicking." : "Open an image to begin.");
  } finally {
    document.body.dataset.state = "idle";
  }
}

// --- opening images ----------------------------------------------------------------------------

const api = new Api(new URL("../", window.location.href).href, showStatus);

function readDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error("the browser could not read the file"));
    reader.readAsDataURL(blob);
  });
}

async function scaledCopy(bitmap, longSide) {
  const scale = Math.min(1, longSide / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.9));
  return { image: await readDataUrl(blob), size: `${canvas.width}×${canvas.height}` };
}

async function loadPicture(src) {
  const picture = new Image();
  picture.src = src;
  await picture.decode();
  return picture;
}

// Sends the image; only once the server has it does it replace the open one.
async function openSource(source, name, picture) {
  clearError();
  showStatus(`Sending ${name}…`);
  const session = new ImageSession(api, source);
  const answer = await session.open(picture ? "rle" : "overlay");
  const shown = picture || (await loadPicture(`data:image/png;base64,${answer.overlay}`));
  const { width, height } = session;
  for (const canvas of [ui.photo, ui.masks, ui.prompts]) {
    canvas.width = width;
    canvas.height = height;
  }
  ui.photo.getContext("2d").drawImage(shown, 0, 0, width, height);
  Object.assign(state, { session, name, prompts: [], result: null, everything: null, objects: [] });
  ui.layers.hidden = false;
  ui.empty.hidden = true;
  render();
  showStatus(`${name}: ${width}×${height}. Click an object (right click: background), or drag a box.`);
}

async function openFile(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    throw new Error(`${file.name} is not an image this browser can read; open a JPEG, PNG or WebP file. Nothing was sent.`);
  }
  let source = { image: await readDataUrl(file) };
  let copy = null;
  for (let attempt = 0; ; attempt += 1) {
    try {
      await openSource({ image: source.image }, file.name, bitmap);
      if (copy) {
        showStatus(`The server refused the full-size file (413); a ${copy} copy was sent instead. For full ` +
          "resolution paste a URL the server fetches, or raise the server's SEGANY_MAX_BODY_MB.");
      }
      return;
    } catch (failure) {
      if (!(failure instanceof ApiError) || failure.status !== 413 || attempt >= SMALLER_SIDES.length) throw failure;
      source = await scaledCopy(bitmap, SMALLER_SIDES[attempt]);
      copy = source.size;
    }
  }
}

async function openUrl(text) {
  let url;
  try {
    url = new URL(text.trim());
  } catch {
    throw new Error(`"${text}" is not a URL; paste an https://, s3:// or gs:// URL.`);
  }
  if (!URL_SCHEMES.includes(url.protocol)) throw new Error(`${url.protocol} URLs are not fetched; use https://, s3:// or gs://.`);
  await openSource({ image_url: url.href }, url.pathname.split("/").pop() || url.href, null);
}

// --- prompts and masks -------------------------------------------------------------------------

const round = (v) => Math.round(v * 10) / 10;

function requestFields(prompts) {
  const points = prompts.filter((p) => p.type === "point");
  const box = prompts.filter((p) => p.type === "box").pop();
  const fields = { output: "rle" };
  if (points.length) {
    fields.points = points.map((p) => [p.x, p.y]);
    fields.labels = points.map((p) => p.label);
  }
  if (box) fields.boxes = [[box.x0, box.y0, box.x1, box.y1]];
  return fields;
}

const nextFrame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));

async function predict(clickedAt) {
  const sequence = ++state.sequence;
  const prompt = state.prompts[state.prompts.length - 1];
  showStatus("Segmenting…");
  try {
    const answer = await state.session.call("segment", requestFields(state.prompts));
    const { masks } = answer.results[0];
    const best = masks.reduce((top, m, i) => (m.score > masks[top].score ? i : top), 0);
    prompt.result = { masks, chosen: best };
  } catch (failure) {
    state.prompts.splice(state.prompts.indexOf(prompt), 1);
    throw failure;
  }
  if (sequence !== state.sequence) return; // a later click superseded this answer
  state.result = prompt.result;
  clearError();
  render();
  await nextFrame();
  const ms = Math.round(performance.now() - clickedAt);
  ui.timing.value = `mask in ${ms} ms`;
  document.body.dataset.clickMs = String(ms);
  showStatus(`${state.prompts.length} prompt(s); ${state.result.masks.length} candidate(s).`);
}

function addPrompt(prompt) {
  if (!state.session) return;
  const clickedAt = performance.now();
  state.everything = null;
  state.prompts.push(prompt);
  renderPrompts();
  guard(() => predict(clickedAt));
}

function undo() {
  if (!state.prompts.length) return;
  state.prompts.pop();
  state.sequence += 1; // an answer still on its way is for the undone prompt
  const last = state.prompts[state.prompts.length - 1];
  state.result = last ? last.result || null : null;
  render();
}

function clearAll() {
  state.prompts = [];
  state.result = null;
  state.everything = null;
  state.sequence += 1;
  clearError();
  render();
}

function choose(index) {
  if (!state.result || index >= state.result.masks.length) return;
  state.result.chosen = index;
  render();
}

function everythingSettings() {
  const fields = {};
  for (const input of ui.settings.elements) {
    if (input.name && input.value !== "") fields[input.name] = Number(input.value);
  }
  return fields;
}

async function everything() {
  if (!state.session) return;
  showStatus("Finding every instance…");
  const sequence = ++state.sequence;
  const answer = await state.session.call("segment_everything", { ...everythingSettings(), output: "rle" });
  if (sequence !== state.sequence) return;
  state.prompts = [];
  state.result = null;
  state.everything = answer.instances.map((inst) => ({
    segmentation: inst.segmentation, bbox: inst.bbox, area: inst.area, score: inst.predicted_iou,
  }));
  clearError();
  render();
  showStatus(`${state.everything.length} instance(s). Keep all to export them.`);
}

// --- objects and exports -------------------------------------------------------------------------

function selection() {
  return state.result ? state.result.masks[state.result.chosen] : null;
}

function keep() {
  const chosen = selection();
  if (!chosen) return;
  state.objects.push(chosen);
  state.prompts = [];
  state.result = null;
  render();
  showStatus(`${state.objects.length} object(s) kept. Click the next one, or export.`);
}

function keepAll() {
  if (!state.everything) return;
  state.objects.push(...state.everything);
  state.everything = null;
  render();
  showStatus(`${state.objects.length} object(s) kept. Export them, or click to add more.`);
}

function renderObjects() {
  ui.objects.replaceChildren(...state.objects.map((object, n) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${colour(n).join(",")})`;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = `object ${n + 1}: ${object.area} px`;
    const png = document.createElement("button");
    png.type = "button";
    png.textContent = "PNG";
    png.setAttribute("aria-label", `Download object ${n + 1} as a PNG mask`);
    png.addEventListener("click", () => guard(() => exportLabelMap([object], state.session.width, state.session.height,
      `object-${n + 1}.png`)));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "✕";
    remove.setAttribute("aria-label", `Remove object ${n + 1}`);
    remove.addEventListener("click", () => {
      state.objects.splice(n, 1);
      render();
    });
    item.append(swatch, name, png, remove);
    return item;
  }));
}

function exportObjects(kind) {
  if (!state.session) return;
  const { width, height } = state.session;
  if (kind === "cutout") {
    const masks = selection() ? [selection()] : state.objects;
    return exportCutout(ui.photo, masks.map(maskOf), `${state.name.replace(/\.\w+$/, "")}-cutout.png`);
  }
  if (!state.objects.length) throw new Error("no object kept yet: select one and press Keep object (K)");
  if (kind === "png") return exportLabelMap(state.objects, width, height);
  return exportCoco(state.objects, width, height, state.name);
}

// --- drawing -------------------------------------------------------------------------------------

function renderPrompts() {
  const canvas = ui.prompts;
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  const radius = Math.max(4, Math.max(canvas.width, canvas.height) / 160);
  context.lineWidth = Math.max(2, radius / 3);
  const boxes = state.prompts.filter((p) => p.type === "box").slice(-1);
  const drag = state.drag ? [{ x0: state.drag[0], y0: state.drag[1], x1: state.drag[2], y1: state.drag[3] }] : [];
  for (const box of [...boxes, ...drag]) {
    context.strokeStyle = "#ffd700";
    context.strokeRect(box.x0, box.y0, box.x1 - box.x0, box.y1 - box.y0);
  }
  for (const point of state.prompts.filter((p) => p.type === "point")) {
    context.beginPath();
    context.arc(point.x, point.y, radius, 0, 2 * Math.PI);
    context.fillStyle = point.label ? "#18c964" : "#f31260";
    context.fill();
    context.strokeStyle = "#fff";
    context.stroke();
  }
}

function renderCandidates() {
  const masks = state.result ? state.result.masks : [];
  ui.candidates.replaceChildren(...(masks.length > 1 ? masks : []).map((m, i) => {
    const button = document.createElement("button");
    button.type = "button";
    button.setAttribute("role", "radio");
    button.setAttribute("aria-checked", String(i === state.result.chosen));
    button.setAttribute("aria-pressed", String(i === state.result.chosen));
    button.setAttribute("aria-label", `Mask candidate ${i + 1}, score ${m.score.toFixed(2)}`);
    button.textContent = `${i + 1} · ${m.score.toFixed(2)}`;
    button.addEventListener("click", () => choose(i));
    return button;
  }));
}

function render() {
  if (state.everything) {
    paintMasks(ui.masks, state.everything.map(maskOf), state.everything.map((_, i) => colour(i)));
  } else if (selection()) {
    paintMasks(ui.masks, [maskOf(selection())], [SELECTION_COLOUR]);
  } else {
    clearCanvas(ui.masks);
  }
  renderPrompts();
  renderCandidates();
  renderObjects();
  const open = Boolean(state.session);
  $("undo").disabled = !state.prompts.length;
  $("clear").disabled = !(state.prompts.length || state.everything);
  $("everything").disabled = !open;
  $("keep").disabled = !selection();
  $("keep-all").disabled = !state.everything;
  for (const id of ["export-png", "export-coco"]) $(id).disabled = !state.objects.length;
  $("export-cutout").disabled = !(selection() || state.objects.length);
  document.body.dataset.renders = String(Number(document.body.dataset.renders) + 1);
}

// --- wiring --------------------------------------------------------------------------------------

function mode() {
  return Number(document.querySelector("input[name=mode]:checked").value);
}

function toggleMode() {
  const other = document.querySelector(`input[name=mode][value="${1 - mode()}"]`);
  other.checked = true;
  showStatus(`Left click adds ${mode() ? "foreground" : "background"} points.`);
}

bindPointer(ui.prompts, () => [state.session.width, state.session.height], {
  onPoint: (x, y, background) => addPrompt({ type: "point", x: round(x), y: round(y), label: background ? 0 : mode() }),
  onBox: (x0, y0, x1, y1) => {
    if (x1 - x0 >= 2 && y1 - y0 >= 2) addPrompt({ type: "box", x0: round(x0), y0: round(y0), x1: round(x1), y1: round(y1) });
  },
  onDrag: (box) => {
    state.drag = box;
    renderPrompts();
  },
});

bindKeys({
  undo, clear: clearAll, mode: toggleMode, keep,
  everything: () => guard(everything),
  open: () => ui.file.click(),
  candidate1: () => choose(0), candidate2: () => choose(1), candidate3: () => choose(2),
});

ui.file.addEventListener("change", () => {
  const [file] = ui.file.files;
  ui.file.value = "";
  if (file) guard(() => openFile(file));
});
$("url-form").addEventListener("submit", (event) => {
  event.preventDefault();
  guard(() => openUrl(ui.url.value));
});
$("undo").addEventListener("click", undo);
$("clear").addEventListener("click", clearAll);
$("everything").addEventListener("click", () => guard(everything));
$("keep").addEventListener("click", keep);
$("keep-all").addEventListener("click", keepAll);
$("export-png").addEventListener("click", () => guard(() => exportObjects("png")));
$("export-coco").addEventListener("click", () => guard(() => exportObjects("coco")));
$("export-cutout").addEventListener("click", () => guard(() => exportObjects("cutout")));
ui.settings.addEventListener("submit", (event) => event.preventDefault());

ui.stage.addEventListener("dragover", (event) => {
  event.preventDefault();
  ui.stage.classList.add("dropping");
});
ui.stage.addEventListener("dragleave", () => ui.stage.classList.remove("dropping"));
ui.stage.addEventListener("drop", (event) => {
  event.preventDefault();
  ui.stage.classList.remove("dropping");
  const [file] = event.dataTransfer.files;
  const text = event.dataTransfer.getData("text/uri-list") || event.dataTransfer.getData("text/plain");
  if (file) guard(() => openFile(file));
  else if (text) guard(() => openUrl(text.split("\n")[0]));
});
document.addEventListener("paste", (event) => {
  if (event.target instanceof HTMLInputElement) return;
  const [file] = event.clipboardData.files;
  const text = event.clipboardData.getData("text/plain");
  if (file) guard(() => openFile(file));
  else if (text) guard(() => openUrl(text));
});
window.addEventListener("unhandledrejection", (event) => {
  event.preventDefault();
  showError(explain(event.reason || new Error("unexpected error")));
});

render();
