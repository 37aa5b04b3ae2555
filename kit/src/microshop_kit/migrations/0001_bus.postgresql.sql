-- Transactional outbox: event rows committed with the state change, published by the relay.
CREATE TABLE outbox (
  seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  type TEXT NOT NULL,
  payload TEXT NOT NULL,
  created_at TEXT NOT NULL,
  sent_at TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT
);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;

-- Inbox: one row per (consumer, event) handled; written in the same transaction as the handler effects.
CREATE TABLE inbox (
  consumer TEXT NOT NULL,
  event_id TEXT NOT NULL,
  type TEXT NOT NULL,
  handled_at TEXT NOT NULL,
  PRIMARY KEY (consumer, event_id)
);

-- Events a consumer gave up on after the bounded number of deliveries (never a silent ack).
CREATE TABLE bus_dead_letters (
  consumer TEXT NOT NULL,
  event_id TEXT NOT NULL,
  type TEXT NOT NULL,
  payload TEXT NOT NULL,
  error TEXT NOT NULL,
  deliveries INTEGER NOT NULL,
  created_at TEXT NOT NULL,
  PRIMARY KEY (consumer, event_id)
);
