-- Stored payment methods: a token, never a card number or CVC (PCI DSS 3.3.1, 3.4.1: at most the last 4).
-- provider_ref is the provider's reference to the card (the simulator keeps the test card's outcome class).
CREATE TABLE payment_methods (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  type TEXT NOT NULL CHECK (type IN ('card', 'paypal')),
  brand TEXT,
  last4 TEXT CHECK (last4 IS NULL OR length(last4) = 4),
  exp_month INTEGER CHECK (exp_month IS NULL OR exp_month BETWEEN 1 AND 12),
  exp_year INTEGER,
  email TEXT,
  provider_ref TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE INDEX payment_methods_user ON payment_methods (user_id);

-- One payment per order. A row with status 'canceled' and amount 0 is a tombstone: the order was
-- canceled before any charge, so a late charge for it is refused.
CREATE TABLE payments (
  id TEXT PRIMARY KEY,
  order_id TEXT NOT NULL UNIQUE,
  user_id TEXT,
  payment_method_id TEXT REFERENCES payment_methods (id),
  amount BIGINT NOT NULL CHECK (amount >= 0),
  currency TEXT,
  status TEXT NOT NULL CHECK (status IN ('requires_capture', 'captured', 'declined', 'voided', 'refunded', 'canceled')),
  authorization_id TEXT,
  decline_code TEXT,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);

-- Money movements, signed: authorization +, void -, capture +, refund -. At most one of each kind per
-- payment, so a repeated cancel can never refund twice.
CREATE TABLE ledger_entries (
  id TEXT PRIMARY KEY,
  payment_id TEXT NOT NULL REFERENCES payments (id),
  kind TEXT NOT NULL CHECK (kind IN ('authorization', 'capture', 'refund', 'void')),
  amount BIGINT NOT NULL,
  currency TEXT NOT NULL,
  created_at TEXT NOT NULL,
  UNIQUE (payment_id, kind)
);

-- Idempotency keys of mutations: the request's fingerprint and, once done, the answer to replay.
-- locked_at is the lease of an in-flight request; one older than the lease belongs to a request that died.
CREATE TABLE idempotency (
  key TEXT PRIMARY KEY,
  request_hash TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('in_flight', 'done')),
  status_code INTEGER,
  response_body TEXT,
  created_at TEXT NOT NULL,
  locked_at TEXT NOT NULL
);
CREATE INDEX idempotency_created ON idempotency (created_at);
