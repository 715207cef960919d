--
-- A card's life, as an operator would walk it from SQL: create an account,
-- create a card, set its controls, load it, list its transactions, block it,
-- and see the next load refused.
--
SELECT sandbox.reset();

SELECT enkash_create_card_account(
    company_name => 'Sandbox Traders Pvt Ltd',
    plan_master_id => 'PMSANDBOX1',
    account_title => 'Meal cards 2026',
    account_type => 'MEAL',
    email => 'finance@sandboxtraders.example',
    mobile => '9876543210',
    idempotency_key => 'LIFE-ACCOUNT')->>'cardAccountId' AS account \gset
SELECT :'account' LIKE 'CA%' AS account_created;

SELECT enkash_create_prepaid_card(
    card_account_id => :'account',
    first_name => 'Meera', last_name => 'Nair',
    email => 'meera.nair@sandboxtraders.example', mobile => '9876500011',
    gender => 'FEMALE', city => 'Kochi', pincode => '682001',
    pan_number => 'ABCDE1234F', special_date => '1991-08-15',
    primary_enkash_card => true,
    idempotency_key => 'LIFE-CARD') AS card \gset
SELECT (:'card'::jsonb)->'cardStatus'->>'label' AS status,
       (:'card'::jsonb)->>'maskedNumber' ~ '^652150X{6}[0-9]{4}$' AS masked_number_only;
SELECT (:'card'::jsonb)->>'enKashCardId' AS card_id \gset

SELECT enkash_set_card_controls(:'account', ARRAY[:'card_id'],
                                atm_allowed => false, international_allowed => false,
                                per_txn_limit => 2000, dtd => 5000, dtd_count => 10);
SELECT c->>'perTxnLimit' AS per_txn_limit, c->>'dtd' AS dtd, c->>'dtdCount' AS dtd_count,
       c->>'atmAllowed' AS atm_allowed
FROM enkash_get_card_controls(:'account', :'card_id') c;

SELECT enkash_load_balance(:'account', :'card_id', 1500, 'LIFE-1', description => 'Welcome load');
SELECT enkash_load_balance(:'account', :'card_id', 499.50, 'LIFE-2');
SELECT (enkash_get_card(:'account', :'card_id'))->'data'->0->>'otbBalance' AS card_balance;

-- The transactions, as rows an analyst can sum.
SELECT cr_dr, count(*), sum(amount) AS total
FROM enkash_transactions(:'account', enkash_card_id => :'card_id')
GROUP BY cr_dr;
SELECT reference_number, amount, balance_after, transaction_type, description
FROM enkash_transactions(:'account') ORDER BY txn_date, transaction_id;

-- One looked up by the reference number sent on load, on its card: EnKash
-- answers a list, {recordsCount, data}.
SELECT t->>'recordsCount' AS records, t#>>'{data,0,pgReferenceNumber}' AS reference,
       t#>>'{data,0,principalAmount}' AS amount
FROM enkash_get_transaction(:'account', 'LIFE-2', :'card_id') t;

-- Blocked for good: BL must be said, never defaulted.
SELECT * FROM sandbox.try(format($$SELECT enkash_block_card(%L, %L)$$, :'account', :'card_id'));
SELECT enkash_block_card(:'account', :'card_id', block_code => 'BL', reason => 'Employee left');
SELECT (enkash_get_card(:'account', :'card_id'))->'data'->0->'cardStatus'->>'label' AS status;

-- A blocked card refuses loads, and EnKash credits nothing.
SELECT * FROM sandbox.try(format($$SELECT enkash_load_balance(%L, %L, 100, 'LIFE-3')$$, :'account', :'card_id'));
SELECT * FROM sandbox.credits('LIFE-3');
SELECT reference, count, amount FROM jsonb_to_recordset(sandbox.call('GET', '/__sandbox/ledger')->'credits')
    AS c(reference text, count int, amount numeric) ORDER BY reference;
