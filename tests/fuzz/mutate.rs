//! Structured mutations of a seed input: bit flips, truncation, duplicated and dropped lines,
//! spliced chunks, extreme numbers in place of numbers, values of the wrong type, and extreme
//! 32-bit integers over binary headers. Deterministic for a given generator.

use convnet::Rng;

/// Numbers that break arithmetic that trusts them.
const EXTREMES: &[&str] = &[
    "0",
    "-1",
    "-0",
    "1e39",
    "-1e39",
    "1e-45",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775808",
    "99999999999999999999999",
    "1e308",
    "0.0000001",
    "",
];

/// Values of other types (for TOML and JSON).
const WRONG_TYPES: &[&str] = &[
    "\"text\"",
    "[1, 2]",
    "[]",
    "{ a = 1 }",
    "{}",
    "true",
    "false",
    "[[1], [2]]",
    "\"any\"",
    "\"\"",
];

fn below(rng: &mut Rng, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (rng.next_u64() % n as u64) as usize
    }
}

/// Byte ranges of the decimal numbers in `b`.
fn numbers(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let s = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'e') {
                i += 1;
            }
            out.push((s, i));
        } else {
            i += 1;
        }
    }
    out
}

fn lines(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut s = 0;
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' {
            out.push((s, i + 1));
            s = i + 1;
        }
    }
    if s < b.len() {
        out.push((s, b.len()));
    }
    out
}

/// One to three mutations of `seed`.
pub fn mutate(seed: &[u8], rng: &mut Rng, binary: bool) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + below(rng, 3) {
        b = once(b, rng, binary);
    }
    b
}

fn once(mut b: Vec<u8>, rng: &mut Rng, binary: bool) -> Vec<u8> {
    let kinds = if binary { 7 } else { 9 };
    match below(rng, kinds) {
        0 => {
            // bit flips
            for _ in 0..1 + below(rng, 8) {
                if !b.is_empty() {
                    let i = below(rng, b.len());
                    b[i] ^= 1 << below(rng, 8);
                }
            }
        }
        1 => b.truncate(below(rng, b.len() + 1)),
        2 => {
            // a chunk copied over another place
            if b.len() > 2 {
                let s = below(rng, b.len());
                let e = (s + 1 + below(rng, 64)).min(b.len());
                let chunk = b[s..e].to_vec();
                let at = below(rng, b.len());
                b.splice(at..at, chunk);
            }
        }
        3 => {
            // a byte range overwritten with 0x00 or 0xff
            if !b.is_empty() {
                let s = below(rng, b.len());
                let e = (s + 1 + below(rng, 16)).min(b.len());
                let v = if rng.next_u64().is_multiple_of(2) {
                    0
                } else {
                    0xff
                };
                b[s..e].iter_mut().for_each(|x| *x = v);
            }
        }
        4 => {
            // an extreme 32-bit big- or little-endian integer (binary headers)
            if b.len() >= 4 {
                let at = below(rng, (b.len() - 3).min(64));
                let v: u32 = [0, 1, 0xffff_ffff, 0x7fff_ffff, 0x8000_0000, 65536][below(rng, 6)];
                let bytes = if rng.next_u64().is_multiple_of(2) {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                b[at..at + 4].copy_from_slice(&bytes);
            }
        }
        5 => {
            // random bytes inserted
            let at = below(rng, b.len() + 1);
            let junk: Vec<u8> = (0..1 + below(rng, 16))
                .map(|_| rng.next_u64() as u8)
                .collect();
            b.splice(at..at, junk);
        }
        6 => {
            // an extreme number in place of a number (text in binary files too: JSON headers)
            let nums = numbers(&b);
            if !nums.is_empty() {
                let (s, e) = nums[below(rng, nums.len())];
                let v = EXTREMES[below(rng, EXTREMES.len())].as_bytes().to_vec();
                b.splice(s..e, v);
            }
        }
        7 => {
            // a line duplicated or dropped
            let ls = lines(&b);
            if !ls.is_empty() {
                let (s, e) = ls[below(rng, ls.len())];
                if rng.next_u64().is_multiple_of(2) {
                    let l = b[s..e].to_vec();
                    b.splice(s..s, l);
                } else {
                    b.drain(s..e);
                }
            }
        }
        _ => {
            // a value of the wrong type after `=` or `:`, or a number replaced by one
            let eqs: Vec<usize> = b
                .iter()
                .enumerate()
                .filter(|(_, c)| **c == b'=' || **c == b':')
                .map(|(i, _)| i)
                .collect();
            if !eqs.is_empty() {
                let at = eqs[below(rng, eqs.len())] + 1;
                let end = b[at..]
                    .iter()
                    .position(|c| *c == b'\n' || *c == b',')
                    .map_or(b.len(), |p| at + p);
                let v = format!(" {}", WRONG_TYPES[below(rng, WRONG_TYPES.len())]);
                b.splice(at..end, v.into_bytes());
            }
        }
    }
    b
}
