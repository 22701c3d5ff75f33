//! A node's labels as the fleet keeps them: the pairs sorted by key in one
//! allocation. A `BTreeMap` of two labels allocates a leaf of room for
//! eleven (about 550 bytes); kept for every node, that was about 45 MiB at
//! 100,000 nodes with the two labels a rack's nodes carry.

use std::collections::BTreeMap;

/// Labels, sorted by key, keys unique (made from a map).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(Box<[(String, String)]>);

impl Labels {
    /// The value of label `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&String> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// The labels as a map (for answers and the store).
    #[must_use]
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0.iter().cloned().collect()
    }

    /// The labels as a map, taken.
    #[must_use]
    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0.into_vec().into_iter().collect()
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Self {
        // A map iterates in key order: the slice is sorted.
        Self(map.into_iter().collect())
    }
}

impl PartialEq<BTreeMap<String, String>> for Labels {
    fn eq(&self, other: &BTreeMap<String, String>) -> bool {
        self.0.len() == other.len()
            && self
                .0
                .iter()
                .zip(other)
                .all(|((a, b), (c, d))| a == c && b == d)
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = &'a (String, String);
    type IntoIter = std::slice::Iter<'a, (String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Something that has labels to match a selector against.
pub trait LabelLookup {
    /// The value of label `key`.
    fn label(&self, key: &str) -> Option<&str>;
}

impl LabelLookup for Labels {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl LabelLookup for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn labels_answer_as_the_map_they_were_made_from() {
        let m = map(&[("rack", "r07"), ("role", "compute"), ("az", "a")]);
        let l = Labels::from(m.clone());
        assert_eq!(l, m);
        assert_eq!(l.to_map(), m);
        for (k, v) in &m {
            assert_eq!(l.get(k), Some(v));
            assert_eq!(l.label(k), Some(v.as_str()));
        }
        assert_eq!(l.get("zone"), None);
        assert_eq!(l.get(""), None);
        let order: Vec<&str> = (&l).into_iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(order, ["az", "rack", "role"]);
        assert_ne!(l, map(&[("rack", "r07"), ("role", "compute")]));
        assert_ne!(l, map(&[("az", "a"), ("rack", "r08"), ("role", "compute")]));
        assert_eq!(l.into_map(), m);
        assert_eq!(Labels::default(), BTreeMap::new());
    }
}
