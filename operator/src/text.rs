//! Shortening texts that people read (condition messages, Event notes) to a byte budget
//! without splitting a character.

/// At most `max` bytes of `text`'s start, cut at a character boundary, marked when cut.
pub fn head(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

/// At most `max` bytes of `text`'s end, cut at a character boundary, marked when cut.
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = text.len() - max;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    format!("…{}", &text[cut..])
}
