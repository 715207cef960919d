--
-- A finance analyst loads an employee's card from SQL and sees the money
-- arrive, exactly once, at EnKash.
--
SELECT sandbox.reset();

SELECT enkash_load_balance(
    card_account_id => 'CASANDBOX1',
    enkash_card_id => 'EKCSANDBOX1',
    amount => 1250.50,
    unique_reference_number => 'PAY-2026-11-E001',
    description => 'November meal allowance');

-- EnKash credited that reference once, with the amount asked for.
SELECT * FROM sandbox.credits('PAY-2026-11-E001');

-- The card account shows the money moved from the account to its cards.
SELECT a->>'cardAccountId' AS card_account,
       (a->>'availableCardBalance')::numeric AS on_cards,
       (a->>'availableBalance')::numeric AS left_in_account,
       a->'primaryEnKashCard'->>'maskedNumber' AS primary_card
FROM enkash_get_card_account(card_account_id => 'CASANDBOX1') a;

-- Whole rupees and the defaults (created_by, company, type) work too.
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX2', 2000, 'PAY-2026-11-E002');
SELECT * FROM sandbox.credits('PAY-2026-11-E002');

-- Two loads, two API requests: nothing sent twice behind the analyst's back.
SELECT sandbox.api_requests('/balance') AS load_requests;
