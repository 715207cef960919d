-- The enkash demo: a payroll run loaded onto employees' prepaid cards.
\pset footer off
\echo
\echo '== 1. The extension, installed with one statement'
CREATE EXTENSION enkash;
\dx enkash

\echo
\echo '== 2. A payroll table whose rows load cards: the trigger queues a load per row'
CREATE TABLE payroll (
    run_id      text,
    employee    text,
    card_account_id text,
    enkash_card_id  text,
    allowance   numeric(12,2),
    PRIMARY KEY (run_id, employee)
);
CREATE TRIGGER load_cards AFTER INSERT ON payroll FOR EACH ROW
    EXECUTE FUNCTION enkash_load_balance_trigger('card_account_id', 'enkash_card_id',
                                                 'allowance', 'run_id', 'employee');

\echo
\echo '== 3. The card account before the run'
SELECT a->>'cardAccountId' AS card_account,
       (a->>'availableBalance')::numeric AS account_balance,
       (a->>'availableCardBalance')::numeric AS on_cards
FROM enkash_get_card_account('CASANDBOX1') a;

\echo
\echo '== 4. A payroll run that is rolled back sends nothing'
BEGIN;
INSERT INTO payroll VALUES ('2026-11', 'Asha', 'CASANDBOX1', 'EKCSANDBOX1', 9999.00);
ROLLBACK;
SELECT count(*) AS queued_requests FROM enkash.requests;

\echo
\echo '== 5. The real run commits; the enkash senders load the cards after COMMIT'
INSERT INTO payroll VALUES
    ('2026-11', 'Asha',   'CASANDBOX1', 'EKCSANDBOX1', 2500.00),
    ('2026-11', 'Vikram', 'CASANDBOX1', 'EKCSANDBOX2', 1875.50);
SELECT r.idempotency_key AS reference, w->>'state' AS state, w->'response' AS enkash_says
FROM enkash.requests r, LATERAL enkash_wait(r.id, '30 seconds') w ORDER BY r.id;

\echo
\echo '== 6. Re-running the same payroll rows loads nothing twice'
DELETE FROM payroll;
INSERT INTO payroll VALUES ('2026-11', 'Asha', 'CASANDBOX1', 'EKCSANDBOX1', 2500.00);
SELECT w->>'state' AS state FROM (SELECT max(id) AS id FROM enkash.requests) r,
       LATERAL enkash_wait(r.id, '30 seconds') w;
SELECT reference_number, state, amount FROM enkash.money_movements ORDER BY reference_number;

\echo
\echo '== 7. The card account after the run, and the transactions as rows'
SELECT a->>'cardAccountId' AS card_account,
       (a->>'availableBalance')::numeric AS account_balance,
       (a->>'availableCardBalance')::numeric AS on_cards
FROM enkash_get_card_account('CASANDBOX1') a;
SELECT card_id, reference_number, amount, cr_dr, txn_date
FROM enkash_transactions('CASANDBOX1') ORDER BY txn_date;

\echo
\echo '== 8. Every exchange with EnKash is in the audit log (bodies masked)'
SELECT endpoint, outcome, count(*) FROM enkash.audit_log GROUP BY 1, 2 ORDER BY 1, 2;

\echo
\echo '== 9. A mistake is stopped before anything is sent'
\set ON_ERROR_STOP off
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 99.999, 'PAYROLL-TYPO');
