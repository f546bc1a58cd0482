#!/usr/bin/env node
// STS GetCallerIdentity with the AWS SDK for JavaScript v3, as an application would call it.
//
//   node caller_identity.js [--provider default|ini|http|container] [--count N] [--interval S]
//
// Prints one JSON line per call: {"ok": true, "arn": ..., "accessKeyId": ...} or
// {"ok": false, "error": ...}. accessKeyId is read from the SigV4 Authorization header of
// the request that was actually sent, so it shows which credentials the SDK used.
// --count 0 calls until the process is stopped. One client is kept for the whole run, so a
// rotation is only picked up through the SDK's own refresh.
"use strict";

const { STSClient, GetCallerIdentityCommand } = require("@aws-sdk/client-sts");
const providers = require("@aws-sdk/credential-providers");

function parseArgs(argv) {
  const opts = { provider: "default", count: 1, interval: 0.5 };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`missing value for ${flag}`);
    if (flag === "--provider") opts.provider = value;
    else if (flag === "--count") opts.count = Number(value);
    else if (flag === "--interval") opts.interval = Number(value);
    else throw new Error(`unknown argument ${flag}`);
  }
  return opts;
}

function credentialsFor(provider) {
  switch (provider) {
    case "default":
      return undefined; // the default chain: env, SSO, ini (credential_process), ..., container
    case "ini":
      return providers.fromIni();
    case "http":
      return providers.fromHttp();
    case "container":
      return providers.fromContainerMetadata();
    default:
      throw new Error(`unknown provider ${provider}`);
  }
}

function emit(record) {
  process.stdout.write(JSON.stringify(record) + "\n");
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const config = {};
  const credentials = credentialsFor(opts.provider);
  if (credentials !== undefined) config.credentials = credentials;
  const client = new STSClient(config);

  let usedKey = null;
  client.middlewareStack.add(
    (next) => async (args) => {
      const headers = args.request.headers || {};
      const auth = headers.authorization || headers.Authorization || "";
      const match = /Credential=([^/]+)\//.exec(auth);
      usedKey = match ? match[1] : null;
      return next(args);
    },
    { step: "deserialize", priority: "low", name: "rolecallCaptureAccessKey" },
  );

  let ok = false;
  for (let n = 1; opts.count === 0 || n <= opts.count; n += 1) {
    usedKey = null;
    try {
      const answer = await client.send(new GetCallerIdentityCommand({}));
      ok = true;
      emit({ ok, arn: answer.Arn, accessKeyId: usedKey });
    } catch (err) {
      ok = false;
      emit({ ok, error: `${err.name}: ${err.message}` });
    }
    if (opts.count === 0 || n < opts.count) {
      await new Promise((resolve) => setTimeout(resolve, opts.interval * 1000));
    }
  }
  return ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`caller_identity.js: ${err.stack || err}\n`);
    process.exit(2);
  },
);
