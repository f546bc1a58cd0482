// STS GetCallerIdentity with the AWS SDK for Go v2 and its default credential chain.
//
//	caller-identity-v2 -endpoint-url URL
//
// Prints one JSON line: {"ok": true, "arn", "accessKeyId", "sdk"} or {"ok": false, "error"}.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

func emit(record map[string]interface{}) int {
	_ = json.NewEncoder(os.Stdout).Encode(record)
	if record["ok"] == true {
		return 0
	}
	return 1
}

func main() {
	endpoint := flag.String("endpoint-url", "", "the STS endpoint")
	flag.Parse()
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		os.Exit(emit(map[string]interface{}{"ok": false, "error": err.Error()}))
	}
	client := sts.NewFromConfig(cfg, func(o *sts.Options) {
		o.EndpointResolver = sts.EndpointResolverFromURL(*endpoint)
	})
	out, err := client.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		os.Exit(emit(map[string]interface{}{"ok": false, "error": err.Error()}))
	}
	// the same cached credentials the call was signed with
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		os.Exit(emit(map[string]interface{}{"ok": false, "error": err.Error()}))
	}
	os.Exit(emit(map[string]interface{}{"ok": true, "arn": aws.ToString(out.Arn), "accessKeyId": creds.AccessKeyID, "sdk": aws.SDKVersion}))
}
