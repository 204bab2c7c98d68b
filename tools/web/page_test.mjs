// End-to-end test of the page in Debian's headless Chromium, driven by playwright-core:
// load the page, set a prompt, move an AU slider, generate, wait for the gallery entry, check
// its request JSON, download the zip and check its contents; start from a photo (a franck frame:
// face found, aligned, inverted, regenerated; source and result side by side). Run once on WebGPU (SwiftShader)
// and once forcing the CPU fallback (?cpu=1). Screenshots go to $SYNFER_ARTIFACTS (default
// out/web). `bash tools/web.sh page-test` installs what it needs, builds pkg/ and runs it.
//
//   node tools/web/page_test.mjs
//
// Prints one JSON line per run with timings: time to first image (includes shader compilation
// on WebGPU), and seconds per step of a second, warm generation; then the same request on
// native flex through the CLI ($SYNFER_BIN, default target/release/synfer), same model, size
// and steps, when that binary exists.

import http from 'node:http';
import zlib from 'node:zlib';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const ARTIFACTS = path.resolve(process.env.SYNFER_ARTIFACTS || path.join(ROOT, 'out', 'web'));
const CHROMIUM = process.env.SYNFER_CHROMIUM || '/usr/bin/chromium';
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.wasm': 'application/wasm', '.json': 'application/json', '.png': 'image/png' };

function fail(message) {
  console.error(`page test: ${message}`);
  process.exit(1);
}

function check(cond, message) {
  if (!cond) fail(message);
}

function serve() {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const file = path.normalize(path.join(ROOT, decodeURIComponent(url.pathname)));
    if (!file.startsWith(ROOT) || !fs.existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    const target = fs.statSync(file).isDirectory() ? path.join(file, 'index.html') : file;
    res.writeHead(200, { 'content-type': TYPES[path.extname(target)] || 'application/octet-stream' });
    fs.createReadStream(target).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** Entries of a stored (uncompressed) zip, read from its central directory. */
/** The text chunks of a PNG (tEXt, uncompressed iTXt) as {keyword: text}, read by hand. */
function pngText(png) {
  const out = {};
  let at = 8;
  while (at + 8 <= png.length) {
    const len = png.readUInt32BE(at);
    const type = png.subarray(at + 4, at + 8).toString('latin1');
    const data = png.subarray(at + 8, at + 8 + len);
    const nul = data.indexOf(0);
    if (type === 'tEXt') out[data.subarray(0, nul).toString('latin1')] = data.subarray(nul + 1).toString('latin1');
    if (type === 'iTXt' && data[nul + 1] === 0) {
      const lang = data.indexOf(0, nul + 3);
      const translated = data.indexOf(0, lang + 1);
      out[data.subarray(0, nul).toString('latin1')] = data.subarray(translated + 1).toString('utf8');
    }
    if (type === 'IEND') break;
    at += 12 + len;
  }
  return out;
}

/** RGB pixels of an 8-bit RGB, non-interlaced PNG (what synfer writes), decoded by hand. */
function pngPixels(png) {
  let at = 8;
  let width = 0;
  let height = 0;
  const idat = [];
  while (at + 8 <= png.length) {
    const len = png.readUInt32BE(at);
    const type = png.subarray(at + 4, at + 8).toString('latin1');
    const data = png.subarray(at + 8, at + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      check(data[8] === 8 && data[9] === 2 && data[12] === 0, 'PNG: 8-bit RGB, not interlaced');
    }
    if (type === 'IDAT') idat.push(data);
    if (type === 'IEND') break;
    at += 12 + len;
  }
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const stride = width * 3;
  const out = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y += 1) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x += 1) {
      const a = x >= 3 ? out[y * stride + x - 3] : 0;
      const b = y > 0 ? out[(y - 1) * stride + x] : 0;
      const c = x >= 3 && y > 0 ? out[(y - 1) * stride + x - 3] : 0;
      const p = a + b - c;
      const pa = Math.abs(p - a);
      const pb = Math.abs(p - b);
      const pc = Math.abs(p - c);
      const paeth = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      const predictor = [0, a, b, (a + b) >> 1, paeth][filter];
      out[y * stride + x] = (line[x] + predictor) & 0xff;
    }
  }
  return { width, height, rgb: out };
}

/** Max |a − b| over the pixels of two PNGs of one size, and the first one's standard deviation
 * (a flat image would make any tolerance meaningless). */
function compare(pngA, pngB) {
  const a = pngPixels(pngA);
  const b = pngPixels(pngB);
  check(a.width === b.width && a.height === b.height, `compare: sizes ${a.width}x${a.height} vs ${b.width}x${b.height}`);
  let max = 0;
  let sum = 0;
  let sq = 0;
  for (let i = 0; i < a.rgb.length; i += 1) {
    max = Math.max(max, Math.abs(a.rgb[i] - b.rgb[i]));
    sum += a.rgb[i];
    sq += a.rgb[i] * a.rgb[i];
  }
  const mean = sum / a.rgb.length;
  return { max_diff: max, std: Math.sqrt(sq / a.rgb.length - mean * mean) };
}

function unzip(buf) {
  const end = buf.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  check(end >= 0, 'zip: end of central directory');
  const count = buf.readUInt16LE(end + 10);
  let at = buf.readUInt32LE(end + 16);
  const entries = {};
  for (let i = 0; i < count; i += 1) {
    check(buf.readUInt32LE(at) === 0x02014b50, 'zip: central entry');
    const size = buf.readUInt32LE(at + 24);
    const nameLen = buf.readUInt16LE(at + 28);
    const local = buf.readUInt32LE(at + 42);
    const name = buf.subarray(at + 46, at + 46 + nameLen).toString('utf8');
    const dataAt = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
    entries[name] = buf.subarray(dataAt, dataAt + size);
    at += 46 + nameLen;
  }
  return entries;
}

async function run(base, { cpu }) {
  const label = cpu ? 'cpu' : 'webgpu';
  const { page, logs, close } = await launch();
  try {
    const start = Date.now();
    await page.goto(`${base}/index.html${cpu ? '?cpu=1' : ''}`);
    await page.waitForFunction(() => document.body.dataset.ready === '1'
      || document.getElementById('backend').dataset.kind === 'error', null, { timeout: 300000 });
    const status = await page.textContent('#backend');
    check(await page.evaluate(() => document.body.dataset.ready === '1'), `${label}: page not ready: ${status}`);
    check(cpu ? /flex/.test(status) : /webgpu/.test(status), `${label}: backend status: ${status}`);
    const loadedMs = Date.now() - start;
    // Loading ends with a warm-up run (shader compilation), reported in the status.
    const warmup = /Warm-up ([0-9.]+) s/.exec(status);
    check(warmup && Number(warmup[1]) > 0, `${label}: warm-up in the status: ${status}`);

    await page.fill('#prompt', 'a photo of a surprised child');
    await page.selectOption('#expression', 'surprised');
    await page.fill('#au-AU12', '4');
    // An explicit 0 switches the preset's unit off (and must arrive as 0, not be dropped).
    await page.fill('#au-AU26', '0');
    await page.fill('#steps', '3');
    await page.fill('#seed', '42');
    // Half the model's native size (the smallest the page offers): keeps software WebGPU quick.
    const sizes = await page.$$eval('#size option', (os) => os.map((o) => Number(o.value)));
    await page.selectOption('#size', String(Math.min(...sizes)));
    const generateAt = Date.now();
    await page.click('#generate');
    await page.waitForSelector('#gallery li', { timeout: 300000 });
    const firstImageMs = Date.now() - generateAt;
    const request = JSON.parse(await page.textContent('#gallery li .request-json'));
    check(request.prompt === 'a photo of a surprised child', `${label}: request prompt ${request.prompt}`);
    check(request.expression === 'surprised', `${label}: request expression ${request.expression}`);
    check(request.aus && request.aus.AU12 === 4, `${label}: request AU12 ${JSON.stringify(request.aus)}`);
    check(request.aus && request.aus.AU26 === 0, `${label}: request AU26 ${JSON.stringify(request.aus)}`);
    check(request.steps === 3 && request.seed === 42, `${label}: steps/seed ${request.steps}/${request.seed}`);
    const meta = await page.textContent('#gallery li .meta');
    const perStep = Number(/([0-9.]+) s\/step/.exec(meta)[1]);
    const requested = await page.textContent('#gallery li .requested');
    check(/AU12=4/.test(requested), `${label}: requested labels: ${requested}`);
    const measured = await page.textContent('#gallery li .measured');
    check(/^measured.*(neutral|happy|sad|angry|fearful|disgusted|surprised)/.test(measured), `${label}: measured labels: ${measured}`);
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, `page-${label}.png`), fullPage: true });

    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-all')]);
    const zipPath = path.join(ARTIFACTS, `gallery-${label}.zip`);
    await download.saveAs(zipPath);
    const entries = unzip(fs.readFileSync(zipPath));
    const names = Object.keys(entries).sort();
    check(names.length === 2 && names.includes('metadata.jsonl'), `${label}: zip entries ${names}`);
    const png = entries[names.find((n) => n.endsWith('.png'))];
    check(png.subarray(1, 4).toString() === 'PNG', `${label}: zip image is a PNG`);
    // The PNG carries its settings: an A1111 `parameters` tEXt chunk and the JSON record (iTXt).
    const text = pngText(png);
    check(/^.*surprised child.*\nSteps: \d+, Sampler: [^,]+, CFG scale: [\d.]+, Seed: \d+, Size: \d+x\d+, /.test(text.parameters || ''),
      `${label}: PNG parameters ${JSON.stringify(text.parameters)}`);
    check(text.synfer && JSON.parse(text.synfer).request.aus.AU12 === 4, `${label}: PNG record`);
    const lines = entries['metadata.jsonl'].toString().trim().split('\n').map((l) => JSON.parse(l));
    check(lines.length === 1, `${label}: metadata lines ${lines.length}`);
    const rec = lines[0];
    check(rec.file === names.find((n) => n.endsWith('.png')), `${label}: metadata file ${rec.file}`);
    check(rec.request.aus.AU12 === 4 && rec.aus && rec.aus.AU12 === 4, `${label}: metadata AUs ${JSON.stringify(rec.aus)}`);
    check(rec.aus && !rec.aus.AU26, `${label}: AU26 switched off in the vector used ${JSON.stringify(rec.aus)}`);
    check(rec.prompt_used.includes('surprised child'), `${label}: prompt_used ${rec.prompt_used}`);
    const probs = rec.measured && rec.measured.expression.ensemble.probs;
    check(probs && Math.abs(Object.values(probs).reduce((a, b) => a + b, 0) - 1) < 1e-3, `${label}: measured probabilities ${JSON.stringify(probs)}`);
    check(rec.measured.aus && Object.keys(rec.measured.aus).length === 12, `${label}: measured AUs`);

    // A second, warm generation (shaders compiled): seconds per step.
    await page.fill('#steps', String(WARM_STEPS));
    await page.click('#generate');
    await page.waitForFunction(() => document.querySelectorAll('#gallery li').length === 2, null, { timeout: 300000 });
    const warm = Number(/([0-9.]+) s\/step/.exec(await page.textContent('#gallery li .meta'))[1]);

    // Semantic guidance toward the chosen expression (the last 60 % of the steps).
    await page.check('#sg-on');
    await page.click('#generate');
    await page.waitForFunction(() => document.querySelectorAll('#gallery li').length === 3, null, { timeout: 600000 });
    const guidedRequest = JSON.parse(await page.textContent('#gallery li .request-json'));
    check(guidedRequest.semantic_guidance && guidedRequest.semantic_guidance.scale === 0.1,
      `${label}: guided request ${JSON.stringify(guidedRequest.semantic_guidance)}`);
    const guided = Number(/([0-9.]+) s\/step/.exec(await page.textContent('#gallery li .meta'))[1]);
    await page.uncheck('#sg-on');
    await startFromPhoto(page, label);
    if (cpu) await bringYourOwnModel(page);
    console.log(JSON.stringify({ run: label, device: rec.device, load_ms: loadedMs, warmup_s: Number(warmup[1]),
      first_image_ms: firstImageMs,
      first_per_step_s: perStep, warm_per_step_s: warm, warm_steps: WARM_STEPS, size: `${rec.width}x${rec.height}`,
      semantic_guidance_per_step_s: guided, semantic_guidance_run_ratio: Number((guided / warm).toFixed(2)) }));
    return { width: rec.width, height: rec.height };
  } catch (e) {
    console.error(logs.join('\n'));
    throw e;
  } finally {
    await close();
  }
}

const WARM_STEPS = 5;

/** "Start from a photo": a franck video frame through the file input, its face found and
 * aligned in the worker, inverted and regenerated as happy; the gallery shows the source beside
 * the result with what was measured on each. */
async function startFromPhoto(page, label) {
  await page.setInputFiles('#photo', path.join(ROOT, 'tests/fixtures/face/franck/franck_02045.png'));
  await page.waitForFunction(() => !document.getElementById('photo-preview').hidden
    && !/finding/.test(document.getElementById('photo-note').textContent), null, { timeout: 120000 });
  const note = await page.textContent('#photo-note');
  check(/face found and aligned; measured/.test(note), `${label}: photo note ${note}`);
  await page.selectOption('#expression', 'happy');
  await page.fill('#steps', '4');
  const before = await page.locator('#gallery li').count();
  await page.click('#generate');
  await page.waitForFunction((n) => document.querySelectorAll('#gallery li').length === n + 1, before, { timeout: 600000 });
  const request = JSON.parse(await page.textContent('#gallery li .request-json'));
  check(request.start && request.start.mode === 'layout' && request.start.strength === 0.7
    && request.start.source === 'franck_02045.png', `${label}: photo request ${JSON.stringify(request.start)}`);
  check(await page.locator('#gallery li:first-child .pair img').count() === 2, `${label}: source and result side by side`);
  const source = await page.textContent('#gallery li:first-child .source-measured');
  check(/^source measured.*(neutral|happy|sad|angry|fearful|disgusted|surprised)/.test(source), `${label}: source labels ${source}`);
  const result = await page.textContent('#gallery li:first-child .measured');
  check(/^measured/.test(result), `${label}: result labels ${result}`);
  await page.screenshot({ path: path.join(ARTIFACTS, `page-${label}-photo.png`), fullPage: true });
  await page.click('#photo-clear');
}

/** Loads tests/fixtures/sd1-tiny (no AU adapter) through the folder input, generates, reloads
 * the page (the model comes back from the Cache API), then returns to the default model. */
async function bringYourOwnModel(page) {
  const ready = (name) => page.waitForFunction((n) => document.getElementById('model-name').textContent.includes(n)
    && document.body.dataset.ready === '1' && !document.getElementById('generate').disabled, name, { timeout: 120000 });
  await page.evaluate(() => { document.body.dataset.ready = '0'; });
  await page.setInputFiles('#model-dir', path.join(ROOT, 'tests/fixtures/sd1-tiny'));
  await ready('sd1-tiny');
  check(await page.isDisabled('#au-scale'), 'own model without adapter: AU controls disabled');
  const note = await page.textContent('#au-note');
  check(/no AU adapter/.test(note), `own model: AU note ${note}`);
  await page.fill('#steps', '2');
  const before = await page.locator('#gallery li').count();
  await page.click('#generate');
  await page.waitForFunction((n) => document.querySelectorAll('#gallery li').length === n + 1, before, { timeout: 120000 });
  const request = JSON.parse(await page.textContent('#gallery li .request-json'));
  check(request.aus == null && request.au_scale == null, `own model request: ${JSON.stringify(request)}`);
  await page.waitForFunction(() => /cached for the next visit/.test(document.getElementById('model-cache').textContent),
    null, { timeout: 60000 });
  await page.reload();
  await ready('sd1-tiny (cached)');
  await page.click('#cache-clear');
  await page.click('#model-default');
  await ready('default');
}

const TARGET = process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target');
const BIN = process.env.SYNFER_BIN || path.join(TARGET, 'release', 'synfer');

/** A fresh headless Chromium with WebGPU (SwiftShader here), its first page and its console. */
async function launch() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'synfer-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    acceptDownloads: true,
    args: ['--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--disable-quic', '--enable-unsafe-webgpu'],
  });
  const page = context.pages()[0] || await context.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
  const close = async () => {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  };
  return { context, page, logs, close };
}

/** Waits until the page is ready with a model whose name contains `name`, or shows an error;
 * returns the status line. */
async function waitReady(page, name, timeout) {
  await page.waitForFunction((n) => (document.getElementById('model-name').textContent.includes(n)
    && document.body.dataset.ready === '1' && !document.getElementById('generate').disabled)
    || document.getElementById('backend').dataset.kind === 'error', name, { timeout });
  return page.textContent('#backend');
}

/** Generates with the page's current settings at `side`² (added to the size menu) and returns
 * the newest gallery image's PNG bytes (its settings inside) and its seconds per step. */
async function generateAt(page, side, timeout) {
  await page.evaluate((s) => {
    const size = document.getElementById('size');
    if (![...size.options].some((o) => Number(o.value) === s)) size.add(new Option(`${s}×${s}`, s));
    size.value = String(s);
  }, side);
  const before = await page.locator('#gallery li').count();
  await page.click('#generate');
  await page.waitForFunction((n) => document.querySelectorAll('#gallery li').length === n + 1
    || document.getElementById('backend').dataset.kind === 'error', before, { timeout });
  check(await page.locator('#gallery li').count() === before + 1, `generation failed: ${await page.textContent('#backend')}`);
  const bytes = await page.evaluate(async () => {
    const res = await fetch(document.querySelector('#gallery li img').src);
    return Array.from(new Uint8Array(await res.arrayBuffer()));
  });
  const perStep = Number(/([0-9.]+) s\/step/.exec(await page.textContent('#gallery li .meta'))[1]);
  return { png: Buffer.from(bytes), perStep };
}

/** The page's image regenerated natively (CPU) from the settings inside its PNG; returns the
 * comparison (max |diff| in 1/255 units, the page image's std) and the native seconds per step. */
function againNatively(png, name, extra) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'synfer-parity-'));
  const pagePng = path.join(dir, 'page.png');
  const out = path.join(dir, 'native.png');
  fs.writeFileSync(pagePng, png);
  execFileSync(BIN, ['generate', '--from-png', pagePng, '--device', 'cpu', ...extra, '--out', out],
    { stdio: ['ignore', 'ignore', 'inherit'] });
  const result = compare(png, fs.readFileSync(out));
  const timings = JSON.parse(fs.readFileSync(out.replace(/\.png$/, '.json'), 'utf8')).timings;
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  fs.copyFileSync(pagePng, path.join(ARTIFACTS, `${name}-page.png`));
  fs.copyFileSync(out, path.join(ARTIFACTS, `${name}-native.png`));
  fs.rmSync(dir, { recursive: true, force: true });
  return { ...result, native_per_step_s: timings.per_step_s };
}

/** A Stable-Diffusion-1.5-shaped fp16 folder (2.1 GB, random weights; written once by
 * `synfer bench --write-model`) chosen in a WebGPU tab: it streams in tensor by tensor with the
 * wasm heap's high-water mark under 512 MiB, is not cached when the browser's storage is short
 * (said, and the model still loads), generates 2 steps at SYNFER_SD15_SIDE² (default 64) and
 * matches the native CLI's image of the same settings within 2/255; the CPU backend refuses it
 * from its headers. */
async function realSizeModel(base) {
  const dir = process.env.SYNFER_SD15_DIR || path.join(TARGET, 'sd15-random');
  if (!fs.existsSync(path.join(dir, 'vae', 'diffusion_pytorch_model.safetensors'))) {
    execFileSync(BIN, ['bench', '--write-model', dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  }
  const side = Number(process.env.SYNFER_SD15_SIDE || 64);
  const { context, page, logs, close } = await launch();
  try {
    // Storage short: the page may keep 1 MiB, the model needs 2 GiB.
    const cdp = await context.newCDPSession(page);
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: base, quotaSize: 2 ** 20 });
    await page.goto(`${base}/index.html`);
    await waitReady(page, 'default', 300000);
    const start = Date.now();
    await page.evaluate(() => { document.body.dataset.ready = '0'; });
    await page.setInputFiles('#model-dir', dir);
    const progress = setInterval(async () => {
      const now = await page.textContent('#backend').catch(() => '?');
      console.error(`sd15 ${((Date.now() - start) / 1000).toFixed(0)} s: ${now}`);
    }, 30000);
    const status = await waitReady(page, path.basename(dir), 1800000).finally(() => clearInterval(progress));
    check(/^Ready/.test(status), `sd15: ${status}`);
    const loadS = (Date.now() - start) / 1000;
    await page.waitForFunction(() => !/caching/.test(document.getElementById('model-cache').textContent));
    const cache = await page.textContent('#model-cache');
    // Refused up front from the storage estimate, or by the Cache API's quota error.
    check(/not cached.*(2\.\d+ GiB|storage is full).*loaded for this visit only/.test(cache), `sd15: cache note ${cache}`);
    const memory = await page.textContent('#model-memory');
    const heap = Number(/wasm memory (\d+) MiB/.exec(memory)[1]);
    const readWindow = Number(/at most ([0-9.]+) MiB/.exec(memory)[1]);
    check(heap <= 512, `sd15: wasm memory ${heap} MiB > 512 MiB (${memory})`);
    await page.fill('#prompt', 'a portrait photo of a smiling woman');
    await page.fill('#steps', '2');
    await page.fill('#seed', '7');
    const genStart = Date.now();
    const generated = await generateAt(page, side, 3600000);
    const generateS = (Date.now() - genStart) / 1000;
    const parity = againNatively(generated.png, 'sd15', ['--model', dir]);
    check(parity.max_diff <= 2 && parity.std > 8, `sd15: page vs native ${JSON.stringify(parity)}`);
    // The CPU backend holds every weight in wasm memory: refused, from the headers alone.
    await page.goto(`${base}/index.html?cpu=1`);
    await waitReady(page, 'default', 300000);
    await page.setInputFiles('#model-dir', dir);
    await page.waitForFunction(() => document.getElementById('backend').dataset.kind === 'error', null, { timeout: 120000 });
    const refused = await page.textContent('#backend');
    check(/GiB as f32 on the CPU backend/.test(refused), `sd15 on the CPU backend: ${refused}`);
    console.log(JSON.stringify({ run: 'sd15-shaped fp16 folder (webgpu)', status, load_s: loadS, memory,
      wasm_heap_mib: heap, read_window_mib: readWindow, size: `${side}x${side}`, steps: 2,
      generate_s: generateS, per_step_s: generated.perStep, ...parity }));
  } catch (e) {
    console.error(logs.join('\n'));
    throw e;
  } finally {
    await close();
  }
}

/** A FineFace-layout AU adapter (the tiny fixture's attn_processors.ckpt, au_encoder.ckpt and
 * LoRA) chosen beside a model folder (sd1-tiny + the fixture's SD-2.x-shaped UNet): the sliders
 * follow the adapter's set, and the image equals the native CLI's with the same files within
 * 2/255. */
async function adapterInPage(base) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'synfer-au-model-'));
  const model = path.join(dir, 'sd1-tiny-au');
  const sd1 = path.join(ROOT, 'tests/fixtures/sd1-tiny');
  for (const part of ['model_index.json', 'tokenizer', 'text_encoder', 'vae', 'scheduler']) {
    fs.cpSync(path.join(sd1, part), path.join(model, part), { recursive: true });
  }
  fs.cpSync(path.join(ROOT, 'tests/fixtures/au/unet'), path.join(model, 'unet'), { recursive: true });
  const fineface = path.join(ROOT, 'tests/fixtures/au/fineface');
  const adapterFiles = ['attn_processors.ckpt', 'au_encoder.ckpt', 'pytorch_lora_weights.safetensors']
    .map((f) => path.join(fineface, f));
  const { page, logs, close } = await launch();
  try {
    await page.goto(`${base}/index.html`);
    await waitReady(page, 'default', 300000);
    await page.evaluate(() => { document.body.dataset.ready = '0'; });
    await page.setInputFiles('#model-dir', model);
    await waitReady(page, 'sd1-tiny-au', 300000);
    await page.evaluate(() => { document.body.dataset.ready = '0'; });
    await page.setInputFiles('#adapter-files', adapterFiles);
    const status = await waitReady(page, 'AU adapter attn_processors.ckpt', 300000);
    check(/^Ready/.test(status), `adapter: ${status}`);
    check(/fineface/.test(await page.textContent('#au-set')), 'adapter: the FineFace AU set');
    await page.selectOption('#expression', 'happy');
    await page.fill('#au-AU12', '4');
    await page.fill('#steps', '3');
    await page.fill('#seed', '11');
    const generated = await generateAt(page, Number(await page.$eval('#size', (s) => s.value)), 600000);
    const record = JSON.parse(pngText(generated.png).synfer);
    check(record.request.aus.AU12 === 4, `adapter: request ${JSON.stringify(record.request.aus)}`);
    const parity = againNatively(generated.png, 'fineface', ['--model', model, '--adapter', adapterFiles.join(',')]);
    check(parity.max_diff <= 2 && parity.std > 8, `adapter: page vs native ${JSON.stringify(parity)}`);
    console.log(JSON.stringify({ run: 'fineface adapter (webgpu)', status, size: `${record.width}x${record.height}`,
      per_step_s: generated.perStep, ...parity }));
  } catch (e) {
    console.error(logs.join('\n'));
    throw e;
  } finally {
    await close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The same request on native flex through the CLI, with the page's default model. */
function native({ width, height }) {
  const bin = BIN;
  if (!fs.existsSync(bin)) {
    console.log(JSON.stringify({ run: 'native', skipped: `${bin} not built` }));
    return;
  }
  // The page's default model (www/worker.js): synfer-tiny, built into the CLI.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'synfer-web-model-'));
  const runs = [3, WARM_STEPS].map((steps) => {
    const out = path.join(dir, `native-${steps}.png`);
    execFileSync(bin, ['generate', '--device', 'cpu', '--prompt', 'a photo of a surprised child',
      '--expression', 'surprised', '--au', 'AU12=4', '--steps', String(steps), '--seed', '42',
      '--width', String(width), '--height', String(height), '--out', out], { stdio: ['ignore', 'ignore', 'pipe'] });
    return JSON.parse(fs.readFileSync(out.replace(/\.png$/, '.json'), 'utf8')).timings;
  });
  fs.rmSync(dir, { recursive: true, force: true });
  console.log(JSON.stringify({ run: 'native', device: 'flex (CPU, native CLI)', load_ms: Math.round(runs[0].load_s * 1000),
    first_image_ms: Math.round(runs[0].generate_s * 1000), first_per_step_s: runs[0].per_step_s,
    warm_per_step_s: runs[1].per_step_s, warm_steps: WARM_STEPS, size: `${width}x${height}`,
    note: 'each CLI run is a fresh process: its "warm" run is not warmer than its first' }));
}

const server = await serve();
const base = `http://127.0.0.1:${server.address().port}`;
check(fs.existsSync(path.join(ROOT, 'pkg', 'synfer.js')), 'pkg/synfer.js missing: run bash tools/web.sh build');
try {
  const only = process.env.SYNFER_PAGE_TEST; // e.g. "sd15" or "adapter": run one part
  if (!only || only === 'main') {
    const size = await run(base, { cpu: false });
    await run(base, { cpu: true });
    native(size);
  }
  check(fs.existsSync(BIN), `${BIN} not built: the parity parts need the native CLI`);
  if (!only || only === 'adapter') await adapterInPage(base);
  if (!only || only === 'sd15') await realSizeModel(base);
} finally {
  server.close();
}
