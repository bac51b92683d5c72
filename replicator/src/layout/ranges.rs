//! Sorted, merged sets of half-open byte ranges.

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    pub fn new() -> Self {
        RangeSet(Vec::new())
    }

    pub fn from_vec(mut v: Vec<(u64, u64)>) -> Self {
        v.retain(|(s, e)| s < e);
        v.sort();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (s, e) in v {
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        RangeSet(out)
    }

    pub fn add(&mut self, start: u64, end: u64) {
        let mut v = std::mem::take(&mut self.0);
        v.push((start, end));
        *self = Self::from_vec(v);
    }

    /// `self − other`.
    pub fn subtract(&self, other: &RangeSet) -> RangeSet {
        let mut out = Vec::new();
        let mut j = 0;
        for &(s, e) in &self.0 {
            let mut cur = s;
            while j < other.0.len() && other.0[j].1 <= cur {
                j += 1;
            }
            let mut k = j;
            while cur < e {
                match other.0.get(k) {
                    Some(&(os, oe)) if os < e => {
                        if os > cur {
                            out.push((cur, os));
                        }
                        cur = cur.max(oe);
                        k += 1;
                    }
                    _ => {
                        out.push((cur, e));
                        break;
                    }
                }
            }
        }
        RangeSet(out)
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|(s, e)| e - s).sum()
    }

    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }

    pub fn end(&self) -> u64 {
        self.0.last().map(|r| r.1).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_subtract() {
        let a = RangeSet::from_vec(vec![(10, 20), (0, 5), (4, 8), (30, 40), (40, 41)]);
        assert_eq!(a.ranges(), &[(0, 8), (10, 20), (30, 41)]);
        let b = RangeSet::from_vec(vec![(2, 3), (12, 35)]);
        assert_eq!(a.subtract(&b).ranges(), &[(0, 2), (3, 8), (10, 12), (35, 41)]);
        assert_eq!(a.subtract(&RangeSet::from_vec(vec![(0, 100)])).total(), 0);
        assert_eq!(a.subtract(&RangeSet::new()), a);
        assert_eq!(a.total(), 8 + 10 + 11);
    }
}
