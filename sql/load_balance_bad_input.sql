--
-- Bad input is refused before anything is sent: each mistake a finance
-- analyst could make gets its own clear error, and EnKash sees nothing.
--
SELECT sandbox.reset();

SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', NULL, 'R1')$$);
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 0, 'R1')$$);
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', -5, 'R1')$$);
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 'NaN', 'R1')$$);
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 'Infinity', 'R1')$$);
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10.005, 'R1')$$);
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 100000000, 'R1')$$);
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('', 'EKCSANDBOX1', 10, 'R1')$$);
SELECT * FROM sandbox.try($$SELECT enkash_load_balance(NULL, 'EKCSANDBOX1', 10, 'R1')$$);
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', '', 10, 'R1')$$);
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, NULL)$$);
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, '')$$);
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKC SANDBOX1', 10, 'R1')$$);
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, 'R1', type => 'DEBIT')$$);
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, 'R1', created_by => ' ')$$);
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, 'R1', description => repeat('x', 1001))$$);
SELECT * FROM sandbox.try($$SELECT enkash_get_card_account(NULL)$$);

-- A rejection shows the analyst what to do.
\set VERBOSITY default
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10.005, 'R1');

-- Not one of the above reached EnKash, and nothing was credited.
SELECT sandbox.api_requests() AS api_requests;
SELECT * FROM sandbox.credits('R1');

-- Two decimals, or trailing zeros beyond them, are fine.
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10.500, 'R2');
SELECT * FROM sandbox.credits('R2');
