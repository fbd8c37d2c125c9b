// Times twilio-node's parse + validate on the benchmark payloads.
//
// Usage: node bench_node.js PAYLOAD_DIR NAME... ; prints one JSON object per payload.
//
// Form bodies are parsed with querystring.parse (what Express's urlencoded parser does with
// extended: false) and checked with twilio.validateRequest; a JSON body goes through
// twilio.validateRequestWithBody. Before timing, its verdicts are checked: it must accept the
// request, and reject it with one character of the body changed (as benches/peers/rust does)
// and with a wrong signature.
"use strict";

const fs = require("fs");
const path = require("path");
const querystring = require("querystring");
const twilio = require("twilio");

const [directory, ...names] = process.argv.slice(2);
const read = (file) => fs.readFileSync(path.join(directory, file), "utf8");
const token = read("token");

// The body with the first letter or digit after the first `=` (a form) or `:` (JSON) changed.
function changeBody(body, isForm) {
  const start = body.indexOf(isForm ? "=" : ":") + 1;
  const at = start + body.slice(start).search(/[A-Za-z0-9]/);
  const c = body.charCodeAt(at);
  const changed = "9Zz".includes(body[at]) ? c - 1 : c + 1;
  return body.slice(0, at) + String.fromCharCode(changed) + body.slice(at + 1);
}

for (const name of names) {
  const url = read(`${name}.url`);
  const body = read(`${name}.body`);
  const ctype = read(`${name}.ctype`);
  const sig = read(`${name}.sig`);
  const isForm = ctype.startsWith("application/x-www-form-urlencoded");
  const check = (b, s) => isForm
    ? twilio.validateRequest(token, s, url, querystring.parse(b))
    : twilio.validateRequestWithBody(token, s, url, b);
  const once = () => check(body, sig);

  if (!once()) throw new Error(`twilio-node rejects ${name}`);
  if (check(changeBody(body, isForm), sig)) throw new Error(`twilio-node accepts ${name} with a changed body`);
  const wrong = (sig.startsWith("A") ? "B" : "A") + sig.slice(1);
  if (check(body, wrong)) throw new Error(`twilio-node accepts ${name} with a wrong signature`);
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
