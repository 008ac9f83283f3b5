//! Fibonacci kernels on exact big integers.
//!
//! Two engines, each where it measured faster (docs/BENCHMARKS.md, "The
//! arithmetic engine"):
//!
//! - An isolated index is computed by malachite-nz's `Natural::fibonacci`,
//!   GMP's `mpz_fib_ui` algorithm on a library with FFT multiplication and
//!   subquadratic radix conversion: F(10^7) in 17 ms where fast doubling on
//!   num-bigint took 213 ms. It was faster at every index measured, from
//!   100 up.
//! - A run of consecutive indices is seeded by malachite's
//!   `fibonacci_pair` (or, a little past where the worker's last run ended,
//!   by the addition formula from that run's last pair: [`Seed`]), copied
//!   into num-bigint, and stepped by num-bigint's
//!   in-place additions, which took half malachite's time near F(1000) and
//!   nine tenths of it near F(200000).
//!
//! num-bigint's own fast doubling stays in [`reference`]: the baseline the
//! engine is benchmarked against.

use fibpool_protocol::Encoding;
use malachite_base::num::arithmetic::traits::Fibonacci;
pub use malachite_nz::natural::Natural;
use num_bigint::BigUint;

/// F(n).
pub fn fib(n: u64) -> Natural {
    Natural::fibonacci(n)
}

/// (F(n), F(n+1)).
pub fn fib_pair(n: u64) -> (Natural, Natural) {
    let (f, prev) = Natural::fibonacci_pair(n);
    let next = &f + &prev;
    (f, next)
}

/// The same number as a num-bigint `BigUint`: a copy of its limbs.
pub fn to_biguint(value: &Natural) -> BigUint {
    let mut digits = Vec::with_capacity(value.limb_count() as usize * 2);
    for limb in value.limbs() {
        digits.extend([limb as u32, (limb >> 32) as u32]);
    }
    BigUint::new(digits)
}

/// F(n) by the seed's O(n) loop on num-bigint: the independent oracle in
/// tests.
pub fn fib_iterative(n: u64) -> BigUint {
    let (mut a, mut b) = (BigUint::ZERO, BigUint::from(1u32));
    for _ in 0..n {
        a += &b;
        std::mem::swap(&mut a, &mut b);
    }
    a
}

/// Calls `each` with F(start), F(start+1), ..., F(start+len-1): one seed
/// pair from the engine, then one num-bigint addition per value, in place.
pub fn for_each_in_run(start: u64, len: u64, each: impl FnMut(&BigUint)) {
    for_each_in_run_from(&mut Seed::default(), start, len, each)
}

/// Where a worker's last run ended: F(at) and F(at - 1). A chunk of a range
/// starts a little past where the worker's previous chunk ended (the other
/// workers took the chunks between), and the addition formula gets there
/// from this pair in four multiplications by small numbers, where fast
/// doubling starts from nothing: F(50000) and F(49999) took 19.7 µs from
/// the pair 781 indices before against 59.1 µs afresh (medians of 201,
/// release build, at this commit).
#[derive(Debug, Default)]
pub struct Seed(Option<(u64, BigUint, BigUint)>);

impl Seed {
    /// The farthest a jump of the addition formula goes from a seed at
    /// `at`: 1024 indices, and a sixteenth of the way. Against fast
    /// doubling afresh (both into num-bigint, release, medians of 5), a
    /// jump of 1024 took 0.35-0.48 of its time at every start from 20000
    /// to 4 million, one of 2048 0.73-0.92, one of 4096 0.82-1.21, and one
    /// of a sixteenth of the start 0.61 at 20000 but 2.58 at 4 million:
    /// the jump's multiplications by F(d) grow with d, the doubling's
    /// squarings only with the start.
    fn reaches(at: u64, start: u64) -> bool {
        at >= 1 && start > at && start - at <= (start / 16).min(1024)
    }

    /// Keeps F(at) and F(at - 1) for the next run, unless they are past
    /// [`SEED_KEPT_BITS`]: not worth their memory between chunks.
    fn leave(&mut self, at: u64, value: BigUint, before: BigUint) {
        self.0 = (value.bits() <= SEED_KEPT_BITS).then_some((at, value, before));
    }

    /// (F(start), F(start - 1)), with F(-1) = 1: from the seed when it is
    /// close enough behind, by fast doubling otherwise.
    fn pair(&self, start: u64) -> (BigUint, BigUint) {
        match &self.0 {
            Some((at, f, prev)) if *at == start => (f.clone(), prev.clone()),
            Some((at, f, prev)) if Seed::reaches(*at, start) => {
                // F(a + d) = F(a) F(d + 1) + F(a - 1) F(d), and
                // F(a + d - 1) = F(a) F(d) + F(a - 1) F(d - 1).
                let (fd, fd_prev) = Natural::fibonacci_pair(start - at);
                let fd_next = &fd + &fd_prev;
                let (fa, fa_prev) = (to_natural(f), to_natural(prev));
                let value = &fa * &fd_next + &fa_prev * &fd;
                let before = &fa * &fd + &fa_prev * &fd_prev;
                (to_biguint(&value), to_biguint(&before))
            }
            _ => {
                let (f, prev) = Natural::fibonacci_pair(start);
                (to_biguint(&f), to_biguint(&prev))
            }
        }
    }
}

/// The same number as a malachite `Natural`: a copy of its limbs.
fn to_natural(value: &BigUint) -> Natural {
    Natural::from_owned_limbs_asc(value.iter_u64_digits().collect())
}

/// [`for_each_in_run`], seeded from `seed` where it is close behind, and
/// leaving in it where the run ended.
pub fn for_each_in_run_from(seed: &mut Seed, start: u64, len: u64, mut each: impl FnMut(&BigUint)) {
    if len == 0 {
        return;
    }
    let (mut current, mut prev) = seed.pair(start);
    each(&current);
    for _ in 1..len {
        prev += &current;
        std::mem::swap(&mut current, &mut prev);
        each(&current);
    }
    seed.leave(start + (len - 1), current, prev);
}

/// The biggest value a [`Seed`] keeps: 8 MiB (F(n) for n up to about 97
/// million).
const SEED_KEPT_BITS: u64 = 64 << 20;

/// num-bigint's fast doubling, the kernel fibpool had before the engine:
/// kept to be measured against.
pub mod reference {
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

    /// F(n) by fast doubling on num-bigint: O(log n) big multiplications.
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
pub fn encode_run(start: u64, len: u64, encoding: Encoding, sink: &mut impl ValueSink) {
    encode_run_from(&mut Seed::default(), start, len, encoding, sink)
}

/// [`encode_run`], a run of raw or hex values seeded from `seed` where it
/// is close behind (see [`Seed`]), and leaving in it where the run ended.
pub fn encode_run_from(
    seed: &mut Seed,
    mut start: u64,
    mut len: u64,
    encoding: Encoding,
    sink: &mut impl ValueSink,
) {
    while len > 0 && start <= SMALL_MAX {
        encode_small(SMALL[start as usize], encoding, sink.buffer());
        sink.end_value();
        start += 1;
        len -= 1;
    }
    match len {
        0 => {}
        1 => {
            encode_into(&fib(start), encoding, sink.buffer());
            sink.end_value();
        }
        _ if encoding == Encoding::Decimal => {
            let (a, prev) = Natural::fibonacci_pair(start);
            let (mut a, mut b) = (Decimal::from(&a), Decimal::from(&(&a + &prev)));
            a.write_ascii(sink.buffer());
            sink.end_value();
            for _ in 1..len {
                a.add_assign(&b);
                std::mem::swap(&mut a, &mut b);
                a.write_ascii(sink.buffer());
                sink.end_value();
            }
        }
        _ => for_each_in_run_from(seed, start, len, |v| {
            encode_limbs(v.iter_u64_digits(), encoding, sink.buffer());
            sink.end_value();
        }),
    }
}

/// The bytes a value travels as: little-endian magnitude, or lowercase digits.
pub fn encode(value: &Natural, encoding: Encoding) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, encoding, &mut out);
    out
}

/// [`encode`], appending to `out`. Decimal by malachite's divide and
/// conquer conversion.
pub fn encode_into(value: &Natural, encoding: Encoding, out: &mut Vec<u8>) {
    use std::io::Write;
    match encoding {
        // Writing to a Vec cannot fail.
        Encoding::Decimal => drop(write!(out, "{value}")),
        Encoding::Raw | Encoding::Hex => encode_limbs(value.limbs(), encoding, out),
    }
}

/// A value given by its 64-bit limbs, least significant first, as raw
/// bytes or hex digits: whole limbs at a time (num-bigint's `to_bytes_le`
/// goes a byte at a time: 50000 values of a range took 102 ms that way and
/// 13 ms a limb at a time, when each limb was pushed on its own). Decimal
/// goes through a [`Natural`].
pub fn encode_limbs(
    limbs: impl DoubleEndedIterator<Item = u64> + ExactSizeIterator,
    encoding: Encoding,
    out: &mut Vec<u8>,
) {
    match encoding {
        // The room is made first, then filled a limb at a time: pushing 8
        // bytes at a time, each push checking the capacity, F(0..50000)
        // took 13.3 ms to compute and encode raw, against 8.6 ms this way
        // (5.4 ms of either is the additions; release build, in-process).
        Encoding::Raw => {
            let start = out.len();
            let written = write_spare(out, limbs.len() * 8, limbs.map(u64::to_le_bytes));
            // SAFETY: write_spare initialised these bytes past the end.
            unsafe { out.set_len(start + written) };
            while out.len() > start && out.last() == Some(&0) {
                out.pop();
            }
        }
        Encoding::Hex => {
            let count = limbs.len();
            let mut limbs = limbs.rev();
            let mut zeros = 0;
            let top = loop {
                match limbs.next() {
                    Some(0) => zeros += 1,
                    Some(limb) => break limb,
                    None => {
                        out.push(b'0');
                        return;
                    }
                }
            };
            // The top limb without its leading zeros, the rest in full,
            // two digits a byte from a table: a digit at a time went at
            // about a byte a nanosecond.
            let digits = hex_limb(top);
            out.extend_from_slice(&digits[top.leading_zeros() as usize / 4..]);
            let start = out.len();
            let written = write_spare(out, (count - zeros - 1) * 16, limbs.map(hex_limb));
            // SAFETY: write_spare initialised these bytes past the end.
            unsafe { out.set_len(start + written) };
        }
        Encoding::Decimal => {
            let limbs: Vec<u64> = limbs.collect();
            encode_into(&Natural::from_owned_limbs_asc(limbs), encoding, out)
        }
    }
}

/// Writes `pieces` into `out`'s spare room, past its end, as far as `room`
/// bytes (reserved first), and returns how many bytes it wrote: the caller
/// then sets the length. Unlike filling zeros first and then overwriting
/// them, each byte is written once (the zeroing was 3-4% of a raw run's
/// CPU time in a worker, `perf record`).
fn write_spare<const N: usize>(
    out: &mut Vec<u8>,
    room: usize,
    pieces: impl Iterator<Item = [u8; N]>,
) -> usize {
    out.reserve(room);
    let spare = &mut out.spare_capacity_mut()[..room];
    let mut written = 0;
    for (to, piece) in spare.chunks_exact_mut(N).zip(pieces) {
        for (to, byte) in to.iter_mut().zip(piece) {
            to.write(byte);
        }
        written += N;
    }
    written
}

/// The two lowercase hex digits of every byte.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        pairs[i] = [DIGITS[i >> 4], DIGITS[i & 15]];
        i += 1;
    }
    pairs
};

/// A limb's 16 hex digits, leading zeros included.
fn hex_limb(limb: u64) -> [u8; 16] {
    let mut digits = [0u8; 16];
    for (pair, byte) in digits.chunks_exact_mut(2).zip(limb.to_be_bytes()) {
        pair.copy_from_slice(&HEX_PAIRS[byte as usize]);
    }
    digits
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

impl From<&Natural> for Decimal {
    fn from(value: &Natural) -> Self {
        let text = value.to_string().into_bytes();
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

    /// The engine's F(n) as num-bigint's, to compare with the oracles.
    fn fib_big(n: u64) -> BigUint {
        to_biguint(&fib(n))
    }

    #[test]
    fn the_engine_matches_iteration_for_small_n() {
        let (mut a, mut b) = (BigUint::ZERO, BigUint::from(1u32));
        for n in 0..2000u64 {
            assert_eq!(fib_big(n), a, "fib({n})");
            let (f, next) = fib_pair(n);
            assert_eq!(
                (to_biguint(&f), to_biguint(&next)),
                (a.clone(), b.clone()),
                "fib_pair({n})"
            );
            assert_eq!(reference::fib(n), a, "reference::fib({n})");
            a += &b;
            std::mem::swap(&mut a, &mut b);
        }
    }

    #[test]
    fn known_values() {
        // From the seed's example: F(100) = 354224848179261915075.
        assert_eq!(fib(100).to_string(), "354224848179261915075");
        assert_eq!(fib_big(0), BigUint::ZERO);
        assert_eq!(fib_big(1), BigUint::from(1u32));
        assert_eq!(fib_big(93), BigUint::from(12200160415121876738u64));
    }

    #[test]
    fn conversion_to_num_bigint_copies_every_limb() {
        for n in [0u64, 1, 93, 94, 186, 187, 1000, 4321] {
            let v = fib(n);
            let raw = oracle_encoding(&to_biguint(&v), Encoding::Raw);
            assert_eq!(raw, encode(&v, Encoding::Raw), "F({n})");
        }
        assert_eq!(
            to_biguint(&Natural::from(u64::MAX)),
            BigUint::from(u64::MAX)
        );
        assert_eq!(to_biguint(&Natural::from(0u32)), BigUint::ZERO);
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
    fn runs_seeded_from_the_last_one_match_isolated_values() {
        // Forward within reach, the same index again, one past the end,
        // backwards, and too far for the formula: each from the seed the
        // run before left.
        let runs = [
            (5000, 30),
            (5100, 20),
            (5119, 3),
            (5122, 1),
            (5200, 2),
            (4000, 5),
            (9000, 4),
            (9004, 10),
            (20000, 3),
            (20500, 2),
        ];
        let mut seed = Seed::default();
        for (start, len) in runs {
            let mut got = Vec::new();
            for_each_in_run_from(&mut seed, start, len, |v| got.push(v.clone()));
            let want: Vec<_> = (start..start + len).map(fib_iterative).collect();
            assert_eq!(got, want, "run {start}+{len}");
        }
        // Encoded runs leave the same seed behind.
        let mut seed = Seed::default();
        for (start, len) in runs {
            let mut buf = fibpool_protocol::PackedBuf::default();
            encode_run_from(&mut seed, start, len, Encoding::Raw, &mut buf);
            let want: Vec<u8> = (start..start + len)
                .flat_map(|n| oracle_encoding(&fib_iterative(n), Encoding::Raw))
                .collect();
            assert_eq!(buf.data(), &want, "run {start}+{len}");
        }
        assert!(Seed::reaches(5000, 5100) && Seed::reaches(9003, 9004));
        assert!(!Seed::reaches(9003, 20000) && !Seed::reaches(5122, 4000));
        assert!(Seed::reaches(998_976, 1_000_000) && !Seed::reaches(998_975, 1_000_000));
        assert!(Seed::reaches(7969, 8500) && !Seed::reaches(7968, 8500));
        assert!(!Seed::reaches(0, 1) && !Seed::reaches(7, 7));
        // A run of values past the bound leaves no seed behind.
        let mut seed = Seed::default();
        let at_bound = BigUint::from(1u32) << (SEED_KEPT_BITS - 1);
        seed.leave(7, at_bound.clone(), BigUint::ZERO);
        assert_eq!(seed.0.as_ref().map(|s| s.0), Some(7));
        seed.leave(8, at_bound << 1, BigUint::ZERO);
        assert!(seed.0.is_none(), "a pair past the bound was kept");
    }

    #[test]
    fn the_small_table_matches_big_integers() {
        assert_eq!(
            SMALL[SMALL_MAX as usize].to_string(),
            fib(SMALL_MAX).to_string()
        );
        assert!(fib_big(SMALL_MAX + 1).bits() > 128, "F(187) would not fit");
        for encoding in [Encoding::Raw, Encoding::Decimal, Encoding::Hex] {
            let got = run_values(0, SMALL_MAX + 20, encoding);
            let want: Vec<_> = (0..SMALL_MAX + 20)
                .map(|n| oracle_encoding(&fib_iterative(n), encoding))
                .collect();
            assert_eq!(got, want, "{encoding:?}");
        }
        let got = run_values(180, 1, Encoding::Raw);
        assert_eq!(got, [encode(&fib(180), Encoding::Raw)]);
    }

    /// num-bigint's own encoding of a value: the oracle for the engine's.
    pub(super) fn oracle_encoding(value: &BigUint, encoding: Encoding) -> Vec<u8> {
        match encoding {
            // num-bigint writes zero as one 0 byte; the wire's raw zero is empty.
            Encoding::Raw if *value == BigUint::ZERO => Vec::new(),
            Encoding::Raw => value.to_bytes_le(),
            Encoding::Decimal => value.to_str_radix(10).into_bytes(),
            Encoding::Hex => value.to_str_radix(16).into_bytes(),
        }
    }

    #[test]
    fn every_encoding_of_runs_matches_num_bigint() {
        for encoding in [Encoding::Raw, Encoding::Decimal, Encoding::Hex] {
            for (start, len) in [
                (0, 2),
                (0, 200),
                (90, 10),
                (186, 2),
                (1000, 3),
                (54_321, 25),
                (7000, 1),
            ] {
                let got = run_values(start, len, encoding);
                let want: Vec<_> = (start..start + len)
                    .map(|n| oracle_encoding(&fib_iterative(n), encoding))
                    .collect();
                assert_eq!(got, want, "run {start}+{len} {encoding:?}");
            }
        }
    }

    #[test]
    fn encodings() {
        let v = fib(100);
        assert_eq!(encode(&v, Encoding::Decimal), b"354224848179261915075");
        assert_eq!(encode(&v, Encoding::Hex), b"1333db76a7c594bfc3");
        assert_eq!(
            BigUint::from_bytes_le(&encode(&v, Encoding::Raw)),
            fib_iterative(100)
        );
        for n in [1u64, 2, 93, 94, 1000, 4321, 20000] {
            let v = fib(n);
            let oracle = fib_iterative(n);
            for encoding in [Encoding::Raw, Encoding::Decimal, Encoding::Hex] {
                assert_eq!(
                    encode(&v, encoding),
                    oracle_encoding(&oracle, encoding),
                    "F({n}) {encoding:?}"
                );
            }
        }
        let zero = Natural::from(0u32);
        assert_eq!(encode(&zero, Encoding::Raw), b"");
        assert_eq!(encode(&zero, Encoding::Decimal), b"0");
        assert_eq!(encode(&zero, Encoding::Hex), b"0");
        // Limbs with high zeros, as a caller may hand them.
        let mut out = Vec::new();
        encode_limbs([0x1fu64, 0, 0].into_iter(), Encoding::Hex, &mut out);
        assert_eq!(out, b"1f");
        out.clear();
        encode_limbs([5u64, 1 << 60].into_iter(), Encoding::Hex, &mut out);
        assert_eq!(out, b"10000000000000000000000000000005");
        out.clear();
        encode_limbs([0u64, 1].into_iter(), Encoding::Decimal, &mut out);
        assert_eq!(out, b"18446744073709551616");
        out.clear();
        encode_limbs(std::iter::empty(), Encoding::Hex, &mut out);
        assert_eq!(out, b"0");
        // Appended after what the buffer holds, high zero limbs dropped.
        let mut out = b"ab".to_vec();
        encode_limbs([0x0102u64, 0, 0].into_iter(), Encoding::Raw, &mut out);
        assert_eq!(out, b"ab\x02\x01");
        encode_limbs([0u64, 0].into_iter(), Encoding::Raw, &mut out);
        assert_eq!(
            out, b"ab\x02\x01",
            "zero is no bytes, and none of those before"
        );
        encode_limbs([1u64, 2, 0].into_iter(), Encoding::Hex, &mut out);
        assert_eq!(out, b"ab\x02\x0120000000000000001");
        // A length that is wrong (a safe trait may lie) writes what the
        // limbs give, within the length: never a byte nobody wrote.
        for (claimed, limbs) in [(5, vec![7u64, 9]), (1, vec![7u64, 9, 11])] {
            for encoding in [Encoding::Raw, Encoding::Hex] {
                let mut out = b"x".to_vec();
                encode_limbs(
                    Lying {
                        claimed,
                        limbs: limbs.clone().into_iter(),
                    },
                    encoding,
                    &mut out,
                );
                // Raw takes limbs from the bottom, hex from the top.
                let k = limbs.len().min(claimed);
                let taken = match encoding {
                    Encoding::Raw => &limbs[..k],
                    _ => &limbs[limbs.len() - k..],
                };
                let mut want = b"x".to_vec();
                encode_limbs(taken.iter().copied(), encoding, &mut want);
                assert_eq!(out, want, "{claimed} claimed for {limbs:?} in {encoding:?}");
            }
        }
    }

    /// Limbs whose claimed count is not what they yield.
    struct Lying {
        claimed: usize,
        limbs: std::vec::IntoIter<u64>,
    }

    impl Iterator for Lying {
        type Item = u64;
        fn next(&mut self) -> Option<u64> {
            self.limbs.next()
        }
    }

    impl DoubleEndedIterator for Lying {
        fn next_back(&mut self) -> Option<u64> {
            self.limbs.next_back()
        }
    }

    impl ExactSizeIterator for Lying {
        fn len(&self) -> usize {
            self.claimed
        }
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
    use super::tests::oracle_encoding;
    use super::*;
    use proptest::prelude::*;

    /// Indices whose values straddle the engine's multiplication thresholds:
    /// from one limb to FFT sizes (F(n) has about 0.694 n bits).
    fn straddling() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..2_000,
            2_000u64..60_000,
            60_000u64..600_000,
            600_000u64..3_000_000
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn the_engine_matches_iteration_for_large_n(n in 2_000u64..60_000) {
            prop_assert_eq!(to_biguint(&fib(n)), fib_iterative(n));
        }

        #[test]
        fn the_engine_matches_num_bigint_fast_doubling(n in straddling()) {
            prop_assert_eq!(to_biguint(&fib(n)), reference::fib(n));
        }

        #[test]
        fn products_and_squares_match_num_bigint(a in straddling(), b in straddling()) {
            // Operands of unequal and equal sizes through every
            // multiplication algorithm of both libraries.
            let (x, y) = (fib(a), fib(b));
            let (bx, by) = (to_biguint(&x), to_biguint(&y));
            prop_assert_eq!(to_biguint(&(&x * &y)), &bx * &by);
            prop_assert_eq!(to_biguint(&(&x * &x)), &bx * &bx);
        }

        #[test]
        fn every_encoding_matches_num_bigint(n in straddling()) {
            let v = fib(n);
            let oracle = reference::fib(n);
            for encoding in [Encoding::Raw, Encoding::Decimal, Encoding::Hex] {
                prop_assert_eq!(encode(&v, encoding), oracle_encoding(&oracle, encoding), "F({}) {:?}", n, encoding);
            }
        }

        #[test]
        fn decimal_runs_match_radix_conversion(start in 0u64..200_000, len in 2u64..40) {
            let got = run_values(start, len, Encoding::Decimal);
            prop_assert_eq!(got.len() as u64, len);
            for (n, v) in (start..).zip(got) {
                prop_assert_eq!(v, reference::fib(n).to_str_radix(10).into_bytes(), "F({})", n);
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
                prop_assert_eq!(lhs, square + Natural::from(1u32));
            } else {
                prop_assert_eq!(lhs + Natural::from(1u32), square);
            }
        }

        #[test]
        fn doubling_identity(n in 0u64..2_000_000) {
            // F(2n) = F(n) (2 F(n+1) - F(n)): the textbook doubling step,
            // which neither kernel uses.
            let (f, f_next) = fib_pair(n);
            prop_assert_eq!(fib(2 * n), &f * ((&f_next << 1u32) - &f));
        }
    }
}
