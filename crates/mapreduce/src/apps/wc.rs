//! `wc` and `indexer`.

use std::collections::BTreeSet;

use rustc_hash::{FxHashMap, FxHashSet};

use super::for_each_word;
use crate::{App, AppError, Emit, MapInput, ReduceOutput, Values};

/// Word count. The map aggregates counts per split in a hash table before
/// emitting (in-mapper combining, paper §4.3), and the combiner sums counts
/// again across spills, so map output is one pair per distinct word.
#[derive(Debug)]
pub(crate) struct WordCount;

fn sum(values: &mut Values<'_>) -> Result<u64, AppError> {
    let mut total = 0u64;
    while let Some(value) = values.next() {
        let text = std::str::from_utf8(value)?;
        total += text
            .parse::<u64>()
            .map_err(|e| format!("count {text:?}: {e}"))?;
    }
    Ok(total)
}

impl App for WordCount {
    fn map(&self, input: &MapInput<'_>, output: &mut dyn Emit) -> Result<(), AppError> {
        // Keys are copied out of the input on first sight: compared in
        // place, they would be scattered over the whole split (cache and
        // TLB misses on every lookup of a rare word).
        let mut counts: FxHashMap<Box<[u8]>, u64> = FxHashMap::default();
        for_each_word(input.contents, |word| match counts.get_mut(word) {
            Some(count) => *count += 1,
            None => {
                counts.insert(word.into(), 1);
            }
        });
        let mut number = Vec::with_capacity(20);
        for (word, count) in counts {
            number.clear();
            write_decimal(&mut number, count);
            output.emit(&word, &number);
        }
        Ok(())
    }

    fn reduce(
        &self,
        _key: &[u8],
        values: &mut Values<'_>,
        output: &mut ReduceOutput<'_>,
    ) -> Result<(), AppError> {
        let total = sum(values)?;
        output.emit(total.to_string().as_bytes())?;
        Ok(())
    }

    fn has_combiner(&self) -> bool {
        true
    }

    fn combine(
        &self,
        key: &[u8],
        values: &mut Values<'_>,
        output: &mut dyn Emit,
    ) -> Result<(), AppError> {
        let total = sum(values)?;
        output.emit(key, total.to_string().as_bytes());
        Ok(())
    }
}

/// Appends `value` in decimal.
pub(crate) fn write_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Inverted index: for each word, how many input files contain it and
/// which, sorted (the lab's `indexer`). A file split into several map tasks
/// is still counted once.
#[derive(Debug)]
pub(crate) struct Indexer;

impl App for Indexer {
    fn map(&self, input: &MapInput<'_>, output: &mut dyn Emit) -> Result<(), AppError> {
        let mut seen: FxHashSet<&[u8]> = FxHashSet::default();
        for_each_word(input.contents, |word| {
            seen.insert(word);
        });
        for word in seen {
            output.emit(word, input.path.as_bytes());
        }
        Ok(())
    }

    fn reduce(
        &self,
        _key: &[u8],
        values: &mut Values<'_>,
        output: &mut ReduceOutput<'_>,
    ) -> Result<(), AppError> {
        let mut files = BTreeSet::new();
        while let Some(value) = values.next() {
            files.insert(value.to_vec());
        }
        let mut line = format!("{} ", files.len()).into_bytes();
        for (i, file) in files.iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            line.extend_from_slice(file);
        }
        output.emit(&line)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal() {
        for value in [0, 7, 10, 12345, u64::MAX] {
            let mut out = Vec::new();
            write_decimal(&mut out, value);
            assert_eq!(out, value.to_string().into_bytes());
        }
    }
}
