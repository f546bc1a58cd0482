// What caller_identity.js (SDK v3) and caller_identity_v2.js share: the command line, the
// call loop and its JSON lines, so both clients behave the same apart from the SDK.
//
// Flags: --count N (0: until stopped), --interval S, --endpoint-url URL, --modules DIR
// (take the SDK from DIR/node_modules), --provider NAME (v3 only).
"use strict";

const path = require("path");
const { createRequire } = require("module");

function parseArgs(argv) {
  const opts = { provider: "default", count: 1, interval: 0.5, endpointUrl: null, modules: null };
  const flags = {
    "--provider": (v) => (opts.provider = v),
    "--count": (v) => (opts.count = Number(v)),
    "--interval": (v) => (opts.interval = Number(v)),
    "--endpoint-url": (v) => (opts.endpointUrl = v),
    "--modules": (v) => (opts.modules = v),
  };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`missing value for ${flag}`);
    if (!(flag in flags)) throw new Error(`unknown argument ${flag}`);
    flags[flag](value);
  }
  return opts;
}

// require() from DIR/node_modules, or from this folder's
function loader(opts) {
  return opts.modules ? createRequire(path.join(path.resolve(opts.modules), "index.js")) : require;
}

function emit(record) {
  process.stdout.write(JSON.stringify(record) + "\n");
}

// callOnce() resolves to {arn, accessKeyId, sdk}; one JSON line per call
async function loop(opts, callOnce) {
  let ok = false;
  for (let n = 1; opts.count === 0 || n <= opts.count; n += 1) {
    try {
      const answer = await callOnce();
      ok = true;
      emit({ ok, ...answer });
    } catch (err) {
      ok = false;
      emit({ ok, error: `${err.code || err.name}: ${err.message}` });
    }
    if (opts.count === 0 || n < opts.count) {
      await new Promise((resolve) => setTimeout(resolve, opts.interval * 1000));
    }
  }
  return ok ? 0 : 1;
}

function main(name, body) {
  Promise.resolve()
    .then(() => body(parseArgs(process.argv.slice(2))))
    .then(
      (code) => process.exit(code),
      (err) => {
        process.stderr.write(`${name}: ${err.stack || err}\n`);
        process.exit(2);
      },
    );
}

module.exports = { loader, loop, main };
