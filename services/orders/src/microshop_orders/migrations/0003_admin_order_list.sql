-- The admin's order list (every customer's orders, newest first, optionally in one status): without these, each
-- page sorts the whole orders table. The id breaks ties the way the list query does (created_at DESC, id).
CREATE INDEX orders_newest ON orders (created_at DESC, id);
CREATE INDEX orders_by_status ON orders (status, created_at DESC, id);
