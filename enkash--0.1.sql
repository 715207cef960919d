/* enkash--0.1.sql: the EnKash Prepaid Card API as SQL functions */

\echo Use "CREATE EXTENSION enkash" to load this file. \quit

-- ---------------------------------------------------------------------------
-- Preconditions
-- ---------------------------------------------------------------------------

-- The library must be preloaded (it owns shared memory); fail early if not.
CREATE FUNCTION enkash_assert_preloaded() RETURNS void
    AS 'MODULE_PATHNAME', 'enkash_assert_preloaded'
    LANGUAGE C STRICT;
SELECT enkash_assert_preloaded();
DROP FUNCTION enkash_assert_preloaded();

-- The extension's own tables and views live in schema "enkash".
CREATE SCHEMA enkash;
REVOKE ALL ON SCHEMA enkash FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Money
-- ---------------------------------------------------------------------------

CREATE FUNCTION enkash_load_balance(
    card_account_id text,
    enkash_card_id text,
    amount numeric,
    unique_reference_number text,
    description text DEFAULT NULL,
    remarks text DEFAULT NULL,
    created_by text DEFAULT CURRENT_USER,
    company_id text DEFAULT NULL,
    type text DEFAULT 'ALLOCATE_FUND',
    transaction_code text DEFAULT 'ALLOCATION')
RETURNS jsonb
AS 'MODULE_PATHNAME', 'enkash_endpoint_call'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION enkash_load_balance(text, text, numeric, text, text, text, text, text, text, text) IS
'Load Card Balance: moves amount (rupees, at most two decimals) from the card account to the card. unique_reference_number identifies the load. Returns EnKash''s payload; raises on refusal.';

-- ---------------------------------------------------------------------------
-- Look-ups
-- ---------------------------------------------------------------------------

CREATE FUNCTION enkash_get_card_account(
    card_account_id text,
    company_id text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'enkash_endpoint_call'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION enkash_get_card_account(text, text) IS
'Get Card Account Details: balances, limits and the primary card (masked) of a card account.';

-- ---------------------------------------------------------------------------
-- Administration
-- ---------------------------------------------------------------------------

CREATE FUNCTION enkash_token_calls() RETURNS bigint
    AS 'MODULE_PATHNAME', 'enkash_token_calls'
    LANGUAGE C VOLATILE STRICT;

COMMENT ON FUNCTION enkash_token_calls() IS
'Number of calls made to EnKash''s token endpoint since the server started (the token itself is never shown).';

-- ---------------------------------------------------------------------------
-- Privileges: nobody but the owner until granted (see README, "Privileges")
-- ---------------------------------------------------------------------------

REVOKE EXECUTE ON FUNCTION enkash_load_balance(text, text, numeric, text, text, text, text, text, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION enkash_get_card_account(text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION enkash_token_calls() FROM PUBLIC;
