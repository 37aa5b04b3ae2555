-- Full-text search: a trigger-maintained tsvector (name weight A, category name B, description C) with a GIN
-- index, ranked with ts_rank in store.py. The 'simple' configuration (lower-case, no stemming, no stop words)
-- finds what SQLite's unicode61 tokenizer finds, so both dialects answer a query alike.
ALTER TABLE products ADD COLUMN search tsvector NOT NULL DEFAULT ''::tsvector;

CREATE FUNCTION products_search_vector() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.search :=
    setweight(to_tsvector('simple', NEW.name), 'A')
    || setweight(to_tsvector('simple', COALESCE((SELECT name FROM categories WHERE id = NEW.category_id), '')), 'B')
    || setweight(to_tsvector('simple', NEW.description), 'C');
  RETURN NEW;
END
$$;

CREATE TRIGGER products_search BEFORE INSERT OR UPDATE OF name, description, category_id ON products
FOR EACH ROW EXECUTE FUNCTION products_search_vector();

-- A renamed category re-indexes its products (the UPDATE fires the trigger above).
CREATE FUNCTION categories_search_refresh() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE products SET category_id = category_id WHERE category_id = NEW.id;
  RETURN NULL;
END
$$;

CREATE TRIGGER categories_search AFTER UPDATE OF name ON categories
FOR EACH ROW EXECUTE FUNCTION categories_search_refresh();

UPDATE products SET name = name;

CREATE INDEX products_search_idx ON products USING GIN (search);
