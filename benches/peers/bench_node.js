// Times twilio-node's parse + validate on the benchmark payloads.
//
// Usage: node bench_node.js PAYLOAD_DIR NAME... ; prints one JSON object per payload.
//
// Form bodies are parsed with querystring.parse (what Express's urlencoded parser does with
// extended: false) and checked with twilio.validateRequest; a JSON body goes through
// twilio.validateRequestWithBody.
"use strict";

const fs = require("fs");
const path = require("path");
const querystring = require("querystring");
const twilio = require("twilio");

const [directory, ...names] = process.argv.slice(2);
const read = (file) => fs.readFileSync(path.join(directory, file), "utf8");
const token = read("token");

for (const name of names) {
  const url = read(`${name}.url`);
  const body = read(`${name}.body`);
  const ctype = read(`${name}.ctype`);
  const sig = read(`${name}.sig`);
  const isForm = ctype.startsWith("application/x-www-form-urlencoded");
  const once = isForm
    ? () => twilio.validateRequest(token, sig, url, querystring.parse(body))
    : () => twilio.validateRequestWithBody(token, sig, url, body);

  if (!once()) throw new Error(`twilio-node rejects ${name}`);
  // Warm the JIT, calibrate a batch to about 50 ms, then time 15 batches and keep the median.
  for (let i = 0; i < 2000; i++) once();
  let batch = 1;
  for (;;) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) once();
    if (process.hrtime.bigint() - start > 50_000_000n) break;
    batch *= 2;
  }
  const samples = [];
  for (let round = 0; round < 15; round++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) once();
    samples.push(Number(process.hrtime.bigint() - start) / batch);
  }
  samples.sort((a, b) => a - b);
  console.log(JSON.stringify({
    impl: "node", payload: name, median_ns: samples[7], min_ns: samples[0],
  }));
}
