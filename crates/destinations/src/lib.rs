//! Destinations: one module per app behind one interface (validate settings against the model,
//! test the connection, build ops from rows, deliver batches, classify answers), over the shared
//! delivery layer.

pub mod customerio;
pub mod delivery;
pub mod mapping;

use sallyport_sources::{Column, FingerprintSpec, Row};

pub use mapping::SettingProblem;

/// How an op travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// Packed with others into one batch request.
    Batch,
    /// Sent alone (Customer.io: an anonymous event through `POST /api/v1/events`).
    Single,
}

/// One row, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    /// The row's key (the person's identifier, the event's id).
    pub key: String,
    /// A fingerprint of exactly what is sent: a row whose fingerprint is unchanged is not resent.
    pub fingerprint: u64,
    /// The JSON body of the op.
    pub body: String,
    pub route: Route,
}

/// Why a row cannot be sent: the column at fault (if one is) and the rule it breaks.
#[derive(Debug, Clone, PartialEq)]
pub struct RowFailure {
    pub column: Option<String>,
    pub message: String,
}

impl RowFailure {
    pub fn column(column: &str, message: impl Into<String>) -> Self {
        Self {
            column: Some(column.to_string()),
            message: message.into(),
        }
    }

    pub fn row(message: impl Into<String>) -> Self {
        Self {
            column: None,
            message: message.into(),
        }
    }

    /// The reason as a user reads it: `row 42: column `bio`: ...`.
    pub fn reason(&self, key: &str) -> String {
        match &self.column {
            Some(c) => format!("row {key}: column `{c}`: {}", self.message),
            None => format!("row {key}: {}", self.message),
        }
    }
}

/// How rows of an object are compared with what was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangePolicy {
    /// Sent when the key is new or the fingerprint changed (upsert).
    Upsert,
    /// Sent once per key, ever (insert): a changed row is not sent again.
    InsertOnce,
}

/// Turns rows of one sync into ops.
pub trait ObjectMapper: Send + Sync {
    /// The column whose value keys each row.
    fn key_column(&self) -> &str;
    /// What "changed" means for this object.
    fn policy(&self) -> ChangePolicy;
    /// Builds the op for a row with a non-empty key, or says why the row cannot be sent.
    fn map(&self, key: &str, row: &Row) -> Result<Op, RowFailure>;
    /// The endpoint path an op of `route` goes to (for previews).
    fn endpoint(&self, route: Route) -> &'static str;
    /// What a warehouse-side fingerprint of a row must cover so that it changes exactly when the
    /// op would: `None` when the object does not compare payloads (insert-once).
    fn fingerprint_spec(&self) -> Option<FingerprintSpec> {
        None
    }
}

/// What an app answered for a batch: one result per op, in order.
pub type OpResults = Vec<Result<(), String>>;

/// Errors that stop a run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DestinationError {
    #[error("{0}")]
    Credentials(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Settings(String),
    /// The app gave no usable answer after every attempt (timeouts, 5xx, 429): the batch's
    /// rows were not delivered.
    #[error("{0}")]
    GaveUp(String),
}

/// A connected app.
pub enum Destination {
    CustomerIo(customerio::CustomerIo),
}

impl Destination {
    /// Builds the destination of an app connection (no request yet), paced on its own: for
    /// one-off requests such as a connection test.
    pub fn new(name: &str, app: &sallyport_config::App) -> Destination {
        Self::paced(name, app, &delivery::Pacing::default())
    }

    /// Builds the destination of an app connection whose requests share the app's pace in
    /// `pacing` with every other run sending to it.
    pub fn paced(
        name: &str,
        app: &sallyport_config::App,
        pacing: &delivery::Pacing,
    ) -> Destination {
        match app {
            sallyport_config::App::Customerio(c) => Destination::CustomerIo(
                customerio::CustomerIo::new(name, c, pacing.pace(name, &c.delivery)),
            ),
        }
    }

    /// Checks the credentials (and learns the region where asked to); a line for the user.
    pub async fn check(&mut self) -> Result<String, DestinationError> {
        match self {
            Destination::CustomerIo(c) => c.check().await,
        }
    }

    /// The mapper of a sync, validated against the model's columns.
    pub fn mapper(
        &self,
        sync_name: &str,
        sync: &sallyport_config::Sync,
        columns: &[Column],
    ) -> Result<Box<dyn ObjectMapper>, Vec<SettingProblem>> {
        match self {
            Destination::CustomerIo(_) => customerio::mapper(sync_name, sync, columns),
        }
    }

    /// Delivers ops of one route: a batch, or a single op.
    pub async fn deliver(&self, route: Route, ops: &[&Op]) -> Result<OpResults, DestinationError> {
        match self {
            Destination::CustomerIo(c) => c.deliver(route, ops).await,
        }
    }

    /// The largest batch request, in bytes.
    pub fn batch_bytes(&self) -> usize {
        match self {
            Destination::CustomerIo(c) => c.sender().settings().batch_bytes,
        }
    }

    /// Batches in a row the app may give up on before a run stops as failed.
    pub fn stop_after_failed_batches(&self) -> u32 {
        match self {
            Destination::CustomerIo(c) => c.sender().settings().stop_after_failed_batches.max(1),
        }
    }

    /// Requests in flight at once.
    pub fn concurrency(&self) -> usize {
        match self {
            Destination::CustomerIo(c) => c.sender().settings().concurrency,
        }
    }

    /// Request and retry counters.
    pub fn stats(&self) -> &delivery::DeliveryStats {
        match self {
            Destination::CustomerIo(c) => &c.sender().stats,
        }
    }

    /// Bytes a batch of `ops` bodies takes, given the ops' own sizes.
    pub fn batch_overhead(&self) -> (usize, usize) {
        match self {
            Destination::CustomerIo(_) => customerio::BATCH_OVERHEAD,
        }
    }
}
