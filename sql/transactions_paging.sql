--
-- enkash_transactions() fetches every page itself: with a page size of 2,
-- seven transactions take four requests, and come back as seven rows that
-- filter, sum and join like a table.
--
SELECT sandbox.reset();
SELECT count(enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', n * 100, 'PAGE-' || n)) AS loads
FROM generate_series(1, 5) n;
SELECT sandbox.call('POST', '/__sandbox/spend',
                    '{"enKashCardId": "EKCSANDBOX1", "amount": 120.5, "merchantName": "Cafe Madras", "mcc": "5812"}') IS NOT NULL AS spent;
SELECT sandbox.call('POST', '/__sandbox/spend',
                    '{"enKashCardId": "EKCSANDBOX1", "amount": 80, "merchantName": "Metro Fuel", "mcc": "5541"}') IS NOT NULL AS spent;

SET enkash.page_size = 2;
SELECT sandbox.api_requests('/transaction/all') AS before \gset
SELECT count(*) AS rows, sum(amount) FILTER (WHERE cr_dr = 'CR') AS credited,
       sum(amount) FILTER (WHERE cr_dr = 'DR') AS spent
FROM enkash_transactions('CASANDBOX1');
SELECT sandbox.api_requests('/transaction/all') - :before AS requests;
RESET enkash.page_size;

-- The list shape EnKash documents, {recordsCount, data}, reads the same; a
-- full page that holds every record is the last one.
SELECT sandbox.fault('{"list_shape": "records"}');
SET enkash.page_size = 3;
SELECT sandbox.api_requests('/transaction/all') AS before \gset
SELECT count(*) AS rows, sum(amount) FILTER (WHERE cr_dr = 'CR') AS credited
FROM enkash_transactions('CASANDBOX1');
SELECT sandbox.api_requests('/transaction/all') - :before AS requests;
SET enkash.page_size = 7;
SELECT sandbox.api_requests('/transaction/all') AS before \gset
SELECT count(*) AS rows FROM enkash_transactions('CASANDBOX1');
SELECT sandbox.api_requests('/transaction/all') - :before AS requests;
RESET enkash.page_size;
SELECT sandbox.fault('{"list_shape": "content"}');

-- Filters are EnKash's: debits only, and a date window.
SELECT merchant_name, mcc, amount FROM enkash_transactions('CASANDBOX1', card_transaction_type => 'DR')
ORDER BY amount;
SELECT count(*) AS in_window FROM enkash_transactions('CASANDBOX1',
    txn_date_from => now() - interval '1 hour', txn_date_to => now() + interval '1 hour');
SELECT count(*) AS before_window FROM enkash_transactions('CASANDBOX1',
    txn_date_to => now() - interval '1 day');
SELECT reference_number, amount FROM enkash_transactions('CASANDBOX1', amount_from => 250, amount_to => 400)
ORDER BY amount;

-- Joined with a payroll table, as an analyst would reconcile.
CREATE TEMP TABLE payroll (reference text, due numeric);
INSERT INTO payroll VALUES ('PAGE-1', 100), ('PAGE-2', 200), ('PAGE-9', 900);
SELECT p.reference, p.due, t.amount AS credited
FROM payroll p LEFT JOIN enkash_transactions('CASANDBOX1') t ON t.reference_number = p.reference
ORDER BY p.reference;
