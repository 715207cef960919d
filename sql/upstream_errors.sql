--
-- When EnKash says no, or says nothing useful, the caller gets an error with
-- its own SQLSTATE (class NK, never XX000), EnKash's message, and the EnKash
-- code and HTTP status in the detail.
--
SELECT sandbox.reset();
\set VERBOSITY default

-- A business refusal (code 1 with HTTP 200): an unknown card account.
SELECT enkash_get_card_account('CANOSUCH');
SELECT * FROM sandbox.try($$SELECT enkash_get_card_account('CANOSUCH')$$);

-- A business refusal on a load: more money than the account holds.
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 5000000, 'BIG-1')$$);
SELECT * FROM sandbox.credits('BIG-1');

-- HTTP 500 from EnKash.
SELECT sandbox.fault('{"fail": {"status": 500, "count": 1}}');
SELECT enkash_get_card_account('CASANDBOX1');

-- HTTP 429 (rate limited) is reported as unavailable, too.
SELECT sandbox.fault('{"fail": {"status": 429, "count": 1, "retry_after": 5}}');
SELECT * FROM sandbox.try($$SELECT enkash_get_card_account('CASANDBOX1')$$);

-- An injected business error.
SELECT sandbox.fault('{"business_error": {"count": 1, "message": "Card account is suspended"}}');
SELECT enkash_get_card_account('CASANDBOX1');

-- A company id EnKash does not know: HTTP 412.
SELECT enkash_get_card_account('CASANDBOX1', company_id => 'CEKOTHER');

-- Answers that cannot be read.
SELECT sandbox.fault('{"response": {"mode": "malformed", "count": 1}}');
SELECT enkash_get_card_account('CASANDBOX1');
SELECT sandbox.fault('{"response": {"mode": "wrong_key", "count": 1}}');
SELECT enkash_get_card_account('CASANDBOX1');
SELECT sandbox.fault('{"response": {"mode": "no_code", "count": 1}}');
SELECT * FROM sandbox.try($$SELECT enkash_get_card_account('CASANDBOX1')$$);
SELECT sandbox.fault('{"response": {"mode": "bad_base64", "count": 1}}');
SELECT * FROM sandbox.try($$SELECT enkash_get_card_account('CASANDBOX1')$$);

-- The connection dropped after EnKash credited a load but before it answered:
-- the outcome is unknown to us, and the load is NOT sent again behind our back
-- (libcurl would re-send a request on a fresh connection if allowed to).
SELECT enkash_get_card_account('CASANDBOX1') IS NOT NULL AS connection_warm;
SELECT sandbox.api_requests('/balance') AS load_requests_before \gset
SELECT sandbox.fault('{"drop": {"count": 1, "after_apply": true}}');
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 100, 'DROP-1');
SELECT * FROM sandbox.credits('DROP-1');
SELECT sandbox.api_requests('/balance') - :load_requests_before AS load_requests;

-- The same for a look-up on a fresh connection.
SELECT sandbox.fault('{"drop": {"count": 1, "after_apply": false}}');
SELECT * FROM sandbox.try_detail($$SELECT enkash_get_card_account('CASANDBOX1')$$);

-- No answer within enkash.timeout_ms: unknown as well.
SELECT sandbox.fault('{"latency_ms": 3000}');
SET enkash.timeout_ms = 500;
SELECT * FROM sandbox.try_detail($$SELECT enkash_get_card_account('CASANDBOX1')$$);
RESET enkash.timeout_ms;
SELECT sandbox.fault('{"clear": true}');

-- Nothing listening: the request was never sent.
SET enkash.base_url = 'http://127.0.0.1:1/api/v0/partner/enKashCard';
SELECT enkash_get_card_account('CASANDBOX1');
RESET enkash.base_url;

-- After all that, the next call simply works.
SELECT enkash_get_card_account('CASANDBOX1')->>'cardAccountId' AS card_account;
