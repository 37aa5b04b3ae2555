-- Carts: one per user; the unit price seen when a line was put in the cart, to show price changes.
CREATE TABLE cart_lines (
  user_id TEXT NOT NULL,
  sku TEXT NOT NULL,
  quantity INTEGER NOT NULL CHECK (quantity > 0),
  unit_price INTEGER NOT NULL CHECK (unit_price >= 0),
  currency TEXT NOT NULL,
  added_at TEXT NOT NULL,
  PRIMARY KEY (user_id, sku)
);

-- Orders with their checkout saga state (the step reached is persisted after every step).
CREATE TABLE orders (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'REJECTED', 'CANCELLED')),
  reason TEXT,
  saga_step TEXT NOT NULL,
  compensating INTEGER NOT NULL DEFAULT 0,
  lines TEXT NOT NULL,
  total INTEGER NOT NULL CHECK (total >= 0),
  currency TEXT NOT NULL,
  shipping_address TEXT NOT NULL,
  payment_method_id TEXT NOT NULL,
  payment_id TEXT,
  email TEXT,
  customer_name TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at TEXT NOT NULL,
  lease_owner TEXT,
  lease_until TEXT,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE INDEX orders_by_user ON orders (user_id, created_at);
CREATE INDEX orders_pending ON orders (next_attempt_at) WHERE status = 'PENDING';

-- The status timeline a customer sees.
CREATE TABLE order_timeline (
  order_id TEXT NOT NULL REFERENCES orders (id),
  at TEXT NOT NULL,
  status TEXT NOT NULL,
  note TEXT
);
CREATE INDEX order_timeline_by_order ON order_timeline (order_id, at);

-- Idempotency-Key per user: the first answer is stored and replayed.
CREATE TABLE idempotency_keys (
  user_id TEXT NOT NULL,
  key TEXT NOT NULL,
  request_hash TEXT NOT NULL,
  order_id TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('in_flight', 'done')),
  status_code INTEGER,
  response_body TEXT,
  created_at TEXT NOT NULL,
  PRIMARY KEY (user_id, key)
);
