//! Generic object storage: untyped JSON objects keyed by (group/resource, namespace, name), one
//! cluster-wide `resourceVersion` counter, a bounded change history for watches (a watch from a
//! version older than the history is answered with 410 Gone) and a broadcast of every change.

use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, watch};

/// How many changes the watch history keeps (older versions get 410 Gone).
pub const HISTORY: usize = 20_000;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// The watch event type string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change of one object, as watches see it.
#[derive(Debug, Clone)]
pub struct Change {
    /// `resource.group` (core resources have no group: `pods`).
    pub gr: String,
    /// Namespace ("" for cluster-scoped).
    pub ns: String,
    /// The event type.
    pub kind: EventType,
    /// The object after the change (for deletes: the last state, with a new resourceVersion).
    pub object: Arc<Value>,
    /// The resourceVersion of this change.
    pub rv: u64,
    /// The object before the change (for selector transitions).
    pub prev: Option<Arc<Value>>,
}

/// Key of an object in the store.
pub type Key = (String, String, String);

/// The store.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Change>>,
    /// The latest resourceVersion, published after every change (controllers wait on it).
    pub changed: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    objects: BTreeMap<Key, Arc<Value>>,
    rv: u64,
    history: VecDeque<Arc<Change>>,
    /// Watches from a version below this get 410 Gone.
    oldest: u64,
    uid_seq: u64,
}

/// A locked view of the store for a read-modify-write sequence.
pub struct Txn<'a> {
    store: &'a Store,
    g: MutexGuard<'a, Inner>,
    pending: Vec<Arc<Change>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(65_536);
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                ..Default::default()
            }),
            tx,
            changed: watch::Sender::new(1),
        }
    }

    /// Locks the store.
    pub fn txn(&self) -> Txn<'_> {
        Txn {
            store: self,
            g: self.inner.lock().unwrap_or_else(|p| p.into_inner()),
            pending: Vec::new(),
        }
    }

    /// One object.
    pub fn get(&self, gr: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.txn().get(gr, ns, name)
    }

    /// All objects of a resource (in namespace `ns`, or all when `None`) and the current version.
    pub fn list(&self, gr: &str, ns: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let t = self.txn();
        (t.list(gr, ns), t.g.rv)
    }

    /// The current resourceVersion.
    pub fn rv(&self) -> u64 {
        self.txn().g.rv
    }

    /// Forgets the watch history: a watch from any version issued so far now gets 410 Gone.
    pub fn compact(&self) {
        let mut t = self.txn();
        t.g.history.clear();
        t.g.rv += 1;
        t.g.oldest = t.g.rv;
    }

    /// Subscribes to changes after `from` (0: from now). Returns the history to replay and the
    /// live receiver, or `Err(oldest)` when `from` is older than the history.
    #[allow(clippy::type_complexity)]
    pub fn subscribe(
        &self,
        from: u64,
    ) -> Result<(Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>, u64), u64> {
        let t = self.txn();
        let rx = self.tx.subscribe();
        if from == 0 {
            return Ok((Vec::new(), rx, t.g.rv));
        }
        if from < t.g.oldest {
            return Err(t.g.oldest);
        }
        let replay =
            t.g.history
                .iter()
                .filter(|c| c.rv > from)
                .cloned()
                .collect();
        Ok((replay, rx, t.g.rv))
    }
}

impl Txn<'_> {
    /// One object.
    pub fn get(&self, gr: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.g
            .objects
            .get(&(gr.to_string(), ns.to_string(), name.to_string()))
            .cloned()
    }

    /// All objects of a resource (in `ns` or everywhere).
    pub fn list(&self, gr: &str, ns: Option<&str>) -> Vec<Arc<Value>> {
        let lo = (gr.to_string(), ns.unwrap_or("").to_string(), String::new());
        self.g
            .objects
            .range(lo..)
            .take_while(|((g, n, _), _)| g == gr && ns.is_none_or(|ns| n == ns))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The current resourceVersion.
    pub fn rv(&self) -> u64 {
        self.g.rv
    }

    /// A new unique uid; uids sort in creation order.
    pub fn new_uid(&mut self) -> String {
        self.g.uid_seq += 1;
        let n = self.g.uid_seq;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            n >> 16,
            n & 0xffff,
            (n >> 8) & 0xfff,
            n & 0xfff,
            0x5eed_0000_0000u64 | (n & 0xffff_ffff)
        )
    }

    /// Stores `obj` (new or replacing), stamping a new resourceVersion; returns the stored object.
    pub fn put(&mut self, gr: &str, ns: &str, name: &str, mut obj: Value) -> Arc<Value> {
        self.g.rv += 1;
        let rv = self.g.rv;
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let obj = Arc::new(obj);
        let key = (gr.to_string(), ns.to_string(), name.to_string());
        let prev = self.g.objects.insert(key, obj.clone());
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(gr, ns, kind, obj.clone(), rv, prev);
        obj
    }

    /// Removes an object; returns its last state.
    pub fn remove(&mut self, gr: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        let key = (gr.to_string(), ns.to_string(), name.to_string());
        let old = self.g.objects.remove(&key)?;
        self.g.rv += 1;
        let rv = self.g.rv;
        let mut last = (*old).clone();
        last["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let last = Arc::new(last);
        self.record(gr, ns, EventType::Deleted, last.clone(), rv, Some(old));
        Some(last)
    }

    fn record(
        &mut self,
        gr: &str,
        ns: &str,
        kind: EventType,
        object: Arc<Value>,
        rv: u64,
        prev: Option<Arc<Value>>,
    ) {
        let c = Arc::new(Change {
            gr: gr.to_string(),
            ns: ns.to_string(),
            kind,
            object,
            rv,
            prev,
        });
        if self.g.history.len() >= HISTORY
            && let Some(old) = self.g.history.pop_front()
        {
            self.g.oldest = old.rv;
        }
        self.g.history.push_back(c.clone());
        self.pending.push(c);
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        for c in self.pending.drain(..) {
            let _ = self.store.tx.send(c);
        }
        self.store.changed.send_replace(self.g.rv);
    }
}
