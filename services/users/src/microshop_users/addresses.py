"""Use cases of an account's address book: list, read, add, change, delete; exactly one default address."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime

from microshop_kit.db import Database, Tx
from microshop_users import domain
from microshop_users.domain import Address, AddressFields, AddressNotFound, InvalidInput, TooManyAddresses, UserNotFound
from microshop_users.handlers import utc_now
from microshop_users.store import UserStore


class AddressBook:
    """Every change locks the owner's row first, so a user's concurrent changes run one after the other
    (the cap and the single default hold on PostgreSQL too; a partial unique index backs the default)."""

    def __init__(self, db: Database, *, limit: int, clock: Callable[[], datetime] = utc_now) -> None:
        self.db = db
        self.store = UserStore(db)
        self.limit = limit
        self.clock = clock

    async def list(self, user_id: str) -> list[Address]:
        await self._live_owner_exists(user_id)
        return await self.store.addresses(user_id)

    async def get(self, user_id: str, address_id: str) -> Address:
        await self._live_owner_exists(user_id)
        address = await self.store.address(user_id, address_id)
        if address is None:
            raise AddressNotFound(address_id)
        return address

    async def add(self, user_id: str, fields: AddressFields, *, make_default: bool | None = None) -> Address:
        """Add an address; the first one is the default whatever ``make_default`` says."""
        fields = domain.normalise_address(fields)
        now = self.clock()
        async with self.db.transaction() as tx:
            await self._lock_owner(tx, user_id)
            count = await self.store.count_addresses(tx, user_id)
            if count >= self.limit:
                raise TooManyAddresses(self.limit)
            is_default = count == 0 or bool(make_default)
            if is_default:
                await self.store.clear_default(tx, user_id)
            address = Address(str(uuid.uuid4()), user_id, fields, is_default, now, now)
            await self.store.add_address(tx, address)
        return address

    async def change(
        self, user_id: str, address_id: str, changes: Mapping[str, str | None], *, make_default: bool | None = None
    ) -> Address:
        """Change some fields (None clears an optional one). ``make_default`` True moves the default here;
        False on the default itself is refused: another address must become the default instead."""
        async with self.db.transaction() as tx:
            current = await self._owned(tx, user_id, address_id)
            fields = domain.normalise_address(current.fields.merged(changes))
            if make_default is False and current.is_default:
                raise InvalidInput("is_default", "one address stays the default: make another one the default")
            if make_default and not current.is_default:
                await self.store.clear_default(tx, user_id)
            is_default = current.is_default or bool(make_default)
            address = replace(current, fields=fields, is_default=is_default, updated_at=self.clock())
            await self.store.save_address(tx, address)
        return address

    async def delete(self, user_id: str, address_id: str) -> None:
        """Delete an address; deleting the default makes the oldest remaining address the default."""
        async with self.db.transaction() as tx:
            current = await self._owned(tx, user_id, address_id)
            await self.store.delete_address(tx, user_id, address_id)
            if current.is_default:
                await self.store.promote_oldest(tx, user_id)

    async def _owned(self, tx: Tx, user_id: str, address_id: str) -> Address:
        await self._lock_owner(tx, user_id)
        address = await self.store.address_in(tx, user_id, address_id)
        if address is None:
            raise AddressNotFound(address_id)
        return address

    async def _lock_owner(self, tx: Tx, user_id: str) -> None:
        account = await self.store.account_in(tx, user_id, lock=True)
        if account is None or account.user.deleted:
            raise UserNotFound(user_id)

    async def _live_owner_exists(self, user_id: str) -> None:
        account = await self.store.by_id(user_id)
        if account is None or account.user.deleted:
            raise UserNotFound(user_id)
