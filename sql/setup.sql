--
-- The extension installs with one statement; the test helpers below talk to
-- the sandbox's control API (its ledger of credits, request counts, faults)
-- with curl, the way an auditor would check EnKash's side independently.
--
CREATE EXTENSION enkash;
SELECT extname, extversion FROM pg_extension WHERE extname = 'enkash';

CREATE SCHEMA sandbox;

-- Runs a shell command on the server and returns its output.
CREATE FUNCTION sandbox.sh(cmd text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    result text;
BEGIN
    IF to_regclass('pg_temp.sh_output') IS NULL THEN
        CREATE TEMP TABLE sh_output (n serial, line text);
    END IF;
    TRUNCATE sh_output;
    EXECUTE format($c$COPY sh_output (line) FROM PROGRAM %L
                      WITH (FORMAT csv, DELIMITER E'\x01', QUOTE E'\x02')$c$, cmd);
    SELECT string_agg(line, E'\n' ORDER BY n) INTO result FROM sh_output;
    RETURN result;
END $$;

CREATE FUNCTION sandbox.quote(s text) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT '''' || replace(s, '''', '''\''''') || '''' $$;

CREATE FUNCTION sandbox.call(method text, path text, body jsonb DEFAULT NULL)
RETURNS jsonb LANGUAGE sql AS $$
    SELECT sandbox.sh(format('curl -sS --max-time 60 -X %s %s %s',
        method,
        CASE WHEN body IS NULL THEN '' ELSE '-H content-type:application/json --data-binary ' || sandbox.quote(body::text) END,
        sandbox.quote(current_setting('enkash_test.sandbox_url') || path)))::jsonb
$$;

CREATE FUNCTION sandbox.reset() RETURNS void LANGUAGE sql
    AS $$ SELECT sandbox.call('POST', '/__sandbox/reset', '{}'); SELECT $$;

CREATE FUNCTION sandbox.fault(spec jsonb) RETURNS void LANGUAGE sql
    AS $$ SELECT sandbox.call('POST', '/__sandbox/faults', spec); SELECT $$;

-- Credits EnKash made for one reference number: count and total.
CREATE FUNCTION sandbox.credits(reference text, OUT count int, OUT amount numeric)
LANGUAGE sql AS $$
    SELECT (r->>'count')::int, (r->>'amount')::numeric
    FROM sandbox.call('GET', '/__sandbox/ledger?reference=' || reference) r
$$;

-- HTTP requests the sandbox answered on the API (token calls excluded),
-- on all endpoints or on the one whose path ends with the given suffix.
CREATE FUNCTION sandbox.api_requests(endpoint text DEFAULT NULL) RETURNS int
LANGUAGE sql AS $$
    SELECT coalesce(sum(value::int), 0)::int
    FROM jsonb_each_text(sandbox.call('GET', '/__sandbox/requests')->'paths')
    WHERE key LIKE '/api/%' AND (endpoint IS NULL OR key LIKE '%' || endpoint)
$$;

CREATE FUNCTION sandbox.token_requests() RETURNS int LANGUAGE sql AS $$
    SELECT coalesce((sandbox.call('GET', '/__sandbox/requests')->'paths'->>'/oauth/token')::int, 0)
$$;

-- Runs a statement and reports its SQLSTATE and message instead of failing.
CREATE FUNCTION sandbox.try(statement text, OUT code text, OUT message text)
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    code := '00000';
    message := 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
END $$;

-- The same, with the detail, and the test's work directory shown as $WORK.
CREATE FUNCTION sandbox.try_detail(statement text, OUT code text, OUT message text,
                                   OUT detail text)
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    code := '00000';
    message := 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                            detail = PG_EXCEPTION_DETAIL;
    message := replace(message, current_setting('enkash_test.work_dir'), '$WORK');
END $$;

SELECT sandbox.call('GET', '/__sandbox/health');

-- The OTP the sandbox issued for a request (a real card holder gets it by SMS).
CREATE FUNCTION sandbox.otp(otp_request_id text) RETURNS text LANGUAGE sql AS $$
    SELECT sandbox.call('GET', '/__sandbox/otp?otpRequestId=' || otp_request_id)->>'otp'
$$;

-- Where a value is found: every table in the database (as text) and the
-- server log.  Used to prove that card secrets are kept nowhere.
CREATE FUNCTION sandbox.places_holding(needle text) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    rel regclass;
    hits bigint;
    log text;
BEGIN
    FOR rel IN
        SELECT c.oid::regclass FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'm', 'p') AND n.nspname NOT IN ('pg_toast', 'information_schema')
          AND n.nspname NOT LIKE 'pg_temp%'
    LOOP
        EXECUTE format('SELECT count(*) FROM %s t WHERE t::text LIKE %L', rel, '%' || needle || '%')
            INTO hits;
        IF hits > 0 THEN
            RETURN NEXT rel::text;
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE '%' || needle || '%'
               AND pid <> pg_backend_pid()) THEN
        RETURN NEXT 'pg_stat_activity';
    END IF;
    log := pg_read_file(current_setting('enkash_test.work_dir') || '/tree/log/postmaster.log');
    IF strpos(log, needle) > 0 THEN
        RETURN NEXT 'server log';
    END IF;
END $$;

-- The client secret of the test credentials file, read where the server
-- reads it (so that it appears in no SQL text).
CREATE FUNCTION sandbox.client_secret() RETURNS text LANGUAGE sql AS $$
    SELECT substring(pg_read_file(current_setting('enkash.credentials_file'))
                     FROM 'client_secret = (\S+)')
$$;

-- The body of the last request to an endpoint (its path after
-- /api/v0/partner/enKashCard), decrypted with the openssl command line, not
-- our code.
CREATE FUNCTION sandbox.wire_body(endpoint text) RETURNS jsonb LANGUAGE sql AS $$
    SELECT sandbox.sh(format(
        'printf %%s %s | openssl enc -d -aes-128-ecb -K %s -base64 -A',
        sandbox.quote((sandbox.call('GET', '/__sandbox/last-request?path=/api/v0/partner/enKashCard' || endpoint)->>'body')::jsonb->>'request'),
        encode(substring(sha256(convert_to(sandbox.client_secret(), 'UTF8')) FROM 1 FOR 16), 'hex')))::jsonb
$$;

-- The first audit row of an endpoint after row "after", waited for (a
-- look-up's row is written after it returns).
CREATE FUNCTION sandbox.audit_after(after bigint, endpoint text,
    OUT request jsonb, OUT response jsonb) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..200 LOOP	-- look-ups do not wait for their audit row
        SELECT a.request, a.response INTO request, response FROM enkash.audit_log a
        WHERE a.id > after AND a.endpoint = audit_after.endpoint ORDER BY a.id LIMIT 1;
        IF FOUND THEN RETURN; END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
