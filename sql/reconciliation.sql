--
-- Reconciliation, as the README shows it: what enkash meant to load
-- (enkash.money_movements) against what EnKash credited
-- (enkash_transactions), joined on the reference number.
--
SELECT sandbox.reset();
SELECT count(enkash_load_balance('CASANDBOX1', 'EKCSANDBOX2', 10 * n, 'RECON-' || n)) AS loads
FROM generate_series(1, 3) n;
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX2', 9000000, 'RECON-4')$$);

SELECT coalesce(m.reference_number, t.reference_number) AS reference,
       m.state, m.amount AS requested, t.amount AS credited,
       CASE WHEN m.state = 'succeeded' AND t.amount = m.amount THEN 'ok'
            WHEN t.transaction_id IS NULL AND m.state IN ('failed') THEN 'ok (declined)'
            ELSE 'CHECK' END AS verdict
FROM (SELECT * FROM enkash.money_movements WHERE card_account_id = 'CASANDBOX1'
      AND reference_number LIKE 'RECON-%') m
FULL JOIN (SELECT * FROM enkash_transactions('CASANDBOX1', card_transaction_type => 'CR')
           WHERE reference_number IS NOT NULL) t
       ON t.reference_number = m.reference_number
ORDER BY verdict DESC, reference;

--
-- An unknown load is reconciled with Get Transaction Details: it counts as
-- found only when EnKash returns the reference with the same amount and
-- card; it is sent again only on a positive "not there"; anything else
-- leaves it unknown.  Each load below is left unknown by a dropped
-- connection, after EnKash credited it (credited) or before.
--
SELECT sandbox.reset();
CREATE FUNCTION pg_temp.leave_unknown(ref text, credited boolean) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM sandbox.fault(jsonb_build_object('drop',
        jsonb_build_object('count', 1, 'after_apply', credited, 'path', '/balance')));
    RETURN (SELECT code FROM sandbox.try(format(
        'SELECT enkash_load_balance(%L, %L, 25, %L)', 'CASANDBOX1', 'EKCSANDBOX1', ref)));
END $$;
-- The retry, with EnKash answering the look-up as lookup says.
CREATE FUNCTION pg_temp.retry(ref text, lookup text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM sandbox.fault(jsonb_build_object('lookup',
        jsonb_build_object('count', 1, 'mode', lookup)));
    RETURN (SELECT code FROM sandbox.try(format(
        'SELECT enkash_load_balance(%L, %L, 25, %L)', 'CASANDBOX1', 'EKCSANDBOX1', ref)));
END $$;
CREATE TEMP TABLE recon_cases (ref text, credited boolean, lookup text, expect text);
INSERT INTO recon_cases VALUES
    ('RC-RECORDS',      true,  'records',      'found'),
    ('RC-CONTENT',      true,  'content',      'found'),
    ('RC-SINGLE',       true,  'single',       'found'),
    ('RC-PAGED',        true,  'paged',        'found'),
    ('RC-EMPTY',        false, 'empty',        'sent once'),
    ('RC-OTHERS',       false, 'others',       'sent once'),
    ('RC-PAGED-ABSENT', false, 'paged',        'sent once'),
    ('RC-UNREADABLE',   true,  'unreadable',   'unknown'),
    ('RC-DECLINE',      true,  'decline',      'unknown'),
    ('RC-NOT-FOUND',    false, 'not_found',    'unknown'),
    ('RC-AMOUNT',       true,  'wrong_amount', 'unknown'),
    ('RC-CARD',         true,  'wrong_card',   'unknown');
SELECT ref, pg_temp.leave_unknown(ref, credited) AS first_attempt
FROM recon_cases ORDER BY ref;
SELECT pg_sleep(1.2);
SELECT r.ref, r.lookup, r.expect, pg_temp.retry(r.ref, r.lookup) AS retry
FROM recon_cases r ORDER BY r.ref;
-- Never two credits, never none for a load recorded as done.
SELECT r.ref, r.expect, m.state, m.attempts, (sandbox.credits(r.ref)).count AS credits
FROM recon_cases r JOIN enkash.money_movements m ON m.reference_number = r.ref
ORDER BY r.ref;
-- What a finance person sees when EnKash's answer does not settle it
-- (asked again once the grace, counted from the last look-up, is over).
SELECT pg_sleep(1.2);
SELECT sandbox.fault('{"lookup": {"count": 1, "mode": "wrong_amount"}}');
SELECT * FROM sandbox.try_detail($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 25, 'RC-AMOUNT')$$);
SELECT sandbox.fault('{"lookup": {"count": 1, "mode": "decline"}}');
SELECT * FROM sandbox.try_detail($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 25, 'RC-DECLINE')$$);
-- The look-up carries what the docs require: company, account, card, reference.
SELECT b ?& array['companyId', 'cardAccountId', 'enKashCardId', 'pgReferenceNumber'] AS complete,
       b->>'enKashCardId' AS card, b->>'pgReferenceNumber' AS reference
FROM sandbox.wire_body('/transaction/all') b;

-- A code 1 answer means "no such transaction" only when configured
-- (enkash.lookup_not_found_codes): then the load is sent once.
ALTER SYSTEM SET enkash.lookup_not_found_codes = '1:Transaction not found';
SELECT pg_reload_conf();
SELECT pg_sleep(0.3);
SHOW enkash.lookup_not_found_codes;
SELECT pg_sleep(1.2);
SELECT pg_temp.retry('RC-NOT-FOUND', 'not_found') AS retry;
SELECT pg_temp.retry('RC-DECLINE', 'decline') AS other_decline;
SELECT state, attempts, (sandbox.credits('RC-NOT-FOUND')).count AS credits
FROM enkash.money_movements WHERE reference_number = 'RC-NOT-FOUND';
SELECT state, (sandbox.credits('RC-DECLINE')).count AS credits
FROM enkash.money_movements WHERE reference_number = 'RC-DECLINE';
ALTER SYSTEM RESET enkash.lookup_not_found_codes;
SELECT pg_reload_conf();
SELECT pg_sleep(0.3);
SELECT sandbox.fault('{"clear": true}');
