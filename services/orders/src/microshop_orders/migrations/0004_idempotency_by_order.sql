-- The confirming transaction stores the answer an order's Idempotency-Key replays, finding the key by its order:
-- without this index that is a walk over every key the customer ever used (the primary key leads with user_id),
-- a cost that grows with each order a customer places. One key makes one order, so the index is unique.
CREATE UNIQUE INDEX idempotency_keys_by_order ON idempotency_keys (order_id);
-- Finished keys are pruned after ORDERS_IDEMPOTENCY_TTL_HOURS (the prune loop deletes by age).
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at) WHERE state = 'done';
