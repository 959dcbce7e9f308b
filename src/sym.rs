//! Interned names (VMs, hosts, clusters, L2 networks, subnets, switches, interfaces).
//!
//! A `Sym` is a small integer that stands for a string for the life of the process, so
//! enriched flows and stored rows carry 4 bytes instead of a string. The table only
//! grows with distinct names (bounded by inventories and learned interface names), and
//! is shared by every stage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Sym(pub u32);

impl Sym {
    /// The absent name.
    pub const NONE: Sym = Sym(0);
    pub fn is_none(self) -> bool {
        self.0 == 0
    }
    pub fn is_some(self) -> bool {
        self.0 != 0
    }
}

#[derive(Default)]
struct Table {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32>,
}

fn table() -> &'static RwLock<Table> {
    static T: OnceLock<RwLock<Table>> = OnceLock::new();
    T.get_or_init(|| {
        RwLock::new(Table {
            names: vec![Arc::from("")],
            ids: HashMap::new(),
        })
    })
}

/// The symbol of `s` (created on first use). The empty string is `Sym::NONE`.
pub fn intern(s: &str) -> Sym {
    if s.is_empty() {
        return Sym::NONE;
    }
    if let Ok(t) = table().read()
        && let Some(&id) = t.ids.get(s)
    {
        return Sym(id);
    }
    let mut t = match table().write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if let Some(&id) = t.ids.get(s) {
        return Sym(id);
    }
    let id = t.names.len() as u32;
    let a: Arc<str> = Arc::from(s);
    t.names.push(a.clone());
    t.ids.insert(a, id);
    Sym(id)
}

/// The symbol of `s` if it was ever interned (no allocation).
pub fn lookup(s: &str) -> Option<Sym> {
    let t = table().read().ok()?;
    t.ids.get(s).map(|&id| Sym(id))
}

/// The string of a symbol ("" for `Sym::NONE` or an unknown id).
pub fn resolve(s: Sym) -> Arc<str> {
    match table().read() {
        Ok(t) => t
            .names
            .get(s.0 as usize)
            .cloned()
            .unwrap_or_else(|| Arc::from("")),
        Err(_) => Arc::from(""),
    }
}

/// The symbol of `vlan-N`, the L2 network name of a VLAN the inventory does not name.
/// IEEE 802.1Q ids (below 4096) are interned once and then read without locking or
/// formatting; other values are interned like any name.
pub fn vlan_name(vlan: u16) -> Sym {
    static CACHE: OnceLock<Vec<AtomicU32>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| (0..4096).map(|_| AtomicU32::new(0)).collect());
    let Some(slot) = cache.get(usize::from(vlan)) else {
        return intern(&format!("vlan-{vlan}"));
    };
    match slot.load(Ordering::Relaxed) {
        0 => {
            let s = intern(&format!("vlan-{vlan}"));
            slot.store(s.0, Ordering::Relaxed);
            s
        }
        id => Sym(id),
    }
}

/// Number of interned names.
pub fn count() -> usize {
    table().read().map(|t| t.names.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intern_round_trip() {
        let a = intern("web-01");
        assert_eq!(intern("web-01"), a);
        assert_ne!(intern("web-02"), a);
        assert_eq!(&*resolve(a), "web-01");
        assert_eq!(intern(""), Sym::NONE);
        assert_eq!(lookup("web-01"), Some(a));
        assert_eq!(lookup("never-seen-name-xyz"), None);
    }

    #[test]
    fn vlan_names_are_the_interned_strings() {
        for v in [1u16, 1105, 4095, 4096, u16::MAX] {
            let want = intern(&format!("vlan-{v}"));
            // first call fills the cache, the second reads it
            assert_eq!(vlan_name(v), want, "{v}");
            assert_eq!(vlan_name(v), want, "{v}");
            assert_eq!(&*resolve(vlan_name(v)), format!("vlan-{v}"));
        }
    }
}
