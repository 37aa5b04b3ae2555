-- Full-text search over name, description and category name (FTS5, bm25 ranking in store.py). The index keeps
-- its own copy of the text under the product's rowid (the category name lives in another table, so an
-- external-content table over `products` cannot hold it); triggers keep it in step with both tables.
-- Diacritics are kept (remove_diacritics 0) so SQLite finds what PostgreSQL's 'simple' configuration finds.
CREATE VIRTUAL TABLE products_fts USING fts5(
  name, description, category, tokenize = 'unicode61 remove_diacritics 0', prefix = '2 3'
);

INSERT INTO products_fts (rowid, name, description, category)
SELECT p.rowid, p.name, p.description, c.name FROM products p JOIN categories c ON c.id = p.category_id;

CREATE TRIGGER products_fts_insert AFTER INSERT ON products BEGIN
  INSERT INTO products_fts (rowid, name, description, category)
  VALUES (new.rowid, new.name, new.description, (SELECT name FROM categories WHERE id = new.category_id));
END;

CREATE TRIGGER products_fts_update AFTER UPDATE OF name, description, category_id ON products BEGIN
  UPDATE products_fts SET name = new.name, description = new.description,
    category = (SELECT name FROM categories WHERE id = new.category_id)
  WHERE rowid = new.rowid;
END;

CREATE TRIGGER products_fts_delete AFTER DELETE ON products BEGIN
  DELETE FROM products_fts WHERE rowid = old.rowid;
END;

CREATE TRIGGER products_fts_category AFTER UPDATE OF name ON categories BEGIN
  UPDATE products_fts SET category = new.name
  WHERE rowid IN (SELECT rowid FROM products WHERE category_id = new.id);
END;
