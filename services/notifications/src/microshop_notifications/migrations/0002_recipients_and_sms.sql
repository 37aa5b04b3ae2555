-- Who the service writes to: a read model kept from user events (and filled by lookups at the users service),
-- so a message can be addressed without calling users while a consumer's transaction is open.
CREATE TABLE recipients (
  user_id TEXT PRIMARY KEY,
  email TEXT NOT NULL DEFAULT '',
  name TEXT NOT NULL DEFAULT '',
  -- E.164; SMS goes out only with a phone and the opt-in.
  phone TEXT,
  sms_order_updates INTEGER NOT NULL DEFAULT 0 CHECK (sms_order_updates IN (0, 1)),
  email_marketing INTEGER NOT NULL DEFAULT 0 CHECK (email_marketing IN (0, 1)),
  -- A deleted account is kept as an erased tombstone, so a late user.registered.v1 cannot bring it back.
  deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
  updated_at TEXT NOT NULL
);

-- 'marketing' mail carries List-Unsubscribe; transactional mail (orders, accounts) does not.
ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'transactional' CHECK (kind IN ('transactional', 'marketing'));
-- Times sending waited for the users service to name the recipient (an outage there is not the message's fault,
-- so these waits never count towards the attempts that make a message dead).
ALTER TABLE messages ADD COLUMN deferrals INTEGER NOT NULL DEFAULT 0 CHECK (deferrals >= 0);
CREATE INDEX messages_dead ON messages (created_at) WHERE status = 'dead';
