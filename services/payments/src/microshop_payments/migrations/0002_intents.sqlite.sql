-- Payment intents with Stripe-like states, partial refunds, and the customer's 3-D Secure / PayPal decision.
-- SQLite cannot change a CHECK constraint in place: payments and ledger_entries are rebuilt and copied.
-- Old states map to intent states: captured and refunded -> succeeded (refunded in full), declined and
-- voided -> canceled; decline_code becomes code.
CREATE TABLE payments_v2 (
  id TEXT PRIMARY KEY,
  order_id TEXT NOT NULL UNIQUE,
  user_id TEXT,
  payment_method_id TEXT REFERENCES payment_methods (id),
  amount BIGINT NOT NULL CHECK (amount >= 0),
  amount_refunded BIGINT NOT NULL DEFAULT 0 CHECK (amount_refunded >= 0 AND amount_refunded <= amount),
  currency TEXT,
  status TEXT NOT NULL
    CHECK (status IN ('processing', 'requires_action', 'requires_capture', 'succeeded', 'canceled')),
  authorization_id TEXT,
  code TEXT,
  decision TEXT CHECK (decision IS NULL OR decision IN ('approve', 'deny')),
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  CHECK (amount_refunded = 0 OR status = 'succeeded')
);
INSERT INTO payments_v2 (id, order_id, user_id, payment_method_id, amount, amount_refunded, currency, status,
                         authorization_id, code, created_at, updated_at)
SELECT id, order_id, user_id, payment_method_id, amount,
       CASE WHEN status = 'refunded' THEN amount ELSE 0 END,
       currency,
       CASE status WHEN 'captured' THEN 'succeeded' WHEN 'refunded' THEN 'succeeded'
                   WHEN 'declined' THEN 'canceled' WHEN 'voided' THEN 'canceled' ELSE status END,
       authorization_id, decline_code, created_at, updated_at
FROM payments;

-- One row per refund; a refund is 'pending' from when it is reserved against what is left to refund until
-- the provider confirmed it. key is unique per payment: "key:<Idempotency-Key>" or "cancel".
CREATE TABLE refunds (
  id TEXT PRIMARY KEY,
  payment_id TEXT NOT NULL REFERENCES payments_v2 (id),
  key TEXT NOT NULL,
  amount BIGINT NOT NULL CHECK (amount > 0),
  status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded')),
  created_at TEXT NOT NULL,
  UNIQUE (payment_id, key)
);
INSERT INTO refunds (id, payment_id, key, amount, status, created_at)
SELECT 'rf_' || id, payment_id, 'cancel', -amount, 'succeeded', created_at FROM ledger_entries WHERE kind = 'refund';

-- Money movements, signed: authorization +, void -, capture +, refund -. At most one authorization, void and
-- capture per payment; one row per refund.
CREATE TABLE ledger_v2 (
  id TEXT PRIMARY KEY,
  payment_id TEXT NOT NULL REFERENCES payments_v2 (id),
  kind TEXT NOT NULL CHECK (kind IN ('authorization', 'capture', 'refund', 'void')),
  amount BIGINT NOT NULL,
  currency TEXT NOT NULL,
  refund_id TEXT UNIQUE REFERENCES refunds (id),
  created_at TEXT NOT NULL,
  CHECK ((kind IN ('authorization', 'capture') AND amount > 0) OR (kind IN ('void', 'refund') AND amount < 0)),
  CHECK ((kind = 'refund') = (refund_id IS NOT NULL))
);
INSERT INTO ledger_v2 (id, payment_id, kind, amount, currency, refund_id, created_at)
SELECT id, payment_id, kind, amount, currency, CASE WHEN kind = 'refund' THEN 'rf_' || id END, created_at
FROM ledger_entries;

DROP TABLE ledger_entries;
DROP TABLE payments;
ALTER TABLE payments_v2 RENAME TO payments;
ALTER TABLE ledger_v2 RENAME TO ledger_entries;
CREATE UNIQUE INDEX ledger_one_per_kind ON ledger_entries (payment_id, kind) WHERE kind <> 'refund';
CREATE INDEX payments_status ON payments (status, updated_at);
CREATE INDEX refunds_payment ON refunds (payment_id, status);
