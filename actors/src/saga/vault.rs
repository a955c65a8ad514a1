//! Card numbers in flight, in memory only.

use std::collections::HashMap;

/// Card numbers in flight, by payment id. Never written anywhere: the saga
/// needs a number only to send the authorization right after the Pay call
/// that carried it; after a restart the status query finds the attempt by
/// its key.
#[derive(Default)]
pub struct CardVault {
    inner: std::sync::Mutex<HashMap<String, String>>,
}

impl CardVault {
    pub fn put(&self, payment_key: String, card: String) {
        self.inner.lock().expect("card vault").insert(payment_key, card);
    }
    pub fn get(&self, payment_key: &str) -> Option<String> {
        self.inner.lock().expect("card vault").get(payment_key).cloned()
    }
    pub fn forget(&self, payment_key: &str) {
        self.inner.lock().expect("card vault").remove(payment_key);
    }
}
