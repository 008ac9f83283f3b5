//! Fibonacci kernels on exact big integers.
//!
//! An isolated index uses fast doubling on the pair (F(k), L(k)) of Fibonacci
//! and Lucas numbers: one multiplication and one squaring per bit of n, about
//! two thirds of the multiplications of the textbook (F(k), F(k+1)) form.
//! A run of consecutive indices is seeded the same way and stepped by additions.

use fibpool_protocol::Encoding;
use num_bigint::BigUint;

/// (F(k), L(k)) by fast doubling, using
/// F(2k) = F(k) L(k), L(2k) = L(k)^2 - 2(-1)^k, and for an odd step
/// F(2k+1) = (F(2k) + L(2k)) / 2, L(2k+1) = (5 F(2k) + L(2k)) / 2.
fn fib_lucas(k: u64) -> (BigUint, BigUint) {
    let mut f = BigUint::ZERO;
    let mut l = BigUint::from(2u32);
    let mut done = 0u64; // the index (f, l) currently stands at
    for bit in (0..u64::BITS - k.leading_zeros()).rev() {
        let f2 = &f * &l;
        let mut l2 = &l * &l;
        if done & 1 == 0 {
            l2 -= 2u32;
        } else {
            l2 += 2u32;
        }
        done <<= 1;
        (f, l) = (f2, l2);
        if (k >> bit) & 1 == 1 {
            let next_f = (&f + &l) >> 1u32;
            l = (&f * 5u32 + &l) >> 1u32;
            f = next_f;
            done += 1;
        }
    }
    (f, l)
}

/// F(n) by fast doubling: O(log n) big multiplications.
pub fn fib(n: u64) -> BigUint {
    let k = n >> 1;
    let (f, l) = fib_lucas(k);
    if n & 1 == 0 {
        // F(2k) = F(k) L(k)
        f * l
    } else {
        // F(2k+1) = F(k+1) L(k) - (-1)^k, with F(k+1) = (F(k) + L(k)) / 2
        let product = ((&f + &l) >> 1u32) * &l;
        if k & 1 == 0 {
            product - 1u32
        } else {
            product + 1u32
        }
    }
}

/// (F(n), F(n+1)) by fast doubling.
pub fn fib_pair(n: u64) -> (BigUint, BigUint) {
    let (f, l) = fib_lucas(n);
    let next = (&f + &l) >> 1u32;
    (f, next)
}

/// F(n) by the seed's O(n) loop: the baseline fast doubling is measured
/// against, and an independent oracle in tests.
pub fn fib_iterative(n: u64) -> BigUint {
    let (mut a, mut b) = (BigUint::ZERO, BigUint::from(1u32));
    for _ in 0..n {
        a += &b;
        std::mem::swap(&mut a, &mut b);
    }
    a
}

/// Calls `each` with F(start), F(start+1), ..., F(start+len-1): one fast
/// doubling for the seed, then one addition per value, in place.
pub fn for_each_in_run(start: u64, len: u64, mut each: impl FnMut(&BigUint)) {
    match len {
        0 => {}
        1 => each(&fib(start)),
        _ => {
            let (mut a, mut b) = fib_pair(start);
            each(&a);
            for _ in 1..len {
                a += &b;
                std::mem::swap(&mut a, &mut b);
                each(&a);
            }
        }
    }
}

/// The largest n whose F(n) fits in a `u128`.
pub const SMALL_MAX: u64 = 186;

/// F(0) to F(186), built at compile time: small indices need no big integer
/// at all (10000 values near F(100) took 5.3 ms with them).
const SMALL: [u128; SMALL_MAX as usize + 1] = {
    let mut table = [0u128; SMALL_MAX as usize + 1];
    table[1] = 1;
    let mut i = 2;
    while i < table.len() {
        table[i] = table[i - 1] + table[i - 2];
        i += 1;
    }
    table
};

fn encode_small(value: u128, encoding: Encoding, out: &mut Vec<u8>) {
    use std::io::Write;
    match encoding {
        Encoding::Raw => {
            let bytes = value.to_le_bytes();
            let used = 16 - (value.leading_zeros() / 8) as usize;
            out.extend_from_slice(&bytes[..used]);
        }
        // Writing to a Vec cannot fail.
        Encoding::Decimal => drop(write!(out, "{value}")),
        Encoding::Hex => drop(write!(out, "{value:x}")),
    }
}

/// Where [`encode_run`] puts values: each value's bytes are appended to
/// [`ValueSink::buffer`], then [`ValueSink::end_value`] is called.
pub trait ValueSink {
    fn buffer(&mut self) -> &mut Vec<u8>;
    fn end_value(&mut self);
}

impl ValueSink for fibpool_protocol::PackedBuf {
    fn buffer(&mut self) -> &mut Vec<u8> {
        self.data()
    }

    fn end_value(&mut self) {
        fibpool_protocol::PackedBuf::end_value(self)
    }
}

/// A sink that keeps nothing: it counts the values and their bytes, reusing
/// one buffer. What a measurement of computing and encoding alone needs.
#[derive(Debug, Default)]
pub struct Tally {
    pub values: u64,
    pub bytes: u64,
    buf: Vec<u8>,
}

impl ValueSink for Tally {
    fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    fn end_value(&mut self) {
        self.values += 1;
        self.bytes += self.buf.len() as u64;
        self.buf.clear();
    }
}

/// Encodes the values of a run into `sink`, in order. Indices up to
/// [`SMALL_MAX`] come from a table. Decimal runs are stepped in base 10^18,
/// so only the two seeds pay for a radix conversion: converting every value
/// would cost more than computing it.
pub fn encode_run(mut start: u64, mut len: u64, encoding: Encoding, sink: &mut impl ValueSink) {
    while len > 0 && start <= SMALL_MAX {
        encode_small(SMALL[start as usize], encoding, sink.buffer());
        sink.end_value();
        start += 1;
        len -= 1;
    }
    if len == 0 {
        return;
    }
    if encoding != Encoding::Decimal || len < 2 {
        return for_each_in_run(start, len, |v| {
            encode_into(v, encoding, sink.buffer());
            sink.end_value();
        });
    }
    let (a, b) = fib_pair(start);
    let (mut a, mut b) = (Decimal::from(&a), Decimal::from(&b));
    a.write_ascii(sink.buffer());
    sink.end_value();
    for _ in 1..len {
        a.add_assign(&b);
        std::mem::swap(&mut a, &mut b);
        a.write_ascii(sink.buffer());
        sink.end_value();
    }
}

/// The bytes a value travels as: little-endian magnitude, or lowercase digits.
pub fn encode(value: &BigUint, encoding: Encoding) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, encoding, &mut out);
    out
}

/// [`encode`], appending to `out`.
pub fn encode_into(value: &BigUint, encoding: Encoding, out: &mut Vec<u8>) {
    match encoding {
        // Whole limbs, not `to_bytes_le`, which goes a byte at a time:
        // 50000 values of a range took 102 ms that way and 13 ms this way.
        Encoding::Raw => {
            let start = out.len();
            out.reserve(value.bits().div_ceil(8) as usize + 8);
            for limb in value.iter_u64_digits() {
                out.extend_from_slice(&limb.to_le_bytes());
            }
            while out.len() > start && out.last() == Some(&0) {
                out.pop();
            }
        }
        Encoding::Decimal => out.extend_from_slice(value.to_str_radix(10).as_bytes()),
        Encoding::Hex => out.extend_from_slice(value.to_str_radix(16).as_bytes()),
    }
}

/// A natural number in base 10^18 limbs, least significant first: addition
/// and printing without any division of a big number.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decimal {
    limbs: Vec<u64>,
}

const LIMB: u64 = 1_000_000_000_000_000_000;
const LIMB_DIGITS: usize = 18;

/// "00" to "99": printing two digits per division.
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// `n < 10^9` as exactly nine digits, zero-padded.
fn nine_digits(mut n: u32) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[8] = b'0' + (n % 10) as u8;
    n /= 10;
    for pair in out[..8].rchunks_exact_mut(2) {
        let at = (n % 100) as usize * 2;
        pair.copy_from_slice(&DIGIT_PAIRS[at..at + 2]);
        n /= 100;
    }
    out
}

impl From<&BigUint> for Decimal {
    fn from(value: &BigUint) -> Self {
        let text = value.to_str_radix(10).into_bytes();
        let limbs = text
            .rchunks(LIMB_DIGITS)
            .map(|digits| {
                digits
                    .iter()
                    .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'))
            })
            .collect();
        Decimal { limbs }
    }
}

impl Decimal {
    fn add_assign(&mut self, other: &Decimal) {
        if self.limbs.len() < other.limbs.len() {
            self.limbs.resize(other.limbs.len(), 0);
        }
        let mut carry = 0;
        for (i, limb) in self.limbs.iter_mut().enumerate() {
            if carry == 0 && i >= other.limbs.len() {
                break;
            }
            // both limbs are below 10^18, so the sum stays far below 2^64
            let sum = *limb + other.limbs.get(i).copied().unwrap_or(0) + carry;
            (*limb, carry) = if sum >= LIMB {
                (sum - LIMB, 1)
            } else {
                (sum, 0)
            };
        }
        if carry == 1 {
            self.limbs.push(1);
        }
    }

    fn write_ascii(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let (top, rest) = self.limbs.split_last().expect("never empty");
        out.reserve(20 + LIMB_DIGITS * rest.len());
        // Writing to a Vec cannot fail.
        drop(write!(out, "{top}"));
        for &limb in rest.iter().rev() {
            let (high, low) = ((limb / 1_000_000_000) as u32, (limb % 1_000_000_000) as u32);
            out.extend_from_slice(&nine_digits(high));
            out.extend_from_slice(&nine_digits(low));
        }
    }
}

pub use fibpool_protocol::packed::{encoded_len_bound, packed_len_bound};

/// A run's values, one `Vec` each (tests only).
#[cfg(test)]
fn run_values(start: u64, len: u64, encoding: Encoding) -> Vec<Vec<u8>> {
    let mut buf = fibpool_protocol::PackedBuf::default();
    encode_run(start, len, encoding, &mut buf);
    buf.as_packed().iter().map(<[u8]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_doubling_matches_iteration_for_small_n() {
        let (mut a, mut b) = (BigUint::ZERO, BigUint::from(1u32));
        for n in 0..2000u64 {
            assert_eq!(fib(n), a, "fib({n})");
            assert_eq!(fib_pair(n), (a.clone(), b.clone()), "fib_pair({n})");
            a += &b;
            std::mem::swap(&mut a, &mut b);
        }
    }

    #[test]
    fn known_values() {
        // From the seed's example: F(100) = 354224848179261915075.
        assert_eq!(fib(100).to_string(), "354224848179261915075");
        assert_eq!(fib(0), BigUint::ZERO);
        assert_eq!(fib(1), BigUint::from(1u32));
        assert_eq!(fib(93), BigUint::from(12200160415121876738u64));
    }

    #[test]
    fn runs_match_isolated_values() {
        for (start, len) in [(0, 1), (0, 30), (1, 5), (998, 7), (12345, 40)] {
            let mut got = Vec::new();
            for_each_in_run(start, len, |v| got.push(v.clone()));
            let want: Vec<_> = (start..start + len).map(fib_iterative).collect();
            assert_eq!(got, want, "run {start}+{len}");
        }
        let mut calls = 0;
        for_each_in_run(7, 0, |_| calls += 1);
        assert_eq!(calls, 0);
    }

    #[test]
    fn the_small_table_matches_big_integers() {
        assert_eq!(
            SMALL[SMALL_MAX as usize].to_string(),
            fib(SMALL_MAX).to_string()
        );
        assert!(fib(SMALL_MAX + 1).bits() > 128, "F(187) would not fit");
        for encoding in [Encoding::Raw, Encoding::Decimal, Encoding::Hex] {
            let got = run_values(0, SMALL_MAX + 20, encoding);
            let want: Vec<_> = (0..SMALL_MAX + 20)
                .map(|n| encode(&fib_iterative(n), encoding))
                .collect();
            assert_eq!(got, want, "{encoding:?}");
        }
        let got = run_values(180, 1, Encoding::Raw);
        assert_eq!(got, [encode(&fib(180), Encoding::Raw)]);
    }

    #[test]
    fn decimal_runs_match_radix_conversion() {
        for (start, len) in [(0, 2), (0, 200), (90, 10), (1000, 3), (54_321, 25)] {
            let got = run_values(start, len, Encoding::Decimal);
            let want: Vec<_> = (start..start + len)
                .map(|n| fib_iterative(n).to_string().into_bytes())
                .collect();
            assert_eq!(got, want, "run {start}+{len}");
        }
    }

    #[test]
    fn encodings() {
        let v = fib(100);
        assert_eq!(encode(&v, Encoding::Decimal), b"354224848179261915075");
        assert_eq!(encode(&v, Encoding::Hex), b"1333db76a7c594bfc3");
        assert_eq!(BigUint::from_bytes_le(&encode(&v, Encoding::Raw)), v);
        for n in [1u64, 2, 93, 94, 1000, 4321, 20000] {
            let v = fib(n);
            assert_eq!(encode(&v, Encoding::Raw), v.to_bytes_le(), "F({n})");
        }
        assert_eq!(encode(&BigUint::ZERO, Encoding::Raw), b"");
        assert_eq!(encode(&BigUint::ZERO, Encoding::Decimal), b"0");
        assert_eq!(encode(&BigUint::ZERO, Encoding::Hex), b"0");
    }

    #[test]
    fn encoded_len_bound_holds() {
        for n in [0u64, 1, 2, 10, 93, 94, 1000, 4321, 20000, 100_000] {
            let v = fib(n);
            for enc in [Encoding::Raw, Encoding::Decimal, Encoding::Hex] {
                let len = encode(&v, enc).len() as u64;
                let bound = encoded_len_bound(n, enc);
                assert!(len <= bound, "F({n}) {enc:?}: {len} > {bound}");
                // and the bound is not absurdly loose
                assert!(
                    bound <= len + len / 20 + 2,
                    "F({n}) {enc:?}: bound {bound} for {len}"
                );
            }
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn fast_doubling_matches_iteration_for_large_n(n in 2_000u64..60_000) {
            prop_assert_eq!(fib(n), fib_iterative(n));
        }

        #[test]
        fn decimal_runs_match_radix_conversion(start in 0u64..200_000, len in 2u64..40) {
            let got = run_values(start, len, Encoding::Decimal);
            prop_assert_eq!(got.len() as u64, len);
            for (n, v) in (start..).zip(got) {
                prop_assert_eq!(v, fib(n).to_str_radix(10).into_bytes(), "F({})", n);
            }
        }

        #[test]
        fn cassini(n in 1u64..2_000_000) {
            // F(n-1) F(n+1) - F(n)^2 = (-1)^n
            let (f, f_next) = fib_pair(n);
            let f_prev = &f_next - &f;
            let lhs = &f_prev * &f_next;
            let square = &f * &f;
            if n % 2 == 0 {
                prop_assert_eq!(lhs, square + 1u32);
            } else {
                prop_assert_eq!(lhs + 1u32, square);
            }
        }

        #[test]
        fn doubling_identity(n in 0u64..2_000_000) {
            // F(2n) = F(n) (2 F(n+1) - F(n)): the textbook doubling step,
            // which the Lucas-number kernel does not use.
            let (f, f_next) = fib_pair(n);
            prop_assert_eq!(fib(2 * n), &f * ((&f_next << 1u32) - &f));
        }
    }
}
