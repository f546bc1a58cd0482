# STS GetCallerIdentity with the AWS SDK for Ruby (aws-sdk-core, which carries the STS client)
# and its default credential chain.
#
#   ruby caller_identity.rb --endpoint-url URL
#
# Prints one JSON line: {"ok": true, "arn", "accessKeyId", "sdk"} or {"ok": false, "error"}.
require "json"
require "aws-sdk-core"

endpoint = ARGV[ARGV.index("--endpoint-url") + 1]
begin
  client = Aws::STS::Client.new(endpoint: endpoint, region: ENV.fetch("AWS_REGION", "us-east-1"))
  answer = client.get_caller_identity
  key = client.config.credentials.credentials.access_key_id
  puts JSON.generate(ok: true, arn: answer.arn, accessKeyId: key, sdk: Aws::CORE_GEM_VERSION)
rescue StandardError => e
  puts JSON.generate(ok: false, error: "#{e.class}: #{e.message}")
  exit 1
end
