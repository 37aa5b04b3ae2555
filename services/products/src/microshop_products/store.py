"""SQL of the products service: catalog reads and the inventory's single-statement stock changes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from microshop_kit.db import Database, Row, Tx
from microshop_products.domain import Line, ProductQuery, Reservation, ReservationStatus, Sort

_ORDER_BY = {
    Sort.NAME: "p.name, p.sku",
    Sort.PRICE: "p.price, p.name, p.sku",
    Sort.PRICE_DESC: "p.price DESC, p.name, p.sku",
    Sort.NEWEST: "p.created_at DESC, p.sku DESC",
}

_PRODUCT_COLUMNS = (
    "p.id, p.sku, p.name, p.description, p.price, p.currency, p.image_url, p.active, p.created_at, "
    "c.slug AS category, c.name AS category_name, COALESCE(s.on_hand, 0) AS available"
)
_PRODUCT_FROM = (
    "FROM products p JOIN categories c ON c.id = p.category_id "
    "LEFT JOIN categories pc ON pc.id = c.parent_id LEFT JOIN stock s ON s.sku = p.sku"
)


def placeholders(prefix: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """``:p0, :p1, ...`` and their parameters: an IN list written once for both dialects."""
    params = {f"{prefix}{i}": value for i, value in enumerate(values)}
    return ", ".join(f":{name}" for name in params), params


def _filters(query: ProductQuery) -> tuple[str, dict[str, Any]]:
    clauses: list[str] = ["p.active = 1"]
    params: dict[str, Any] = {}
    if query.category is not None:
        # A parent category lists its children's products too (Coffee lists Coffee beans).
        clauses.append("(c.slug = :category OR pc.slug = :category)")
        params["category"] = query.category
    if query.min_price is not None:
        clauses.append("p.price >= :min_price")
        params["min_price"] = query.min_price
    if query.max_price is not None:
        clauses.append("p.price <= :max_price")
        params["max_price"] = query.max_price
    if query.in_stock is not None:
        clauses.append("COALESCE(s.on_hand, 0) > 0" if query.in_stock else "COALESCE(s.on_hand, 0) = 0")
    return " AND ".join(clauses), params


# ------------------------------------------------------------------------------------ full-text search
# The only dialect-specific SQL of the service. Both sides get the same words (domain.search_terms: letters and
# digits only, at most 10), each a prefix ("espr" finds "Espresso"), all required; the text of the query is
# always a bound parameter, never part of the SQL.


@dataclass(frozen=True)
class Search:
    join: str
    where: str
    params: dict[str, Any]
    rank: str  # ORDER BY, best first


def sqlite_search(terms: Sequence[str]) -> Search:
    # FTS5 query syntax: a double-quoted string followed by * is a prefix token; terms hold no quotes.
    match = " ".join(f'"{term}"*' for term in terms)
    return Search(
        join="JOIN products_fts ON products_fts.rowid = p.rowid",
        where="products_fts MATCH :match",
        params={"match": match},
        # bm25 is lower for better matches; name weighs most, then category, then description.
        rank="bm25(products_fts, 10.0, 1.0, 3.0), p.name, p.sku",
    )


def postgresql_search(terms: Sequence[str]) -> Search:
    # tsquery syntax: term:* is a prefix; & requires every term. Terms are letters and digits only.
    tsquery = " & ".join(f"{term}:*" for term in terms)
    return Search(
        join="",
        where="p.search @@ to_tsquery('simple', :tsquery)",
        params={"tsquery": tsquery},
        rank="ts_rank(p.search, to_tsquery('simple', :tsquery)) DESC, p.name, p.sku",
    )


_SEARCH = {"sqlite": sqlite_search, "postgresql": postgresql_search}


class CatalogStore:
    """Reads of the catalog; they run outside transactions and see committed data."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_products(self, query: ProductQuery) -> tuple[list[Row], int]:
        where, params = _filters(query)
        source, order = _PRODUCT_FROM, _ORDER_BY.get(query.sort, _ORDER_BY[Sort.NAME])
        if query.q is not None:
            terms = query.terms
            if not terms:
                return [], 0  # nothing searchable in it (only symbols): nothing matches
            search = _SEARCH[self.db.dialect](terms)
            source = f"{source} {search.join}"
            where = f"{where} AND {search.where}"
            params.update(search.params)
            if query.sort is Sort.RELEVANCE:
                order = search.rank
        # One statement for the page and the total (an uncorrelated subquery, evaluated once; FTS5's ranking
        # function cannot share a query with a window count); only a page past the end needs a second.
        rows = await self.db.fetch(
            f"SELECT {_PRODUCT_COLUMNS}, (SELECT COUNT(*) {source} WHERE {where}) AS total_count {source} "
            f"WHERE {where} ORDER BY {order} LIMIT :limit OFFSET :offset",
            {**params, "limit": query.limit, "offset": query.offset},
        )
        if not rows:
            total = await self.db.fetchval(f"SELECT COUNT(*) {source} WHERE {where}", params)
            return [], int(total or 0)
        count = int(rows[0]["total_count"])
        return [{key: value for key, value in row.items() if key != "total_count"} for row in rows], count

    async def product(self, product_id: str) -> Row | None:
        rows = await self.db.fetch(f"SELECT {_PRODUCT_COLUMNS} {_PRODUCT_FROM} WHERE p.id = :id", {"id": product_id})
        return rows[0] if rows else None

    async def categories(self) -> list[Row]:
        return await self.db.fetch(
            "SELECT c.id, c.slug, c.name, pc.slug AS parent, "
            "(SELECT COUNT(*) FROM products p WHERE p.category_id = c.id AND p.active = 1) AS product_count "
            "FROM categories c LEFT JOIN categories pc ON pc.id = c.parent_id ORDER BY c.name"
        )

    async def by_skus(self, skus: Sequence[str]) -> list[Row]:
        marks, params = placeholders("sku", skus)
        return await self.db.fetch(
            f"SELECT id, sku, name, price, currency, active FROM products WHERE sku IN ({marks}) ORDER BY sku", params
        )

    async def on_hand(self, skus: Sequence[str]) -> dict[str, int]:
        marks, params = placeholders("sku", skus)
        rows = await self.db.fetch(f"SELECT sku, on_hand FROM stock WHERE sku IN ({marks})", params)
        return {row["sku"]: int(row["on_hand"]) for row in rows}


class CatalogAdminStore:
    """Writes of the catalog; each runs in the caller's transaction, next to its outbox event."""

    async def category_id(self, tx: Tx, slug: str) -> str | None:
        value = await tx.fetchval("SELECT id FROM categories WHERE slug = :slug", {"slug": slug})
        return None if value is None else str(value)

    async def insert_product(self, tx: Tx, values: dict[str, Any]) -> bool:
        """False when the SKU (or id) is taken."""
        row = await tx.fetchrow(
            "INSERT INTO products (id, sku, name, description, category_id, price, currency, image_url, active, "
            "created_at, updated_at) VALUES (:id, :sku, :name, :description, :category_id, :price, :currency, "
            ":image_url, :active, :now, :now) ON CONFLICT DO NOTHING RETURNING id",
            values,
        )
        return row is not None

    async def insert_stock(self, tx: Tx, sku: str, units: int, low_threshold: int) -> None:
        await tx.execute(
            "INSERT INTO stock (sku, on_hand, reserved, sold, received, low_threshold) "
            "VALUES (:sku, :units, 0, 0, :units, :low)",
            {"sku": sku, "units": units, "low": low_threshold},
        )

    async def locked_product(self, tx: Tx, product_id: str) -> Row | None:
        """The product's editable fields, its row locked until ``tx`` ends (SQLite: already serialised)."""
        return await tx.fetchrow(
            "SELECT p.id, p.sku, p.name, p.description, p.price, p.currency, p.image_url, p.active, "
            f"p.category_id FROM products p WHERE p.id = :id{tx.for_update}",
            {"id": product_id},
        )

    async def update_product(self, tx: Tx, product_id: str, changes: dict[str, Any], now: str) -> None:
        # Column names come from the fixed set below, never from the request; values are parameters.
        columns = [column for column in _UPDATABLE if column in changes]
        assignments = ", ".join(f"{column} = :{column}" for column in [*columns, "updated_at"])
        await tx.execute(
            f"UPDATE products SET {assignments} WHERE id = :id",
            {**{column: changes[column] for column in columns}, "updated_at": now, "id": product_id},
        )

    async def set_on_hand(self, tx: Tx, sku: str, units: int) -> Row | None:
        """Set the units on hand to ``units``: the difference counts as received (or written off), so
        on_hand + reserved + sold == received still holds; one statement. None: the SKU has no stock row."""
        return await tx.fetchrow(
            "UPDATE stock SET received = received + (:units - on_hand), on_hand = :units WHERE sku = :sku "
            "RETURNING sku, on_hand, reserved, sold, received, low_threshold",
            {"sku": sku, "units": units},
        )


_UPDATABLE = ("name", "description", "price", "category_id", "active", "image_url")


class InventoryStore:
    """Stock and reservations. Every stock change is one conditional UPDATE, safe under concurrency on both
    dialects without a read-then-write; the CHECK constraints are the last line of defence."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(self, tx: Tx, order_id: str, now: str, expires_at: str) -> bool:
        """Insert the order's reservation row; False when the order id exists (on PostgreSQL a concurrent
        claim of the same id waits here until the first one commits or rolls back)."""
        row = await tx.fetchrow(
            "INSERT INTO reservations (order_id, status, created_at, expires_at, updated_at) "
            "VALUES (:order_id, 'reserved', :now, :expires_at, :now) ON CONFLICT (order_id) DO NOTHING "
            "RETURNING order_id",
            {"order_id": order_id, "now": now, "expires_at": expires_at},
        )
        return row is not None

    async def tombstone(self, tx: Tx, order_id: str, now: str) -> bool:
        """Record an order as released without ever having been reserved; False when the id exists."""
        row = await tx.fetchrow(
            "INSERT INTO reservations (order_id, status, created_at, expires_at, updated_at) "
            "VALUES (:order_id, 'released', :now, :now, :now) ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
            {"order_id": order_id, "now": now},
        )
        return row is not None

    async def reservation(self, tx: Tx, order_id: str) -> Reservation | None:
        row = await tx.fetchrow(
            "SELECT order_id, status, expires_at FROM reservations WHERE order_id = :order_id",
            {"order_id": order_id},
        )
        if row is None:
            return None
        lines = await self.lines(tx, order_id)
        return Reservation(row["order_id"], ReservationStatus(row["status"]), row["expires_at"], lines)

    async def locked_status(self, tx: Tx, order_id: str) -> ReservationStatus | None:
        """The reservation's status, its row locked until ``tx`` ends (no-op on SQLite: already serialised)."""
        value = await tx.fetchval(
            f"SELECT status FROM reservations WHERE order_id = :id{tx.for_update}", {"id": order_id}
        )
        return None if value is None else ReservationStatus(value)

    async def lines(self, tx: Tx, order_id: str) -> tuple[Line, ...]:
        rows = await tx.fetch(
            "SELECT sku, quantity FROM reservation_lines WHERE order_id = :id ORDER BY sku", {"id": order_id}
        )
        return tuple(Line(row["sku"], int(row["quantity"])) for row in rows)

    async def add_lines(self, tx: Tx, order_id: str, lines: Sequence[Line]) -> None:
        for line in lines:
            await tx.execute(
                "INSERT INTO reservation_lines (order_id, sku, quantity) VALUES (:order_id, :sku, :quantity)",
                {"order_id": order_id, "sku": line.sku, "quantity": line.quantity},
            )

    async def take(self, tx: Tx, line: Line) -> Row | None:
        """Move units from on hand to reserved if enough are on hand; None when not (or no such SKU)."""
        return await tx.fetchrow(
            "UPDATE stock SET on_hand = on_hand - :q, reserved = reserved + :q WHERE sku = :sku AND on_hand >= :q "
            "RETURNING on_hand, low_threshold",
            {"sku": line.sku, "q": line.quantity},
        )

    async def sell(self, tx: Tx, line: Line) -> None:
        await self._move(tx, line, "reserved = reserved - :q, sold = sold + :q")

    async def put_back(self, tx: Tx, line: Line) -> None:
        await self._move(tx, line, "reserved = reserved - :q, on_hand = on_hand + :q")

    async def give_back(self, tx: Tx, line: Line) -> None:
        """Sold units of a returned order go back on hand."""
        await self._move(tx, line, "sold = sold - :q, on_hand = on_hand + :q", source="sold")

    async def _move(self, tx: Tx, line: Line, assignments: str, source: str = "reserved") -> None:
        changed = await tx.execute(
            f"UPDATE stock SET {assignments} WHERE sku = :sku AND {source} >= :q", {"sku": line.sku, "q": line.quantity}
        )
        if changed != 1:
            # Reserved (sold) units only ever leave through their own reservation: this means a broken invariant.
            raise RuntimeError(f"Stock of {line.sku} holds fewer {source} units than a reservation of {line.quantity}")

    async def mark_returned(self, tx: Tx, order_id: str, now: str) -> bool:
        """Move a committed reservation to 'returned'; False when it was not committed."""
        sql = "UPDATE reservations SET status = 'returned', updated_at = :now WHERE order_id = :id"
        return await tx.execute(f"{sql} AND status = 'committed'", {"now": now, "id": order_id}) == 1

    async def transition(
        self, tx: Tx, order_id: str, to: ReservationStatus, now: str, *, expired_before: str | None = None
    ) -> bool:
        """Move a reservation out of 'reserved' (the only status that holds stock); False when it was not there."""
        sql = "UPDATE reservations SET status = :to, updated_at = :now WHERE order_id = :id AND status = 'reserved'"
        params: dict[str, Any] = {"to": to.value, "now": now, "id": order_id}
        if expired_before is not None:
            sql += " AND expires_at < :before"
            params["before"] = expired_before
        return await tx.execute(sql, params) == 1

    async def expired(self, now: str, limit: int) -> list[str]:
        rows = await self.db.fetch(
            "SELECT order_id FROM reservations WHERE status = 'reserved' AND expires_at < :now "
            "ORDER BY expires_at LIMIT :limit",
            {"now": now, "limit": limit},
        )
        return [row["order_id"] for row in rows]
