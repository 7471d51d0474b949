//! openraft's storage conformance suite against our log store and state machine.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

use super::{LogStore, StateMachine, StorageError, TypeConfig};
use crate::store::Store;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Arc::new(Store::open(&dir.path().join("db")).expect("store opens"));
        let sm = StateMachine::open(store.clone(), &dir.path().join("snapshots"))
            .expect("state machine opens");
        Ok((dir, LogStore::new(store), sm))
    }
}

#[test]
fn passes_openraft_storage_suite() {
    Suite::test_all(Builder).expect("storage conformance");
}
