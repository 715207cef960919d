-- pgbench script: one EnKash look-up per transaction.
SELECT enkash_get_card_account('CASANDBOX1');
