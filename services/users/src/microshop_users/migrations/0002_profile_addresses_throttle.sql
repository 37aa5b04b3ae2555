-- Profile: an E.164 phone, notification preferences (JSON), and the time a deleted account was anonymised.
ALTER TABLE users ADD COLUMN phone TEXT;
ALTER TABLE users ADD COLUMN notification_preferences TEXT NOT NULL DEFAULT '{}';
ALTER TABLE users ADD COLUMN deleted_at TEXT;

-- Addresses of an account. The partial unique index allows at most one default per user; the handlers
-- keep exactly one whenever the user has any address (the first is the default, deleting it promotes one).
CREATE TABLE addresses (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  line1 TEXT NOT NULL,
  line2 TEXT,
  city TEXT NOT NULL,
  postal_code TEXT NOT NULL,
  country TEXT NOT NULL CHECK (length(country) = 2),
  phone TEXT,
  is_default INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE INDEX addresses_user ON addresses (user_id, created_at);
CREATE UNIQUE INDEX addresses_one_default ON addresses (user_id) WHERE is_default = 1;

-- Password checks per account key (SHA-256 of the normalised email, for unknown emails too): consecutive
-- failures and checks still running. A successful check deletes the row; rows whose failures are forgotten
-- (older than the lockout) and that have nothing running are pruned.
CREATE TABLE login_attempts (
  account_key TEXT PRIMARY KEY,
  failures INTEGER NOT NULL CHECK (failures >= 0),
  last_failure_at TEXT,
  pending INTEGER NOT NULL DEFAULT 0 CHECK (pending >= 0),
  pending_until TEXT
);
CREATE INDEX login_attempts_last_failure ON login_attempts (last_failure_at);
