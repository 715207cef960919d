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

SELECT coalesce(max(id), 0) AS audit_start FROM enkash.audit_log \gset
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

-- No setting holds a token the sandbox issued.
SELECT count(*) AS settings_holding_a_token
FROM pg_settings s
WHERE s.setting IN (SELECT jsonb_array_elements_text(sandbox.call('GET', '/__sandbox/tokens')->'tokens'));

-- Every token exchange since the tokens expired is in the audit log, the
-- refused one too, with no token in it.  (Token calls do not wait for their
-- rows: wait for them.)
CREATE FUNCTION pg_temp.token_rows_after(after bigint, expected int) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..300 LOOP
        EXIT WHEN (SELECT count(*) FROM enkash.audit_log
                   WHERE endpoint = 'token' AND id > after) >= expected;
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
SELECT pg_temp.token_rows_after(:audit_start, 3);
SELECT count(*) FILTER (WHERE outcome = 'failed' AND http_status = 401) AS refused_refresh,
       count(*) FILTER (WHERE outcome = 'ok' AND http_status = 200) >= 2 AS grants_audited
FROM enkash.audit_log WHERE endpoint = 'token' AND id > :audit_start;
SELECT count(*) AS token_rows_holding_a_token
FROM enkash.audit_log a, jsonb_array_elements_text(sandbox.call('GET', '/__sandbox/tokens')->'tokens') t
WHERE a.endpoint = 'token' AND (a.request::text LIKE '%' || t || '%' OR a.response::text LIKE '%' || t || '%');

-- The password grant's clientId is the server's company, not a session's own
-- enkash.company_id.
SET enkash.company_id = 'CEKSOMEONEELSE';
SELECT sandbox.call('POST', '/__sandbox/expire-tokens', '{"refresh": true}');
SELECT enkash_get_card_account('CASANDBOX1', company_id => 'CEKSANDBOX1')->>'cardAccountId' AS card_account;
SELECT substring(sandbox.call('GET', '/__sandbox/last-request?path=/oauth/token')->>'body'
                 FROM 'clientId=([^&]*)') AS grant_client_id;
RESET enkash.company_id;
