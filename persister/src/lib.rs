//! The persister: the only writer of the database.
//!
//! It takes send commands and receipts from the bus's durable work queue in batches, checks
//! each against its conversation, stores the valid ones (the messages and the inbox rows they
//! move in one transaction, the receipts after them), and only then publishes the stored
//! messages and moved receipts (to the conversation's subject), the receipts also to their
//! user's subject, and the outcome of each command (to the subject of the gateway that sent
//! it). It also answers the read queries of the REST API and
//! of presence over request-reply. See `service` for the loops, `store` for the SQL, and
//! `known` for the receipts it answers without the database.

pub mod defaults;
pub mod entity;
mod known;
mod linger;
pub mod metrics;
mod queries;
mod retention;
mod service;
pub mod store;
mod trace;

pub use service::{Persister, PersisterConfig, PersisterError};
pub use store::{HistoryWindow, NewMessage, NewReceipt, Store, StoreError};
