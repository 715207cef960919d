--
-- A wrong encryption secret is reported as such, in words, not as a crash or
-- a generic failure.
--
SELECT sandbox.reset();
\set VERBOSITY default
SELECT current_setting('enkash_test.work_dir') || '/wrong-secret.conf' AS f \gset
SET enkash.credentials_file = :'f';

-- EnKash cannot decrypt what we send: HTTP 422.
SELECT enkash_get_card_account('CASANDBOX1');
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, 'WS-1')$$);
SELECT * FROM sandbox.credits('WS-1');

RESET enkash.credentials_file;
SELECT enkash_get_card_account('CASANDBOX1')->>'cardAccountId' AS card_account;
