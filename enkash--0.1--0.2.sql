/* enkash--0.1--0.2.sql: brings an enkash 0.1 database to what enkash 0.2 installs */

\echo Use "ALTER EXTENSION enkash UPDATE TO '0.2'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- Functions whose arguments or result change are dropped and created again.
-- Their grants are carried over, and kept out of the extension's initial
-- privileges (pg_init_privs) so that pg_dump still dumps them.  These
-- helpers are dropped at the end.
-- ---------------------------------------------------------------------------

CREATE TABLE enkash.upgrade_grants (name text, grantee oid, grantable boolean);

CREATE FUNCTION enkash.upgrade_save_grants(name text, f regprocedure) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO enkash.upgrade_grants
    SELECT name, a.grantee, a.is_grantable
    FROM pg_proc p, aclexplode(p.proacl) a
    WHERE p.oid = f AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner;
$$;

-- Revokes EXECUTE from PUBLIC (as a fresh install does), records that as the
-- function's initial privileges, then grants again what name had.
CREATE FUNCTION enkash.upgrade_restore_grants(name text, f regprocedure) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g record;
    initial aclitem[];
BEGIN
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    SELECT proacl INTO initial FROM pg_proc WHERE oid = f;
    FOR g IN SELECT * FROM enkash.upgrade_grants u WHERE u.name = upgrade_restore_grants.name LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s%s', f,
                       CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END,
                       CASE WHEN g.grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
    UPDATE pg_init_privs SET initprivs = initial
    WHERE objoid = f AND classoid = 'pg_proc'::regclass AND objsubid = 0;
END $$;

SELECT enkash.upgrade_save_grants('create_prepaid_card', '@extschema@.enkash_create_prepaid_card(text, text, text, text, text, text, numeric, boolean, boolean, text, text, text, text, text, text, text, text, text, boolean, text, text, text, text, text, text, text, date, text, text)');
SELECT enkash.upgrade_save_grants('create_gift_card', '@extschema@.enkash_create_gift_card(text, text, text, text, text, numeric, text, text, boolean, boolean, text, text, text, text, text, text, text, text, text, boolean, text, text, text, text, text, text, text, date, text, text)');
SELECT enkash.upgrade_save_grants('set_card_controls', '@extschema@.enkash_set_card_controls(text, text[], boolean, boolean, boolean, boolean, boolean, numeric, numeric, numeric, numeric, integer, integer, integer, numeric, integer, numeric, integer, numeric, integer, text, text)');
SELECT enkash.upgrade_save_grants('get_card', '@extschema@.enkash_get_card(text, text, text, text)');
SELECT enkash.upgrade_save_grants('get_transaction', '@extschema@.enkash_get_transaction(text, text, text, text)');
SELECT enkash.upgrade_save_grants('endpoints', '@extschema@.enkash_endpoints()');

DROP FUNCTION @extschema@.enkash_create_prepaid_card(text, text, text, text, text, text, numeric, boolean, boolean, text, text, text, text, text, text, text, text, text, boolean, text, text, text, text, text, text, text, date, text, text);
DROP FUNCTION @extschema@.enkash_create_gift_card(text, text, text, text, text, numeric, text, text, boolean, boolean, text, text, text, text, text, text, text, text, text, boolean, text, text, text, text, text, text, text, date, text, text);
DROP FUNCTION @extschema@.enkash_set_card_controls(text, text[], boolean, boolean, boolean, boolean, boolean, numeric, numeric, numeric, numeric, integer, integer, integer, numeric, integer, numeric, integer, numeric, integer, text, text);
DROP FUNCTION @extschema@.enkash_get_card(text, text, text, text);
DROP FUNCTION @extschema@.enkash_get_transaction(text, text, text, text);
DROP FUNCTION @extschema@.enkash_endpoints();

-- ---------------------------------------------------------------------------
-- Tables and views
-- ---------------------------------------------------------------------------

-- in_flight: until when its owner may still be sending.  Keys claimed under
-- 0.1 have none; a stale claim is then judged by its age alone.
ALTER TABLE enkash.idempotency_keys ADD COLUMN owner_deadline timestamptz;

-- Our SQLSTATEs moved from class EK (the SQL standard's range) to class NK.
-- A failed key replays its stored error and a queued row is filtered by its
-- code, so both carry the new codes; the audit log keeps what was raised then.
UPDATE enkash.idempotency_keys SET error_sqlstate = 'NK' || substr(error_sqlstate, 3)
 WHERE error_sqlstate ~ '^EK[0-9]{3}$';
UPDATE enkash.requests SET last_sqlstate = 'NK' || substr(last_sqlstate, 3)
 WHERE last_sqlstate ~ '^EK[0-9]{3}$';

-- enkash_operate reads it with the owner's rights: its own functions in a
-- WHERE must not see the keys it filters out.
ALTER VIEW enkash.money_movements SET (security_barrier = true);

-- ---------------------------------------------------------------------------
-- Functions as enkash 0.2 defines them
-- ---------------------------------------------------------------------------

-- first_name, email and mobile are optional at EnKash (api-13438387); the
-- defaults keep the positional order, and NULL idempotency_key is refused.
CREATE FUNCTION enkash_create_prepaid_card(
    card_account_id text,
    first_name text DEFAULT NULL,
    last_name text DEFAULT NULL,
    email text DEFAULT NULL,
    mobile text DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    load_amount numeric DEFAULT NULL,
    primary_enkash_card boolean DEFAULT false,
    physical_card boolean DEFAULT false,
    title text DEFAULT NULL,
    gender text DEFAULT NULL,
    address text DEFAULT NULL,
    address2 text DEFAULT NULL,
    city text DEFAULT NULL,
    state text DEFAULT NULL,
    country text DEFAULT NULL,
    pincode text DEFAULT NULL,
    remarks text DEFAULT NULL,
    physical_delivery_address_flag boolean DEFAULT NULL,
    delivery_address text DEFAULT NULL,
    delivery_address2 text DEFAULT NULL,
    delivery_city text DEFAULT NULL,
    delivery_state text DEFAULT NULL,
    delivery_country text DEFAULT NULL,
    delivery_pincode text DEFAULT NULL,
    pan_number text DEFAULT NULL,
    special_date date DEFAULT NULL,
    user_id text DEFAULT NULL,
    company_id text DEFAULT NULL,
    documents jsonb DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'enkash_endpoint_call'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION enkash_create_prepaid_card(text, text, text, text, text, text, numeric, boolean, boolean, text, text, text, text, text, text, text, text, text, boolean, text, text, text, text, text, text, text, date, text, text, jsonb) IS
'Create Prepaid Card for a card holder in a card account, optionally loaded with load_amount. last_name and idempotency_key are required; gender is sent as given (EnKash''s example: M). documents (jsonb, [{"docType": "PAN", "docNo": ...}]) or pan_number give the documents. Returns {enKashCardId, maskedNumber, cardStatus, otbBalance}.';

-- As enkash_create_prepaid_card (api-13012983); load_amount is required.
CREATE FUNCTION enkash_create_gift_card(
    card_account_id text,
    first_name text DEFAULT NULL,
    last_name text DEFAULT NULL,
    email text DEFAULT NULL,
    mobile text DEFAULT NULL,
    load_amount numeric DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    middle_name text DEFAULT NULL,
    primary_enkash_card boolean DEFAULT false,
    physical_card boolean DEFAULT false,
    title text DEFAULT NULL,
    gender text DEFAULT NULL,
    address text DEFAULT NULL,
    address2 text DEFAULT NULL,
    city text DEFAULT NULL,
    state text DEFAULT NULL,
    country text DEFAULT NULL,
    pincode text DEFAULT NULL,
    remarks text DEFAULT NULL,
    physical_delivery_address_flag boolean DEFAULT NULL,
    delivery_address text DEFAULT NULL,
    delivery_address2 text DEFAULT NULL,
    delivery_city text DEFAULT NULL,
    delivery_state text DEFAULT NULL,
    delivery_country text DEFAULT NULL,
    delivery_pincode text DEFAULT NULL,
    pan_number text DEFAULT NULL,
    special_date date DEFAULT NULL,
    user_id text DEFAULT NULL,
    company_id text DEFAULT NULL,
    documents jsonb DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'enkash_endpoint_call'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION enkash_create_gift_card(text, text, text, text, text, numeric, text, text, boolean, boolean, text, text, text, text, text, text, text, text, text, boolean, text, text, text, text, text, text, text, date, text, text, jsonb) IS
'Create Gift Card in a GIFT card account, loaded with load_amount (required). Gift cards cannot be loaded later with enkash_load_balance.';

CREATE OR REPLACE FUNCTION enkash_request_card_replacement(
    enkash_card_id text,
    idempotency_key text,
    otp_medium text DEFAULT 'MOBILE',
    otp_required boolean DEFAULT NULL,
    otp_request_id text DEFAULT NULL,
    otp text DEFAULT NULL,
    mfa_code text DEFAULT NULL,
    card_account_id text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'enkash_endpoint_call'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION enkash_request_card_replacement(text, text, text, boolean, text, text, text, text) IS
'Request Card Replacement: the card is replaced by a new one carrying its balance. Returns the new card id.';

CREATE OR REPLACE FUNCTION enkash_block_card(
    card_account_id text,
    enkash_card_id text,
    block_code text,
    reason text DEFAULT NULL,
    otp_required boolean DEFAULT false,
    otp_medium text DEFAULT 'MOBILE',
    otp_request_id text DEFAULT NULL,
    otp text DEFAULT NULL,
    mfa_code text DEFAULT NULL,
    created_by text DEFAULT CURRENT_USER,
    company_id text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'enkash_endpoint_call'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION enkash_block_card(text, text, text, text, boolean, text, text, text, text, text, text) IS
'Block Card: block_code L locks, UL unlocks, BL blocks PERMANENTLY, AP marks activation in progress. block_code has no default on purpose.';

CREATE FUNCTION enkash_set_card_controls(
    card_account_id text,
    enkash_card_ids text[],
    pos_allowed boolean DEFAULT NULL,
    online_allowed boolean DEFAULT NULL,
    atm_allowed boolean DEFAULT NULL,
    international_allowed boolean DEFAULT NULL,
    contactless_allowed boolean DEFAULT NULL,
    per_txn_limit numeric DEFAULT NULL,
    dtd numeric DEFAULT NULL,
    mtd numeric DEFAULT NULL,
    ytd numeric DEFAULT NULL,
    dtd_count integer DEFAULT NULL,
    mtd_count integer DEFAULT NULL,
    ytd_count integer DEFAULT NULL,
    pos_daily_limit numeric DEFAULT NULL,
    pos_daily_limit_count integer DEFAULT NULL,
    ecom_daily_limit numeric DEFAULT NULL,
    ecom_daily_limit_count integer DEFAULT NULL,
    contact_less_daily_limit numeric DEFAULT NULL,
    contact_less_daily_limit_count integer DEFAULT NULL,
    admin_user boolean DEFAULT NULL,
    company_id text DEFAULT NULL,
    clear_limits text[] DEFAULT NULL,
    extra_members jsonb DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'enkash_endpoint_call'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION enkash_set_card_controls(text, text[], boolean, boolean, boolean, boolean, boolean, numeric, numeric, numeric, numeric, integer, integer, integer, numeric, integer, numeric, integer, numeric, integer, boolean, text, text[], jsonb) IS
'Card Usage Controls: channels allowed and limits (day/month/year to date, per transaction, per channel) for 1 to 100 cards. Arguments left NULL are not changed; limits named in clear_limits (e.g. ARRAY[''dtd'']) are removed. admin_user => true when an admin changes the limits. extra_members (a jsonb object) sends members EnKash documents without naming them, such as the auto-load settings.';

CREATE FUNCTION enkash_get_card(
    card_account_id text,
    enkash_card_id text DEFAULT NULL,
    company_id text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'enkash_endpoint_call'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION enkash_get_card(text, text, text) IS
'Get Card Details: {recordsCount, data: [card, ...]}: the card enkash_card_id, or every card of the account when it is NULL.';

CREATE FUNCTION enkash_get_transaction(
    card_account_id text,
    pg_reference_number text,
    enkash_card_id text,
    company_id text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'enkash_endpoint_call'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION enkash_get_transaction(text, text, text, text) IS
'Get Transaction Details by the reference number sent on load (the load''s unique_reference_number) on its card; EnKash answers a list ({recordsCount, data}) or the transaction.';

-- A time in an EnKash answer: "Jan 23, 2025 4:38:36 PM" is IST without an
-- offset (api-13013004); a time carrying Z or an offset is taken as written.
-- Not STRICT: a NULL argument is not folded away before the EXECUTE check.
CREATE FUNCTION enkash.answer_time(t text) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN t ~ '(Z|[+-][0-9]{2}(:?[0-9]{2})?)$' THEN t::timestamptz
                ELSE t::timestamp AT TIME ZONE 'Asia/Kolkata' END
$$;

CREATE OR REPLACE FUNCTION enkash_transactions(
    card_account_id text,
    enkash_card_id text DEFAULT NULL,
    txn_date_from timestamptz DEFAULT NULL,
    txn_date_to timestamptz DEFAULT NULL,
    card_transaction_type text DEFAULT NULL,
    status text DEFAULT NULL,
    amount_from numeric DEFAULT NULL,
    amount_to numeric DEFAULT NULL,
    enkash_transaction_ids text[] DEFAULT NULL,
    pg_reference_numbers text[] DEFAULT NULL,
    company_id text DEFAULT NULL)
RETURNS TABLE (
    transaction_id text,
    card_id text,
    txn_date timestamptz,
    amount numeric,
    cr_dr text,
    transaction_status text,
    transaction_type text,
    description text,
    reference_number text,
    balance_after numeric,
    currency text,
    masked_card text,
    user_id text,
    card_holder text,
    merchant_name text,
    mcc text,
    channel text,
    retrieval_ref_no text,
    network text,
    fees numeric,
    created_on timestamptz)
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t->>'enKashCardTransactionId',
           t->>'enkashCardId',
           enkash.answer_time(t->>'txnDate'),
           (t->>'principalAmount')::numeric,
           t->>'cardTransactionType',
           t->>'status',
           t->>'type',
           t->>'description',
           t->>'pgReferenceNumber',
           (t->>'balance')::numeric,
           t->>'currency',
           t->>'maskedCard',
           t->>'userId',
           t->>'cardHolderName',
           t->'txnDetails'->>'merchantName',
           t->'txnDetails'->>'mcc',
           t->'txnDetails'->>'channel',
           t->'txnDetails'->>'retrievalRefNo',
           t->'txnDetails'->>'network',
           (t->'txnDetails'->>'transactionFees')::numeric,
           enkash.answer_time(t->>'createdOn')
    FROM enkash.transaction_pages(card_account_id, enkash_card_id, status,
                                  card_transaction_type, amount_from, amount_to,
                                  txn_date_from, txn_date_to,
                                  enkash_transaction_ids, pg_reference_numbers,
                                  company_id) AS t
$$;

COMMENT ON FUNCTION enkash_transactions(text, text, timestamptz, timestamptz, text, text, numeric, numeric, text[], text[], text) IS
'Get All Transaction details as typed rows, every page fetched: join, filter and sum them like a table. cr_dr is CR (credit) or DR (debit).';

-- A payroll table's trigger: AFTER INSERT ... FOR EACH ROW EXECUTE FUNCTION
-- enkash_load_balance_trigger(card_account_column, card_id_column,
-- amount_column, reference_column [, reference_column ...]).  The reference
-- number is the schema, the table and the reference columns' values, each
-- after its length ("6:public/7:payroll/7:2026-11/4:E001"): a re-fired or
-- re-inserted row reuses it (and is not loaded twice), and no two different
-- rows of any tables share one, however their values split.
-- It runs with the inserting role's rights, never the owner's: to_jsonb(NEW)
-- runs the casts of the row's column types, which whoever made the table
-- chose.  Queuing itself needs no right on enkash.* (see enqueue, outbox.c).
CREATE OR REPLACE FUNCTION enkash_load_balance_trigger() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    row_json jsonb;
    reference text;
    part text;
    i integer;
BEGIN
    IF NOT has_function_privilege(
            '@extschema@.enkash_load_balance_async(pg_catalog.text, pg_catalog.text, pg_catalog.numeric, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text)',
            'EXECUTE') THEN
        RAISE EXCEPTION 'role "%" may not queue card loads', current_user
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('A row inserted into %I.%I queues a card load, which needs the inserting role to have the rights of enkash_operate.',
                                  TG_TABLE_SCHEMA, TG_TABLE_NAME),
                  HINT = format('GRANT enkash_operate TO %I;', current_user);
    END IF;
    IF TG_NARGS < 4 THEN
        RAISE EXCEPTION 'enkash_load_balance_trigger needs the card account, card id, amount and at least one reference column'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'EXECUTE FUNCTION enkash_load_balance_trigger(''card_account_id'', ''enkash_card_id'', ''amount'', ''run_id'', ''employee_id'')';
    END IF;
    row_json := to_jsonb(NEW);
    FOR i IN 0 .. 3 LOOP
        IF NOT row_json ? TG_ARGV[i] THEN
            RAISE EXCEPTION 'table "%" has no column "%"', TG_TABLE_NAME, TG_ARGV[i]
                USING ERRCODE = 'undefined_column';
        END IF;
    END LOOP;
    reference := length(TG_TABLE_SCHEMA) || ':' || TG_TABLE_SCHEMA || '/'
                 || length(TG_TABLE_NAME) || ':' || TG_TABLE_NAME;
    FOR i IN 3 .. TG_NARGS - 1 LOOP
        part := row_json->>TG_ARGV[i];
        IF part IS NULL THEN
            RAISE EXCEPTION 'reference column "%" is NULL', TG_ARGV[i]
                USING ERRCODE = 'null_value_not_allowed';
        END IF;
        reference := reference || '/' || length(part) || ':' || part;
    END LOOP;
    -- EnKash identifiers have at most 64 characters (MAX_ID_CHARS, api.c).
    IF length(reference) > 64 THEN
        RAISE EXCEPTION 'the reference number of this card load is too long for EnKash'
            USING ERRCODE = 'string_data_right_truncation',
                  DETAIL = format('"%s" (from table %I.%I) has %s characters; EnKash takes at most 64.',
                                  reference, TG_TABLE_SCHEMA, TG_TABLE_NAME, length(reference)),
                  HINT = 'Use fewer or shorter reference columns, or a table with a shorter name.';
    END IF;
    -- All ten arguments (card account, card id, amount, reference,
    -- description, remarks, created_by, company_id, type, transaction_code),
    -- positionally and of their exact types: a named or defaulted call could
    -- be captured, or made ambiguous, by an overload that a role with CREATE
    -- on the extension's schema plants.
    PERFORM @extschema@.enkash_load_balance_async(
        (row_json->>TG_ARGV[0])::pg_catalog.text, (row_json->>TG_ARGV[1])::pg_catalog.text,
        (row_json->>TG_ARGV[2])::pg_catalog.numeric, reference,
        ('Payroll ' || TG_TABLE_NAME)::pg_catalog.text, NULL::pg_catalog.text,
        session_user::pg_catalog.text, NULL::pg_catalog.text,
        'ALLOCATE_FUND'::pg_catalog.text, 'ALLOCATION'::pg_catalog.text);
    RETURN NULL;
END $$;

COMMENT ON FUNCTION enkash_load_balance_trigger() IS
'AFTER INSERT trigger for payroll tables: queues a card load per row (arguments: card account column, card id column, amount column, reference columns).';

CREATE FUNCTION enkash_reset_credentials() RETURNS boolean
    AS 'MODULE_PATHNAME', 'enkash_reset_credentials'
    LANGUAGE C VOLATILE;

COMMENT ON FUNCTION enkash_reset_credentials() IS
'Administrators only: after EnKash refused the partner credentials (NK008), lets the next call try them once more. True if a refusal was forgotten.';

CREATE FUNCTION enkash_check(card_account_id text DEFAULT NULL,
    OUT name text, OUT status text, OUT detail text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'enkash_check'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION enkash_check(text) IS
'The go-live check: one row per check (preloaded, settings, credentials file, token, an encrypted round trip, TLS, background workers, worker slots), each ok, warning or failed with what to do. One token call (a new token, proving the credentials) and at most one read call; never shows a secret.';

CREATE FUNCTION enkash_endpoints(
    OUT function_name text, OUT endpoint text, OUT path text, OUT kind text,
    OUT fields text, OUT secret_fields text, OUT docs_page text, OUT basis text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'enkash_endpoints_list'
LANGUAGE C STABLE;

COMMENT ON FUNCTION enkash_endpoints() IS
'The EnKash endpoints this extension speaks to: SQL function, endpoint name (for enkash_call), path, kind (read, write, money, secret in/out), JSON fields (? = optional), EnKash''s page (docs.enkash.com/<docs_page>), basis (doc: as published; inferred: our reading, path overridable).';

-- ---------------------------------------------------------------------------
-- Reconciliation: our loads against EnKash's credits, per reference
-- ---------------------------------------------------------------------------

-- Mismatches found by enkash_reconcile_store, kept for follow-up: a person
-- sets resolved_at (and a note) once it is dealt with.
CREATE TABLE enkash.reconciliation (
    id bigserial PRIMARY KEY,
    run_at timestamptz NOT NULL DEFAULT now(),
    card_account_id text NOT NULL,
    reference text,
    verdict text NOT NULL,
    our_state text,
    our_amount numeric,
    enkash_transaction_id text,
    enkash_amount numeric,
    enkash_status text,
    resolved_at timestamptz,
    note text
);
-- What enkash_reconcile_store looks up before storing a mismatch again.
CREATE INDEX ON enkash.reconciliation (card_account_id, reference) WHERE resolved_at IS NULL;
COMMENT ON TABLE enkash.reconciliation IS
'Mismatches between our loads and EnKash''s credits found by enkash_reconcile_store, one row each; resolved_at is set once a person has dealt with it.';
SELECT pg_catalog.pg_extension_config_dump('enkash.reconciliation', '');
SELECT pg_catalog.pg_extension_config_dump('enkash.reconciliation_id_seq', '');

-- One row per enkash_reconcile_store run, also when it finds nothing, so
-- that enkash.health shows when accounts were last reconciled.
CREATE TABLE enkash.reconciliation_runs (
    id bigserial PRIMARY KEY,
    run_at timestamptz NOT NULL DEFAULT now(),
    card_account_id text NOT NULL,
    since timestamptz NOT NULL,
    until timestamptz NOT NULL,
    mismatches integer NOT NULL,    -- verdicts other than ok and pending
    stored integer NOT NULL         -- of which new in enkash.reconciliation
);
-- What enkash.health looks up: the latest run.
CREATE INDEX ON enkash.reconciliation_runs (run_at);
COMMENT ON TABLE enkash.reconciliation_runs IS
'One row per enkash_reconcile_store run: the account and window, the mismatches it found (verdicts other than ok and pending) and how many of them it stored as new rows of enkash.reconciliation.';
SELECT pg_catalog.pg_extension_config_dump('enkash.reconciliation_runs', '');
SELECT pg_catalog.pg_extension_config_dump('enkash.reconciliation_runs_id_seq', '');

-- One row per reference: our loads on the account made in [since, until)
-- (the key's state once claimed, else the queued row's) and EnKash's
-- credits listed in the window, plus EnKash's credits outside it for our
-- references and our loads outside it for EnKash's references, so that a
-- load at the window's edge is matched.  Verdicts (README, Reconciliation):
-- two credits for one reference are always credited_twice; a state of ours
-- that is neither final nor known here (queued, held, ...) is pending.
CREATE FUNCTION enkash_reconcile(
    card_account_id text,
    since timestamptz,
    until timestamptz,
    settle interval DEFAULT '10 minutes')
RETURNS TABLE (
    reference text,
    verdict text,
    our_state text,
    our_amount numeric,
    our_card_id text,
    requested_at timestamptz,
    enkash_transaction_id text,
    enkash_amount numeric,
    enkash_status text,
    enkash_card_id text,
    enkash_credits integer,
    note text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    account text := $1;
    window_from timestamptz := $2;
    window_to timestamptz := $3;
    settle_for interval := $4;
BEGIN
    IF account IS NULL OR window_from IS NULL OR window_to IS NULL OR settle_for IS NULL THEN
        RAISE EXCEPTION 'reconciliation needs a card account and a time window'
            USING ERRCODE = 'null_value_not_allowed',
                  DETAIL = 'card_account_id, since, until and settle must not be NULL; nothing was asked of EnKash.',
                  HINT = 'SELECT * FROM enkash_reconcile(''CA...'', now() - interval ''1 day'', now());';
    END IF;
    IF window_from > window_to OR settle_for < interval '0' THEN
        RAISE EXCEPTION 'the reconciliation window is not a window'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('since is %s, until is %s, settle is %s; since must not be after until, and settle must not be negative. Nothing was asked of EnKash.',
                                  window_from, window_to, settle_for),
                  HINT = 'Give since before until.';
    END IF;

    RETURN QUERY
    WITH ours_all AS (
        SELECT k.key AS ref, k.request->>'cardAccountId' AS account_id, k.state AS state,
               (k.request->>'amount')::numeric AS amount, k.request->>'enKashCardId' AS card,
               k.created_at AS made_at, coalesce(k.finished_at, k.updated_at) AS changed_at
        FROM enkash.idempotency_keys k
        WHERE k.endpoint = 'load_balance'
        UNION ALL
        (SELECT DISTINCT ON (q.idempotency_key)
               q.idempotency_key, q.body->>'cardAccountId', q.state,
               (q.body->>'amount')::numeric, q.body->>'enKashCardId',
               q.created_at, q.updated_at
        FROM enkash.requests q
        WHERE q.endpoint = 'load_balance' AND q.idempotency_key IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM enkash.idempotency_keys k
                          WHERE k.endpoint = 'load_balance' AND k.key = q.idempotency_key)
        ORDER BY q.idempotency_key, q.id DESC)),
    ours_in_window AS MATERIALIZED (
        SELECT o.* FROM ours_all o
        WHERE o.account_id = account AND o.made_at >= window_from AND o.made_at < window_to),
    -- Positional and exactly typed, so no planted overload can match better.
    listed AS MATERIALIZED (
        SELECT t.* FROM @extschema@.enkash_transactions(
            account, NULL::pg_catalog.text, window_from, window_to, 'CR'::pg_catalog.text,
            NULL::pg_catalog.text, NULL::pg_catalog.numeric, NULL::pg_catalog.numeric,
            NULL::pg_catalog.text[], NULL::pg_catalog.text[], NULL::pg_catalog.text) t
        WHERE t.reference_number IS NOT NULL),
    -- Our references EnKash did not list in the window, asked by reference
    -- (at most 100 a call, as the listing takes them).
    unlisted AS (
        SELECT o.ref, (row_number() OVER (ORDER BY o.ref) - 1) / 100 AS batch
        FROM ours_in_window o
        WHERE NOT EXISTS (SELECT 1 FROM listed l WHERE l.reference_number = o.ref)),
    listed_elsewhen AS MATERIALIZED (
        SELECT t.* FROM (SELECT array_agg(u.ref) AS refs FROM unlisted u GROUP BY u.batch) b,
        LATERAL @extschema@.enkash_transactions(
            account, NULL::pg_catalog.text, NULL::pg_catalog.timestamptz,
            NULL::pg_catalog.timestamptz, 'CR'::pg_catalog.text, NULL::pg_catalog.text,
            NULL::pg_catalog.numeric, NULL::pg_catalog.numeric, NULL::pg_catalog.text[],
            b.refs, NULL::pg_catalog.text) t
        WHERE t.reference_number IS NOT NULL),
    credits AS (
        SELECT c.reference_number AS ref, count(*)::integer AS n,
               string_agg(c.transaction_id, ',' ORDER BY c.txn_date, c.transaction_id) AS ids,
               sum(c.amount) AS amount,
               string_agg(DISTINCT c.transaction_status, ',') AS status,
               string_agg(DISTINCT c.card_id, ',') AS card
        FROM (SELECT * FROM listed UNION ALL SELECT * FROM listed_elsewhen) c
        GROUP BY c.reference_number),
    ours AS (
        SELECT * FROM ours_in_window
        UNION ALL
        SELECT o.* FROM ours_all o JOIN credits c ON c.ref = o.ref
        WHERE NOT EXISTS (SELECT 1 FROM ours_in_window w WHERE w.ref = o.ref)),
    joined AS (
        SELECT coalesce(o.ref, c.ref) AS ref, o.state, o.amount AS our_amount, o.card AS our_card,
               o.made_at, o.changed_at, c.ids, c.amount AS their_amount, c.status,
               c.card AS their_card, coalesce(c.n, 0) AS n,
               CASE WHEN o.ref IS NULL THEN 'none'
                    WHEN o.state IN ('succeeded', 'unknown') THEN 'maybe_made'
                    WHEN o.state IN ('failed', 'dead') THEN 'not_made'
                    ELSE 'in_progress' END AS ours_class
        FROM ours o FULL JOIN credits c ON c.ref = o.ref)
    SELECT j.ref, v.verdict, j.state, j.our_amount, j.our_card, j.made_at,
           j.ids, j.their_amount, j.status, j.their_card, j.n,
           CASE v.verdict
               WHEN 'credited_twice' THEN format('EnKash lists %s credits for this one reference (%s).', j.n, j.ids)
               WHEN 'unknown_here' THEN
                   CASE WHEN j.ours_class = 'none'
                        THEN 'EnKash lists a credit with this reference; enkash never made such a load.'
                        ELSE format('We recorded this load as %s (nothing credited), but EnKash lists a credit.', j.state) END
               WHEN 'missing_at_enkash' THEN
                   CASE WHEN j.state = 'succeeded'
                        THEN 'EnKash answered this load with success, but lists no credit for it.'
                        ELSE 'The outcome of this load is unknown here and EnKash lists no credit for it: the next call with this reference asks EnKash again before sending.' END
               WHEN 'amount_differs' THEN
                   format('EnKash credited %s on card %s; the load was %s on card %s.',
                          j.their_amount, j.their_card, j.our_amount, j.our_card)
               WHEN 'pending' THEN
                   CASE WHEN j.ours_class = 'in_progress'
                        THEN format('The load is %s here: not judged until it is final.', j.state)
                        ELSE format('Finished less than %s ago: EnKash''s listing may not show it yet.', settle_for) END
               ELSE
                   CASE WHEN j.state = 'unknown'
                        THEN 'EnKash credited it; our record is still unknown until the next call with this reference records the success.' END
           END
    FROM joined j
    CROSS JOIN LATERAL (SELECT CASE
        WHEN j.n >= 2 THEN 'credited_twice'
        WHEN j.ours_class = 'none' THEN 'unknown_here'
        WHEN j.ours_class = 'in_progress' THEN 'pending'
        WHEN j.ours_class = 'not_made' THEN CASE WHEN j.n = 0 THEN 'ok' ELSE 'unknown_here' END
        WHEN j.n = 0 AND j.changed_at > now() - settle_for THEN 'pending'
        WHEN j.n = 0 THEN 'missing_at_enkash'
        WHEN j.their_amount IS DISTINCT FROM j.our_amount
             OR j.their_card IS DISTINCT FROM j.our_card THEN 'amount_differs'
        ELSE 'ok' END AS verdict) v
    ORDER BY j.made_at NULLS LAST, j.ref;
END $$;

COMMENT ON FUNCTION enkash_reconcile(text, timestamptz, timestamptz, interval) IS
'Reconciliation of a card account over [since, until): one row per load reference, our state and amount against EnKash''s credits, with a verdict: ok, missing_at_enkash, unknown_here, amount_differs, credited_twice or pending (in progress, or finished less than settle ago). Reads EnKash''s listing, every page.';

-- Stores a run's mismatches (verdicts other than ok and pending) in
-- enkash.reconciliation and sends NOTIFY enkash for each one stored.  A
-- mismatch still open (same account, reference and verdict, not resolved)
-- is not stored again, so overlapping runs do not pile up rows.  Each run
-- is recorded in enkash.reconciliation_runs, whatever it found.
CREATE FUNCTION enkash_reconcile_store(
    card_account_id text,
    since timestamptz,
    until timestamptz,
    settle interval DEFAULT '10 minutes')
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    account text := $1;
    m record;
    stored_id bigint;
    stored integer := 0;
    found_mismatches integer := 0;
BEGIN
    -- Positional and exactly typed, so no planted overload can match better.
    FOR m IN SELECT * FROM @extschema@.enkash_reconcile(account, $2, $3, $4) r
             WHERE r.verdict NOT IN ('ok', 'pending')
    LOOP
        found_mismatches := found_mismatches + 1;
        CONTINUE WHEN EXISTS (
            SELECT 1 FROM enkash.reconciliation x
            WHERE x.card_account_id = account AND x.reference IS NOT DISTINCT FROM m.reference
              AND x.verdict = m.verdict AND x.resolved_at IS NULL);
        INSERT INTO enkash.reconciliation
            (card_account_id, reference, verdict, our_state, our_amount,
             enkash_transaction_id, enkash_amount, enkash_status, note)
        VALUES (account, m.reference, m.verdict, m.our_state, m.our_amount,
                m.enkash_transaction_id, m.enkash_amount, m.enkash_status, m.note)
        RETURNING id INTO stored_id;
        PERFORM pg_notify('enkash', json_build_object(
            'event', 'reconciliation_mismatch', 'id', stored_id,
            'card_account_id', account, 'reference', m.reference,
            'verdict', m.verdict)::text);
        stored := stored + 1;
    END LOOP;
    INSERT INTO enkash.reconciliation_runs (card_account_id, since, until, mismatches, stored)
    VALUES (account, $2, $3, found_mismatches, stored);
    RETURN stored;
END $$;

COMMENT ON FUNCTION enkash_reconcile_store(text, timestamptz, timestamptz, interval) IS
'Runs enkash_reconcile and stores its mismatches (not ok, not pending) in enkash.reconciliation, skipping those still open from an earlier run; sends NOTIFY enkash {"event": "reconciliation_mismatch", "id": ...} for each, and records the run in enkash.reconciliation_runs. Returns how many it stored.';

-- Closes a stored mismatch once a person has dealt with it.
CREATE FUNCTION enkash_reconciliation_resolve(mismatch_id bigint, note text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE enkash.reconciliation r
    SET resolved_at = now(),
        note = CASE WHEN $2 IS NULL THEN r.note ELSE concat_ws(' / ', r.note, $2) END
    WHERE r.id = $1 AND r.resolved_at IS NULL
    RETURNING true
$$;

COMMENT ON FUNCTION enkash_reconciliation_resolve(bigint, text) IS
'Marks a mismatch of enkash.reconciliation resolved (now), adding note (what was done) to its note. Returns NULL if there is no open mismatch with that id.';

-- ---------------------------------------------------------------------------
-- Retention: archiving the audit log, expired load keys (README, "Retention")
-- ---------------------------------------------------------------------------

-- One row per archiving run: which audit rows went to which file.  An audit
-- row is deleted only in the transaction that records its export, so an
-- error or a crash anywhere before the COMMIT leaves it in the table.
CREATE TABLE enkash.audit_archives (
    id bigserial PRIMARY KEY,
    archived_at timestamptz NOT NULL DEFAULT now(),
    archived_by text NOT NULL DEFAULT current_user,
    older_than timestamptz NOT NULL,
    path text NOT NULL,
    rows bigint NOT NULL,
    first_id bigint,
    last_id bigint,
    -- sum of hashtextextended(row::text, 0) over the rows: recomputed over
    -- the file's rows loaded back, it proves the file holds what was removed
    checksum numeric NOT NULL
);
COMMENT ON TABLE enkash.audit_archives IS
'One row per archiving of the audit log: the rows exported to a file (count, id range, checksum) and then removed.';
SELECT pg_catalog.pg_extension_config_dump('enkash.audit_archives', '');
SELECT pg_catalog.pg_extension_config_dump('enkash.audit_archives_id_seq', '');

-- Audit rows leave the table only through enkash_archive_audit: a DELETE of
-- a row no recorded archive covers, or a TRUNCATE, is refused.  Per
-- statement, so the worker's inserts pay nothing for it.
CREATE FUNCTION enkash.audit_log_archived_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF NOT EXISTS (
                SELECT FROM gone g WHERE NOT EXISTS (
                    SELECT FROM enkash.audit_archives r
                    WHERE g.id BETWEEN r.first_id AND r.last_id AND g.at < r.older_than)) THEN
            RETURN NULL;
        END IF;
    END IF;
    RAISE EXCEPTION 'enkash.audit_log rows are removed only by archiving them'
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = 'Every audit row is exported before it is removed.',
              HINT = 'SELECT enkash_archive_audit(older_than, ''/absolute/path/file.csv'') exports the old rows, then removes them.';
END $$;
CREATE TRIGGER archived_only AFTER DELETE ON enkash.audit_log
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION enkash.audit_log_archived_only();
CREATE TRIGGER no_truncate BEFORE TRUNCATE ON enkash.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION enkash.audit_log_archived_only();

-- Writes the audit rows older than older_than to a CSV file on the database
-- server (header, columns of enkash.audit_log, in id order), records the
-- export and removes exactly those rows, all in the caller's transaction.
-- The rows are fixed first, so a row committed meanwhile is neither written
-- nor removed.  Writing a server file needs superuser or
-- pg_write_server_files, and removing audit rows needs DELETE on it: the
-- function runs with the caller's rights and is granted to nobody.
CREATE FUNCTION enkash_archive_audit(older_than timestamptz, path text)
RETURNS enkash.audit_archives
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    archive enkash.audit_archives;
BEGIN
    IF older_than IS NULL OR path IS NULL OR path !~ '^/' THEN
        RAISE EXCEPTION 'archiving needs a date and an absolute path on the database server'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'SELECT enkash_archive_audit(date_trunc(''month'', now()) - interval ''1 year'', ''/var/lib/enkash-archive/audit.csv'');';
    END IF;
    DROP TABLE IF EXISTS pg_temp.enkash_archiving;
    CREATE TEMP TABLE enkash_archiving ON COMMIT DROP AS
        SELECT a.* FROM enkash.audit_log a WHERE a.at < older_than;
    EXECUTE format('COPY (SELECT * FROM pg_temp.enkash_archiving ORDER BY id) TO %L WITH (FORMAT csv, HEADER)',
                   path);
    INSERT INTO enkash.audit_archives (older_than, path, rows, first_id, last_id, checksum)
    SELECT older_than, path, count(*), min(t.id), max(t.id),
           coalesce(sum(hashtextextended(t::text, 0)), 0)
    FROM pg_temp.enkash_archiving t
    RETURNING * INTO archive;
    DELETE FROM enkash.audit_log a USING pg_temp.enkash_archiving t WHERE a.id = t.id;
    DROP TABLE pg_temp.enkash_archiving;
    RETURN archive;
END $$;
COMMENT ON FUNCTION enkash_archive_audit(timestamptz, text) IS
'Superusers (or roles with pg_write_server_files and DELETE on enkash.audit_log): exports the audit rows older than a time to a CSV file on the server, records the export in enkash.audit_archives and removes exactly those rows.';

-- Load reference numbers whose finished keys were purged after
-- enkash.key_retention_days: a load made again with one is looked up at
-- EnKash before it is sent, as after a failover.
CREATE TABLE enkash.expired_keys (
    endpoint text NOT NULL,
    key text NOT NULL,
    expired_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint, key)
);
COMMENT ON TABLE enkash.expired_keys IS
'Load reference numbers whose idempotency keys expired: a load replayed with one is checked with EnKash before it is sent.';
SELECT pg_catalog.pg_extension_config_dump('enkash.expired_keys', '');

-- Nobody but superusers until granted, as every table (see Privileges).
REVOKE ALL ON enkash.audit_archives, enkash.expired_keys FROM PUBLIC;
REVOKE ALL ON SEQUENCE enkash.audit_archives_id_seq FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Controls: spending limits, loads held or awaiting approval, alerts
-- ---------------------------------------------------------------------------

-- Spending limits.  Every load, synchronous or queued, is checked against
-- every matching row (controls.c); target NULL means each card (or card
-- account) separately, scope 'all' counts every load together.
CREATE TABLE enkash.limits (
    id serial PRIMARY KEY,
    scope text NOT NULL CHECK (scope IN ('card', 'card_account', 'all')),
    target text,
    period interval NOT NULL CHECK (period > interval '0'),
    max_amount numeric CHECK (max_amount >= 0),
    max_count integer CHECK (max_count >= 0),
    note text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (max_amount IS NOT NULL OR max_count IS NOT NULL),
    CHECK (scope <> 'all' OR target IS NULL)
);
COMMENT ON TABLE enkash.limits IS
'Spending limits: loads to a card, a card account or all together within a period, by amount and/or count.';
SELECT pg_catalog.pg_extension_config_dump('enkash.limits', '');
SELECT pg_catalog.pg_extension_config_dump('enkash.limits_id_seq', '');

-- A queued load stored in a dry run (dry_run), over a limit (held), at or
-- above enkash.approval_threshold (awaiting_approval) or refused by a
-- checker (rejected) is never claimed by the sender.
ALTER TABLE enkash.requests DROP CONSTRAINT requests_state_check;
ALTER TABLE enkash.requests ADD CONSTRAINT requests_state_check
    CHECK (state IN ('pending', 'sending', 'unknown', 'succeeded', 'failed', 'dead',
                     'dry_run', 'held', 'awaiting_approval', 'rejected'));
-- The checker of a load that awaited approval, and when they decided.
ALTER TABLE enkash.requests ADD COLUMN decided_by text;
ALTER TABLE enkash.requests ADD COLUMN decided_at timestamptz;

-- The queue at a glance, with the amount of the loads in each state.
CREATE OR REPLACE VIEW enkash.queue AS
SELECT state, count(*) AS requests,
       min(created_at) AS oldest,
       max(now() - created_at) FILTER (WHERE state IN ('pending', 'sending', 'unknown')) AS oldest_waiting_for,
       min(next_attempt_at) FILTER (WHERE state IN ('pending', 'unknown')) AS next_attempt_at,
       sum((body->>'amount')::numeric) FILTER (WHERE endpoint = 'load_balance') AS amount
FROM enkash.requests GROUP BY state;

-- Alerts: NOTIFY enkash, '{"event": <state>, "id": <row>}' when a row
-- enters a state a person must look at.
CREATE FUNCTION enkash.notify_state() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pg_notify('enkash', json_build_object('event', NEW.state, 'id', NEW.id)::text);
    RETURN NULL;
END $$;
CREATE TRIGGER notify_queued AFTER INSERT ON enkash.requests FOR EACH ROW
    WHEN (NEW.state IN ('held', 'awaiting_approval', 'dead', 'unknown'))
    EXECUTE FUNCTION enkash.notify_state();
CREATE TRIGGER notify_changed AFTER UPDATE OF state ON enkash.requests FOR EACH ROW
    WHEN (NEW.state IS DISTINCT FROM OLD.state
          AND NEW.state IN ('held', 'awaiting_approval', 'dead', 'unknown'))
    EXECUTE FUNCTION enkash.notify_state();

-- Not STRICT: a NULL argument is not folded away before the EXECUTE check.
CREATE FUNCTION enkash_approve(id bigint) RETURNS boolean
    AS 'MODULE_PATHNAME', 'enkash_approve'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION enkash_approve(bigint) IS
'A checker (enkash_approve, not the role that queued it) lets a queued load awaiting approval be sent.';

CREATE FUNCTION enkash_reject(id bigint, reason text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'enkash_reject'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION enkash_reject(bigint, text) IS
'A checker (enkash_approve, not the role that queued it) refuses a queued load awaiting approval: it is never sent.';

CREATE FUNCTION enkash_release(id bigint) RETURNS boolean
    AS 'MODULE_PATHNAME', 'enkash_release'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION enkash_release(bigint) IS
'Administrators: sends a queued load held by a spending limit after all (once the limit is raised, or by decision).';

-- ---------------------------------------------------------------------------
-- The live server: a restored or cloned copy sends nothing until confirmed
-- ---------------------------------------------------------------------------

-- One row, naming the server that sends (src/live.c).  A copy of the data
-- directory inherits it but runs elsewhere, so it does not match.
CREATE TABLE enkash.live_server (
    one_row boolean PRIMARY KEY DEFAULT true CHECK (one_row),
    system_identifier text NOT NULL,    -- pg_control_system()
    host text NOT NULL,                 -- the machine's host name
    port integer NOT NULL,
    data_directory text NOT NULL,
    made_live_by text NOT NULL          -- the role that confirmed, or 'promotion'
);
REVOKE ALL ON enkash.live_server FROM PUBLIC;

CREATE FUNCTION enkash_confirm_live() RETURNS boolean
    AS 'MODULE_PATHNAME', 'enkash_confirm_live'
    LANGUAGE C VOLATILE;

COMMENT ON FUNCTION enkash_confirm_live() IS
'Administrators only: names this server the live one, which sends the queue and makes money and write calls (a restored or cloned copy waits until then). True if it was not the live one before.';

-- The server the extension is installed on is the live one.
SELECT enkash_confirm_live();

-- ---------------------------------------------------------------------------
-- Health in one place: one row for monitoring (README, Operations)
-- ---------------------------------------------------------------------------

CREATE FUNCTION enkash_is_live() RETURNS boolean
    AS 'MODULE_PATHNAME', 'enkash_is_live'
    LANGUAGE C VOLATILE;

COMMENT ON FUNCTION enkash_is_live() IS
'Whether this server is the live one (false on a restored or cloned copy waiting for enkash_confirm_live()).';

CREATE FUNCTION enkash_token_health(
    OUT valid boolean, OUT expires_at timestamptz, OUT last_error text,
    OUT credentials_refused boolean)
AS 'MODULE_PATHNAME', 'enkash_token_health'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION enkash_token_health() IS
'The OAuth token''s validity and expiry, the last error, and whether EnKash refused the credentials (never the token).';

-- Queue rows counted by state name, so that a state added later needs no
-- change here.
CREATE VIEW enkash.health AS
WITH processes AS (
    SELECT backend_type, max(GREATEST(backend_start, state_change)) AS last_activity
    FROM pg_catalog.pg_stat_activity
    WHERE backend_type IN ('enkash launcher', 'enkash worker', 'enkash sender')
    GROUP BY backend_type),
queue AS (
    SELECT count(*) FILTER (WHERE state NOT IN ('succeeded', 'failed', 'dead')) AS queue_depth,
           min(next_attempt_at) FILTER (WHERE state IN ('pending', 'unknown')
                                        AND next_attempt_at <= now()) AS oldest_due_at,
           count(*) FILTER (WHERE state = 'dead') AS dead,
           count(*) FILTER (WHERE state = 'unknown') AS unknown,
           count(*) FILTER (WHERE state = 'held') AS held,
           count(*) FILTER (WHERE state = 'awaiting_approval') AS awaiting_approval
    FROM enkash.requests),
-- The runs of the latest run_at: one statement reconciling several accounts
-- (the README's cron job) shares one now(), so its mismatches are summed.
-- No run yet: NULLs.
reconciled AS (
    SELECT max(run_at) AS last_at, sum(mismatches) AS last_mismatches
    FROM enkash.reconciliation_runs
    WHERE run_at = (SELECT max(run_at) FROM enkash.reconciliation_runs))
SELECT
    EXISTS (SELECT FROM processes WHERE backend_type = 'enkash launcher') AS launcher_alive,
    (SELECT last_activity FROM processes WHERE backend_type = 'enkash launcher') AS launcher_last_activity,
    EXISTS (SELECT FROM processes WHERE backend_type = 'enkash worker') AS worker_alive,
    (SELECT last_activity FROM processes WHERE backend_type = 'enkash worker') AS worker_last_activity,
    EXISTS (SELECT FROM processes WHERE backend_type = 'enkash sender') AS sender_alive,
    (SELECT last_activity FROM processes WHERE backend_type = 'enkash sender') AS sender_last_activity,
    queue.queue_depth, queue.oldest_due_at, queue.dead, queue.unknown, queue.held,
    queue.awaiting_approval,
    token.valid AS token_valid, token.expires_at AS token_expires_at,
    token.last_error AS token_last_error, token.credentials_refused,
    NOT @extschema@.enkash_is_live() AS fenced,
    reconciled.last_at AS last_reconciliation_at,
    reconciled.last_mismatches AS last_reconciliation_mismatches,
    (SELECT count(*) FROM enkash.reconciliation WHERE resolved_at IS NULL) AS open_mismatches
FROM queue, reconciled, @extschema@.enkash_token_health() AS token;
REVOKE ALL ON enkash.health FROM PUBLIC;

COMMENT ON VIEW enkash.health IS
'One row: the enkash processes and their last activity, the queue, the token, whether this server is fenced (a copy not confirmed live), the last reconciliation and the mismatches still open.';

-- ---------------------------------------------------------------------------
-- Privileges of the functions created above
-- ---------------------------------------------------------------------------

SELECT enkash.upgrade_restore_grants('create_prepaid_card', '@extschema@.enkash_create_prepaid_card(text, text, text, text, text, text, numeric, boolean, boolean, text, text, text, text, text, text, text, text, text, boolean, text, text, text, text, text, text, text, date, text, text, jsonb)');
SELECT enkash.upgrade_restore_grants('create_gift_card', '@extschema@.enkash_create_gift_card(text, text, text, text, text, numeric, text, text, boolean, boolean, text, text, text, text, text, text, text, text, text, boolean, text, text, text, text, text, text, text, date, text, text, jsonb)');
SELECT enkash.upgrade_restore_grants('set_card_controls', '@extschema@.enkash_set_card_controls(text, text[], boolean, boolean, boolean, boolean, boolean, numeric, numeric, numeric, numeric, integer, integer, integer, numeric, integer, numeric, integer, numeric, integer, boolean, text, text[], jsonb)');
SELECT enkash.upgrade_restore_grants('get_card', '@extschema@.enkash_get_card(text, text, text)');
SELECT enkash.upgrade_restore_grants('get_transaction', '@extschema@.enkash_get_transaction(text, text, text, text)');
SELECT enkash.upgrade_restore_grants('endpoints', '@extschema@.enkash_endpoints()');
SELECT enkash.upgrade_restore_grants('', 'enkash.answer_time(text)');
SELECT enkash.upgrade_restore_grants('', '@extschema@.enkash_reset_credentials()');
SELECT enkash.upgrade_restore_grants('', '@extschema@.enkash_check(text)');
SELECT enkash.upgrade_restore_grants('', '@extschema@.enkash_reconcile(text, timestamptz, timestamptz, interval)');
SELECT enkash.upgrade_restore_grants('', '@extschema@.enkash_reconcile_store(text, timestamptz, timestamptz, interval)');
SELECT enkash.upgrade_restore_grants('', '@extschema@.enkash_reconciliation_resolve(bigint, text)');
REVOKE ALL ON TABLE enkash.reconciliation FROM PUBLIC;
REVOKE ALL ON SEQUENCE enkash.reconciliation_id_seq FROM PUBLIC;
REVOKE ALL ON TABLE enkash.reconciliation_runs FROM PUBLIC;
REVOKE ALL ON SEQUENCE enkash.reconciliation_runs_id_seq FROM PUBLIC;
SELECT enkash.upgrade_restore_grants('', '@extschema@.enkash_archive_audit(timestamptz, text)');
SELECT enkash.upgrade_restore_grants('', 'enkash.audit_log_archived_only()');

-- ---------------------------------------------------------------------------
-- as a fresh install's REVOKE ALL ON ALL TABLES leaves them
REVOKE ALL ON TABLE enkash.limits FROM PUBLIC;
REVOKE ALL ON SEQUENCE enkash.limits_id_seq FROM PUBLIC;
SELECT enkash.upgrade_restore_grants('', 'enkash.notify_state()');
SELECT enkash.upgrade_restore_grants('', '@extschema@.enkash_approve(bigint)');
SELECT enkash.upgrade_restore_grants('', '@extschema@.enkash_reject(bigint, text)');
SELECT enkash.upgrade_restore_grants('', '@extschema@.enkash_release(bigint)');
SELECT enkash.upgrade_restore_grants('', '@extschema@.enkash_confirm_live()');
SELECT enkash.upgrade_restore_grants('', '@extschema@.enkash_is_live()');
SELECT enkash.upgrade_restore_grants('', '@extschema@.enkash_token_health()');

DROP FUNCTION enkash.upgrade_restore_grants(text, regprocedure);
DROP FUNCTION enkash.upgrade_save_grants(text, regprocedure);
DROP TABLE enkash.upgrade_grants;
