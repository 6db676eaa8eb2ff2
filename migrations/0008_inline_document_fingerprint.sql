-- legacy_document_fingerprint (0004) without STRICT, same body and digests: PostgreSQL inlines a
-- SQL function into the calling query only when it is not STRICT or its body is strict in its
-- argument (ROW(...) of the row's fields is not), so as 0004 declared it, it is called one row
-- at a time. Inlined, the digest costs ~9 µs a row instead of ~14.5 in a scan of documents; the
-- ledger writes, the catch-up plan and --verify run it on every migrated document. Every caller
-- passes a document row, never NULL.
-- depends: 0004_legacy_migration_ledger 0007_legacy_kept_docstore

ALTER FUNCTION legacy_document_fingerprint(documents) CALLED ON NULL INPUT;
