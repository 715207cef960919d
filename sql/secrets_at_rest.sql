--
-- After the whole suite: no card secret, password, client secret, OTP or
-- token is anywhere in the database (every table, the audit log and the
-- idempotency keys included), in pg_stat_activity or in the server log.
--
-- Look for them everywhere: every table and the server log.  The card
-- number is fetched again inside the query, so it never leaves the server;
-- so are the OTP, the partner's password and secret, and every token the
-- sandbox issued.
WITH o AS (SELECT enkash_generate_card_otp('CASANDBOX1', 'EKCSANDBOX2') #>> '{}' AS id),
     p AS (SELECT o.id, sandbox.otp(o.id) AS otp FROM o),
     d AS (SELECT p.otp, enkash_view_card_details('CASANDBOX1', 'EKCSANDBOX2', p.id, p.otp) AS v FROM p),
     secrets AS (
        SELECT 'card number' AS secret, v->>'cardNumber' AS needle FROM d
        UNION ALL SELECT 'CVV', '"' || (v->>'cvv') || '"' FROM d
        UNION ALL SELECT 'expiry', v->>'expiry' FROM d
        UNION ALL SELECT 'OTP', '"' || otp || '"' FROM d
        UNION ALL SELECT 'PIN block', '04A1B2C3D4E5F6A7'
        UNION ALL SELECT 'password', 'sandbox-password'
        UNION ALL SELECT 'client secret', 'sandbox-secret-1'
        UNION ALL SELECT 'token', jsonb_array_elements_text(sandbox.call('GET', '/__sandbox/tokens')->'tokens'))
SELECT secret, place FROM secrets, LATERAL sandbox.places_holding(needle) place;
SELECT count(*) > 0 AS tokens_were_issued FROM jsonb_array_elements(sandbox.call('GET', '/__sandbox/tokens')->'tokens');
