//! Word splitting shared by the text apps: a word is a maximal run of
//! letters (`char::is_alphabetic`), as the lab's `unicode.IsLetter` split.
//! ASCII takes a fast path; other bytes are decoded as UTF-8, and bytes that
//! are not valid UTF-8 separate words.

/// Calls `f` with each word of `text`, in order.
pub fn for_each_word<'a>(text: &'a [u8], mut f: impl FnMut(&'a [u8])) {
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i < text.len() {
        let byte = text[i];
        let (letter, width) = if byte < 0x80 {
            (byte.is_ascii_alphabetic(), 1)
        } else {
            decode_is_letter(&text[i..])
        };
        if letter {
            start.get_or_insert(i);
        } else if let Some(word_start) = start.take() {
            f(&text[word_start..i]);
        }
        i += width;
    }
    if let Some(word_start) = start {
        f(&text[word_start..]);
    }
}

/// Whether the UTF-8 character at the start of `bytes` is a letter, and its
/// width (1 for an invalid byte).
fn decode_is_letter(bytes: &[u8]) -> (bool, usize) {
    let width = match bytes[0] {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => return (false, 1),
    };
    match bytes.get(..width).and_then(|c| std::str::from_utf8(c).ok()) {
        Some(c) => (c.chars().next().is_some_and(char::is_alphabetic), width),
        None => (false, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for_each_word(text.as_bytes(), |w| {
            out.push(String::from_utf8(w.to_vec()).unwrap())
        });
        out
    }

    #[test]
    fn splits_on_non_letters_including_unicode() {
        assert_eq!(
            words("Hello, world! It's 2024"),
            ["Hello", "world", "It", "s"]
        );
        assert_eq!(words("café—naïve"), ["café", "naïve"]);
        assert_eq!(words(""), Vec::<String>::new());
        let mut invalid = Vec::new();
        for_each_word(b"ab\xffcd", |w| invalid.push(w.to_vec()));
        assert_eq!(invalid, [b"ab".to_vec(), b"cd".to_vec()]);
    }
}
