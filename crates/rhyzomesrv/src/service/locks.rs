//! One async mutex per instance name, so that operations on the same instance (a request and
//! the reconciler, or two requests) run one after the other while different instances proceed
//! in parallel. Entries nobody holds are dropped on the next acquisition, so the map stays as
//! small as the number of instances being worked on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedMutexGuard;

#[derive(Default)]
pub struct NameLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl NameLocks {
    pub async fn lock(&self, name: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, l| Arc::strong_count(l) > 1);
            map.entry(name.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn same_name_serialises_other_names_do_not() {
        let locks = Arc::new(NameLocks::default());
        let a = locks.lock("a").await;
        // A different name is free.
        let _b = tokio::time::timeout(Duration::from_millis(100), locks.lock("b"))
            .await
            .expect("other names are not blocked");
        // The same name waits until the holder lets go.
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move { l2.lock("a").await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(a);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("released lock is acquired")
            .unwrap();
    }
}
