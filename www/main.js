// The page: controls built from the Rust AU catalogue, a Web Worker running the pipeline
// (www/worker.js), a gallery with labelled downloads. Everything stays on this machine.
//
// URL parameters: ?cpu=1 forces the CPU backend (flex compiled to wasm) even with WebGPU;
// ?f32=1 computes in f32 on an adapter with shader-f16 (f16 is used where available);
// ?warmup=0 skips the warm-up run after loading (the first Generate then compiles the shaders).

import { zip } from './zip.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const CACHE = 'synfer-models-v1';
const CACHED_MODEL_KEY = 'synfer-cached-model';

const state = {
  worker: null,
  webgpu: false,
  model: null, // null: the default; else {name, files: [[rel, Blob]]} (Files read in place)
  adapter: null, // null: the model's own au_adapter/ if any; else {name, files: [[name, Blob]]}
  info: null,
  catalogue: null,
  nextId: 1,
  running: null, // {id, request, started}
  items: [], // gallery entries {request, record, png: Uint8Array, name}
  photo: null, // {rgb: Uint8Array, width, height, name}: the photo to start from
};

function setStatus(text, kind = 'info') {
  const el = $('backend');
  el.textContent = text;
  el.dataset.kind = kind;
}

async function detectWebgpu() {
  if (params.get('cpu') === '1') return { ok: false, why: 'CPU backend forced by ?cpu=1' };
  if (!('gpu' in navigator)) return { ok: false, why: 'this browser has no WebGPU' };
  try {
    const adapter = await navigator.gpu.requestAdapter();
    if (!adapter) return { ok: false, why: 'WebGPU found no adapter' };
    return { ok: true };
  } catch (e) {
    return { ok: false, why: `WebGPU failed: ${e.message}` };
  }
}

// ---------------------------------------------------------------------------------------------
// worker

function startWorker() {
  if (state.worker) state.worker.terminate();
  const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  worker.onmessage = ({ data }) => onWorkerMessage(data);
  worker.onerror = (e) => fail(`worker: ${e.message}`);
  state.worker = worker;
  $('generate').disabled = true;
  setStatus(`Loading ${state.model ? state.model.name : 'the default model'}…`);
  // Blobs cross to the worker by reference: nothing is copied or read here.
  worker.postMessage({ type: 'load', webgpu: state.webgpu, f16: params.get('f32') !== '1', model: state.model,
    adapter: state.adapter, warmup: params.get('warmup') !== '0' });
}

function fail(message) {
  setStatus(message, 'error');
  finishRun();
}

function onWorkerMessage(msg) {
  switch (msg.type) {
    case 'ready':
      state.info = msg.info;
      // The model's own guidance scale (synfer.json), chosen by measurement.
      if (msg.info.defaults?.guidance_scale !== undefined) $('guidance').value = msg.info.defaults.guidance_scale;
      state.catalogue = msg.catalogue;
      buildControls();
      setStatus(`Ready on ${msg.info.device}${state.webgpu ? '' : ` (CPU fallback: ${state.cpuWhy})`}. `
        + `Model: ${msg.info.name}. `
        + (msg.info.warmup.skipped ? `Warm-up skipped: ${msg.info.warmup.skipped}`
          : `Warm-up ${(msg.info.warmup.ms / 1000).toFixed(1)} s.`),
      state.webgpu ? 'info' : 'warn');
      $('model-name').textContent = `${msg.info.name}${msg.info.adapter ? ` + AU adapter ${msg.info.adapter}` : ''}`;
      $('model-memory').textContent = describeMemory(msg.info);
      updateSemanticNote();
      $('generate').disabled = false;
      document.body.dataset.ready = '1';
      break;
    case 'warmup':
      setStatus(`Warming up (compiling shaders): step ${msg.step}/${msg.total}…`);
      break;
    case 'step':
      if (state.running && msg.id === state.running.id) {
        $('progress').max = msg.total;
        $('progress').value = msg.step;
        $('step-label').textContent = `step ${msg.step}/${msg.total}`;
        if (msg.preview) {
          const img = $('preview');
          if (img.src) URL.revokeObjectURL(img.src);
          img.src = URL.createObjectURL(new Blob([msg.preview], { type: 'image/png' }));
          img.title = `x̂0 after step ${msg.step}`;
          img.hidden = false;
        }
      }
      break;
    case 'done':
      if (state.running && msg.id === state.running.id) addResults(msg);
      finishRun();
      break;
    case 'photo': {
      const img = $('photo-preview');
      if (img.src) URL.revokeObjectURL(img.src);
      img.src = URL.createObjectURL(new Blob([msg.png], { type: 'image/png' }));
      img.width = 128;
      img.hidden = false;
      $('photo-note').textContent = msg.detected
        ? `face found and aligned; ${describeMeasured(summarise(msg.measured))}`
        : 'no face found: the centre of the photo is used as it is';
      break;
    }
    case 'error':
      fail(`Error: ${msg.message}`);
      break;
    default:
      break;
  }
}

const MIB = 2 ** 20;

/** Where the model's memory went: weights on the device, the wasm heap, the load time. */
function describeMemory(info) {
  return `Weights ${(info.weight_bytes / MIB).toFixed(0)} MiB on ${info.device}; `
    + `read in pieces of at most ${(info.largest_read_bytes / MIB).toFixed(1)} MiB; `
    + `wasm memory ${(info.wasm_memory_bytes / MIB).toFixed(0)} MiB `
    + `(${(info.wasm_memory_after_load_bytes / MIB).toFixed(0)} MiB after loading); `
    + `loaded in ${(info.load_ms / 1000).toFixed(1)} s.`;
}

// ---------------------------------------------------------------------------------------------
// controls

function buildControls() {
  const { catalogue, info } = state;
  const expression = $('expression');
  expression.length = 1;
  for (const name of catalogue.expressions) expression.add(new Option(name, name));

  const sliders = $('au-sliders');
  sliders.textContent = '';
  const set = info.au_set;
  $('au-set').textContent = set ? `(${set} set)` : '';
  $('au-note').textContent = set
    ? 'Intensities the model is conditioned on; the expression preset fills them in.'
    : 'This model has no AU adapter, so AUs cannot be set. The expression still goes into the prompt.';
  $('au-scale').disabled = !set;
  $('au-reset').disabled = !set;
  if (set) {
    const codes = catalogue.sets.find((s) => s.name === set).codes;
    for (const code of codes) {
      const unit = catalogue.units.find((u) => u.code === code);
      const [min, max, def] = unit.sets[set];
      const label = document.createElement('label');
      label.className = 'au';
      label.title = `${unit.name} (${unit.muscle}): ${unit.description}`;
      const binary = max - min === 1 && set === 'opengraphau';
      label.innerHTML = `<span class="code">${code}</span> <span class="name">${unit.name}</span>`;
      const input = document.createElement('input');
      Object.assign(input, { type: 'range', min, max, step: binary ? 1 : 0.5, value: def, id: `au-${code}` });
      input.dataset.code = code;
      const out = document.createElement('output');
      out.textContent = def;
      input.addEventListener('input', () => { out.textContent = input.value; });
      label.append(input, out);
      sliders.append(label);
    }
  }

  const size = $('size');
  size.length = 0;
  const native = info.default_size;
  const m = info.size_multiple;
  for (const s of [native / 2, native, native * 2].filter((v) => v >= m && v % m === 0)) {
    size.add(new Option(`${s}×${s}`, s, s === native, s === native));
  }
}

function applyPreset() {
  const name = $('expression').value;
  const set = state.info && state.info.au_set;
  if (!set) return;
  const proto = name ? state.catalogue.presets[name][set] : {};
  for (const input of $('au-sliders').querySelectorAll('input')) {
    input.value = proto[input.dataset.code] ?? input.min;
    input.dispatchEvent(new Event('input'));
  }
}

/** Semantic guidance needs a target expression and the classifiers in the worker. */
function updateSemanticNote() {
  const available = state.info ? state.info.semantic !== false : true;
  $('sg-on').disabled = !available;
  $('sg-value').textContent = Number($('sg-scale').value).toFixed(2);
  let note = '';
  if (!available) note = 'unavailable: the expression classifiers did not load';
  else if ($('sg-on').checked && !$('expression').value) note = 'choose an expression: guidance steers toward it';
  $('sg-note').textContent = note;
}

function currentRequest() {
  const side = Number($('size').value);
  const request = {
    prompt: $('prompt').value,
    negative_prompt: $('negative').value || null,
    steps: Number($('steps').value),
    guidance_scale: Number($('guidance').value),
    seed: Number($('seed').value),
    width: side,
    height: side,
    num_images: 1,
    expression: $('expression').value || null,
  };
  if (state.info.au_set) {
    // Every slider, zeros included: the sliders show the whole vector (the preset filled in,
    // then the user's changes), so a unit set to 0 over the preset must arrive as 0.
    const aus = {};
    for (const input of $('au-sliders').querySelectorAll('input')) {
      aus[input.dataset.code] = Number(input.value);
    }
    request.aus = aus;
    request.au_scale = Number($('au-scale').value);
  }
  if ($('sg-on').checked && request.expression) {
    request.semantic_guidance = { scale: Number($('sg-scale').value) };
  }
  if (state.photo) {
    request.start = { mode: 'layout', strength: Number($('layout-strength').value), source: state.photo.name };
  }
  return request;
}

function onGenerate(event) {
  event.preventDefault();
  if (state.running) return;
  const request = currentRequest();
  const id = state.nextId;
  state.nextId += 1;
  state.running = { id, request, started: performance.now() };
  $('generate').disabled = true;
  $('cancel').disabled = false;
  $('progress').value = 0;
  $('step-label').textContent = 'encoding the prompt…';
  const photo = state.photo && { rgb: state.photo.rgb.slice(0), width: state.photo.width, height: state.photo.height };
  state.worker.postMessage({ type: 'generate', id, request, photo });
}

function onCancel() {
  if (!state.running) return;
  // A running wasm call cannot be interrupted: restart the worker (the model reloads).
  finishRun();
  startWorker();
}

function finishRun() {
  state.running = null;
  $('cancel').disabled = true;
  $('generate').disabled = !state.info || !state.worker;
  $('step-label').textContent = '';
  $('preview').hidden = true;
}

// ---------------------------------------------------------------------------------------------
// gallery

function addResults(msg) {
  msg.images.forEach((image, i) => {
    const record = { ...msg.records[i], measured: summarise(image.measured) };
    if (msg.source) record.source_measured = summarise(msg.source.measured);
    const png = new Uint8Array(image.png);
    const index = state.items.length;
    const name = `synfer-${String(index).padStart(4, '0')}-seed${record.seed ?? 'x'}`;
    state.items.push({ record, png, name });
    const li = document.createElement('li');
    li.className = 'item';
    li.dataset.index = index;
    const img = document.createElement('img');
    img.src = URL.createObjectURL(new Blob([png], { type: 'image/png' }));
    img.alt = record.prompt_used;
    img.width = Math.max(128, record.width);
    const labels = document.createElement('div');
    labels.className = 'labels';
    const aus = record.aus
      ? Object.entries(record.aus).filter(([, v]) => v !== 0).map(([k, v]) => `${k}=${v}`).join(', ') || 'none'
      : 'no AU control';
    labels.innerHTML = '<p class="prompt"></p><p class="requested"></p><p class="measured"></p><p class="meta"></p>';
    labels.querySelector('.prompt').textContent = record.prompt_used;
    labels.querySelector('.requested').textContent = `requested: expression ${record.expression ?? '–'}; AUs ${aus}`;
    labels.querySelector('.measured').textContent = describeMeasured(record.measured);
    labels.querySelector('.meta').textContent = `seed ${record.seed}, ${record.request.steps} steps, `
      + `guidance ${record.request.guidance_scale}, ${record.width}×${record.height}, `
      + `${record.timings.per_step_s.toFixed(3)} s/step on ${record.device}`;
    const json = document.createElement('pre');
    json.className = 'request-json';
    json.textContent = JSON.stringify(record.request, null, 1);
    const dl = document.createElement('button');
    dl.type = 'button';
    dl.textContent = 'Download PNG + JSON';
    dl.addEventListener('click', () => downloadOne(index));
    labels.append(json, dl);
    if (msg.source) {
      // The face the image started from, beside it, with what was measured on each.
      const pair = document.createElement('div');
      pair.className = 'pair';
      const from = document.createElement('img');
      from.className = 'source';
      from.src = URL.createObjectURL(new Blob([msg.source.png], { type: 'image/png' }));
      from.alt = 'the photo it started from';
      from.width = img.width;
      const figure = (el, caption) => {
        const f = document.createElement('figure');
        const c = document.createElement('figcaption');
        c.textContent = caption;
        f.append(el, c);
        return f;
      };
      pair.append(figure(from, 'source'), figure(img, 'result'));
      const source = document.createElement('p');
      source.className = 'source-measured';
      source.textContent = `source ${describeMeasured(record.source_measured)}`;
      labels.querySelector('.measured').after(source);
      li.append(pair, labels);
    } else {
      li.append(img, labels);
    }
    $('gallery').prepend(li);
  });
  $('download-all').disabled = state.items.length === 0;
}

/** The first face of the analysis, as stored in metadata: labels, probabilities, AUs. */
function summarise(measured) {
  if (!measured || measured.faces.length === 0) return null;
  const face = measured.faces[0];
  return { detected: measured.detected, bbox: face.bbox, expression: face.expression, aus: face.aus };
}

function describeMeasured(m) {
  if (!m) return 'measured: (face analysis unavailable)';
  const e = m.expression;
  const p = (c) => `${c.label} ${Math.max(...Object.values(c.probs)).toFixed(2)}`;
  const aus = Object.entries(m.aus).filter(([, v]) => v >= 0.5).map(([k, v]) => `${k}=${v.toFixed(1)}`).join(', ') || 'none';
  return `measured${m.detected ? '' : ' (no face detected; whole image)'}: ${p(e.ensemble)} `
    + `(face-api ${p(e['face-api'])}, mini-xception ${p(e['mini-xception'])}); AUs ${aus}`;
}

function save(blob, filename) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function downloadOne(index) {
  const { record, png, name } = state.items[index];
  save(new Blob([png], { type: 'image/png' }), `${name}.png`);
  save(new Blob([JSON.stringify({ file: `${name}.png`, ...record }, null, 2)], { type: 'application/json' }), `${name}.json`);
}

function downloadAll() {
  const encoder = new TextEncoder();
  const lines = state.items.map(({ record, name }) => JSON.stringify({ file: `images/${name}.png`, ...record }));
  const entries = state.items.map(({ png, name }) => ({ name: `images/${name}.png`, data: png }));
  entries.push({ name: 'metadata.jsonl', data: encoder.encode(`${lines.join('\n')}\n`) });
  save(zip(entries), 'synfer-gallery.zip');
}

// ---------------------------------------------------------------------------------------------
// bring your own model (read locally, cached with the Cache API, never uploaded)

async function onModelFolder(event) {
  const list = [...event.target.files].map((file) => ({ file, path: file.webkitRelativePath || file.name }));
  await useModelFiles(list);
}

/** The directory picker (File System Access API), where the browser has one. */
async function onPickFolder() {
  let dir;
  try {
    dir = await window.showDirectoryPicker({ mode: 'read' });
  } catch (e) {
    if (e.name !== 'AbortError') fail(`Folder picker: ${e.message}`);
    return;
  }
  const list = [];
  const walk = async (handle, prefix) => {
    for await (const entry of handle.values()) {
      const rel = `${prefix}/${entry.name}`;
      if (entry.kind === 'directory') await walk(entry, rel);
      else list.push({ file: await entry.getFile(), path: rel });
    }
  };
  await walk(dir, dir.name);
  await useModelFiles(list);
}

async function useModelFiles(list) {
  if (list.length === 0) return;
  const root = list[0].path.split('/')[0] || 'model';
  const wanted = list.filter(({ file }) => /\.(json|txt|safetensors)$/.test(file.name));
  const files = wanted.map(({ file, path }) => [path.split('/').slice(1).join('/') || file.name, file]);
  if (!files.some(([rel]) => rel === 'unet/config.json')) {
    fail(`${root}: not a diffusers model folder (no unet/config.json).`);
    return;
  }
  state.model = { name: root, files };
  startWorker();
  $('model-cache').textContent = 'caching the model for the next visit…';
  const cached = await cacheModel(state.model);
  $('model-cache').textContent = cached === true ? 'cached for the next visit' : `Model ${cached}; it is loaded for this visit only.`;
  $('model-cache').dataset.kind = cached === true ? 'info' : 'warn';
}

/** The AU adapter's files (FineFace's attn_processors.ckpt + au_encoder.ckpt [+ LoRA], or an
 * au_adapter folder's config.json + diffusion_pytorch_model.safetensors). */
function onAdapterFiles(event) {
  const files = [...event.target.files];
  if (files.length === 0) return;
  state.adapter = { name: files.map((f) => f.name).join(', '), files: files.map((f) => [f.name, f]) };
  startWorker();
}

/** Stores the model's files in the Cache API (streamed from disk), so the next visit loads it
 * without choosing it again. Returns true, or why it was not cached (the model still loads). */
async function cacheModel(model) {
  if (!('caches' in self)) return 'this browser has no Cache API';
  const bytes = model.files.reduce((n, [, blob]) => n + blob.size, 0);
  try {
    if (navigator.storage && navigator.storage.estimate) {
      const { quota, usage } = await navigator.storage.estimate();
      if (quota !== undefined && quota - (usage || 0) < bytes) {
        return `not cached: it needs ${(bytes / 2 ** 30).toFixed(2)} GiB and the browser grants this page `
          + `${((quota - (usage || 0)) / 2 ** 30).toFixed(2)} GiB of storage`;
      }
    }
    const cache = await caches.open(CACHE);
    for (const [rel, blob] of model.files) {
      await cache.put(`/synfer-model/${encodeURIComponent(model.name)}/${rel}`, new Response(blob));
    }
    localStorage.setItem(CACHED_MODEL_KEY, JSON.stringify({ name: model.name, files: model.files.map(([rel]) => rel) }));
    return true;
  } catch (e) {
    await caches.delete(CACHE).catch(() => {});
    const why = e && e.name === 'QuotaExceededError' ? 'the browser\'s storage is full' : String(e && e.message ? e.message : e);
    return `not cached (${why})`;
  }
}

async function cachedModel() {
  const entry = localStorage.getItem(CACHED_MODEL_KEY);
  if (!entry || !('caches' in self)) return null;
  const { name, files } = JSON.parse(entry);
  const cache = await caches.open(CACHE);
  const loaded = await Promise.all(files.map(async (rel) => {
    const res = await cache.match(`/synfer-model/${encodeURIComponent(name)}/${rel}`);
    return res && [rel, await res.blob()];
  }));
  return loaded.every(Boolean) ? { name: `${name} (cached)`, files: loaded } : null;
}

async function clearCache() {
  localStorage.removeItem(CACHED_MODEL_KEY);
  if ('caches' in self) await caches.delete(CACHE);
  setStatus('Cached models cleared.');
}

// ---------------------------------------------------------------------------------------------
// start from a photo (decoded and aligned here; nothing leaves the machine)

/** RGB bytes of a drawable (image bitmap, video frame) at its own size. */
function rgbOf(source, width, height) {
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d');
  ctx.drawImage(source, 0, 0, width, height);
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i];
    rgb[j + 1] = rgba[i + 1];
    rgb[j + 2] = rgba[i + 2];
  }
  return rgb;
}

function usePhoto(rgb, width, height, name) {
  state.photo = { rgb, width, height, name };
  $('photo-clear').disabled = false;
  $('photo-note').textContent = 'finding the face…';
  state.worker.postMessage({ type: 'photo', photo: { rgb: rgb.slice(0), width, height }, side: Number($('size').value) });
}

async function onPhoto(event) {
  const file = event.target.files[0];
  if (!file) return;
  try {
    const bitmap = await createImageBitmap(file);
    usePhoto(rgbOf(bitmap, bitmap.width, bitmap.height), bitmap.width, bitmap.height, file.name);
  } catch (e) {
    $('photo-note').textContent = `${file.name}: not an image this browser can read (${e.message})`;
  }
}

async function onCamera() {
  const video = $('camera-view');
  try {
    video.srcObject = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    video.hidden = false;
    $('camera-take').hidden = false;
  } catch (e) {
    $('photo-note').textContent = `no camera: ${e.message}`;
  }
}

function onCameraTake() {
  const video = $('camera-view');
  const { videoWidth: w, videoHeight: h } = video;
  if (w && h) usePhoto(rgbOf(video, w, h), w, h, 'camera snapshot');
  for (const track of video.srcObject ? video.srcObject.getTracks() : []) track.stop();
  video.hidden = true;
  $('camera-take').hidden = true;
}

function clearPhoto() {
  state.photo = null;
  $('photo').value = '';
  $('photo-preview').hidden = true;
  $('photo-note').textContent = '';
  $('photo-clear').disabled = true;
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const gpu = await detectWebgpu();
  state.webgpu = gpu.ok;
  state.cpuWhy = gpu.why;
  $('controls').addEventListener('submit', onGenerate);
  $('cancel').addEventListener('click', onCancel);
  $('dice').addEventListener('click', () => { $('seed').value = Math.floor(Math.random() * 2 ** 31); });
  $('expression').addEventListener('change', () => { applyPreset(); updateSemanticNote(); });
  $('sg-on').addEventListener('change', updateSemanticNote);
  $('sg-scale').addEventListener('input', updateSemanticNote);
  $('au-reset').addEventListener('click', () => { $('expression').value = ''; applyPreset(); });
  $('download-all').addEventListener('click', downloadAll);
  $('model-dir').addEventListener('change', onModelFolder);
  if ('showDirectoryPicker' in window) {
    $('model-pick').hidden = false;
    $('model-pick').addEventListener('click', onPickFolder);
  }
  $('model-default').addEventListener('click', () => { state.model = null; localStorage.removeItem(CACHED_MODEL_KEY); startWorker(); });
  $('adapter-files').addEventListener('change', onAdapterFiles);
  $('adapter-none').addEventListener('click', () => { state.adapter = null; $('adapter-files').value = ''; startWorker(); });
  $('cache-clear').addEventListener('click', clearCache);
  $('photo').addEventListener('change', onPhoto);
  $('camera').addEventListener('click', onCamera);
  $('camera-take').addEventListener('click', onCameraTake);
  $('photo-clear').addEventListener('click', clearPhoto);
  $('layout-strength').addEventListener('input', () => {
    $('layout-value').textContent = Number($('layout-strength').value).toFixed(2);
  });
  state.model = await cachedModel().catch(() => null);
  startWorker();
}

main();
