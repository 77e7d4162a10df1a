//! The schedule table (`schedule_schedule`), Celerity's own tables, the
//! connection pool and the transient-vs-fatal classification of database
//! errors.
//!
//! Not built yet: this crate is a placeholder so the workspace layout is in
//! place; its contents arrive with the `db` issue (see README, "Status").
