# Generated from docstore/repositories/users_async.py by tools/async_to_sync.py:
# edit that file, then run the script (CI fails when this file is stale).
"""`UserRepo`: users and their API keys (`store.users`)."""

from __future__ import annotations

from docstore.errors import NotFound
from docstore.models import (
    UserCreate,
    UserListResponse,
    UserResponse,
    UserUpdate,
    UserWithApiKey,
    UserWithDocuments,
)
from docstore.postgres.executor import Connection, Database
from docstore.repositories.api_keys import api_key_digest, is_well_formed, new_api_key
from docstore.repositories.changes import DocumentChanges
from docstore.repositories.pagination import UserPageCursor, decode_cursor, keyset_page
from docstore.rules import MAX_PAGE_SIZE, Checker, Email, RowId, checked_limit, parse_input

_user_id: Checker[int] = Checker(RowId, "user_id")
_email: Checker[str] = Checker(Email, "email")
# Documents deleted per statement when a user is deleted (all in one transaction).
DELETE_BATCH_SIZE = 1000


class UserRepo:
    """Create, authenticate, change and list users.

    Every method takes an optional `conn` to run inside the caller's transaction.
    """

    def __init__(self, db: Database, changes: DocumentChanges | None = None) -> None:
        self.db = db
        self.changes = changes or DocumentChanges()

    def create(self, data: UserCreate, conn: Connection | None = None) -> UserWithApiKey:
        """Create a user and its first API key, returned this once (`Conflict` on a taken email)."""
        user = parse_input(UserCreate, data)
        api_key = new_api_key()
        row = self.db.one(
            "insert_user",
            {"email": user.email, "api_key_hash": api_key_digest(api_key)},
            UserResponse,
            conn,
        )
        assert row is not None  # INSERT ... RETURNING always returns the row
        return UserWithApiKey(user=row, api_key=api_key)

    def authenticate(self, api_key: str, conn: Connection | None = None) -> UserResponse | None:
        """The key's user, or None for a malformed, unknown or revoked key.

        A malformed key is refused without a query. Otherwise one statement: an indexed
        lookup that also records the key's use, at most once a minute (so it needs a connection
        that may write, not a read-only replica). The returned `api_key_last_used_at` is this
        use when it was recorded, else the time stored before the call.
        """
        if not is_well_formed(api_key):
            return None
        params = {"api_key_hash": api_key_digest(api_key)}
        return self.db.one("authenticate_user", params, UserResponse, conn)

    def rotate_api_key(self, user_id: int, conn: Connection | None = None) -> UserWithApiKey:
        """Give the user a new key (returned this once); the old one stops working at once."""
        api_key = new_api_key()
        user = self._set_key_digest(user_id, api_key_digest(api_key), conn)
        return UserWithApiKey(user=user, api_key=api_key)

    def revoke_api_key(self, user_id: int, conn: Connection | None = None) -> UserResponse:
        """Remove the user's key: nothing authenticates as this user until `rotate_api_key`."""
        return self._set_key_digest(user_id, None, conn)

    def _set_key_digest(
        self, user_id: int, digest: bytes | None, conn: Connection | None
    ) -> UserResponse:
        params = {"user_id": _user_id(user_id), "api_key_hash": digest}
        user = self.db.one("set_user_api_key_hash", params, UserResponse, conn)
        if user is None:
            raise NotFound(f"user {user_id} does not exist")
        return user

    def get(self, user_id: int, conn: Connection | None = None) -> UserResponse:
        """The user with this id (`NotFound` otherwise)."""
        user = self.db.one("get_user", {"user_id": _user_id(user_id)}, UserResponse, conn)
        if user is None:
            raise NotFound(f"user {user_id} does not exist")
        return user

    def get_by_email(self, email: str, conn: Connection | None = None) -> UserResponse | None:
        """The user with this email whatever its case, or None."""
        return self.db.one("get_user_by_email", {"email": _email(email)}, UserResponse, conn)

    def update(
        self, user_id: int, changes: UserUpdate, conn: Connection | None = None
    ) -> UserResponse:
        """Apply `changes` (fields left None stay); `NotFound`, or `Conflict` on a taken email."""
        update = parse_input(UserUpdate, changes)
        params = {"user_id": _user_id(user_id), "email": update.email}
        user = self.db.one("update_user", params, UserResponse, conn)
        if user is None:
            raise NotFound(f"user {user_id} does not exist")
        return user

    def delete(self, user_id: int, conn: Connection | None = None) -> list[int]:
        """Delete the user and all its documents, in one transaction (`NotFound` if absent).

        The documents' blobs go on the list of blobs to delete (`store.purge_deleted_blobs`);
        returns the ids of the deleted documents. The user row is locked first, so a document
        added meanwhile waits and then fails (a transaction that holds one of the user's
        documents and then adds one for the user can deadlock with it: PostgreSQL ends one).
        """
        params = {"user_id": _user_id(user_id)}
        removed: list[int] = []
        with self.db.transaction(conn) as c:
            # First, so no document of the user commits between its last batch and the end
            # (the cascade would take it without listing its blob or dropping its cache).
            if self.db.value("lock_user", params, c) is None:
                raise NotFound(f"user {user_id} does not exist")
            while True:
                batch = {**params, "limit": DELETE_BATCH_SIZE}
                rows = self.db.all("delete_user_documents", batch, conn=c)
                removed.extend(row[0] for row in rows)
                if len(rows) < DELETE_BATCH_SIZE:
                    break
            if not self.db.execute("delete_user", params, c):
                raise NotFound(f"user {user_id} does not exist")
            self.changes.changed(removed, c)
        return removed

    def get_with_documents(
        self, user_id: int, documents_limit: int = 100, conn: Connection | None = None
    ) -> UserWithDocuments:
        """The user and its newest `documents_limit` documents (without text), in one query."""
        params = {
            "user_id": _user_id(user_id),
            "documents_limit": checked_limit(documents_limit, 1000),
        }
        user = self.db.one("get_user_with_documents", params, UserWithDocuments, conn)
        if user is None and conn is None and self.db.replica is not None:
            # A replica may not have the user yet: absent means absent on the primary.
            with self.db.consistency("primary"):
                user = self.db.one("get_user_with_documents", params, UserWithDocuments)
        if user is None:
            raise NotFound(f"user {user_id} does not exist")
        return user

    def list(
        self, limit: int = 50, cursor: str | None = None, conn: Connection | None = None
    ) -> UserListResponse:
        """One page of users in id order; pass `next_cursor` back for the next page."""
        after_id = 0 if cursor is None else decode_cursor(cursor, UserPageCursor).id
        page_size = checked_limit(limit, MAX_PAGE_SIZE)
        params = {"after_id": after_id, "limit": page_size + 1}
        rows = self.db.all("list_users", params, UserResponse, conn)
        items, next_cursor = keyset_page(rows, page_size, lambda last: UserPageCursor(id=last.id))
        return UserListResponse(items=items, next_cursor=next_cursor)


__all__ = ["UserRepo"]
