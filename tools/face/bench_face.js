#!/usr/bin/env node
// The tfjs side of `cargo bench --bench face`: the same four original models chained as
// synfer's FaceAnalyzer (make_face_pipeline.js's Analyzer), on the frames the bench passes,
// @tensorflow/tfjs 4.22.0 pure-JS CPU backend in Node.
//
//   node tools/face/bench_face.js FRAMES.rgb WIDTH HEIGHT COUNT ITERS
//
// FRAMES.rgb: COUNT u8 RGB images of WIDTH x HEIGHT, back to back. One warm-up pass over all
// frames, then ITERS timed passes; prints one JSON line {"faces_per_s", "faces", "seconds", ...}.

'use strict';

const fs = require('fs');
const tf = require('@tensorflow/tfjs');
const { assert } = require('./common');
const { Analyzer, HUMAN_DEFAULTS } = require('./make_face_pipeline');

async function main() {
  const [file, w, h, n, iters] = process.argv.slice(2);
  const [width, height, count, passes] = [w, h, n, iters].map(Number);
  assert(file && width > 0 && height > 0 && count > 0 && passes > 0, 'usage: bench_face.js FRAMES.rgb W H N ITERS');
  const bytes = fs.readFileSync(file);
  assert(bytes.length === width * height * 3 * count, `${file}: ${count} ${width}x${height} RGB frames`);
  await tf.setBackend('cpu');
  await tf.ready();
  const analyzer = await Analyzer.load();
  const frame = (i) => bytes.subarray(i * width * height * 3, (i + 1) * width * height * 3);
  let faces = 0;
  const pass = async () => {
    for (let i = 0; i < count; i += 1) faces += (await analyzer.analyze(frame(i), width, height, HUMAN_DEFAULTS)).length;
  };
  await pass();
  faces = 0;
  const start = process.hrtime.bigint();
  for (let p = 0; p < passes; p += 1) await pass();
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  console.log(JSON.stringify({ faces_per_s: faces / seconds, faces, seconds, tfjs: tf.version.tfjs, backend: tf.getBackend() }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
