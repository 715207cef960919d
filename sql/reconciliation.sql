--
-- Reconciliation, as the README shows it: what enkash meant to load
-- (enkash.money_movements) against what EnKash credited
-- (enkash_transactions), joined on the reference number.
--
SELECT sandbox.reset();
SELECT count(enkash_load_balance('CASANDBOX1', 'EKCSANDBOX2', 10 * n, 'RECON-' || n)) AS loads
FROM generate_series(1, 3) n;
SELECT * FROM sandbox.try($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX2', 9000000, 'RECON-4')$$);

SELECT coalesce(m.reference_number, t.reference_number) AS reference,
       m.state, m.amount AS requested, t.amount AS credited,
       CASE WHEN m.state = 'succeeded' AND t.amount = m.amount THEN 'ok'
            WHEN t.transaction_id IS NULL AND m.state IN ('failed') THEN 'ok (declined)'
            ELSE 'CHECK' END AS verdict
FROM (SELECT * FROM enkash.money_movements WHERE card_account_id = 'CASANDBOX1'
      AND reference_number LIKE 'RECON-%') m
FULL JOIN (SELECT * FROM enkash_transactions('CASANDBOX1', card_transaction_type => 'CR')
           WHERE reference_number IS NOT NULL) t
       ON t.reference_number = m.reference_number
ORDER BY verdict DESC, reference;
