--
-- A call in flight honours statement_timeout and cancellation: against an
-- EnKash that takes 10 seconds, a 1 second timeout ends the call in about a
-- second, and the session is usable right after.
--
SELECT sandbox.reset();
SELECT enkash_get_card_account('CASANDBOX1') IS NOT NULL AS connected;
SELECT sandbox.fault('{"latency_ms": 10000}');

SELECT clock_timestamp() AS started \gset
SET statement_timeout = '1s';
SELECT enkash_get_card_account('CASANDBOX1');
RESET statement_timeout;
SELECT clock_timestamp() - :'started' < interval '4 seconds' AS stopped_in_time;

SELECT sandbox.fault('{"clear": true}');
SELECT enkash_get_card_account('CASANDBOX1')->>'cardAccountId' AS card_account;
