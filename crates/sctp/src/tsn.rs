//! Transmission sequence numbers: 32-bit serial numbers (RFC 1982), compared in a window of
//! 2^31 around each other.

/// A TSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tsn(pub u32);

impl Tsn {
    /// The TSN after this one.
    pub fn next(self) -> Tsn {
        Tsn(self.0.wrapping_add(1))
    }

    /// This TSN plus `n`.
    pub fn plus(self, n: u32) -> Tsn {
        Tsn(self.0.wrapping_add(n))
    }

    /// How far after `base` this TSN is (`None` if it is not after it, within 2^31).
    pub fn after(self, base: Tsn) -> Option<u32> {
        let d = self.0.wrapping_sub(base.0);
        (d != 0 && d < 1 << 31).then_some(d)
    }

    /// Whether this TSN comes after `other`.
    pub fn gt(self, other: Tsn) -> bool {
        self.after(other).is_some()
    }

    /// Whether this TSN is `other` or comes after it.
    pub fn ge(self, other: Tsn) -> bool {
        self == other || self.gt(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_wrap() {
        let a = Tsn(u32::MAX);
        let b = a.next();
        assert_eq!(b, Tsn(0));
        assert!(b.gt(a) && !a.gt(b) && b.ge(b) && !a.gt(a));
        assert_eq!(b.after(a), Some(1));
        assert_eq!(a.after(b), None);
        assert_eq!(Tsn(5).plus(1 << 30).after(Tsn(5)), Some(1 << 30));
        // Half the space away is neither before nor after.
        assert_eq!(Tsn(5).plus(1 << 31).after(Tsn(5)), None);
    }
}
