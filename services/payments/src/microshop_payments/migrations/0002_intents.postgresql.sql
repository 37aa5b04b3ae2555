-- Payment intents with Stripe-like states, partial refunds, and the customer's 3-D Secure / PayPal decision.
-- Old states map to intent states: captured and refunded -> succeeded (refunded in full), declined and
-- voided -> canceled; decline_code becomes code.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments RENAME COLUMN decline_code TO code;
ALTER TABLE payments ADD COLUMN amount_refunded BIGINT NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN decision TEXT CHECK (decision IS NULL OR decision IN ('approve', 'deny'));
UPDATE payments SET amount_refunded = amount WHERE status = 'refunded';
UPDATE payments SET status = CASE status WHEN 'captured' THEN 'succeeded' WHEN 'refunded' THEN 'succeeded'
                                         WHEN 'declined' THEN 'canceled' WHEN 'voided' THEN 'canceled'
                                         ELSE status END;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
  CHECK (status IN ('processing', 'requires_action', 'requires_capture', 'succeeded', 'canceled'));
ALTER TABLE payments ADD CONSTRAINT payments_amount_refunded_check
  CHECK (amount_refunded >= 0 AND amount_refunded <= amount);
ALTER TABLE payments ADD CONSTRAINT payments_refunded_only_succeeded_check
  CHECK (amount_refunded = 0 OR status = 'succeeded');

-- One row per refund; a refund is 'pending' from when it is reserved against what is left to refund until
-- the provider confirmed it. key is unique per payment: "key:<Idempotency-Key>" or "cancel".
CREATE TABLE refunds (
  id TEXT PRIMARY KEY,
  payment_id TEXT NOT NULL REFERENCES payments (id),
  key TEXT NOT NULL,
  amount BIGINT NOT NULL CHECK (amount > 0),
  status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded')),
  created_at TEXT NOT NULL,
  UNIQUE (payment_id, key)
);
INSERT INTO refunds (id, payment_id, key, amount, status, created_at)
SELECT 'rf_' || id, payment_id, 'cancel', -amount, 'succeeded', created_at FROM ledger_entries WHERE kind = 'refund';

-- At most one authorization, void and capture per payment; one ledger row per refund.
ALTER TABLE ledger_entries ADD COLUMN refund_id TEXT UNIQUE REFERENCES refunds (id);
UPDATE ledger_entries SET refund_id = 'rf_' || id WHERE kind = 'refund';
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_payment_id_kind_key;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_sign_check
  CHECK ((kind IN ('authorization', 'capture') AND amount > 0) OR (kind IN ('void', 'refund') AND amount < 0));
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_refund_id_check
  CHECK ((kind = 'refund') = (refund_id IS NOT NULL));
CREATE UNIQUE INDEX ledger_one_per_kind ON ledger_entries (payment_id, kind) WHERE kind <> 'refund';
CREATE INDEX payments_status ON payments (status, updated_at);
CREATE INDEX refunds_payment ON refunds (payment_id, status);
