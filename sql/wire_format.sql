--
-- What goes on the wire is exactly what was asked for: the body, decrypted
-- with the openssl command line (not our code), holds the fields sent, with
-- the amount as a JSON number of at most two decimals.
--
SELECT sandbox.reset();

SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10.50, 'WIRE-1',
                           description => 'quote " backslash \ rupee ₹ {"amount":1e9}',
                           remarks => 'line1
line2');
SELECT jsonb_pretty(b - 'createdBy') AS decrypted_body,
       b->>'createdBy' = current_user AS created_by_is_current_user
FROM sandbox.wire_body('/balance') b;
SELECT jsonb_typeof(b->'amount') AS amount_type, b->>'amount' AS amount
FROM sandbox.wire_body('/balance') b;

SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, 'WIRE-2');
SELECT b->'amount' AS amount FROM sandbox.wire_body('/balance') b;
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 1234.56, 'WIRE-3');
SELECT b->'amount' AS amount FROM sandbox.wire_body('/balance') b;

-- The raw ciphertext is the {"request": "<base64>"} wrapper and nothing else.
SELECT jsonb_object_keys((sandbox.call('GET', '/__sandbox/last-request?path=/api/v0/partner/enKashCard/balance')->>'body')::jsonb);

SELECT reference, count, amount FROM jsonb_to_recordset(sandbox.call('GET', '/__sandbox/ledger')->'credits')
    AS c(reference text, count int, amount numeric) ORDER BY reference;
