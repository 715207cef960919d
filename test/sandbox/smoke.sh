#!/bin/bash
#
# smoke.sh
#	End-to-end smoke test of enkash-sandbox.  Deliberately uses only curl,
#	the openssl command line and jq, never the sandbox's own crypto, so it
#	also proves the envelope interoperates with an independent AES.
#
#	usage: test/sandbox/smoke.sh
#	SANDBOX_BIN overrides the binary; SANDBOX_WRAP prefixes it, e.g.
#	SANDBOX_WRAP="valgrind --error-exitcode=9" to run the server under valgrind.
#
set -u

here=$(cd "$(dirname "$0")" && pwd)
bin=${SANDBOX_BIN:-$here/enkash-sandbox}
for tool in curl openssl jq; do
	command -v "$tool" >/dev/null || { echo "smoke: $tool is required" >&2; exit 2; }
done
[ -x "$bin" ] || { echo "smoke: $bin not built (make -C test/sandbox)" >&2; exit 2; }

tmp=$(mktemp -d)
${SANDBOX_WRAP:-} "$bin" --port 0 --port-file "$tmp/port" >"$tmp/stdout" 2>"$tmp/stderr" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT

for _ in $(seq 400); do
	[ -s "$tmp/port" ] && break
	sleep 0.05
done
[ -s "$tmp/port" ] || { echo "smoke: server did not start" >&2; cat "$tmp/stderr" >&2; exit 1; }
port=$(cat "$tmp/port")
base="http://127.0.0.1:$port"
api="$base/api/v0/partner/enKashCard"

passed=0
failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }
# check DESCRIPTION ACTUAL EXPECTED
check() { if [ "$2" == "$3" ]; then ok; else bad "$1: got '$2', want '$3'"; fi; }

# the key: first 16 bytes of SHA-256 of the client secret
key=$(printf %s 'sandbox-secret-1' | openssl dgst -sha256 | sed 's/.*= //' | cut -c1-32)
enc() { printf %s "$1" | openssl enc -aes-128-ecb -K "$key" -base64 -A; }
dec() { printf %s "$1" | openssl enc -d -aes-128-ecb -K "$key" -base64 -A 2>/dev/null; }

token=""
# call SUFFIX JSON: sets $status, $raw (HTTP body) and $plain (decrypted envelope)
call() {
	wrapped=$(jq -cn --arg r "$(enc "$2")" '{request: $r}')
	status=$(curl -s -o "$tmp/resp" -w '%{http_code}' \
		-H "authorization: Bearer $token" -H 'partnerId: CRSANDBOX1' \
		-H 'Content-Type: application/json' --data-binary "$wrapped" "$api$1")
	curl_rc=$?
	raw=$(cat "$tmp/resp")
	plain=""
	if jq -e 'has("request")' >/dev/null 2>&1 <<<"$raw"; then
		plain=$(dec "$(jq -r .request <<<"$raw")")
	fi
}
ctl() { curl -s "$base/__sandbox/$1"; }
ctl_post() { curl -s -X POST -H 'Content-Type: application/json' --data-binary "${2:-}" "$base/__sandbox/$1"; }

# --- the envelope against the openssl-made vectors, when they are around ---
vectors=${VECTORS:-/work/shared/vectors/envelope.json}
if [ -f "$vectors" ]; then
	if "$bin" --selftest-vectors "$vectors" >/dev/null; then ok; else bad "selftest vectors $vectors"; fi
fi

# --- startup and health ---
check "listening line" "$(cat "$tmp/stdout")" "enkash-sandbox listening on 127.0.0.1:$port"
check "health" "$(ctl health | jq -c .)" '{"ok":true}'

# --- token ---
basic=$(printf %s 'sandbox-client:sandbox-secret-1' | openssl base64 -A)
tok=$(curl -s -H "Authorization: Basic $basic" \
	--data-urlencode grant_type=password --data-urlencode username=9999999999 \
	--data-urlencode password=sandbox-password --data-urlencode clientId=CEKSANDBOX1 \
	"$base/oauth/token")
token=$(jq -r .access_token <<<"$tok")
check "token length" "${#token}" 32
check "token fields" "$(jq -c '[.token_type, .expires_in, .scope]' <<<"$tok")" '["bearer",86399,"read write trust"]'
refresh=$(jq -r .refresh_token <<<"$tok")
check "bad password 401" "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Basic $basic" \
	-d 'grant_type=password&username=9999999999&password=nope&clientId=CEKSANDBOX1' "$base/oauth/token")" 401
check "refresh grant" "$(curl -s -H "Authorization: Basic $basic" -d "grant_type=refresh_token&refresh_token=$refresh" \
	"$base/oauth/token" | jq -r '.access_token | length')" 32

# --- Get Card Account Details ---
call /cardAccount/get '{"companyId":"CEKSANDBOX1","cardAccountId":"CASANDBOX1"}'
check "account get status" "$status" 200
check "account get envelope" "$(jq -c '[.code, .payload.availableBalance, .payload.primaryEnKashCard.enKashCardId]' <<<"$plain")" '[0,1000000,"EKCSANDBOX1"]'
if grep -Eq '652150[0-9]{10}' <<<"$plain"; then bad "PAN leaked in account get"; else ok; fi

# --- Load Card Balance ---
call /balance '{"companyId":"CEKSANDBOX1","cardAccountId":"CASANDBOX1","enKashCardId":"EKCSANDBOX1","createdBy":"smoke","amount":10.5,"transactionType":"CR","description":"smoke","type":"ALLOCATE_FUND","transactionCode":"ALLOCATION","uniqueReferenceNumber":"SMOKE-1"}'
check "load status" "$status" 200
check "load envelope" "$(jq -c . <<<"$plain")" '{"code":0,"message":"Success","payload":"Funds allocated from Parent Account to Card by Admin successful"}'
check "ledger SMOKE-1" "$(ctl 'ledger?reference=SMOKE-1' | jq -c .)" '{"reference":"SMOKE-1","count":1,"amount":"10.50"}'
check "last-request body is what we sent" \
	"$(ctl 'last-request?path=/api/v0/partner/enKashCard/balance' | jq -r .body)" "$wrapped"

call /search '{"companyId":"CEKSANDBOX1","cardAccountId":"CASANDBOX1","enKashCardId":"EKCSANDBOX1"}'
check "search balance" "$(jq -c '[.payload.recordsCount, .payload.data[0].otbBalance, .payload.data[0].cardStatus.label, (.payload.data[0].maskedNumber | test("^652150XXXXXX[0-9]{4}$"))]' <<<"$plain")" '[1,10.5,"ACTIVE",true]'
call /transaction/all '{"companyId":"CEKSANDBOX1","cardAccountId":"CASANDBOX1","enKashCardId":"EKCSANDBOX1","pgReferenceNumber":"SMOKE-1"}'
check "transaction by reference" "$(jq -c '.payload.data[0] | [.principalAmount, .cardTransactionType, (.txnDate | test("^[A-Z][a-z]{2} [0-9]{1,2}, [0-9]{4} [0-9]{1,2}:[0-9]{2}:[0-9]{2} [AP]M$"))]' <<<"$plain")" '[10.5,"CR",true]'

call /balance '{"companyId":"CEKSANDBOX1","cardAccountId":"CASANDBOX1","enKashCardId":"EKCGIFT1","createdBy":"smoke","amount":1,"transactionType":"CR","type":"ALLOCATE_FUND","transactionCode":"ALLOCATION","uniqueReferenceNumber":"SMOKE-G"}'
check "business failure spelling" "$(jq -c '[.response_code, .response_message]' <<<"$plain")" '[1,"Card not found"]'

# --- auth and envelope errors ---
check "no token 401" "$(curl -s -o /dev/null -w '%{http_code}' -H 'partnerId: CRSANDBOX1' -d '{}' "$api/cardAccount/get")" 401
check "garbage 422" "$(curl -s -w ' %{http_code}' -H "authorization: Bearer $token" -H 'partnerId: CRSANDBOX1' \
	-H 'Content-Type: application/json' -d '{"request":"bm90IGNpcGhlcnRleHQ="}' "$api/cardAccount/get")" \
	'{"code":422,"message":"Invalid encrypted request"} 422'

# --- faults: drop after apply ---
ctl_post faults '{"drop":{"count":1,"after_apply":true}}' >/dev/null
call /balance '{"companyId":"CEKSANDBOX1","cardAccountId":"CASANDBOX1","enKashCardId":"EKCSANDBOX1","createdBy":"smoke","amount":20,"transactionType":"CR","type":"ALLOCATE_FUND","transactionCode":"ALLOCATION","uniqueReferenceNumber":"SMOKE-2"}'
check "drop: curl saw an empty reply" "$status/$curl_rc" 000/52
check "drop: ledger credited" "$(ctl 'ledger?reference=SMOKE-2' | jq -c '[.count, .amount]')" '[1,"20.00"]'

# --- faults: latency ---
ctl_post faults '{"latency_ms":400}' >/dev/null
t=$(curl -s -o /dev/null -w '%{time_total}' -H "authorization: Bearer $token" -H 'partnerId: CRSANDBOX1' -d '{}' "$api/cardAccount/get")
check "latency applied" "$(awk -v t="$t" 'BEGIN { print (t >= 0.39) ? "yes" : "no" }')" yes
t=$(curl -s -o /dev/null -w '%{time_total}' "$base/__sandbox/health")
check "control calls not delayed" "$(awk -v t="$t" 'BEGIN { print (t < 0.3) ? "yes" : "no" }')" yes

# --- faults: fail with Retry-After ---
ctl_post faults '{"clear":true,"fail":{"status":503,"count":1,"retry_after":7}}' >/dev/null
hdrs=$(curl -s -D - -o "$tmp/resp" -H "authorization: Bearer $token" -H 'partnerId: CRSANDBOX1' -d '{}' "$api/cardAccount/get")
check "fail status" "$(head -1 <<<"$hdrs" | awk '{print $2}')" 503
check "fail retry-after" "$(grep -i '^retry-after:' <<<"$hdrs" | tr -d '\r' | awk '{print $2}')" 7
check "fail body" "$(jq -c . "$tmp/resp")" '{"code":503,"message":"Injected failure"}'

# --- OTP and view: the PAN appears here only ---
call /otp '{"cardOtpAction":"TRANSACTION_OTP","cardAccountId":"CASANDBOX1","enKashCardId":"EKCSANDBOX1"}'
otp_id=$(jq -r .payload <<<"$plain")
otp=$(ctl "otp?otpRequestId=$otp_id" | jq -r .otp)
call /view "{\"companyId\":\"CEKSANDBOX1\",\"cardAccountId\":\"CASANDBOX1\",\"enKashCardId\":\"EKCSANDBOX1\",\"otpRequestId\":\"$otp_id\",\"otp\":\"$otp\"}"
check "view card" "$(jq -c '[(.payload.cardNumber | test("^652150[0-9]{10}$")), (.payload.cvv | test("^[0-9]{3}$")), .payload.cardHolderName]' <<<"$plain")" '[true,true,"Asha Rao"]'
call /view "{\"companyId\":\"CEKSANDBOX1\",\"cardAccountId\":\"CASANDBOX1\",\"enKashCardId\":\"EKCSANDBOX1\",\"otpRequestId\":\"$otp_id\",\"otp\":\"$otp\"}"
check "otp single use" "$(jq -r .response_message <<<"$plain")" "Invalid OTP"

# --- counters and reset ---
req=$(ctl requests)
check "request counters" "$(jq -c '[.paths["/oauth/token"], .grants.password, .grants.refresh_token, (.connections > 5)]' <<<"$req")" '[3,1,1,true]'
ctl_post reset >/dev/null
check "reset clears ledger" "$(ctl ledger | jq -c .)" '{"credits":[],"total_count":0,"total_amount":"0.00"}'
call /search '{"companyId":"CEKSANDBOX1","cardAccountId":"CASANDBOX1"}'
check "token survives reset" "$(jq -c '[.payload.data[0].enKashCardId, .payload.data[0].otbBalance]' <<<"$plain")" '["EKCSANDBOX1",0]'

# --- clean shutdown ---
kill -TERM "$pid"
wait "$pid"
check "exit status on SIGTERM" "$?" 0
trap 'rm -rf "$tmp"' EXIT

echo "smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
