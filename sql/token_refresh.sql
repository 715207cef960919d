--
-- The OAuth token is shared and reused: calls do not fetch a token each time,
-- and when EnKash stops honouring it mid-session, the next call fetches one
-- new token and succeeds.
--
SELECT sandbox.reset();
SELECT enkash_get_card_account('CASANDBOX1') IS NOT NULL AS warmed_up;

SELECT sandbox.token_requests() AS token_requests_before \gset
SELECT count(enkash_get_card_account('CASANDBOX1')) AS calls FROM generate_series(1, 5);
SELECT sandbox.token_requests() - :token_requests_before AS new_token_requests;

-- EnKash expires every token; the next call still succeeds ...
SELECT sandbox.call('POST', '/__sandbox/expire-tokens', '{}');
SELECT enkash_get_card_account('CASANDBOX1')->>'cardAccountId' AS card_account;
-- ... with exactly one new token call, using the refresh grant.
SELECT sandbox.token_requests() - :token_requests_before AS new_token_requests;
SELECT (sandbox.call('GET', '/__sandbox/requests')->'grants'->>'refresh_token')::int >= 1 AS refresh_grant_used;

-- When the refresh token is refused too, the password grant takes over
-- (two more token calls: the refused refresh, then the password grant).
SELECT sandbox.call('POST', '/__sandbox/expire-tokens', '{"refresh": true}');
SELECT enkash_get_card_account('CASANDBOX1')->>'cardAccountId' AS card_account;
SELECT sandbox.token_requests() - :token_requests_before AS new_token_requests;

-- The token is nowhere to be seen from SQL.
SELECT count(*) AS settings_mentioning_tokens
FROM pg_settings WHERE name LIKE 'enkash.%' AND (name LIKE '%token%' AND name <> 'enkash.token_url');
