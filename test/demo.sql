-- The enkash demo: a small payroll run loaded onto employees' prepaid cards.
\pset footer off
\echo
\echo '== 1. The extension, installed with one statement'
CREATE EXTENSION enkash;
\dx enkash

\echo
\echo '== 2. A payroll table, as a finance team keeps it'
CREATE TABLE payroll (
    run_id      text,
    employee    text,
    card_account_id text,
    enkash_card_id  text,
    allowance   numeric(12,2),
    PRIMARY KEY (run_id, employee)
);
INSERT INTO payroll VALUES
    ('2026-11', 'Asha Rao',    'CASANDBOX1', 'EKCSANDBOX1', 2500.00),
    ('2026-11', 'Vikram Iyer', 'CASANDBOX1', 'EKCSANDBOX2', 1875.50);
TABLE payroll;

\echo
\echo '== 3. The card account before the run'
SELECT a->>'cardAccountId' AS card_account,
       (a->>'availableBalance')::numeric AS account_balance,
       (a->>'availableCardBalance')::numeric AS on_cards
FROM enkash_get_card_account('CASANDBOX1') a;

\echo
\echo '== 4. Load every employee''s allowance (reference = run + employee)'
SELECT employee, allowance,
       enkash_load_balance(card_account_id => card_account_id,
                           enkash_card_id => enkash_card_id,
                           amount => allowance,
                           unique_reference_number => 'PAYROLL-' || run_id || '-' || enkash_card_id,
                           description => 'Allowance ' || run_id) AS enkash_says
FROM payroll ORDER BY employee;

\echo
\echo '== 5. The card account after the run'
SELECT a->>'cardAccountId' AS card_account,
       (a->>'availableBalance')::numeric AS account_balance,
       (a->>'availableCardBalance')::numeric AS on_cards
FROM enkash_get_card_account('CASANDBOX1') a;

\echo
\echo '== 6. A mistake is stopped before anything is sent'
\set ON_ERROR_STOP off
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 99.999, 'PAYROLL-TYPO');
