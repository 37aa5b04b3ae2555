-- Orders that wait for the customer's payment step (3-D Secure, PayPal), cancellation, shipping and delivery.
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check CHECK (
  status IN ('PENDING', 'AWAITING_PAYMENT', 'CONFIRMED', 'REJECTED', 'CANCELLED', 'SHIPPED', 'DELIVERED')
);
ALTER TABLE orders ADD COLUMN next_action TEXT;
ALTER TABLE orders ADD COLUMN action_deadline TEXT;
ALTER TABLE orders ADD COLUMN payment_outcome TEXT;
ALTER TABLE orders ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN refunded INTEGER NOT NULL DEFAULT 0 CHECK (refunded >= 0);
ALTER TABLE orders ADD COLUMN carrier TEXT;
ALTER TABLE orders ADD COLUMN tracking_number TEXT;
DROP INDEX orders_pending;
CREATE INDEX orders_due ON orders (next_attempt_at)
  WHERE status IN ('PENDING', 'AWAITING_PAYMENT') OR cancel_requested = 1;
