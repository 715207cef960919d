--
-- The outbox: a payroll table's trigger queues a load per row in the same
-- transaction; the enkash senders send them after COMMIT, exactly once.
--
SELECT sandbox.reset();

CREATE TABLE payroll (
    run_id text,
    employee_id text,
    card_account_id text,
    enkash_card_id text,
    allowance numeric(12, 2),
    PRIMARY KEY (run_id, employee_id));
CREATE TRIGGER load_cards AFTER INSERT ON payroll FOR EACH ROW
    EXECUTE FUNCTION enkash_load_balance_trigger('card_account_id', 'enkash_card_id', 'allowance',
                                                 'run_id', 'employee_id');

-- Rolled back: no queued request, nothing sent.
BEGIN;
INSERT INTO payroll VALUES ('2026-11', 'E1', 'CASANDBOX1', 'EKCSANDBOX1', 1000);
SELECT count(*) AS queued_inside_the_transaction FROM enkash.requests;
ROLLBACK;
SELECT pg_sleep(1.5);
SELECT count(*) AS queued FROM enkash.requests;
SELECT sandbox.api_requests('/balance') AS load_requests;

-- Committed: sent after COMMIT, one credit per row.
INSERT INTO payroll VALUES
    ('2026-11', 'E1', 'CASANDBOX1', 'EKCSANDBOX1', 1000),
    ('2026-11', 'E2', 'CASANDBOX1', 'EKCSANDBOX2', 1500.50);
SELECT r.idempotency_key, w->>'state' AS state
FROM enkash.requests r, LATERAL enkash_wait(r.id, '20 seconds') w ORDER BY r.id;
SELECT * FROM sandbox.credits('6:public/7:payroll/7:2026-11/2:E1');
SELECT * FROM sandbox.credits('6:public/7:payroll/7:2026-11/2:E2');

-- The same rows inserted again: queued again, but not loaded again.
DELETE FROM payroll;
INSERT INTO payroll VALUES ('2026-11', 'E1', 'CASANDBOX1', 'EKCSANDBOX1', 1000);
SELECT w->>'state' AS state, w->'response' AS response
FROM (SELECT max(id) AS id FROM enkash.requests) r, LATERAL enkash_wait(r.id, '20 seconds') w;
SELECT * FROM sandbox.credits('6:public/7:payroll/7:2026-11/2:E1');

-- Bad input is refused when queued, in the caller's transaction.
INSERT INTO payroll VALUES ('2026-11', 'E3', 'CASANDBOX1', 'EKCSANDBOX1', 0);
SELECT * FROM sandbox.try($$SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 10.001, 'Q-BAD')$$);
SELECT * FROM sandbox.try($$SELECT enkash_enqueue('view_card_details', '{}')$$);
SELECT * FROM sandbox.try($$SELECT enkash_enqueue('load_balance', '{"amount": 1}')$$);
SELECT * FROM sandbox.try($$SELECT enkash_enqueue('load_balance',
    jsonb_build_object('uniqueReferenceNumber', repeat('K', 65), 'amount', 1))$$);

-- A queued body is stored until it is sent: one with an OTP, an MFA code or
-- a PIN block is refused, and nothing is queued.
SELECT * FROM sandbox.try_detail($$SELECT enkash_enqueue('block_card',
    '{"companyId": "CEKSANDBOX1", "cardAccountId": "CASANDBOX1", "enKashCardId": "EKCSANDBOX1",
      "blockCode": "L", "createdBy": "ops", "otpRequired": true, "otpRequestId": "R1", "otp": "123456"}')$$);
SELECT * FROM sandbox.try($$SELECT enkash_enqueue('request_card_replacement',
    '{"enKashCardId": "EKCSANDBOX1", "otpRequired": true, "mfaCode": "1234"}', 'Q-REPLACE')$$);
SELECT * FROM sandbox.try($$SELECT enkash_enqueue('get_card', '{"pinBlock": "1234ABCD"}')$$);
SELECT count(*) AS queued_with_a_secret FROM enkash.requests
WHERE body ?| ARRAY['otp', 'mfaCode', 'pinBlock'];

-- EnKash failing: retried with backoff (5xx: checked with EnKash first),
-- until it works.
SELECT sandbox.fault('{"fail": {"status": 503, "count": 2, "path": "/balance"}}');
SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 42, 'Q-RETRY') AS id \gset
SELECT w->>'state' AS state, (w->>'attempts')::int > 1 AS retried FROM enkash_wait(:id, '30 seconds') w;
SELECT jsonb_array_length(errors) AS errors_recorded, errors->0->>'sqlstate' AS first_error
FROM enkash.requests WHERE id = :id;
SELECT * FROM sandbox.credits('Q-RETRY');

-- Rate limited with Retry-After: 2 seconds: the retry waits that long.
SELECT sandbox.fault('{"fail": {"status": 429, "count": 1, "retry_after": 2, "path": "/balance"}}');
SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 44, 'Q-429') AS id \gset
SELECT w->>'state' AS state FROM enkash_wait(:id, '30 seconds') w;
SELECT finished_at - (errors->0->>'at')::timestamptz >= interval '1.9 seconds' AS waited_as_asked,
       errors->0->>'sqlstate' AS first_error
FROM enkash.requests WHERE id = :id;

-- HTTP 409 ("duplicate transaction") says an earlier request may have gone
-- through: the row waits as unknown and its reference is looked up at EnKash
-- before it is sent again; credited once.
SELECT sandbox.fault('{"fail": {"status": 409, "count": 1, "path": "/balance"}}');
SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 45, 'Q-409') AS id \gset
SELECT w->>'state' AS state, w->>'attempts' AS attempts FROM enkash_wait(:id, '30 seconds') w;
SELECT errors->0->>'sqlstate' AS first_error FROM enkash.requests WHERE id = :id;
SELECT endpoint, outcome, http_status FROM enkash.audit_log
WHERE id >= (SELECT min(id) FROM enkash.audit_log WHERE idempotency_key = 'Q-409')
  AND id <= (SELECT max(id) FROM enkash.audit_log WHERE idempotency_key = 'Q-409')
ORDER BY id;
SELECT * FROM sandbox.credits('Q-409');

-- Declined: final at once, not retried.
SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 5000000, 'Q-DECLINED') AS id \gset
SELECT w->>'state' AS state, w->>'attempts' AS attempts, w->>'last_error' AS error
FROM enkash_wait(:id, '20 seconds') w;

-- Hopeless: dead after enkash.max_attempts (3 here), with its history;
-- enkash_retry re-arms it.
SELECT sandbox.fault('{"fail": {"status": 401, "count": 100}}');
SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 43, 'Q-DEAD') AS id \gset
SELECT w->>'state' AS state, w->>'attempts' AS attempts FROM enkash_wait(:id, '30 seconds') w;
SELECT jsonb_array_length(errors) AS errors_recorded FROM enkash.requests WHERE id = :id;
SELECT sandbox.fault('{"clear": true}');
SELECT enkash_retry(:id);
SELECT w->>'state' AS state FROM enkash_wait(:id, '20 seconds') w;
SELECT * FROM sandbox.credits('Q-DEAD');

-- A load made from SQL, then queued under the same reference: the same
-- request (bodies compare as JSON, not as text), so the queued row gets the
-- recorded outcome and nothing is sent; with another amount it is refused.
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 7, 'Q-SYNC-THEN-QUEUED') IS NOT NULL AS loaded;
SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 7, 'Q-SYNC-THEN-QUEUED') AS id \gset
SELECT w->>'state' AS state, w->>'last_sqlstate' AS sqlstate FROM enkash_wait(:id, '20 seconds') w;
SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 8, 'Q-SYNC-THEN-QUEUED') AS id \gset
SELECT w->>'state' AS state, w->>'last_sqlstate' AS sqlstate FROM enkash_wait(:id, '20 seconds') w;
SELECT * FROM sandbox.credits('Q-SYNC-THEN-QUEUED');

SELECT state, requests FROM enkash.queue ORDER BY state;

-- pg_cron's job: sync the account's transactions into enkash.transactions;
-- a second run adds nothing new.
SELECT enkash_sync_transactions('CASANDBOX1') > 0 AS synced;
SELECT enkash_sync_transactions('CASANDBOX1') = (SELECT count(*) FROM enkash.transactions) AS rerun_upserts_same_rows;
SELECT reference_number, amount FROM enkash.transactions
WHERE reference_number LIKE '6:public/7:payroll/%' OR reference_number LIKE 'Q-%' ORDER BY reference_number;
