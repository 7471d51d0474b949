//! The register's domain: what a valid link is and what each command may change.
//!
//! ```text
//!   Command (caller, timestamp, raw inputs)
//!        │
//!        ▼
//!   rules::decide(view, command) ──reads──► RegisterView (store or MemoryRegister)
//!        │
//!        ▼
//!   Verdict = Decision { change, outcome } | DomainError
//! ```
//!
//! Plain Rust: no I/O, no clock, no storage, no network. Everything that depends on "now" takes
//! it as an argument (commands carry their timestamp), so applying a command is deterministic.

pub mod caller;
pub mod command;
pub mod country;
pub mod error;
pub mod foreign_key;
pub mod key_type;
pub mod link;
pub mod memory;
pub mod period;
pub mod query;
pub mod rules;
pub mod ssin;
pub mod view;

pub use caller::{Caller, CbeNumber, Organization, Role, Timestamp};
pub use command::{Action, Command, RequestContext};
pub use country::Country;
pub use error::{DomainError, Field};
pub use foreign_key::{ForeignKey, ForeignKeyValue, FormatRule};
pub use key_type::{KeyType, KeyTypeCode, Labels};
pub use link::{Link, LinkId};
pub use memory::MemoryRegister;
pub use period::ValidityPeriod;
pub use rules::{Change, Creations, Decision, Outcome, RowOutcome, Verdict, decide, precheck};
pub use ssin::{BirthDate, Sex, Ssin, SsinKind, SsinRule};
pub use view::RegisterView;
