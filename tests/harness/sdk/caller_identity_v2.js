#!/usr/bin/env node
// STS GetCallerIdentity with the AWS SDK for JavaScript v2 and its default credential chain.
//
//   node caller_identity_v2.js --modules DIR [--endpoint-url URL] [--count N] [--interval S]
//
// The v2 twin of caller_identity.js, same output: one JSON line per call,
// {"ok": true, "arn": ..., "accessKeyId": ..., "sdk": AWS.VERSION} or {"ok": false, "error": ...}.
// The SDK comes from DIR/node_modules (one pinned release per directory). One client for the
// whole run, so a rotation is only seen through the SDK's own refresh.
"use strict";

const { loader, loop, main } = require("./caller_loop");

main("caller_identity_v2.js", async (opts) => {
  if (!opts.modules) throw new Error("--modules DIR is required");
  const AWS = loader(opts)("aws-sdk");
  const config = { maxRetries: 1 };
  if (opts.endpointUrl) config.endpoint = opts.endpointUrl;
  const sts = new AWS.STS(config);

  return loop(opts, async () => {
    let usedKey = null;
    const request = sts.getCallerIdentity();
    request.on("send", (response) => {
      const auth = response.request.httpRequest.headers.Authorization || "";
      const match = /Credential=([^/]+)\//.exec(auth);
      usedKey = match ? match[1] : null;
    });
    const answer = await request.promise();
    return { arn: answer.Arn, accessKeyId: usedKey, sdk: AWS.VERSION };
  });
});
