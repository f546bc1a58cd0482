#!/usr/bin/env node
// STS GetCallerIdentity with the AWS SDK for JavaScript v3, as an application would call it.
//
//   node caller_identity.js [--provider default|ini|http|container] [--count N] [--interval S]
//                           [--endpoint-url URL] [--modules DIR]
//
// Prints one JSON line per call: {"ok": true, "arn": ..., "accessKeyId": ..., "sdk": version}
// or {"ok": false, "error": ...}. accessKeyId is read from the SigV4 Authorization header of
// the request that was actually sent, so it shows which credentials the SDK used. --modules
// takes the SDK from DIR/node_modules instead of this folder's (one pinned release per
// directory); --endpoint-url is given to the client (releases before late 2023 ignore
// AWS_ENDPOINT_URL_STS). One client is kept for the whole run, so a rotation is only picked
// up through the SDK's own refresh.
"use strict";

const { loader, loop, main } = require("./caller_loop");

function credentialsFor(provider, load) {
  switch (provider) {
    case "default":
      return undefined; // the default chain: env, SSO, ini (credential_process), ..., container
    case "ini":
      return load("@aws-sdk/credential-providers").fromIni();
    case "http":
      return load("@aws-sdk/credential-providers").fromHttp();
    case "container":
      return load("@aws-sdk/credential-providers").fromContainerMetadata();
    default:
      throw new Error(`unknown provider ${provider}`);
  }
}

main("caller_identity.js", async (opts) => {
  const load = loader(opts);
  const { STSClient, GetCallerIdentityCommand } = load("@aws-sdk/client-sts");
  const sdk = load("@aws-sdk/client-sts/package.json").version;
  const config = {};
  if (opts.endpointUrl) config.endpoint = opts.endpointUrl;
  const credentials = credentialsFor(opts.provider, load);
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

  return loop(opts, async () => {
    usedKey = null;
    const answer = await client.send(new GetCallerIdentityCommand({}));
    return { arn: answer.Arn, accessKeyId: usedKey, sdk };
  });
});
