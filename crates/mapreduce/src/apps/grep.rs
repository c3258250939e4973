//! `grep`: lines matching a regular expression (paper §2.3, "distributed
//! grep"). The key is `FILE:OFFSET` with the line's byte offset padded to 12
//! digits, so that keys sort in file order; reduce copies the lines out.

use regex::bytes::Regex;

use crate::{App, AppError, Emit, MapInput, ReduceOutput, Values};

#[derive(Debug)]
pub(crate) struct Grep {
    pub(crate) regex: Regex,
}

impl App for Grep {
    fn map(&self, input: &MapInput<'_>, output: &mut dyn Emit) -> Result<(), AppError> {
        let mut offset = input.offset;
        for line in input.contents.split_inclusive(|byte| *byte == b'\n') {
            let text = line.strip_suffix(b"\n").unwrap_or(line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if self.regex.is_match(text) {
                let key = format!("{}:{offset:012}", input.path);
                output.emit(key.as_bytes(), text);
            }
            offset += line.len() as u64;
        }
        Ok(())
    }

    fn reduce(
        &self,
        _key: &[u8],
        values: &mut Values<'_>,
        output: &mut ReduceOutput<'_>,
    ) -> Result<(), AppError> {
        while let Some(line) = values.next() {
            output.emit(line)?;
        }
        Ok(())
    }
}
