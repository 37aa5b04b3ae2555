-- Reservations may end 'returned' (sold, then given back). SQLite cannot alter a CHECK: rebuild the table.
CREATE TABLE reservations_new (
  order_id TEXT PRIMARY KEY,
  status TEXT NOT NULL CHECK (status IN ('reserved', 'committed', 'released', 'returned')),
  created_at TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
INSERT INTO reservations_new (order_id, status, created_at, expires_at, updated_at)
  SELECT order_id, status, created_at, expires_at, updated_at FROM reservations;
DROP INDEX reservations_expiry;
DROP TABLE reservations;
ALTER TABLE reservations_new RENAME TO reservations;
CREATE INDEX reservations_expiry ON reservations (status, expires_at);
