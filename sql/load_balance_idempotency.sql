--
-- Exactly once: a load's unique_reference_number is its idempotency key.
-- The key is recorded before the request leaves and its outcome before the
-- function returns, by the enkash worker, so the records survive the
-- caller's rollback.  Every case is checked against EnKash's own ledger.
--
SELECT sandbox.reset();
\set VERBOSITY default

-- Replay after success: the stored outcome, no second request.
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 100, 'IDEM-1');
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 100, 'IDEM-1');
SELECT * FROM sandbox.credits('IDEM-1');
SELECT sandbox.api_requests('/balance') AS load_requests;

-- Same key, different amount: refused, nothing sent.
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 101, 'IDEM-1');
SELECT sandbox.api_requests('/balance') AS load_requests;

-- Replay after EnKash declined: the same error again, no second request.
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 5000000, 'IDEM-2');
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 5000000, 'IDEM-2');
SELECT sandbox.api_requests('/balance') AS load_requests;

-- A failure before anything was sent frees the key: the retry is sent.
SET enkash.base_url = 'http://127.0.0.1:1/api/v0/partner/enKashCard';
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 50, 'IDEM-3')$$);
RESET enkash.base_url;
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 50, 'IDEM-3');
SELECT * FROM sandbox.credits('IDEM-3');

-- The caller rolls back: the key and the audit row stay, and the retry gets
-- the recorded outcome without a second credit.
BEGIN;
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 75, 'IDEM-4');
ROLLBACK;
SELECT state, amount FROM enkash.money_movements WHERE reference_number = 'IDEM-4';
-- Its audit rows: the request as it left, then the answer naming it.  The
-- log is append-only: not even its owner changes a row.
SELECT outcome, http_status, request IS NOT NULL AS has_request,
       sent_id = lag(id) OVER (ORDER BY id) AS answers_the_sent_row
FROM enkash.audit_log WHERE idempotency_key = 'IDEM-4' ORDER BY id;
SELECT * FROM sandbox.try($$UPDATE enkash.audit_log SET outcome = 'ok' WHERE idempotency_key = 'IDEM-4'$$);
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 75, 'IDEM-4');
SELECT * FROM sandbox.credits('IDEM-4');

-- The connection drops after EnKash credited the load: unknown.  The retry
-- (after enkash.unknown_grace_ms) asks EnKash first, finds the credit, and
-- does not send again.
SELECT sandbox.fault('{"drop": {"count": 1, "after_apply": true}}');
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 60, 'IDEM-5')$$);
SELECT state FROM enkash.money_movements WHERE reference_number = 'IDEM-5';
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 60, 'IDEM-5')$$);
SELECT pg_sleep(1.2);
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 60, 'IDEM-5') ->> 'pgReferenceNumber' AS found_at_enkash;
SELECT state FROM enkash.money_movements WHERE reference_number = 'IDEM-5';
SELECT * FROM sandbox.credits('IDEM-5');

-- The connection drops before EnKash acted: unknown; the retry asks EnKash,
-- finds nothing, and sends it once.
SELECT sandbox.fault('{"drop": {"count": 1, "after_apply": false}}');
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 70, 'IDEM-6')$$);
SELECT * FROM sandbox.credits('IDEM-6');
SELECT pg_sleep(1.2);
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 70, 'IDEM-6');
SELECT * FROM sandbox.credits('IDEM-6');
SELECT state, attempts FROM enkash.money_movements WHERE reference_number = 'IDEM-6';

-- statement_timeout while EnKash is slow: unknown; whether or not the slow
-- request lands, the retry ends with exactly one credit.
SELECT sandbox.fault('{"latency_ms": 2000}');
SET statement_timeout = '500ms';
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 80, 'IDEM-7');
RESET statement_timeout;
SELECT sandbox.fault('{"clear": true}');
SELECT state FROM enkash.money_movements WHERE reference_number = 'IDEM-7';
SELECT pg_sleep(2);
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 80, 'IDEM-7') IS NOT NULL AS resolved;
SELECT * FROM sandbox.credits('IDEM-7');

-- Two sessions, one key, at the same moment: the second is refused while
-- the first is in flight, and EnKash sees one request.
CREATE EXTENSION IF NOT EXISTS dblink;
SELECT dblink_connect('other', format('dbname=%s host=%s port=%s', current_database(),
                      split_part(current_setting('unix_socket_directories'), ',', 1),
                      current_setting('port')));
SELECT sandbox.fault('{"latency_ms": 3000}');
SELECT dblink_send_query('other', $$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 90, 'IDEM-8')$$);
DO $$
BEGIN
    -- until the other session's claim has committed (at most 30 s)
    FOR i IN 1..300 LOOP
        EXIT WHEN EXISTS (SELECT FROM enkash.idempotency_keys
                          WHERE key = 'IDEM-8' AND state = 'in_flight');
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 90, 'IDEM-8')$$);
SELECT * FROM dblink_get_result('other') AS r(result jsonb);
SELECT dblink_disconnect('other');
SELECT sandbox.fault('{"clear": true}');
SELECT * FROM sandbox.credits('IDEM-8');

-- enkash.stats counts an exchange once: a load's "sent" row is not a call.
SELECT coalesce(sum(calls), 0) AS load_calls_before FROM enkash.stats WHERE endpoint = 'load_balance' \gset
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 5, 'IDEM-9') IS NOT NULL AS loaded;
SELECT sum(calls) - :load_calls_before AS new_load_calls FROM enkash.stats WHERE endpoint = 'load_balance';

-- In the end: one credit per reference, and the table agrees with EnKash.
SELECT reference, count, amount FROM jsonb_to_recordset(sandbox.call('GET', '/__sandbox/ledger')->'credits')
    AS c(reference text, count int, amount numeric) ORDER BY reference;
SELECT reference_number, state, amount FROM enkash.money_movements
WHERE reference_number LIKE 'IDEM-%' ORDER BY reference_number;
