//! A fixed-capacity set of small integers, used as "which operations are linearized".
//!
//! It is half of the memoization key (Lowe, "Testing for linearizability", 2017), so it must hash and
//! compare by content; a `Vec<u64>` of words does both cheaply and needs no dependency.

const BITS_PER_WORD: usize = u64::BITS as usize;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Bitset {
    // Invariant: words.len() == capacity_bits.div_ceil(BITS_PER_WORD), and no bit at or beyond
    // capacity_bits is ever set, so two sets with the same members are equal word for word.
    words: Vec<u64>,
    capacity_bits: usize,
}

impl Bitset {
    pub(crate) fn new(capacity_bits: usize) -> Self {
        Bitset {
            words: vec![0; capacity_bits.div_ceil(BITS_PER_WORD)],
            capacity_bits,
        }
    }

    pub(crate) fn insert(&mut self, bit: usize) {
        let (word, mask) = self.locate(bit);
        self.words[word] |= mask;
    }

    pub(crate) fn remove(&mut self, bit: usize) {
        let (word, mask) = self.locate(bit);
        self.words[word] &= !mask;
    }

    pub(crate) fn contains(&self, bit: usize) -> bool {
        let (word, mask) = self.locate(bit);
        self.words[word] & mask != 0
    }

    pub(crate) fn count(&self) -> usize {
        self.words.iter().map(|word| word.count_ones() as usize).sum()
    }

    fn locate(&self, bit: usize) -> (usize, u64) {
        assert!(
            bit < self.capacity_bits,
            "bit {bit} out of range for a set of {} bits",
            self.capacity_bits
        );
        let word = bit / BITS_PER_WORD;
        assert!(
            word < self.words.len(),
            "word {word} beyond {} words",
            self.words.len()
        );
        (word, 1u64 << (bit % BITS_PER_WORD))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_contains_across_word_boundaries() {
        let mut set = Bitset::new(130);
        for bit in [0, 63, 64, 127, 129] {
            assert!(!set.contains(bit));
            set.insert(bit);
            assert!(set.contains(bit));
        }
        assert_eq!(set.count(), 5);
        set.remove(64);
        assert!(!set.contains(64));
        assert!(set.contains(63) && set.contains(127));
        assert_eq!(set.count(), 4);
    }

    #[test]
    fn equal_members_mean_equal_sets_whatever_the_history() {
        let mut a = Bitset::new(70);
        let mut b = Bitset::new(70);
        a.insert(3);
        a.insert(69);
        a.remove(3);
        b.insert(69);
        assert_eq!(a, b);
        b.insert(1);
        assert_ne!(a, b);
    }

    #[test]
    fn empty_capacity_has_no_words() {
        let set = Bitset::new(0);
        assert_eq!(set.count(), 0);
        assert!(set.words.is_empty());
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn a_bit_past_capacity_is_a_bug() {
        Bitset::new(64).insert(64);
    }
}
