// The Web Worker that owns the wasm module and the loaded model, so the page never freezes.
//
// Messages in:  {type: 'load', webgpu, f16, model: {name, files: [[relPath, Blob], ...]} | null,
//                adapter: {name, files: [[fileName, Blob], ...]} | null, warmup: bool}
//               (Blobs are read in place, tensor by tensor: a 2 GB model never sits in memory)
//               {type: 'generate', id, request, photo?: {rgb, width, height}}
//               {type: 'photo', photo: {rgb, width, height}, side}
// Messages out: {type: 'ready', info, catalogue, backend}
//               {type: 'step', id, step, total, preview?: ArrayBuffer (PNG of x̂0)}
//               {type: 'done', id, width, height, images: [{png: ArrayBuffer, measured}], records,
//                source?: {png, measured}}  (source: the aligned face of a photo start)
//               {type: 'photo', png, detected, measured}  (the photo's face, aligned)
//               (measured: the face analysis of the image, {detected, faces: [...]}, or null)
//               {type: 'error', id?, message}

import init, {
  WebAnalyzer, WebPipeline, auCatalogue, encodePng, encodePngWithRecord, wasmMemoryBytes,
} from '../pkg/synfer.js';

// The model bundled with the page: synfer-tiny (models/synfer-tiny, served next to the page;
// nothing leaves the machine).
const DEFAULT_MODEL_DIR = 'models/synfer-tiny';
const DEFAULT_MODEL = {
  name: 'synfer-tiny (default)',
  files: Object.fromEntries([
    'model_index.json',
    'scheduler/scheduler_config.json',
    'text_encoder/config.json',
    'text_encoder/model.safetensors',
    'tokenizer/merges.txt',
    'tokenizer/special_tokens_map.json',
    'tokenizer/tokenizer_config.json',
    'tokenizer/vocab.json',
    'unet/config.json',
    'unet/diffusion_pytorch_model.safetensors',
    'vae/config.json',
    'vae/diffusion_pytorch_model.safetensors',
    'au_adapter/config.json',
    'au_adapter/diffusion_pytorch_model.safetensors',
    'synfer.json',
  ].map((rel) => [rel, `${DEFAULT_MODEL_DIR}/${rel}`])),
};

// The face models (converted from their npm packages, see assets/face/PROVENANCE.md).
const FACE_MODELS = ['fer_a_face_api', 'fer_b_mini_xception', 'facemesh', 'blazeface']
  .map((name) => `assets/face/${name}.safetensors`);

let pipeline = null;
let analyzer = null;

/** The response for a file served next to the page (`url` relative to the site root). */
async function fetchServed(url) {
  const res = await fetch(new URL(url, new URL('../', import.meta.url)));
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return res;
}

async function fetchBytes(url) {
  return new Uint8Array(await (await fetchServed(url)).arrayBuffer());
}

let faceBytes = null;

/** The face models' bytes (fetched once): FER A, FER B, FaceMesh, BlazeFace. */
async function faceModelBytes() {
  if (!faceBytes) faceBytes = await Promise.all(FACE_MODELS.map(fetchBytes));
  return faceBytes;
}

async function loadAnalyzer() {
  return WebAnalyzer.load(...await faceModelBytes());
}

async function fetchDefault() {
  const entries = await Promise.all(Object.entries(DEFAULT_MODEL.files)
    .map(async ([rel, url]) => [rel, await (await fetchServed(url)).blob()]));
  return { name: DEFAULT_MODEL.name, files: new Map(entries) };
}

/** The adapter's buffer limits (the device is created with them), for planning and refusals. */
async function bufferLimits(webgpu) {
  if (!webgpu || !navigator.gpu) return {};
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) return {};
  return { maxBinding: adapter.limits.maxStorageBufferBindingSize, maxBuffer: adapter.limits.maxBufferSize };
}

/** A warm-up run (2 steps with guidance, then face analysis) compiles the GPU shaders with
 * progress, so that the first Generate runs at full speed. The kernels do not depend on the image
 * size, so it runs small: the page's smallest size, at most 64² (a 512² warm-up of a Stable
 * Diffusion 1.5 folder would cost many minutes on a software GPU). A model the warm-up cannot run
 * (e.g. over the GPU's buffer limit) still loads: `{skipped: why}`, and its first Generate says
 * why. */
async function warmUp(info) {
  const m = info.size_multiple;
  const side = Math.max(m, Math.floor(Math.min(info.default_size / 2, 64) / m) * m);
  const start = performance.now();
  try {
    const out = await pipeline.generate({ prompt: 'a photo of a face', steps: 2, width: side, height: side },
      (e) => postMessage({ type: 'warmup', step: e.step, total: e.total }));
    if (analyzer) analyzer.analyze(out.images[0], out.width, out.height);
    return { ms: Math.round(performance.now() - start) };
  } catch (e) {
    return { skipped: String(e && e.message ? e.message : e) };
  }
}

async function load({ webgpu, f16, model, adapter, warmup: warm = true }) {
  await init();
  const chosen = model ? { name: model.name, files: new Map(model.files) } : await fetchDefault();
  const loadStart = performance.now();
  pipeline = await WebPipeline.load(chosen.files, adapter ? new Map(adapter.files) : undefined,
    { webgpu, f16, ...await bufferLimits(webgpu) });
  const loadMs = Math.round(performance.now() - loadStart);
  let semantic = true;
  try {
    const [ferA, ferB] = await faceModelBytes();
    pipeline.enableSemanticGuidance(ferA, ferB);
  } catch (e) {
    console.warn('semantic guidance unavailable:', e);
    semantic = false;
  }
  if (!analyzer) {
    try {
      analyzer = await loadAnalyzer();
    } catch (e) {
      console.warn('face analysis unavailable:', e);
    }
  }
  const info = pipeline.info();
  const warmup = warm ? await warmUp(info) : { skipped: 'asked for (?warmup=0)' };
  postMessage({
    type: 'ready',
    info: { ...info, name: chosen.name, adapter: adapter && adapter.name, semantic, warmup, load_ms: loadMs,
      wasm_memory_after_load_bytes: info.wasm_memory_bytes, wasm_memory_bytes: wasmMemoryBytes() },
    catalogue: auCatalogue(),
  });
}

/** The photo's face aligned to `side` pixels (the analyser's framing), or its centre square. */
function alignPhoto(photo, side) {
  if (!analyzer) throw new Error('face analysis is unavailable: cannot start from a photo');
  return analyzer.align(new Uint8Array(photo.rgb), photo.width, photo.height, side);
}

function measure(rgb, side) {
  return analyzer ? analyzer.analyze(rgb, side, side) : null;
}

async function showPhoto({ photo, side }) {
  const aligned = alignPhoto(photo, side);
  const png = encodePng(aligned.rgb, side, side).buffer;
  postMessage({ type: 'photo', png, detected: aligned.detected, measured: measure(aligned.rgb, side) }, [png]);
}

async function generate({ id, request, photo }) {
  if (!pipeline) throw new Error('no model is loaded');
  let source = null;
  let startImages;
  if (photo && request.start) {
    const aligned = alignPhoto(photo, request.width);
    startImages = Array.from({ length: request.num_images }, () => aligned.rgb);
    source = { png: encodePng(aligned.rgb, request.width, request.height).buffer, measured: measure(aligned.rgb, request.width) };
  }
  // A preview of x̂0 about five times per run (each costs one VAE decode).
  const every = Math.max(1, Math.round(request.steps / 5));
  const onStep = (e) => {
    const msg = { type: 'step', id, step: e.step, total: e.total };
    if (e.preview) {
      // The page always sends the output size.
      msg.preview = encodePng(e.preview, request.width, request.height).buffer;
      postMessage(msg, [msg.preview]);
    } else {
      postMessage(msg);
    }
  };
  const out = await pipeline.generate(request, onStep, undefined, every, startImages);
  // Each PNG carries its settings (A1111 `parameters` and the JSON record), so downloads keep them.
  const images = out.images.map((rgb, i) => ({
    png: encodePngWithRecord(rgb, out.records[i]).buffer,
    measured: analyzer ? analyzer.analyze(rgb, out.width, out.height) : null,
  }));
  const transfer = images.map((i) => i.png).concat(source ? [source.png] : []);
  postMessage({ type: 'done', id, width: out.width, height: out.height, images, records: out.records, source },
    transfer);
}

onmessage = async ({ data }) => {
  try {
    if (data.type === 'load') await load(data);
    else if (data.type === 'generate') await generate(data);
    else if (data.type === 'photo') await showPhoto(data);
  } catch (e) {
    postMessage({ type: 'error', id: data.id, message: String(e && e.message ? e.message : e) });
  }
};
