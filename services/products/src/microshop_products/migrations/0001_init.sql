-- Catalog: categories (a tree through parent_id) and products; prices in integer minor units.
CREATE TABLE categories (
  id TEXT PRIMARY KEY,
  slug TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  parent_id TEXT REFERENCES categories (id)
);

CREATE TABLE products (
  id TEXT PRIMARY KEY,
  sku TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '',
  category_id TEXT NOT NULL REFERENCES categories (id),
  price INTEGER NOT NULL CHECK (price >= 0),
  currency TEXT NOT NULL CHECK (length(currency) = 3),
  image_url TEXT NOT NULL,
  active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE INDEX products_category ON products (category_id);
CREATE INDEX products_price ON products (price);
CREATE INDEX products_created ON products (created_at);

-- Inventory per SKU. Every unit ever received is in exactly one bucket: on hand, reserved or sold.
CREATE TABLE stock (
  sku TEXT PRIMARY KEY REFERENCES products (sku),
  on_hand INTEGER NOT NULL CHECK (on_hand >= 0),
  reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
  sold INTEGER NOT NULL DEFAULT 0 CHECK (sold >= 0),
  received INTEGER NOT NULL,
  low_threshold INTEGER NOT NULL DEFAULT 5 CHECK (low_threshold >= 0),
  CONSTRAINT stock_conserved CHECK (on_hand + reserved + sold = received)
);

-- One reservation per order id; a release of an order never reserved leaves a 'released' tombstone.
CREATE TABLE reservations (
  order_id TEXT PRIMARY KEY,
  status TEXT NOT NULL CHECK (status IN ('reserved', 'committed', 'released')),
  created_at TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE INDEX reservations_expiry ON reservations (status, expires_at);

CREATE TABLE reservation_lines (
  order_id TEXT NOT NULL REFERENCES reservations (order_id),
  sku TEXT NOT NULL REFERENCES stock (sku),
  quantity INTEGER NOT NULL CHECK (quantity > 0),
  PRIMARY KEY (order_id, sku)
);
