-- Messages to send, one per (event, channel): recorded in the consumer's inbox transaction, so a duplicated
-- event can never make a second message; the sender loop delivers them and records the outcome here.
CREATE TABLE messages (
  id TEXT PRIMARY KEY,
  event_id TEXT NOT NULL,
  event_type TEXT NOT NULL,
  channel TEXT NOT NULL CHECK (channel IN ('email', 'sms')),
  recipient TEXT NOT NULL,
  user_id TEXT,
  subject TEXT NOT NULL,
  text_body TEXT NOT NULL,
  html_body TEXT,
  -- Fixed when recorded, so a resend after a crash carries the same Message-ID (mail clients dedupe on it).
  message_id TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'dead')),
  attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  next_attempt_at TEXT NOT NULL,
  last_error TEXT,
  created_at TEXT NOT NULL,
  sent_at TEXT,
  UNIQUE (event_id, channel)
);
CREATE INDEX messages_due ON messages (next_attempt_at) WHERE status IN ('pending', 'failed');
CREATE INDEX messages_by_user ON messages (user_id, created_at);
CREATE INDEX messages_by_time ON messages (created_at);
