//! K-way merge of sorted runs, and grouping of the merged stream by key.

use std::io::{self, BufRead};

use crate::app::ValueSource;
use crate::format::RunReader;
use crate::progress::Progress;

/// Merges sorted runs into one sorted stream. Records with equal keys come
/// out in run order, so the merge is stable.
#[derive(Debug)]
pub(crate) struct Merger<R: BufRead> {
    runs: Vec<RunReader<R>>,
    /// Indices of runs with a current record, as a min-heap by key.
    heap: Vec<usize>,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl<R: BufRead> Merger<R> {
    pub(crate) fn new(mut runs: Vec<RunReader<R>>) -> io::Result<Self> {
        let mut heap = Vec::with_capacity(runs.len());
        for (i, run) in runs.iter_mut().enumerate() {
            if run.advance()? {
                heap.push(i);
            }
        }
        let mut merger = Self {
            runs,
            heap,
            key: Vec::new(),
            value: Vec::new(),
        };
        for i in (0..merger.heap.len() / 2).rev() {
            merger.sift_down(i);
        }
        Ok(merger)
    }

    fn less(&self, a: usize, b: usize) -> bool {
        let (run_a, run_b) = (self.heap[a], self.heap[b]);
        (&self.runs[run_a].key, run_a) < (&self.runs[run_b].key, run_b)
    }

    fn sift_down(&mut self, mut at: usize) {
        loop {
            let (left, right) = (2 * at + 1, 2 * at + 2);
            let mut smallest = at;
            if left < self.heap.len() && self.less(left, smallest) {
                smallest = left;
            }
            if right < self.heap.len() && self.less(right, smallest) {
                smallest = right;
            }
            if smallest == at {
                return;
            }
            self.heap.swap(at, smallest);
            at = smallest;
        }
    }

    /// The key of the next record, if any.
    pub(crate) fn peek_key(&self) -> Option<&[u8]> {
        self.heap.first().map(|run| &self.runs[*run].key[..])
    }

    /// Moves to the next record; false at the end. The record is then in
    /// [`key`](Self::key) and [`value`](Self::value).
    pub(crate) fn advance(&mut self) -> io::Result<bool> {
        let Some(&top) = self.heap.first() else {
            return Ok(false);
        };
        let run = &mut self.runs[top];
        std::mem::swap(&mut self.key, &mut run.key);
        std::mem::swap(&mut self.value, &mut run.value);
        if run.advance()? {
            self.sift_down(0);
        } else {
            let last = self.heap.pop().expect("the heap has a top");
            if !self.heap.is_empty() {
                self.heap[0] = last;
                self.sift_down(0);
            }
        }
        Ok(true)
    }

    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }

    pub(crate) fn value(&self) -> &[u8] {
        &self.value
    }
}

/// The values of one key, drawn from a merger positioned on the key's
/// first record. I/O errors end the values and are kept in `error`. Each
/// value read advances `progress`.
pub(crate) struct GroupValues<'a, R: BufRead> {
    pub(crate) merger: &'a mut Merger<R>,
    pub(crate) key: &'a [u8],
    pub(crate) first: bool,
    pub(crate) count: u64,
    pub(crate) error: Option<io::Error>,
    pub(crate) progress: &'a Progress,
}

impl<R: BufRead> ValueSource for GroupValues<'_, R> {
    fn next_value(&mut self) -> Option<&[u8]> {
        if self.first {
            self.first = false;
        } else {
            if self.merger.peek_key() != Some(self.key) {
                return None;
            }
            match self.merger.advance() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(error) => {
                    self.error = Some(error);
                    return None;
                }
            }
        }
        self.count += 1;
        self.progress.advance(1);
        Some(self.merger.value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::RunWriter;

    fn run(records: &[(&str, &str)]) -> Vec<u8> {
        let mut writer = RunWriter::new(Vec::new());
        for (key, value) in records {
            writer.write(key.as_bytes(), value.as_bytes()).unwrap();
        }
        writer.finish().unwrap()
    }

    #[test]
    fn merges_in_key_order_and_stably() {
        let a = run(&[("a", "1"), ("c", "a"), ("e", "")]);
        let b = run(&[("b", "2"), ("c", "b")]);
        let c = run(&[]);
        let d = run(&[("c", "d"), ("z", "9")]);
        let readers = [&a, &b, &c, &d]
            .into_iter()
            .map(|bytes| RunReader::new(&bytes[..]))
            .collect();
        let mut merger = Merger::new(readers).unwrap();
        let mut out = Vec::new();
        while merger.advance().unwrap() {
            out.push(format!(
                "{}={}",
                String::from_utf8_lossy(merger.key()),
                String::from_utf8_lossy(merger.value())
            ));
        }
        assert_eq!(out, ["a=1", "b=2", "c=a", "c=b", "c=d", "e=", "z=9"]);
    }
}
