// STS GetCallerIdentity with the AWS SDK for Go v1 and its default credential chain.
//
//	caller-identity-v1 -endpoint-url URL
//
// Prints one JSON line: {"ok": true, "arn", "accessKeyId", "sdk"} or {"ok": false, "error"}.
// The session honours AWS_SDK_LOAD_CONFIG (shared config file, credential_process) as an
// application's would.
package main

import (
	"encoding/json"
	"flag"
	"os"
	"regexp"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/sts"
)

var credential = regexp.MustCompile(`Credential=([^/]+)/`)

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
	sess, err := session.NewSession(&aws.Config{Endpoint: aws.String(*endpoint)})
	if err != nil {
		os.Exit(emit(map[string]interface{}{"ok": false, "error": err.Error()}))
	}
	req, out := sts.New(sess).GetCallerIdentityRequest(&sts.GetCallerIdentityInput{})
	if err := req.Send(); err != nil {
		os.Exit(emit(map[string]interface{}{"ok": false, "error": err.Error()}))
	}
	key := ""
	if m := credential.FindStringSubmatch(req.HTTPRequest.Header.Get("Authorization")); m != nil {
		key = m[1]
	}
	os.Exit(emit(map[string]interface{}{"ok": true, "arn": aws.StringValue(out.Arn), "accessKeyId": key, "sdk": aws.SDKVersion}))
}
