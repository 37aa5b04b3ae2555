-- Orders that wait for the customer's payment step (3-D Secure, PayPal), cancellation, shipping and delivery.
-- SQLite cannot change a CHECK constraint in place: the orders table is rebuilt, its timeline kept aside meanwhile
-- (the timeline's foreign key would refuse dropping the old orders table).
CREATE TABLE orders_v2 (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  status TEXT NOT NULL CHECK (
    status IN ('PENDING', 'AWAITING_PAYMENT', 'CONFIRMED', 'REJECTED', 'CANCELLED', 'SHIPPED', 'DELIVERED')
  ),
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
  updated_at TEXT NOT NULL,
  next_action TEXT,
  action_deadline TEXT,
  payment_outcome TEXT,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  refunded INTEGER NOT NULL DEFAULT 0 CHECK (refunded >= 0),
  carrier TEXT,
  tracking_number TEXT
);
INSERT INTO orders_v2 (
  id, user_id, status, reason, saga_step, compensating, lines, total, currency, shipping_address, payment_method_id,
  payment_id, email, customer_name, attempts, next_attempt_at, lease_owner, lease_until, created_at, updated_at
)
SELECT
  id, user_id, status, reason, saga_step, compensating, lines, total, currency, shipping_address, payment_method_id,
  payment_id, email, customer_name, attempts, next_attempt_at, lease_owner, lease_until, created_at, updated_at
FROM orders;
CREATE TABLE order_timeline_keep AS SELECT order_id, at, status, note FROM order_timeline;
DROP TABLE order_timeline;
DROP TABLE orders;
ALTER TABLE orders_v2 RENAME TO orders;
CREATE INDEX orders_by_user ON orders (user_id, created_at);
CREATE INDEX orders_due ON orders (next_attempt_at)
  WHERE status IN ('PENDING', 'AWAITING_PAYMENT') OR cancel_requested = 1;
CREATE TABLE order_timeline (
  order_id TEXT NOT NULL REFERENCES orders (id),
  at TEXT NOT NULL,
  status TEXT NOT NULL,
  note TEXT
);
INSERT INTO order_timeline (order_id, at, status, note) SELECT order_id, at, status, note FROM order_timeline_keep;
DROP TABLE order_timeline_keep;
CREATE INDEX order_timeline_by_order ON order_timeline (order_id, at);
