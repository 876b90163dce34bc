//! Generated code, kept apart from the code a reader came for. `table.rs` is written by
//! `scripts/gen-protobuf-table`; `scripts/gen-protobuf-table --check` (run by `scripts/test`)
//! fails when it no longer matches a fresh generation.

pub(crate) mod table;
