--
-- A wrong encryption secret is reported as such, in words, not as a crash or
-- a generic failure.  Wrong partner credentials are tried once: EnKash
-- locks the account after three refusals in a row.
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

-- A wrong password: EnKash refuses it once (NK002), and it is not tried again
-- (NK008) until the file changes or an administrator resets the refusal.
SELECT current_setting('enkash_test.work_dir') || '/wrong-password.conf' AS f \gset
SELECT sandbox.call('POST', '/__sandbox/expire-tokens', '{"refresh": true}');
SELECT (sandbox.call('GET', '/__sandbox/requests')->'auth'->>'failed_password')::int AS failed_before \gset
SET enkash.credentials_file = :'f';
SELECT * FROM sandbox.try($$SELECT enkash_get_card_account('CASANDBOX1')$$);
SELECT * FROM sandbox.try($$SELECT enkash_get_card_account('CASANDBOX1')$$);
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, 'WS-2')$$);
SELECT (sandbox.call('GET', '/__sandbox/requests')->'auth'->>'failed_password')::int - :failed_before AS refused_grants;
SELECT enkash_reset_credentials() AS refusal_forgotten;
SELECT * FROM sandbox.try($$SELECT enkash_get_card_account('CASANDBOX1')$$);
SELECT (sandbox.call('GET', '/__sandbox/requests')->'auth'->>'failed_password')::int - :failed_before AS refused_grants;
-- The right file again: no reset needed.
RESET enkash.credentials_file;
SELECT enkash_get_card_account('CASANDBOX1')->>'cardAccountId' AS card_account;
SELECT sandbox.call('GET', '/__sandbox/requests')->'auth'->'account_locked' AS account_locked;
SELECT enkash_reset_credentials() AS refusal_forgotten;
